"""The one place where ILRe reaches into transformers' Llama-family internals.

ILRe drives decoder layers by hand (to stop at the retrieval layer, to keep only sink + window
caches below it, and to compute only keys at it), so it depends on the submodule names of the
Llama modelling code: ``input_layernorm``, ``self_attn.{q,k,v,o}_proj`` (and Qwen3's
``q_norm``/``k_norm``), ``post_attention_layernorm``, ``mlp``, and the model's ``rotary_emb``.
Llama, Mistral, Qwen2/2.5 and Qwen3 share them. Anything else is refused with a clear error
rather than silently computing something different.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

import torch
import transformers
from packaging.version import Version
from torch import nn

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
MIN_TRANSFORMERS = Version("4.56")


class UnsupportedModelError(ValueError):
    """The model is not a causal LM of an architecture ILRe knows how to drive."""


def cache_argument(model: nn.Module, cache) -> dict:
    """The keyword that hands a KV cache to ``model``'s forward: ``cache`` since transformers 5's
    rename (``past_key_values`` is deprecated there and warns on every step), before it the old name."""
    return {"cache": cache} if "cache" in inspect.signature(model.forward).parameters else {"past_key_values": cache}


def check_supported(config) -> None:
    """Raise UnsupportedModelError unless the config is a supported Llama-family model."""
    if Version(transformers.__version__.split("+")[0]) < MIN_TRANSFORMERS:
        raise UnsupportedModelError(
            f"transformers {transformers.__version__} is too old: ILRe needs >= {MIN_TRANSFORMERS} "
            "(pip install -U transformers)"
        )
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"model architecture '{model_type}' is not supported: ILRe drives Llama-family "
            f"decoders ({', '.join(SUPPORTED_MODEL_TYPES)}); pass --model with one of those"
        )


@dataclass(frozen=True)
class Decoder:
    """The parts of a causal LM that the streaming prefill and the scorer call directly."""

    model: nn.Module
    embed: nn.Module
    layers: nn.ModuleList
    rotary: nn.Module
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def groups(self) -> int:
        return self.num_heads // self.num_kv_heads

    def check_layer(self, layer: int, what: str = "layer") -> int:
        """``layer`` if the model has it, else a ValueError saying which layers it has."""
        if not 0 <= layer < self.num_layers:
            raise ValueError(f"{what} {layer} is out of range: the model has layers 0..{self.num_layers - 1}")
        return layer


def decoder_of(model: nn.Module) -> Decoder:
    """Locate the embedding, decoder layers and rotary module of a supported causal LM."""
    config = model.config
    check_supported(config)
    base = getattr(model, "model", None)
    if base is None or not hasattr(base, "layers") or not hasattr(base, "rotary_emb"):
        raise UnsupportedModelError(
            f"{type(model).__name__} does not expose .model.layers and .model.rotary_emb: "
            "load it with AutoModelForCausalLM"
        )
    attn = base.layers[0].self_attn
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        if not hasattr(attn, name):
            raise UnsupportedModelError(f"attention module {type(attn).__name__} has no {name}")
    return Decoder(
        model=model,
        embed=base.embed_tokens,
        layers=base.layers,
        rotary=base.rotary_emb,
        num_heads=config.num_attention_heads,
        num_kv_heads=config.num_key_value_heads,
        head_dim=head_dim,
    )


def _project(linear: nn.Module, norm: nn.Module | None, normed: torch.Tensor, head_dim: int) -> torch.Tensor:
    """[T, hidden] -> [H, T, D] through a projection and, for Qwen3, its per-head RMSNorm."""
    x = linear(normed).view(normed.shape[0], -1, head_dim)
    if norm is not None:
        x = norm(x)
    return x.transpose(0, 1)


def project_keys(layer: nn.Module, normed: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Pre-RoPE keys [Hkv, T, D] of already-normalised hidden states [T, hidden]."""
    attn = layer.self_attn
    return _project(attn.k_proj, getattr(attn, "k_norm", None), normed, head_dim)


