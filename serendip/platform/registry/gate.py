"""The promotion gate. Promotion uses aliases, not the deprecated stages: a new version gets
``@challenger``; :func:`promote` moves ``@champion`` to it only when its held-out metric is not
worse than the champion's **and** it beats the best baseline (issue 15: transition statistics,
random sibling, retriever-ranked sibling for the MLLM; popularity within the cluster for the
retriever) by more than a margin; otherwise it refuses in one line and leaves the champion
alone. ``force`` overrides and is recorded on the version (``promoted_forced``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from serendip.errors import SerendipError
from serendip.platform.registry.errors import translated
from serendip.platform.registry.models import (
    CHALLENGER,
    CHAMPION,
    MLLM,
    alias_version,
    resolve_version,
    version_metric,
)
from serendip.platform.registry.store import setup

GATE_METRIC = "recall_constrained"


@dataclass
class GateBaseline:
    """The best baseline a challenger must beat before it may become ``@champion``.

    ``method``/``value``: the best baseline and its held-out value (higher is better).
    ``challenger_value``: the challenger measured on the **same cases** (a baselines report
    that scored the model); ``None`` means its recorded gate metric is compared instead.
    ``source``: where the figures came from (for the message and the version's tags)."""

    method: str
    value: float
    metric: str = "recall"
    challenger_value: float | None = None
    source: str = "recorded"

    def __post_init__(self) -> None:
        import math

        for name, v in (("value", self.value), ("challenger_value", self.challenger_value)):
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
                raise SerendipError(f"baseline {name} {v!r} is not a finite number",
                                    field="baselines", fix="pass a report written by "
                                                           "serendip evaluate")


def check_margin(margin: float) -> float:
    """``margin`` as a float in [0, 1] (a recall/NDCG difference).

    Raises:
        SerendipError: not a finite number in [0, 1] (field ``--margin``)."""
    import math

    try:
        m = float(margin)
    except (TypeError, ValueError):
        m = float("nan")
    if not math.isfinite(m) or not 0.0 <= m <= 1.0:
        raise SerendipError(f"margin {margin!r} is not a number in [0, 1]", field="--margin",
                            fix="pass the lead over the best baseline the challenger needs, "
                                "e.g. --margin 0.02 (default 0: strictly above)")
    return m


def _version_number(model_version: str | None) -> str | None:
    """``"3"`` from ``"serendip-mllm/v3"`` (None for a model directory or nothing)."""
    import re

    m = re.fullmatch(r"[^/]+/v(\d+)", str(model_version or "").strip())
    return m.group(1) if m else None


def baseline_from_report(rep: dict, challenger: str | None = None,
                         source: str = "report") -> GateBaseline:
    """The best baseline (and the challenger on the same cases) from a report:

    * :func:`serendip.evaluation.baselines.baselines_stage`'s report (``case_sets``; also
      accepted nested under ``choice_baselines``): its first case set (every serendipitous
      pair of the held-out contexts), ``best_baseline`` and, when the report scored a model,
      that model's recall on the same cases;
    * ``serendip evaluate``'s offline report (``baselines`` name → ``{"recall": ...}`` and
      ``recall_constrained``, on the curated test split).

    A report measured on another registered version than ``challenger`` is refused.

    Raises:
        SerendipError: neither form, or the report is about another version (field
            ``baselines``)."""
    if not isinstance(rep, dict):
        raise SerendipError("the baselines report is not a JSON object", field="baselines",
                            fix="pass evaluation/mllm_offline.json or a baselines_stage report")
    nested = rep.get("choice_baselines")
    if isinstance(nested, dict) and "case_sets" in nested:
        rep = nested
    measured: list[str] = []
    if isinstance(rep.get("case_sets"), list) and rep["case_sets"]:
        cs = rep["case_sets"][0]
        methods = cs.get("methods", {})
        best = cs.get("best_baseline")
        if best not in methods:
            raise SerendipError("the baselines report names no best baseline",
                                field="baselines", fix="pass a report written by "
                                                       "baselines_stage / serendip evaluate")
        model = methods.get("model")
        measured = list((rep.get("model") or {}).get("model_versions", []) or [])
        out = GateBaseline(best, float(methods[best]["recall"]["value"]), "recall",
                           float(model["recall"]["value"]) if model else None,
                           f"{source}: {cs.get('cases', 'held-out cases')}, "
                           f"{cs.get('n_cases', '?')} cases")
    elif isinstance(rep.get("baselines"), dict) and rep["baselines"]:
        base = {k: float(v["recall"]) for k, v in rep["baselines"].items()
                if isinstance(v, dict) and "recall" in v}
        if not base:
            raise SerendipError("the report's baselines carry no recall", field="baselines",
                                fix="pass evaluation/mllm_offline.json")
        best = max(base, key=lambda k: (base[k], k))
        ch = rep.get("recall_constrained")
        measured = [rep["model_version"]] if rep.get("model_version") else []
        out = GateBaseline(best, base[best], "recall_constrained",
                           float(ch) if isinstance(ch, (int, float)) else None,
                           f"{source}: curated test split, {rep.get('n', '?')} examples")
    else:
        raise SerendipError("the report holds no baselines (no case_sets, no baselines)",
                            field="baselines", fix="pass evaluation/mllm_offline.json or the "
                                                   "JSON of a baselines_stage report")
    others = {_version_number(v) for v in measured} - {None}
    if challenger is not None and others and others != {str(challenger)}:
        raise SerendipError(f"the baselines report measured version(s) {sorted(others)}, not "
                            f"the challenger v{challenger}", field="baselines",
                            fix=f"evaluate the challenger (--model models:/<name>/{challenger})"
                                " or pass --reevaluate")
    return out


def recorded_baseline(name: str, version: str, metric: str) -> GateBaseline | None:
    """The best baseline recorded on a version's tags: ``baseline_<method>_recall`` (the MLLM,
    same held-out examples as its recall) or ``popularity_<metric>`` (the retriever:
    popularity within the true next cluster on its held-out cases). None when none is."""
    import re

    from mlflow import MlflowClient

    tags = MlflowClient().get_model_version(name, version).tags
    found: dict[str, float] = {}
    for key, v in tags.items():
        m = re.fullmatch(r"baseline_(.+)_recall", key)
        method = m.group(1) if m else ("popularity" if key == f"popularity_{metric}" else None)
        if method:
            try:
                found[method] = float(v)
            except ValueError:
                continue
    if not found:
        return None
    best = max(found, key=lambda k: (found[k], k))
    return GateBaseline(best, found[best], metric, None, "recorded on the version")


@dataclass
class PromotionResult:
    promoted: bool
    message: str
    challenger: str
    champion_before: str | None
    champion_after: str | None
    challenger_value: float | None = None
    champion_value: float | None = None
    baseline: GateBaseline | None = None
    margin: float = 0.0
    forced: bool = False


@translated
def promote(name: str = MLLM, version: str | None = None, metric: str = GATE_METRIC,
            workdir: str | os.PathLike | None = None,
            evaluate: Callable[[str], float] | None = None,
            baseline: GateBaseline | None = None, margin: float = 0.0,
            force: bool = False) -> PromotionResult:
    """The promotion gate. Moves ``@champion`` to the challenger (``version`` or
    ``@challenger``) only when both hold:

    1. its held-out ``metric`` is not worse than the champion's (no champion yet: skipped);
       ``evaluate(model_uri)`` re-measures both on the same data instead of trusting the
       recorded values (runs may have used other splits);
    2. it beats the best baseline by more than ``margin``: ``challenger > best + margin``
       (default margin 0: strictly above). ``baseline`` comes from a report
       (:func:`baseline_from_report`), else from the challenger's recorded tags
       (:func:`recorded_baseline`).

    Otherwise ``@champion`` stays, ``@challenger`` stays, and the result's one-line message
    says why. ``force`` promotes anyway; the version is tagged ``promoted_forced`` with the
    refusal it overrode.

    Raises:
        SerendipError: unknown name/version/alias, unrecorded metric, a bad ``margin``, or no
            baseline at all (pass a report, or ``force``). ServiceError: the tracking server.
    """
    from mlflow import MlflowClient

    setup(workdir)
    margin = check_margin(margin)
    client = MlflowClient()
    challenger = resolve_version(name, version or "@" + CHALLENGER)
    champion = alias_version(name, CHAMPION)
    if champion == challenger:
        return PromotionResult(False, f"{name} v{challenger} is already the champion",
                               challenger, champion, champion)

    def value(v: str) -> float:
        if evaluate is not None:
            return float(evaluate(f"models:/{name}/{v}"))
        return version_metric(name, v, metric)

    ch_val = value(challenger)
    champ_val = value(champion) if champion is not None else None
    base = baseline or recorded_baseline(name, challenger, metric)
    if base is None and not force:
        raise SerendipError(f"{name} v{challenger} has no baseline to beat (no "
                            f"baseline_*_recall / popularity_{metric} recorded)",
                            field="baselines", fix="pass --baselines evaluation/"
                                                   "mllm_offline.json or --reevaluate "
                                                   "(or --force to skip the gate)")
    reasons = []
    stays = f"@champion stays v{champion}" if champion else "no @champion yet"
    if champ_val is not None and ch_val < champ_val:
        reasons.append(f"challenger {metric} {ch_val:.4f} < champion v{champion}'s "
                       f"{champ_val:.4f} (worse than champion)")
    if base is not None:
        ours = base.challenger_value if base.challenger_value is not None else ch_val
        if not ours > base.value + margin:
            reasons.append(f"challenger {base.metric} {ours:.4f} \u2264 best baseline "
                           f"{base.method} {base.value:.4f} + margin {margin:.2f} "
                           f"({base.source})")
    res = dict(challenger=challenger, champion_before=champion, challenger_value=ch_val,
               champion_value=champ_val, baseline=base, margin=margin)
    if reasons and not force:
        return PromotionResult(False, f"refused {name} v{challenger}: " + "; ".join(reasons)
                               + f"; {stays}; use --force to override",
                               champion_after=champion, **res)
    client.set_registered_model_alias(name, CHAMPION, challenger)
    tags = {"promoted_over": champion or "", "gate_margin": f"{margin}"}
    if base is not None:
        tags.update(gate_baseline=base.method, gate_baseline_value=f"{base.value}",
                    gate_baseline_source=base.source)
        if base.challenger_value is not None:
            tags["gate_challenger_value"] = f"{base.challenger_value}"
    if force:
        tags.update(promoted_forced="true",
                    forced_over="; ".join(reasons) if reasons else "gate passed")
    for k, v in tags.items():
        if v:
            client.set_model_version_tag(name, challenger, k, v)
    if reasons:
        msg = (f"FORCED {name} v{challenger} to @champion"
               + (" (the first champion)" if champion is None else f" over v{champion}")
               + " against the gate: " + "; ".join(reasons)
               + " (tagged promoted_forced on the version)")
    elif champion is None:
        msg = f"{name} v{challenger} is the first champion"
    else:
        msg = (f"promoted {name} v{challenger} to @champion: {metric} {ch_val:.4f} >= "
               f"v{champion}'s {champ_val:.4f}")
    if base is not None and not reasons:
        ours = base.challenger_value if base.challenger_value is not None else ch_val
        msg += (f"; {base.metric} {ours:.4f} > best baseline {base.method} {base.value:.4f}"
                f" + margin {margin:.2f}")
    return PromotionResult(True, msg, champion_after=challenger, forced=bool(force), **res)
