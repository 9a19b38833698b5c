"""The identity of a model: what an encoding belongs to, so that an index made by one model is
never answered by another."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def _weight_sample(tensor: torch.Tensor, count: int = 4096) -> bytes:
    """``count`` evenly spaced values of a tensor, rounded to bfloat16 (so the same weights in
    float32 or bfloat16 give the same bytes)."""
    flat = tensor.detach().reshape(-1)
    step = max(1, flat.numel() // count)
    return flat[::step][:count].to("cpu", torch.bfloat16).float().numpy().tobytes()


def fingerprint(model, tokenizer) -> str:
    """A short hash of the model's config, its tokenizer and a sample of every weight.

    Cheap at any model size (a few thousand values per tensor), and enough to tell two models,
    two tokenizers or two fine-tunes apart.
    """
    h = hashlib.blake2b(digest_size=8)
    config = {k: v for k, v in model.config.to_dict().items()
              if k not in ("_name_or_path", "transformers_version", "torch_dtype", "dtype", "_attn_implementation")}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(f"{name}{tuple(tensor.shape)}".encode())
        h.update(_weight_sample(tensor))
    return h.hexdigest()


def identity(model, tokenizer, name: str, source: str | None) -> dict[str, Any]:
    """The model an encoding belongs to: its name, the fingerprint of config, tokenizer and
    weights, its dtype, and where it was loaded from (None: embedded, or passed in)."""
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return {"name": name, "fingerprint": fingerprint(model, tokenizer), "dtype": dtype, "source": source}
