"""Int8 copies of the layers below the retrieval layer, for a faster prefill on CPU.

Retrieval needs the keys at l_R only to rank context tokens, not to reproduce the model's
arithmetic, so the streaming prefill (and the query's pass to l_R, which must match it) may run
its linear maps in int8: activations quantised on the fly (one scale per call), per-channel int8
weights, torch's x86 kernels. The answer is computed by the model itself, in its own dtype,
unless ``answer_precision='int8'`` asks for ``int8_decoding_copy`` (below). docs/performance.md
gives the measured speed-up and docs/parameters.md the recall measured against the exact prefill,
which chose ``prefill_precision='auto'`` as the default.

torch has marked its eager quantisation API as deprecated; where a build no longer offers it,
'auto' falls back to the exact prefill with a log message and 'int8' raises a clear error.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from .decoding import linear_copy

log = logging.getLogger(__name__)


def int8_available() -> bool:
    """Whether this torch build has the dynamic int8 linear kernels for CPU."""
    try:
        has_api = hasattr(torch.ao.quantization, "quantize_dynamic")
        engines = set(torch.backends.quantized.supported_engines)
    except Exception:  # pragma: no cover - a build without the module
        return False
    return has_api and bool(engines & {"x86", "fbgemm"})


def resolve(precision: str, param: torch.Tensor) -> str:
    """'model' or 'int8' for a model whose weights look like ``param``.

    'auto' means int8 on CPU with fp32 weights when the kernels exist, else the model's own
    precision. An explicit 'int8' where it cannot run is an error, not a silent fallback. (The
    value is checked by its owner, ``PrefillConfig``.)
    """
    if precision == "model":
        return "model"
    problem = None
    if param.device.type != "cpu":
        problem = f"the model is on {param.device.type}, and the int8 kernels are for CPU"
    elif param.dtype != torch.float32:
        problem = f"the model's weights are {str(param.dtype).removeprefix('torch.')}, int8 copies are made from float32"
    elif not int8_available():
        problem = f"torch {torch.__version__} has no dynamic int8 linear kernels"
    if problem is None:
        return "int8"
    if precision == "int8":
        raise ValueError(f"prefill_precision='int8' cannot run: {problem}; use 'auto' or 'model'")
    log.debug("streaming prefill in the model's precision: %s", problem)
    return "model"


def int8_layers(layers: nn.ModuleList, upto: int) -> nn.ModuleList:
    """Int8 copies of ``layers[0..upto]`` (inclusive); the originals are left untouched."""
    qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
    with warnings.catch_warnings():  # the deprecation notice of torch.ao.quantization
        warnings.simplefilter("ignore")
        copies = [torch.ao.quantization.quantize_dynamic(layer, {nn.Linear: qconfig}, inplace=False)
                  for layer in layers[: upto + 1]]
    log.info("made int8 copies of layers 0..%d for the streaming prefill", upto)
    return nn.ModuleList(copies)


DECODE_ROWS = 16
"""Steps of at most this many tokens (decoding) use the int8 weights; longer ones (the prompt) the
model's own, so the prompt is read exactly and only the token-by-token steps are approximated."""


def int8_weights_available() -> bool:
    """Whether this torch build has the weight-only int8 matrix product for CPU."""
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


def int8_decoding_runs_on(device: torch.device) -> bool:
    """Whether ``int8_decoding_copy`` can run a model on ``device``: a CPU, and the kernel."""
    return device.type == "cpu" and int8_weights_available()


def bfloat16_at_least(x: torch.Tensor) -> torch.Tensor:
    """``x`` (positive, float32) rounded up to bfloat16: the kernel's scales are bfloat16, and the
    weights are rounded against the scale it will use, so that the only error is int8's rounding."""
    down = x.to(torch.bfloat16)
    return torch.where(down.float() < x, torch.nextafter(down, torch.full_like(down, float("inf"))), down)


class Int8WeightLinear(nn.Module):
    """``linear`` for decoding on CPU: per-output-channel int8 weights, the input rounded to
    bfloat16, the product accumulated by torch's weight-only int8 kernel.

    Decoding one token reads every weight once, so its time is the weights' bytes: a quarter of
    float32's. Steps of more than ``DECODE_ROWS`` tokens use the original float weights.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scale = bfloat16_at_least(weight.abs().amax(dim=1).clamp(min=1e-12) / 127)
        self.register_buffer("qweight", torch.round(weight / scale[:, None].float()).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.weight, self.bias = linear.weight, linear.bias  # shared with the model, not copied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        if rows.shape[0] > DECODE_ROWS:
            return nn.functional.linear(x, self.weight, self.bias)
        y = torch.ops.aten._weight_int8pack_mm(rows.to(torch.bfloat16), self.qweight, self.scale).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], y.shape[-1])


def int8_decoding_copy(model: nn.Module) -> nn.Module:
    """``model`` with every linear map an ``Int8WeightLinear``; its float parameters are shared.
    Refused (ValueError) off CPU or without the kernel."""
    device = next(model.parameters()).device
    if not int8_decoding_runs_on(device):
        raise ValueError(f"answer_precision='int8' needs the model on CPU and torch's weight-only int8 "
                         f"kernel (torch {torch.__version__}, {device.type}); use 'model'")

    out = linear_copy(model, Int8WeightLinear)
    log.info("made an int8 copy of the model's linear maps for decoding")
    return out
