"""The policy: Flax NNX Qwen3 (qwen3.py), HF conversion (hf.py), tokenizer (tokenizer.py)."""
