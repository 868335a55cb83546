"""The headroom benchmark (issue 15) on the committed ml-100k subset: every method is measured
with finite values and intervals that contain them, and the blend reproduces the transition
baseline exactly when the signal is dropped."""

from __future__ import annotations

import math

from benchmarks.bench_headroom import INFO, run


def test_headroom_quick_has_every_method_with_intervals():
    res = run(quick=True)
    r = res["data"]["ml100k"]
    assert r["n_cases"] > 0 and r["transition_reproduced"] is True
    methods = r["methods"]
    content = [b for b in r["blocks"] if b not in ("behaviour",)]
    want = {"random_sibling", "transition", "inflow", "inflow_excl_heldout_users",
            "inflow_other_users"}
    want |= {f"knn_{b}" for b in content}
    if "behaviour" in r["blocks"]:
        want.add("knn_behaviour")
    if len(content) > 1:
        want.add("knn_content")
    assert want <= set(methods), sorted(want - set(methods))
    assert set(methods) <= set(INFO)
    for m, x in methods.items():
        for key in ("recall", "alone"):
            if key not in x:
                continue
            v = x[key]
            lo, hi = v["ci95"]
            assert all(math.isfinite(t) for t in (v["value"], lo, hi)), (m, key)
            assert lo - 1e-12 <= v["value"] <= hi + 1e-12, (m, key, v)
            if m != "transition":
                dlo, dhi = v["diff_ci95"]
                assert dlo - 1e-12 <= v["diff"] <= dhi + 1e-12, (m, key, v)
        assert isinstance(x["leak_free"], bool) and x["information"]
    assert methods["inflow"]["leak_free"] is False
    assert methods["inflow_excl_heldout_users"]["leak_free"] is True
    assert r["inflow_excl_transitions"] <= r["inflow_transitions"]
    h = r["headroom"]["content"]
    assert h is not None and h["method"].startswith("knn_")
    assert math.isfinite(h["diff"])
