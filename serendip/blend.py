"""The blended slate of the paper's live experiment (§4.1–4.2).

In the live experiment the MLLM's candidates were **added** to the production recommenders, not
substituted for them. :func:`blend_slate` builds that slate: ``k`` items mixing the exploitation
retriever's top items (source ``exploit``) with the retriever's top items inside the
serendipitous cluster the MLLM chose (source ``serendipitous``).

Rules (all deterministic, no randomness):

* the serendipitous share is ``n_s = ceil(share · k)`` items (default share 0.2: 2 of 10);
* serendipitous items are taken first, in their list order, then exploitation items in theirs,
  skipping any item already on the slate — no duplicates, and an item both lists contain counts
  as serendipitous (it is the cluster's pick, the share must hold);
* a short list is filled from the other one, so the slate has ``min(k, distinct items)`` items;
  a short serendipitous list gives a smaller share, never padding or repeats;
* positions: serendipitous items are spread evenly over the slate (position
  ``floor((j + 1) · k / n_s) − 1`` for the j-th, so 4 and 9 for 2 of 10) and the exploitation
  items keep their order around them — the head of the slate stays the exploitation top item.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from serendip.errors import ConfigError

EXPLOIT = "exploit"
SERENDIPITOUS = "serendipitous"
SOURCES = (EXPLOIT, SERENDIPITOUS)


@dataclass(frozen=True)
class BlendConfig:
    """k: slate size (>= 1); serendipitous_share: share of the slate from the serendipitous
    cluster, in [0, 1] (default 0.2: at least 2 of 10 items, the issue's target share)."""

    k: int = field(default=10, metadata={"help": "slate size, in items; >= 1"})
    serendipitous_share: float = field(default=0.2, metadata={
        "help": "share of the slate from the serendipitous cluster: ceil(share · k) items; "
                "in [0, 1]"})

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ConfigError(f"k={self.k!r}", field="k", fix="use a slate size k >= 1")
        share = self.serendipitous_share
        if isinstance(share, bool) or not isinstance(share, (int, float)) \
                or not math.isfinite(share) or not 0.0 <= share <= 1.0:
            raise ConfigError(f"serendipitous_share={share!r}", field="serendipitous_share",
                              fix="use a share in [0, 1], e.g. 0.2 for 2 of 10 items")

    @property
    def n_serendipitous(self) -> int:
        """Serendipitous slots: ceil(share · k) (a float error below an integer is ignored)."""
        return min(self.k, math.ceil(self.serendipitous_share * self.k - 1e-9))


@dataclass(frozen=True)
class SlateItem:
    item_id: str
    source: str          # "exploit" | "serendipitous"
    rank: int            # 0-based position in its source list


def _positions(k: int, n_s: int) -> list[int]:
    return sorted({(j + 1) * k // n_s - 1 for j in range(n_s)}) if n_s else []


def blend_slate(exploit: Sequence[str], serendipitous: Sequence[str],
                cfg: BlendConfig | None = None) -> list[SlateItem]:
    """Blend two ranked item lists into one slate of at most ``cfg.k`` labelled items.

    Args:
        exploit: the exploitation retriever's ranked item ids (unrestricted top items).
        serendipitous: the retriever's ranked item ids inside the serendipitous cluster.
        cfg: slate size and share (see :class:`BlendConfig` and the module docstring).

    Returns:
        ``SlateItem(item_id, source, rank)`` in slate order; ``len == min(k, |distinct ids|)``.
    """
    cfg = cfg or BlendConfig()
    k = cfg.k
    chosen: set[str] = set()
    ser: list[SlateItem] = []
    for r, item in enumerate(serendipitous):
        if len(ser) >= cfg.n_serendipitous:
            break
        if item not in chosen:
            ser.append(SlateItem(item, SERENDIPITOUS, r))
            chosen.add(item)
    exp: list[SlateItem] = []
    for r, item in enumerate(exploit):
        if len(ser) + len(exp) >= k:
            break
        if item not in chosen:
            exp.append(SlateItem(item, EXPLOIT, r))
            chosen.add(item)
    # a short exploitation list: fill with further serendipitous items
    r0 = ser[-1].rank + 1 if ser else 0
    for r in range(r0, len(serendipitous)):
        if len(ser) + len(exp) >= k:
            break
        item = serendipitous[r]
        if item not in chosen:
            ser.append(SlateItem(item, SERENDIPITOUS, r))
            chosen.add(item)
    n = len(ser) + len(exp)
    slots = set(_positions(n, min(len(ser), n)) if len(exp) else range(n))
    slate: list[SlateItem] = []
    si, ei = iter(ser), iter(exp)
    for pos in range(n):
        slate.append(next(si) if pos in slots else next(ei))
    return slate


def slate_ids(slate: Sequence[SlateItem]) -> list[str]:
    return [s.item_id for s in slate]
