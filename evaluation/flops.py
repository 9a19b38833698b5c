"""The useful work of a streaming prefill, counted from the model's shapes: what the benchmark
divides by the time to give a rate."""

from __future__ import annotations

import torch

from ilre import arch
from ilre.prefiller import StreamingPrefiller


def keys_attended(n_tokens: int, sink: int, window: int, chunk_size: int) -> int:
    """Sum over all streamed tokens of the keys each one attends to in a lower layer.

    A chunk starting at stream position s sees the cache of min(s, sink + window) tokens; its
    i-th token (0-based) also sees chunk tokens 0..i, causally.
    """
    total = 0
    for start in range(0, n_tokens, chunk_size):
        c = min(chunk_size, n_tokens - start)
        total += c * min(start, sink + window) + c * (c + 1) // 2
    return total




def prefill_flops(prefiller: StreamingPrefiller, n_tokens: int) -> dict:
    """Useful FLOPs of streaming ``n_tokens`` to the prefiller's layer, from the model's own shapes.

    Per token: 2 x the weights of every linear map of the layers below ``layer`` (q, k, v, o
    and the MLP) plus 2 x those of k_proj at ``layer``, counted on the model's own layers (int8
    stand-ins do the same work); per token and lower layer, attention costs
    4 x keys x heads x head_dim (q.k and p.v), with the keys that token actually attends to
    (:func:`keys_attended`: masked-out positions are not counted). Norms, RoPE, softmax and
    activations are left out (a few percent at most).
    """
    p = prefiller
    dec = arch.decoder_of(p.model)
    params = dec.layers[p.layer].self_attn.k_proj.weight.numel() + sum(
        m.weight.numel() for layer in dec.layers[: p.layer] for m in layer.modules()
        if isinstance(m, torch.nn.Linear))
    keys = keys_attended(n_tokens, p.sink, p.lag_memory + p.window, p.chunk_size)
    linear, attention = 2 * params * n_tokens, 4 * keys * dec.num_heads * dec.head_dim * p.layer
    return {"linear": linear, "attention": attention, "total": linear + attention,
            "params_per_token": params, "mean_keys": keys / max(n_tokens, 1)}
