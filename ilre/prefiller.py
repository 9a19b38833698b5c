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
causally: each token sees between ``window`` and ``window + chunk_size`` recent tokens. With a
LagKV memory ``lag_memory`` (the authors' LRSA policy, off by default), each lower layer also keeps that many
tokens of the history that left its window, chosen by LagKV: still bounded, still linear.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import arch
from .key_cache import KeyCache
from .config import PrefillConfig, default_chunk
from .lagkv import LagKV, pick_memory
from .threads import ThreadTuner

log = logging.getLogger(__name__)


def chunk_mask(chunk: int, cached: int, device: torch.device) -> torch.Tensor:
    """Which keys a chunk's tokens attend to: every cached one, and the chunk's own causally.

    That is causal attention aligned to the bottom-right corner, shaped so each backend keeps its
    fused kernel: on CUDA, torch's lower-right ``CausalBias``, which flash and memory-efficient
    attention take without any mask tensor (a dense mask rules flash out); elsewhere a boolean
    [chunk, cached + chunk] tensor, which the CPU's fused kernel takes, and which torch_npu's SDPA
    hands to Ascend's FlashAttentionScore in float16/bfloat16.
    """
    if device.type == "cuda":
        from torch.nn.attention.bias import causal_lower_right

        return causal_lower_right(chunk, cached + chunk)
    return dense_chunk_mask(chunk, cached, device)


def dense_chunk_mask(chunk: int, cached: int, device: torch.device) -> torch.Tensor:
    """``chunk_mask`` as a boolean [chunk, cached + chunk] tensor (True: attended)."""
    return torch.ones(chunk, cached + chunk, dtype=torch.bool, device=device).tril(cached)


@dataclass
class LayerWindow:
    """Sink + sliding-window K/V of one layer below the retrieval layer, before RoPE: [Hkv, n, D].

    With a LagKV memory (``StreamingPrefiller.lag_memory``) the ``memory`` tokens after the sink are
    the best of the history that left the window, with their LagKV ``scores`` [Hkv, memory].
    """

    keys: torch.Tensor
    values: torch.Tensor
    memory: int = 0
    scores: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return self.keys.shape[1]


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
    sink: int = PrefillConfig.sink
    window: int = PrefillConfig.window
    chunk_size: int | None = PrefillConfig.chunk_size
    """None: the default chunk of this prefill's precision (int8 stand-in ``layers`` or the model's)."""
    lag_memory: int = PrefillConfig.lag_memory
    progress: bool | Callable[[int, int], None] = False
    """True: a progress bar; a function: called with (tokens streamed, tokens in all) after each chunk."""
    layers: Sequence[torch.nn.Module] | None = None
    """Stand-ins for the model's layers 0..layer (ilre.quantize.int8_layers); None: its own."""
    key_dtype: torch.dtype | None = None
    """Precision of the kept keys (``PrefillConfig.key_dtype``); None: the model's own."""
    decoder: arch.Decoder | None = None
    """The model's parts (``arch.decoder_of(model)``), when the caller has them already."""
    key_device: torch.device | None = None
    """Where the kept keys live (``PrefillConfig.key_memory``); None: the model's device."""

    def __post_init__(self) -> None:
        # The settings are checked by their one owner, the config.
        PrefillConfig(sink=self.sink, window=self.window, chunk_size=self.chunk_size, lag_memory=self.lag_memory)
        self.chunk_size = self.chunk_size or default_chunk("int8" if self.layers is not None else "model")
        self.decoder = self.decoder or arch.decoder_of(self.model)
        self.decoder.check_layer(self.layer)
        if self.layers is not None:
            if len(self.layers) <= self.layer:
                raise ValueError(f"{len(self.layers)} stand-in layers given, layers 0..{self.layer} are needed")
            self.decoder = replace(self.decoder, layers=self.layers)

    @classmethod
    def of(cls, model: torch.nn.Module, layer: int, config: PrefillConfig, **runtime) -> "StreamingPrefiller":
        """The prefiller of ``config``; ``runtime``: progress, layers, decoder, key_device."""
        return cls(model, layer, config.sink, config.window, config.chunk_size, config.lag_memory,
                   key_dtype=getattr(torch, config.key_dtype), **runtime)

    @property
    def _param(self) -> torch.Tensor:
        return self.decoder.embed.weight

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, capture: tuple[int, ...] = (),
                after: StreamState | None = None) -> StreamState:
        """Stream ``input_ids`` (1-D) through the lower layers; keep every key of ``layer``.

        ``capture`` names lower layers whose keys are kept as well, so that one pass serves a
        comparison of many candidate layers. ``after``: a stream to go on from (its windows and
        keys; not changed), as if ``input_ids`` had followed its tokens (without LagKV memory).
        """
        ids = input_ids.reshape(-1).to(self._param.device)
        dec = self.decoder
        empty = self._param.new_empty(dec.num_kv_heads, 0, dec.head_dim)
        where = self.key_device or self._param.device
        pin = where.type == "cpu" and self._param.device.type != "cpu"
        allocate = lambda layer: KeyCache.allocate(dec.num_kv_heads, ids.numel(), dec.head_dim, layer,  # noqa: E731
                                                   self.key_dtype or self._param.dtype, where, pin)
        if after is not None:
            if self.lag_memory or capture:
                raise ValueError("a stream with a LagKV memory or captured layers cannot be continued: encode it again")
            state = StreamState(list(after.windows), after.key_cache.grown(ids.numel()), after.seen)
        else:
            state = StreamState(
                windows=[LayerWindow(empty, empty) for _ in range(self.layer)],
                key_cache=allocate(self.layer),
                captured={i: allocate(i) for i in sorted(set(capture)) if i < self.layer},
            )
        bar = tqdm(total=ids.numel(), unit="tok", desc=f"prefill to layer {self.layer}",
                   disable=self.progress is not True, leave=False, dynamic_ncols=True)
        tuner = ThreadTuner() if ids.device.type == "cpu" else None
        try:
            self._stream(ids, state, tuner, bar)
        finally:
            if tuner is not None:
                tuner.close()
        bar.close()
        return state

    def _stream(self, ids: torch.Tensor, state: StreamState, tuner: ThreadTuner | None, bar) -> None:
        dec = self.decoder
        for start in range(0, ids.numel(), self.chunk_size):
            chunk = ids[start:start + self.chunk_size]
            hidden = self._lower_layers(chunk, state.windows, update=True, keys_out=state.captured,
                                        each_layer=tuner.step if tuner is not None else None)
            top = dec.layers[self.layer]
            state.key_cache.append(arch.project_keys(top, arch.input_norm(top, hidden), dec.head_dim))
            state.seen += chunk.numel()
            bar.update(chunk.numel())
            if callable(self.progress):
                self.progress(state.seen, ids.numel())

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
                      queries_out: dict[int, torch.Tensor] | None = None,
                      each_layer: Callable[[], None] | None = None) -> torch.Tensor:
        """``each_layer`` is called after every layer: a chunk on a crowded CPU can take seconds,
        and the thread tuner must not wait that long to react."""
        dec = self.decoder
        hidden = dec.embed(ids)
        c = ids.numel()
        n = windows[0].length if windows else 0
        cos, sin = arch.rope_tables(dec, torch.arange(n + c, device=ids.device), hidden.dtype)
        mask = chunk_mask(c, n, ids.device)
        for i, layer in enumerate(dec.layers[: self.layer]):
            normed = arch.input_norm(layer, hidden)
            q = arch.project_queries(layer, normed, dec.head_dim)
            k = arch.project_keys(layer, normed, dec.head_dim)
            v = arch.project_values(layer, normed, dec.head_dim)
            if keys_out and i in keys_out:
                keys_out[i].append(k)
            if queries_out is not None and i in queries_out:
                queries_out[i] = q
            keys = torch.cat((windows[i].keys, k), dim=1)
            values = torch.cat((windows[i].values, v), dim=1)
            out = self._attend(layer, arch.rotate(q, cos[n:], sin[n:]), arch.rotate(keys, cos, sin), values, mask)
            hidden = arch.finish_layer(layer, hidden, out)
            if update:
                windows[i] = self._trim(windows[i], keys, values)
            if each_layer is not None:
                each_layer()
        return hidden

    def _attend(self, layer, q, k, v, mask) -> torch.Tensor:
        g = self.decoder.groups
        if g > 1:  # grouped-query attention: each KV head serves g query heads
            k = k.repeat_interleave(g, dim=0)
            v = v.repeat_interleave(g, dim=0)
        out = F.scaled_dot_product_attention(q[None], k[None], v[None], attn_mask=mask,
                                             scale=layer.self_attn.scaling)
        return out[0]

    def _trim(self, old: LayerWindow, keys: torch.Tensor, values: torch.Tensor) -> LayerWindow:
        """The cache after a chunk: ``keys``/``values`` are the old one's and the chunk's."""
        if self.lag_memory:
            return self._remember(old, keys, values)
        if keys.shape[1] <= self.sink + self.window:
            return LayerWindow(keys, values)
        tail = keys.shape[1] - self.window
        keep = lambda x: torch.cat((x[:, : self.sink], x[:, tail:]), dim=1)  # noqa: E731
        return LayerWindow(keep(keys), keep(values))

    def _remember(self, old: LayerWindow, keys: torch.Tensor, values: torch.Tensor) -> LayerWindow:
        """LRSA's policy: tokens leaving the window are judged by LagKV in whole partitions of ``lag``
        (each against the next, still in the window), and the best ``memory`` of them and of the
        memory so far stay, in their original order; a partial partition waits in the window."""
        lag, start = LagKV.lag, self.sink + old.memory
        parts = (keys.shape[1] - start - self.window) // lag
        if parts < 1:
            return LayerWindow(keys, values, old.memory, old.scores)
        end = start + parts * lag
        judge = LagKV(sink=0)
        new = judge.scores(keys[:, start:end + lag], values[:, start:end + lag])[:, : parts * lag]
        scores = new if old.scores is None else torch.cat((old.scores, new), dim=1)
        mem_k, mem_v, scores = pick_memory(keys[:, self.sink:end], values[:, self.sink:end], scores, self.lag_memory)
        cat = lambda x, m: torch.cat((x[:, : self.sink], m, x[:, end:]), dim=1)  # noqa: E731
        return LayerWindow(cat(keys, mem_k), cat(values, mem_v), mem_k.shape[1], scores)
