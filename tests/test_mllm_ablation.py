"""The ablation runner: variants fine-tuned from one selection, curves as PNG, a markdown table
with the paper-vs-ours verdicts, and finished variants reused on a re-run."""

from __future__ import annotations

import json

import pytest
from mllm_truth import TEST_TINY, truth_examples, truth_tables

from serendip.errors import ConfigError
from serendip.mllm.ablation import AblationConfig, paper_verdicts, run_ablation
from serendip.mllm.config import FinetuneConfig
from serendip.mllm.tiny import TinyVLMConfig


def test_thumbnail_ablation_writes_curves_table_and_reuses_runs(synth_dir, tmp_path):
    built = []

    def build(prompt):
        built.append(prompt)
        return truth_examples(synth_dir, prompt, n_items=24)[0]

    clusters = truth_tables(synth_dir)[1]
    cfg = AblationConfig(groups=("thumbnail",), steps=4, eval_every=2,
                         finetune=FinetuneConfig(batch_size=4, eval_max_examples=4,
                                                 reasoning_tokens=8,
                                                 tiny=TinyVLMConfig(**TEST_TINY)))
    out = run_ablation(build, clusters, cfg, tmp_path, progress=False)
    assert [p.use_thumbnail for p in built] == [True, False]
    assert set(out["results"]) == {"cot-thumbnail", "cot-1f"}
    for res in out["results"].values():
        assert [h["step"] for h in res["history"]] == [2, 4]
        assert res["summary"]["final_match_rate_constrained"] == 1.0
    png = tmp_path / "thumbnail.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "table.md").read_text()
    assert "CoT, thumbnail" in table and "Paper vs ours" in table
    assert "A thumbnail beats one sampled frame" in table
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["verdicts"][0]["expected"] == "higher"
    assert not (tmp_path / "runs" / "cot-1f-s0" / "model").exists()   # curves kept, not models

    again = run_ablation(build, clusters, cfg, tmp_path, progress=False)   # reused, same curves
    assert again["results"]["cot-1f"]["history"] == out["results"]["cot-1f"]["history"]

    # the same runs in two worker processes: the same curves as one after the other
    pooled = run_ablation(build, clusters, cfg, tmp_path / "pooled", progress=False, workers=2)
    for name, res in out["results"].items():
        assert pooled["results"][name]["history"] == res["history"], name


def test_verdicts_use_a_noise_band():
    def res(best, n=100, auc=0.9, first=50):
        return {"summary": {"best_recall": best, "late_recall": best, "n": n,
                            "auc_match_rate": auc, "steps_to_match_rate": first}}

    v = paper_verdicts({"video": res(0.6), "text": res(0.2), "multimodal": res(0.595),
                        "cot": res(0.62, auc=0.95)})
    by = {x["finding"].split(" (")[0]: x for x in v}
    assert by["Video input beats text only"]["agrees"]
    assert by["Video input beats text only"]["observed"] == "higher (significant)"
    drop = by["Naive video + text concatenation drops recall vs video only"]
    assert drop["observed"] == "same" and not drop["agrees"]      # 0.595 vs 0.60: no drop
    assert by["CoT reaches peak recall comparable to video only"]["agrees"]
    assert by["CoT converges faster in match rate"]["agrees"]
    v = paper_verdicts({"video": res(0.6), "text": res(0.5)})
    assert v[0]["agrees"] and v[0]["observed"] == "higher (within noise)"


def test_unknown_group_is_refused():
    with pytest.raises(ConfigError, match="groups"):
        AblationConfig(groups=("colour",)).check()