def project_queries(layer: nn.Module, normed: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Pre-RoPE queries [H, T, D]."""
    attn = layer.self_attn
    return _project(attn.q_proj, getattr(attn, "q_norm", None), normed, head_dim)


def project_values(layer: nn.Module, normed: torch.Tensor, head_dim: int) -> torch.Tensor:
    return _project(layer.self_attn.v_proj, None, normed, head_dim)


def input_norm(layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    return layer.input_layernorm(hidden)


def finish_layer(layer: nn.Module, residual: torch.Tensor, attn_out: torch.Tensor) -> torch.Tensor:
    """Output projection, residual, post-attention norm and MLP: the rest of a decoder layer.

    ``attn_out`` is [H, T, D]; the result is the layer's output hidden states [T, hidden].
    """
    t = attn_out.shape[1]
    hidden = residual + layer.self_attn.o_proj(attn_out.transpose(0, 1).reshape(t, -1))
    return hidden + layer.mlp(layer.post_attention_layernorm(hidden))


def rope_tables(dec: Decoder, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, D] for integer positions, from the model's own rotary module (any RoPE scaling)."""
    probe = torch.empty(0, dtype=dtype, device=positions.device)
    cos, sin = dec.rotary(probe, positions.view(1, -1))
    return cos[0], sin[0]


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply RoPE to [H, T, D] with tables [T, D] (the rotate-half convention of the Llama family)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class _Stop(Exception):
    """Ends a forward pass at a hook (private: never leaves :func:`attention_input`)."""


def attention_input(model: nn.Module, input_ids: torch.Tensor, layer: int) -> torch.Tensor:
    """What layer ``layer``'s attention reads: the normalised hidden states [T, hidden] of ``input_ids`` [T].

    Runs the model's own embedding and layers ``0..layer-1`` over the whole sequence (its own
    attention implementation, full causal attention, no cache), then stops at the input of
    ``layer``'s self-attention: neither that attention nor any layer above it runs.
    """
    dec = decoder_of(model)
    dec.check_layer(layer)
    got: list[torch.Tensor] = []

    def hook(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        got.append(hidden[0])
        raise _Stop

    device = next(model.parameters()).device
    handle = dec.layers[layer].self_attn.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model.model(input_ids=input_ids.reshape(1, -1).to(device), use_cache=False)
    except _Stop:
        pass
    finally:
        handle.remove()
    if not got:
        raise UnsupportedModelError(f"layer {layer}'s self-attention was never called: cannot stop the pass there")
    return got[0]


def answer_cache(model: nn.Module, capacity: int) -> dict:
    """Keyword arguments for ``model.generate`` that give it a KV cache whose full-attention layers
    write each step's keys and values into buffers of ``capacity`` tokens (the prompt plus the
    answer's cap), where transformers' ``DynamicCache`` concatenates the whole cache at every step:
    the same keys and values, attended in the same order, without a copy of the cache per token
    (docs/performance.md). Empty (generate's own cache) where this transformers has no per-layer
    cache to build it from."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer

        cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    except (ImportError, TypeError):
        return {}
    if not getattr(cache, "layers", None):
        return {}
    growing = _growing_layer_class(DynamicLayer)
    cache.layers = [growing(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache_argument(model, cache)


@functools.cache
def _growing_layer_class(base: type) -> type:
    """``GrowingLayer`` (below), built once on this transformers' ``DynamicLayer`` (``base``)."""

    class GrowingLayer(base):
        """A full-attention cache layer whose keys and values are views of buffers filled in place."""

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity = capacity
            self.kv_buffers: tuple[torch.Tensor, torch.Tensor] | None = None

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            # Set up here rather than by ``lazy_initialization``, whose signature changed across versions.
            held = self.keys.shape[-2] if getattr(self, "keys", None) is not None and self.keys.numel() else 0
            end = held + key_states.shape[-2]
            buffers = self.kv_buffers
            # New buffers where there are none yet, they are full, or the cache was rebuilt elsewhere
            # (a batch reordered): ``keys`` and ``values`` must always be views of them.
            if (buffers is None or end > buffers[0].shape[-2] or key_states.shape[0] != buffers[0].shape[0]
                    or (held and self.keys.data_ptr() != buffers[0].data_ptr())):
                size = self.capacity if end <= self.capacity else 2 * end
                buffers = tuple(s.new_empty((*s.shape[:-2], size, s.shape[-1])) for s in (key_states, value_states))
                if held:
                    buffers[0][..., :held, :] = self.keys
                    buffers[1][..., :held, :] = self.values
                self.kv_buffers = buffers
            buffers[0][..., held:end, :] = key_states
            buffers[1][..., held:end, :] = value_states
            self.keys, self.values = buffers[0][..., :end, :], buffers[1][..., :end, :]
            self.dtype, self.device, self.is_initialized = key_states.dtype, key_states.device, True
            return self.keys, self.values

    return GrowingLayer
