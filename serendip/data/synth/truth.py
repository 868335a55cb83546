"""The ground truth real logs never give: taxonomy, bridges, item topics and user interests as
tables, and the recall ceiling of log-derived labels with perfect clusters."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from serendip.data.synth.config import SynthConfig
from serendip.data.synth.taxonomy import Taxonomy


def truth_tables(tax: Taxonomy, leaf: np.ndarray, interests, affinity, cfg: SynthConfig
                 ) -> dict[str, pa.Table]:
    nodes = []
    for lvl in (1, 2, 3, 4):
        seen = set()
        for lf in range(tax.n_leaves):
            nid = int(tax.node_id(lvl, np.asarray(lf)))
            if nid in seen:
                continue
            seen.add(nid)
            names = tax.names(lf)
            parent = int(tax.node_id(lvl - 1, np.asarray(lf))) if lvl > 1 else None
            nodes.append({"level": lvl, "node": nid, "parent": parent,
                          "name": " > ".join(names[:lvl])})
    b4 = tax.branching[3]
    leaves = np.arange(tax.n_leaves)
    a, b, c, d = tax.digits(leaves)
    bridge_l3 = tax.node_id(3, tax.leaf(a, b, tax.bridge_l3, 0))
    u_rows = [(f"u{u:06d}", int(interests[u, j]), bool(affinity[u, j]))
              for u in range(cfg.users) for j in range(3) if interests[u, j] >= 0]
    return {
        "taxonomy": pa.Table.from_pylist(nodes),
        "bridges": pa.table({"leaf": leaves, "l3": tax.node_id(3, leaves),
                             "bridge_l3": bridge_l3,
                             "bridge_leaves": [list(range(int(x) * b4, int(x) * b4 + b4))
                                               for x in bridge_l3]}),
        "item_topics": pa.table({"item_id": [f"v{i:07d}" for i in range(len(leaf))],
                                 "leaf": leaf,
                                 **{f"l{k}": tax.node_id(k, leaf) for k in (1, 2, 3)}}),
        "user_interests": pa.table({"user_id": [r[0] for r in u_rows],
                                    "leaf": [r[1] for r in u_rows],
                                    "affinity": [r[2] for r in u_rows]}),
    }


def recall_ceiling(tax: Taxonomy, leaf: np.ndarray, interactions: pa.Table) -> dict:
    """How often the log-derived label can equal the true bridge, with perfect clusters.

    For every context item with serendipitous next items (other level-3 topic, same level-2),
    the label is the next level-3 topic with the highest mean satisfaction; the ceiling is the
    share of context items whose label is their leaf's bridge. Noise and rare bridges keep it
    below 1: no model trained on these labels should be expected to beat it.
    """
    import pandas as pd

    idx = {f"v{i:07d}": i for i in range(len(leaf))}
    ctx = np.array([idx[x] for x in interactions.column("context_item_id").to_pylist()])
    nxt = np.array([idx[x] for x in interactions.column("next_item_id").to_pylist()])
    cl, nl = leaf[ctx], leaf[nxt]
    c3, n3 = tax.node_id(3, cl), tax.node_id(3, nl)
    c2, n2 = tax.node_id(2, cl), tax.node_id(2, nl)
    ser = (c3 != n3) & (c2 == n2)
    df = pd.DataFrame({"ctx": ctx[ser], "n3": n3[ser],
                       "sat": interactions.column("satisfaction").to_numpy()[ser]})
    if df.empty:
        return {"context_items": 0, "recall_ceiling": 0.0}
    agg = df.groupby(["ctx", "n3"], sort=True)["sat"].mean().reset_index()
    top = agg.loc[agg.groupby("ctx")["sat"].idxmax()]
    a, b, c, d = tax.digits(leaf[top["ctx"].to_numpy()])
    truth = tax.node_id(3, tax.leaf(a, b, tax.bridge_l3[leaf[top["ctx"].to_numpy()]], 0))
    hit = truth == top["n3"].to_numpy()
    sim = (c3 == n3)
    sat = interactions.column("satisfaction").to_numpy()
    return {"context_items": int(len(top)), "recall_ceiling": float(hit.mean()),
            "serendipitous_pairs": int(ser.sum()), "similar_pairs": int(sim.sum()),
            "mean_satisfaction_serendipitous": float(sat[ser].mean()),
            "mean_satisfaction_similar": float(sat[sim].mean())}
