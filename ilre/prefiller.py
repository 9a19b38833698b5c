"""Streaming chunked prefill, truncated at the retrieval layer.

The context is fed in chunks. Each layer below the retrieval layer keeps only ``sink`` first
tokens plus the last ``window`` tokens of K/V (StreamingLLM's Λ-shaped attention), so the cost
is linear in the context length and memory is bounded. At the retrieval layer only the keys are
computed, and they are kept for the whole context in a :class:`KeyCache`. Nothing above that
layer runs on the context.

Positions are relative to the streaming cache: the cached keys are kept before RoPE and rotated
at 0..n-1 for every chunk, the chunk at n..n+c-1, so no distance ever exceeds
sink + window + chunk, whatever the context length. When the window covers the whole context
this is exactly the model's own forward pass.

A chunk's tokens see the sink, the window (the ``window`` tokens before the chunk) and the chunk
causally: each token sees between ``window`` and ``window + chunk_size`` recent tokens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import arch
from .key_cache import KeyCache

log = logging.getLogger(__name__)

try:  # SDPA's enable_gqa argument (torch >= 2.5)
    _SDPA_GQA = "enable_gqa" in (F.scaled_dot_product_attention.__doc__ or "")
except Exception:  # pragma: no cover
    _SDPA_GQA = False


class LayerWindow:
    """Sink + sliding-window K/V of one layer below the retrieval layer, before RoPE: [Hkv, n, D].

    The tokens live in preallocated buffers with room for one more chunk: a chunk's keys and
    values are written in place after the window (no concatenation of growing tensors), and
    trimming back to sink + window copies the kept tokens into a second buffer pair, which then
    becomes the current one. ``keys`` and ``values`` are views of the current buffers.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int | None = None) -> None:
        capacity = max(capacity or 0, keys.shape[1])
        shape = (keys.shape[0], capacity, keys.shape[2])
        self._buffers = [(keys.new_empty(shape), values.new_empty(shape)) for _ in range(2)]
        self._current = 0
        self._sink_copied = False
        self.length = keys.shape[1]
        k, v = self._buffers[0]
        k[:, : self.length] = keys
        v[:, : self.length] = values

    @property
    def keys(self) -> torch.Tensor:
        return self._buffers[self._current][0][:, : self.length]

    @property
    def values(self) -> torch.Tensor:
        return self._buffers[self._current][1][:, : self.length]

    @property
    def capacity(self) -> int:
        return self._buffers[0][0].shape[1]

    def extended(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The window followed by ``k``/``v`` [Hkv, c, D], without changing the window's own tokens."""
        n, c = self.length, k.shape[1]
        if n + c > self.capacity:  # longer than one chunk (a long query): concatenate
            return torch.cat((self.keys, k), dim=1), torch.cat((self.values, v), dim=1)
        kb, vb = self._buffers[self._current]
        kb[:, n:n + c] = k
        vb[:, n:n + c] = v
        return kb[:, : n + c], vb[:, : n + c]

    def advance(self, c: int, sink: int, window: int) -> None:
        """Take the ``c`` tokens written by ``extended`` into the window; keep sink + last ``window``."""
        total = self.length + c
        if total <= sink + window:
            self.length = total
            return
        kb, vb = self._buffers[self._current]
        nk, nv = self._buffers[1 - self._current]
        if not self._sink_copied:  # the sink never changes once full: copy it to the other buffer once
            nk[:, :sink] = kb[:, :sink]
            nv[:, :sink] = vb[:, :sink]
            self._sink_copied = True
        nk[:, sink:sink + window] = kb[:, total - window:total]
        nv[:, sink:sink + window] = vb[:, total - window:total]
        self._current = 1 - self._current
        self.length = sink + window


@dataclass
class StreamState:
    """What the streaming prefill leaves behind: the windows below the retrieval layer and its keys."""

    windows: list[LayerWindow]
    key_cache: KeyCache
    seen: int = 0
    captured: dict[int, KeyCache] = field(default_factory=dict)
    """Keys of lower layers kept too (``capture``), for the layer probe."""


@dataclass
class StreamingPrefiller:
    """Runs a Llama-family model on a token stream up to ``layer`` only.

    ``layer`` is 0-based: layers 0..layer-1 run in full with sink + window caches, layer
    ``layer`` computes keys (for the context) or queries (for the query) and nothing else.
    """

    model: torch.nn.Module
    layer: int
    sink: int = 4
    window: int = 1024
    chunk_size: int = 512
    progress: bool = False

    def __post_init__(self) -> None:
        self.decoder = arch.decoder_of(self.model)
        n = self.decoder.num_layers
        if not 0 <= self.layer < n:
            raise ValueError(f"layer {self.layer} is out of range: the model has layers 0..{n - 1}")
        if self.sink < 0 or self.window < 0:
            raise ValueError("sink and window must be >= 0")
        if self.chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self._rope_cache: dict = {}
        self._mask_key, self._mask_value = None, None

    @property
    def _param(self) -> torch.Tensor:
        return self.decoder.embed.weight

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, capture: tuple[int, ...] = ()) -> StreamState:
        """Stream ``input_ids`` (1-D) through the lower layers; keep every key of ``layer``.

        ``capture`` names lower layers whose keys are kept as well, so that one pass serves a
        comparison of many candidate layers.
        """
        ids = input_ids.reshape(-1).to(self._param.device)
        dec = self.decoder
        empty = self._param.new_empty(dec.num_kv_heads, 0, dec.head_dim)
        allocate = lambda layer: KeyCache.allocate(dec.num_kv_heads, ids.numel(), dec.head_dim, layer,  # noqa: E731
                                                   self._param.dtype, self._param.device)
        capacity = self.sink + self.window + self.chunk_size
        state = StreamState(
            windows=[LayerWindow(empty, empty, capacity) for _ in range(self.layer)],
            key_cache=allocate(self.layer),
            captured={i: allocate(i) for i in sorted(set(capture)) if i < self.layer},
        )
        bar = tqdm(total=ids.numel(), unit="tok", desc=f"prefill to layer {self.layer}",
                   disable=not self.progress, leave=False, dynamic_ncols=True)
        for start in range(0, ids.numel(), self.chunk_size):
            chunk = ids[start:start + self.chunk_size]
            hidden = self._lower_layers(chunk, state.windows, update=True, keys_out=state.captured)
            top = dec.layers[self.layer]
            state.key_cache.append(arch.project_keys(top, arch.input_norm(top, hidden), dec.head_dim))
            state.seen += chunk.numel()
            bar.update(chunk.numel())
        bar.close()
        return state

    @torch.inference_mode()
    def query_states(self, state: StreamState, query_ids: torch.Tensor) -> torch.Tensor:
        """Pre-RoPE queries [H, T, D] of ``layer`` for tokens that follow the streamed context.

        The windows are read, not updated, so one prefilled context serves many queries.
        """
        return self.query_states_by_layer(state, query_ids)[self.layer]

    @torch.inference_mode()
    def query_states_by_layer(self, state: StreamState, query_ids: torch.Tensor) -> dict[int, torch.Tensor]:
        """Pre-RoPE queries of ``layer`` and of every captured layer, from one pass."""
        ids = query_ids.reshape(-1).to(self._param.device)
        queries: dict[int, torch.Tensor] = {i: None for i in state.captured}
        hidden = self._lower_layers(ids, state.windows, update=False, queries_out=queries)
        top = self.decoder.layers[self.layer]
        queries[self.layer] = arch.project_queries(top, arch.input_norm(top, hidden), self.decoder.head_dim)
        return queries

    def _lower_layers(self, ids: torch.Tensor, windows: list[LayerWindow], update: bool,
                      keys_out: dict[int, KeyCache] | None = None,
                      queries_out: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        dec = self.decoder
        hidden = dec.embed(ids)
        c = ids.numel()
        n = windows[0].length if windows else 0
        cos, sin = self._rope(n + c, hidden.dtype, ids.device)
        mask = self._mask(c, n, hidden.dtype, ids.device)
        for i, layer in enumerate(dec.layers[: self.layer]):
            normed = arch.input_norm(layer, hidden)
            q = arch.project_queries(layer, normed, dec.head_dim)
            k = arch.project_keys(layer, normed, dec.head_dim)
            v = arch.project_values(layer, normed, dec.head_dim)
            if keys_out and i in keys_out:
                keys_out[i].append(k)
            if queries_out is not None and i in queries_out:
                queries_out[i] = q
            keys, values = windows[i].extended(k, v)
            out = self._attend(layer, arch.rotate(q, cos[n:], sin[n:]), arch.rotate(keys, cos, sin), values, mask)
            hidden = arch.finish_layer(layer, hidden, out)
            if update:
                windows[i].advance(c, self.sink, self.window)
        return hidden

    def _rope(self, length: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin for positions 0..length-1, computed once per length (the model's own rotary module).

        Only a handful of lengths occur (the first chunks, then sink + window + chunk), so a
        small cache removes the per-chunk recomputation; tables are made for exactly the
        length asked, as before, so RoPE variants that depend on it get the same values.
        """
        key = (length, dtype, device)
        tables = self._rope_cache.get(key)
        if tables is None:
            tables = arch.rope_tables(self.decoder, torch.arange(length, device=device), dtype)
            if len(self._rope_cache) >= 8:
                self._rope_cache.pop(next(iter(self._rope_cache)))
            self._rope_cache[key] = tables
        return tables

    def _mask(self, c: int, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Additive mask [c, n + c]: cached tokens all visible (0), the chunk itself causal (-inf above).

        Made once per shape, as the float mask that attention would otherwise build from a
        boolean one in every layer (same values: 0 where visible, -inf elsewhere).
        """
        key = (c, n, dtype, device)
        if self._mask_key != key:
            mask = torch.zeros(c, n + c, dtype=dtype, device=device)
            mask[:, n:] = torch.full((c, c), float("-inf"), dtype=dtype, device=device).triu(1)
            self._mask_key, self._mask_value = key, mask
        return self._mask_value

    def _attend(self, layer, q, k, v, mask) -> torch.Tensor:
        g = self.decoder.groups
        if g > 1 and self._native_gqa(q.device):
            out = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask,
                                                 scale=layer.self_attn.scaling, enable_gqa=True)
            return out[0]
        if g > 1:  # grouped-query attention: each KV head serves g query heads
            k = k.repeat_interleave(g, dim=0)
            v = v.repeat_interleave(g, dim=0)
        out = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask,
                                             scale=layer.self_attn.scaling)
        return out[0]

    @staticmethod
    def _native_gqa(device: torch.device) -> bool:
        """SDPA's own grouped-query attention (torch >= 2.5), used on CPU, where it was measured to
        give the same result as repeating K/V, without the copies. Elsewhere K/V are repeated:
        with a mask, some CUDA and NPU kernels do not take ``enable_gqa``."""
        return device.type == "cpu" and _SDPA_GQA
