"""Which items are scored: the popular prefix up to ``coverage`` of impressions (paper §3.2), and
the stable shard of an item."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from serendip.errors import ConfigError, SerendipError


# ------------------------------------------------------------------ coverage
def select_by_coverage(items: pa.Table, coverage: float) -> tuple[pa.Table, dict]:
    """The smallest most-popular prefix of ``items`` whose impressions reach ``coverage`` of
    the total (ties by item id); returns (items in popularity order, stats)."""
    if not 0 < coverage <= 1:
        raise ConfigError(f"coverage must be in (0, 1], got {coverage!r}", field="coverage",
                          fix="use e.g. 0.8")
    n = items.num_rows
    if n == 0:
        raise SerendipError("the items table is empty", field="items",
                            fix="put the catalogue in items.parquet or items.csv (README 'Data contracts')")
    imp = np.asarray(items.column("impressions").to_numpy(zero_copy_only=False), np.float64)
    ids = np.asarray(items.column("item_id").to_pylist(), dtype=object)
    order = np.lexsort((ids, -imp))
    total = imp.sum()
    if total <= 0:
        count = n                                   # no traffic recorded: everything
    else:
        cum = np.cumsum(imp[order]) / total
        count = int(np.searchsorted(cum, coverage - 1e-12) + 1)
    count = min(count, n)
    covered = float(imp[order[:count]].sum() / total) if total > 0 else 1.0
    stats = {"items": n, "selected": count, "selected_share": round(count / n, 4),
             "coverage_target": coverage, "coverage_achieved": round(covered, 4)}
    return items.take(order[:count]), stats



def shard_of(item_id: str, num_shards: int) -> int:
    """Stable shard of an item (same across runs and machines, unlike ``hash()``), so each
    shard's incremental state stays valid from one run to the next."""
    import zlib

    return zlib.crc32(item_id.encode()) % num_shards
