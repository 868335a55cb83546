"""Same seeds, same training: the losses of a short fine-tune and of a short retriever run,
recorded from the code before ``finetune`` and ``train_retriever`` were split into named setup
and save helpers around their loops (issue 13 step 5). Reordering a random draw, a batch or an
optimizer step changes these numbers; the relative tolerance only absorbs float summation
order between CPUs (the same machine reproduces them bit for bit)."""

from __future__ import annotations

import pytest
from mllm_truth import TEST_TINY, truth_examples, truth_tables

from serendip.data.io import read_table
from serendip.mllm.config import FinetuneConfig
from serendip.mllm.tiny import TinyVLMConfig
from serendip.mllm.train import finetune
from serendip.prompts import PromptConfig
from serendip.retriever.train import RetrieverConfig, train_retriever


def test_finetune_losses_are_pinned(synth_dir, tmp_path):
    prompt = PromptConfig("video", 2)
    examples, clusters, _, items = truth_examples(synth_dir, prompt, n_items=48)
    cfg = FinetuneConfig(steps=8, batch_size=6, eval_every=4, save_every=4,
                         eval_max_examples=6, reasoning_tokens=12,
                         tiny=TinyVLMConfig(**TEST_TINY))
    res = finetune(examples, clusters, cfg, tmp_path / "m", prompt_config=prompt, items=items,
                   progress=False, device="cpu")
    assert [h["step"] for h in res.history] == [4, 8]
    assert [h["train_loss"] for h in res.history] == pytest.approx([6.113067, 5.808155],
                                                                   rel=1e-4)


def test_train_retriever_losses_are_pinned(synth_dir, tmp_path):
    _, _, item_clusters = truth_tables(synth_dir)
    res = train_retriever(read_table(synth_dir, "interactions"), item_clusters,
                          RetrieverConfig(epochs=3, patience=2, torchscript=False),
                          tmp_path / "r")
    assert res.metrics["train_loss"] == pytest.approx([4.555767, 4.216362, 4.122924], rel=1e-4)
    assert res.metrics["valid_ndcg@10"] == pytest.approx([0.423645, 0.425792, 0.433914],
                                                         rel=1e-4)
    assert res.metrics["best_epoch"] == 3
