"""The full-depth pass: the short recalled prompt through the whole model, greedy by default."""

from __future__ import annotations

import torch
from transformers import GenerationConfig


@torch.inference_mode()
def generate(model, tokenizer, prompt_ids: torch.Tensor, max_new_tokens: int, streamer=None) -> tuple[str, torch.Tensor]:
    """(decoded answer, new token ids) for a 1-D prompt, decoded greedily."""
    device = next(model.parameters()).device
    ids = prompt_ids.view(1, -1).to(device)
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=model.generation_config.eos_token_id or tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config, streamer=streamer)
    new = out[0, ids.shape[1]:].cpu()
    return tokenizer.decode(new, skip_special_tokens=True).strip(), new
