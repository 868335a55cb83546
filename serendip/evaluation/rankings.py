"""The MLLM's ranking of each context's serendipitous candidate clusters (paper §2, §4.1),
shared by the choice baselines' report and the replay evaluation: batch-scored
``item_serendipity`` rows first, then a predictor for the contexts scoring did not cover."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from serendip.candidates import CandidateIndex, restrict_to_candidates


def mllm_cluster_rankings(workdir: Path, contexts: Sequence[str], index: CandidateIndex,
                          predictor=None, k: int = 5, use_scored: bool = True,
                          tree_dir: Path | None = None) -> tuple[dict[str, list[str]], dict]:
    """context → the MLLM's ranked candidate clusters: batch-scored ``item_serendipity`` rows
    first (unless ``use_scored`` is false — e.g. to judge a challenger that did not write
    them), then ``predictor`` (if given) for contexts scoring did not cover — asked to rank
    exactly each context's candidates when its ``predict`` takes ``candidates`` (likelihood
    over the subset), else for its top-``k`` answers. Non-candidate answers are dropped
    (counted in the returned stats, with the model versions used). ``tree_dir`` holds
    ``clusters``/``item_clusters`` when they are not in ``workdir`` (KFP artifacts)."""
    from serendip.data.io import has_table, read_table

    raw: dict[str, list[str]] = {}
    versions: set[str] = set()
    want = sorted(set(contexts))
    if use_scored and has_table(workdir, "item_serendipity"):
        t = read_table(workdir, "item_serendipity",
                       columns=["item_id", "cluster_ids", "model_version"]).to_pydict()
        wanted = set(want)
        for i, c, v in zip(t["item_id"], t["cluster_ids"], t["model_version"]):
            if i in wanted:
                raw[i] = list(c or [])
                versions.add(str(v))
    missing = [c for c in want if c not in raw]
    restricted = False
    if missing and predictor is not None:
        import inspect

        versions.add(str(getattr(predictor, "model_version", "") or "predictor"))
        # rank exactly the candidates when the predictor can (likelihood over a subset)
        restricted = "candidates" in inspect.signature(predictor.predict).parameters
        cand = index.candidates(missing)
        if restricted:
            raw.update({c: [] for c, cs in zip(missing, cand) if not cs})
            missing = [c for c, cs in zip(missing, cand) if cs]
            cand = [cs for cs in cand if cs]
        from serendip.prompts import select_images

        items = read_table(workdir, "items").to_pandas().set_index("item_id").loc[missing]
        tree = tree_dir or workdir
        ic = read_table(tree, "item_clusters").to_pandas().set_index("item_id")
        desc = read_table(tree, "clusters").to_pandas().set_index("cluster_id").description
        lvl = predictor.level
        inputs = [{"title": r.title,
                   "context_cluster_id": ic.loc[i, f"c{lvl}"],
                   "context_description": desc[ic.loc[i, f"c{lvl}"]],
                   "images": select_images(predictor.prompt_config, r.thumbnail,
                                           list(r.frames) if r.frames is not None else [])}
                  for i, r in items.iterrows()]
        if restricted:
            preds = predictor.predict(inputs, k=min(k, max(map(len, cand))), constrained=True,
                                      candidates=cand) if inputs else []
        else:
            preds = predictor.predict(inputs, k=k, constrained=True)
        raw.update({i: [p.cluster_id for p in ps] for i, ps in zip(missing, preds)})
    have = [c for c in want if c in raw]
    kept, dropped = restrict_to_candidates([raw[c] for c in have], have, index)
    own = dict(zip(have, index.own_cluster(have)))
    top1_own = sum(bool(raw[c]) and raw[c][0] == own[c] for c in have)
    stats = {"contexts": len(want), "answered": len(have),
             "non_candidate_answers_dropped": dropped,
             "top1_is_own_cluster": top1_own,
             "no_candidate_answer": sum(not r for r in kept),
             "model_versions": sorted(versions), "ranked_over_candidates": restricted}
    return dict(zip(have, kept)), stats
