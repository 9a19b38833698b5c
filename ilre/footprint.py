"""How much memory a context needs beyond the loaded model, and where the keys of l_R are kept.

An estimate, made before the long pass so that a context too large is refused at once (with what
to change) instead of failing an hour in. Each term is the size of what holds it; the constants
below are the few that are not read off the model and the configuration.
"""

from __future__ import annotations

import torch

from . import arch
from .config import ILReConfig
from .lagkv import LagKV

ID_OFFSET_BYTES = 24
"""Per context token: its id and its two character offsets, as int64 while encoding."""
ACTIVATIONS = 12
"""Hidden-size activations of one prefill chunk alive at once (norms, q/k/v, MLP's up, gate, down)."""
QUESTION_TOKENS = 64
"""A generous question length: the query rows the scorer holds per head."""
TOKENS_PER_UNIT = 8
"""The fewest tokens a recall unit has on average: the scorer keeps a best score per unit."""
ANSWER_TENSORS = 4
"""Per layer and read token in the full-depth answer: its key, its value and two activations."""
FLOAT32_BYTES = 4


def memory_needed(config: ILReConfig, decoder: arch.Decoder, n_tokens: int, n_prefix: int,
                  precision: str) -> dict[str, int]:
    """Bytes a context of ``n_tokens`` tokens (after ``n_prefix`` template tokens) adds to the
    loaded model, by what holds them; ``precision``: the prefill's, 'int8' or 'model'."""
    c, dec = config, decoder
    key_bytes = torch.empty(0, dtype=getattr(torch, c.key_dtype)).element_size()
    act = dec.embed.weight.element_size()
    n = n_tokens + n_prefix
    query_rows = dec.num_heads * QUESTION_TOKENS
    chunk = c.chunk_for(precision)
    hidden = dec.embed.weight.shape[1]
    # a lower layer's cache: sink, LagKV memory (plus a partial partition waiting), window
    cached = c.sink + c.window + (c.lag_memory + LagKV.lag - 1 if c.lag_memory else 0)
    return {
        "keys of l_R": dec.num_kv_heads * n * dec.head_dim * key_bytes,
        "token ids and offsets": n_tokens * ID_OFFSET_BYTES,
        "windows": 2 * c.layer * dec.num_kv_heads * (cached + chunk) * dec.head_dim * act,
        "prefill activations": ACTIVATIONS * chunk * max(hidden, dec.num_heads * dec.head_dim) * act
                               + dec.num_heads * chunk * (cached + chunk) * FLOAT32_BYTES,
        "scoring": query_rows * (min(c.block_size, n) + n // TOKENS_PER_UNIT + 1) * FLOAT32_BYTES,
        "answer": ANSWER_TENSORS * min(c.budget, n_tokens) * hidden * dec.num_layers * act,
    }


def key_device(config: ILReConfig, device: torch.device, need: dict[str, int]) -> torch.device:
    """Where the keys of l_R are kept (``key_memory``), given what the context needs (``need``)."""
    from device.memory import available_bytes

    if device.type == "cpu" or config.key_memory == "device":
        return device
    if config.key_memory == "host":
        return torch.device("cpu")
    return device if sum(need.values()) <= available_bytes(str(device)) else torch.device("cpu")


def check_memory(config: ILReConfig, device: torch.device, need: dict[str, int], n_tokens: int) -> None:
    """Refuse, before the long pass, a context that would not fit in the memory available, saying
    what to change. Keys kept in host memory (``key_memory``) are counted there, the rest on ``device``."""
    from device.memory import available_bytes

    need = dict(need)
    if key_device(config, device, need).type != device.type:
        keys, free_host = need.pop("keys of l_R"), available_bytes("cpu")
        if keys > free_host:
            raise MemoryError(f"the keys of this context of {n_tokens} tokens need about {keys / 2**30:.2f} GiB "
                              f"of host memory, and {free_host / 2**30:.2f} GiB is available: use a shorter "
                              "context (split the document)")
    total, free = sum(need.values()), available_bytes(str(device))
    if total <= free:
        return
    gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
    parts = ", ".join(f"{k} {gib(v)}" for k, v in need.items() if v > total / 20)
    hint = "a shorter context (split the document)"
    if "keys of l_R" in need and device.type != "cpu" and total - need["keys of l_R"] <= free:
        hint = f"key_memory 'host' (--key-memory host; about {gib(total - need['keys of l_R'])} on the device)"
    elif config.key_dtype == "float32":
        half = total - need["keys of l_R"] // 2
        if half <= free:
            hint = f"key_dtype 'float16' (--key-dtype float16; about {gib(half)})"
    per_token = total / max(n_tokens, 1)
    raise MemoryError(f"this context of {n_tokens} tokens needs about {gib(total)} beyond the model ({parts}), "
                      f"and {gib(free)} is available: use {hint}; about {int(free / per_token)} tokens fit")
