"""The run report: ``report.md`` with plots and ``report.json`` with every figure.

Results people compare belong in a report, not only in logs. Sections are added by the stages
(cluster tree, curation, training curves, ablations, baseline comparison) and written once,
atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serendip.data.io import atomic_write_bytes


@dataclass
class Report:
    title: str
    sections: list[tuple[str, str]] = field(default_factory=list)   # (heading, markdown)
    figures: dict[str, Any] = field(default_factory=dict)            # everything, for JSON

    def add(self, heading: str, markdown: str, figures: dict[str, Any] | None = None) -> None:
        self.sections.append((heading, markdown.strip()))
        if figures is not None:
            self.figures[_key(heading)] = figures

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        out = Path(out_dir)
        md = [f"# {self.title}", ""]
        for heading, body in self.sections:
            md += [f"## {heading}", "", body, ""]
        md_path, json_path = out / "report.md", out / "report.json"
        atomic_write_bytes(md_path, "\n".join(md).encode())
        atomic_write_bytes(json_path, json.dumps(self.figures, indent=2, default=_jsonable).encode())
        return md_path, json_path


def _key(heading: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in heading.lower()).strip("_")


def _jsonable(o: Any) -> Any:
    try:
        import numpy as np
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None,
                   floatfmt: str = ".3f") -> str:
    """A GitHub markdown table from a list of dicts."""
    if not rows:
        return "_(no rows)_"
    cols = columns or list(rows[0])

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def bar_chart_relative(summary: dict, metrics: list[str], path: str | Path,
                       title: str = "Change relative to the exploitation baseline") -> Path:
    """Grouped bars of each model's relative change per metric, with 95% CI whiskers
    (the layout of the paper's Figure 6)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = [m for m in summary["models"] if m != summary["reference"]]
    x = np.arange(len(metrics))
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(metrics) + 2, 4))
    for j, m in enumerate(models):
        vals = [100 * (summary["models"][m][k]["rel_to_reference"] or 0.0) for k in metrics]
        errs = [100 * (summary["models"][m][k]["rel_ci95"] or 0.0) for k in metrics]
        ax.bar(x + j * width - 0.4 + width / 2, vals, width, yerr=errs, capsize=3, label=m)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, [k.replace("_", "\n") for k in metrics], fontsize=8)
    ax.set_ylabel(f"% vs {summary['reference']}")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
