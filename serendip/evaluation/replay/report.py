"""The replay summary as markdown (``replay.md``)."""

from __future__ import annotations

from serendip.evaluation.replay.config import ReplayConfig


def replay_markdown(summary: dict, cfg: ReplayConfig | None = None) -> str:
    """The replay summary as markdown: one table per subset, value [95% interval]."""
    from serendip.report import markdown_table

    k = cfg.k if cfg else 10
    names = {"hr": f"HR@{k}", "ndcg": f"NDCG@{k}", "coverage": "coverage",
             "novelty": "novelty", "diversity": "ILD", "serendipity": "serendipity",
             "unexpectedness": "unexpect.",
             "cluster_serendipity": "cluster ser.", "novel_impression_ratio": "NIR",
             "new_vs_exploitation": "new vs expl.", "hit_satisfaction": "hit sat."}
    parts = []
    for subset in ("all", "serendipitous_transition", "other_transition"):
        block = summary["subsets"][subset]
        parts.append(f"**{subset.replace('_', ' ')}** ({block['n_cases']} held-out cases)\n")
        rows = []
        for arm, m in block["arms"].items():
            row = {"arm": arm}
            for key, label in names.items():
                v = m[key]
                row[label] = "—" if v["value"] is None else (
                    f"{v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]")
            rows.append(row)
        parts.append(markdown_table(rows, ["arm", *names.values()]) + "\n")
    return "\n".join(parts)
