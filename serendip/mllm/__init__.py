"""The multimodal LLM: model building/loading, fine-tuning, trie-constrained decoding.

Submodules (imported on demand, they pull in torch/transformers):

* :mod:`.tiny`      — the offline tiny default VLM and its locally trained tokenizer
* :mod:`.loading`   — any Hugging Face VLM from a local directory, prompt formatting
* :mod:`.data`      — examples → model inputs, collation with prompt masking
* :mod:`.trie`      — token trie over cluster descriptions for controlled generation
* :mod:`.train`     — ``FinetuneConfig`` + ``finetune()`` (full or LoRA, resumable)
* :mod:`.inference` — ``ClusterPredictor`` (top-k clusters with scores), save/load
* :mod:`.evaluation`— held-out metrics and the non-learned baselines
* :mod:`.ablation`  — the paper's Figures 3-5 on the synthetic platform
"""
