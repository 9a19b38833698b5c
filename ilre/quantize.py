"""Int8 copies of the layers below the retrieval layer, for a faster prefill on CPU.

Retrieval needs the keys at l_R only to rank context tokens, not to reproduce the model's
arithmetic, so the streaming prefill (and the query's pass to l_R, which must match it) may run
its linear maps in int8: activations quantised on the fly (one scale per call), per-channel int8
weights, torch's x86 kernels. The answer is always computed by the model itself, in its own
dtype. docs/performance.md gives the measured speed-up and docs/parameters.md the recall
measured against the exact prefill, which chose ``prefill_precision='auto'`` as the default.

torch has marked its eager quantisation API as deprecated; where a build no longer offers it,
'auto' falls back to the exact prefill with a log message and 'int8' raises a clear error.
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn


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
