"""Pick the accelerator (Ascend NPU, CUDA or CPU) and measure time and memory on it.

The rest of the project asks one question, "where do tensors go and in which
dtype?", and gets a `Backend` back; nothing else needs to know which vendor
library sits underneath.

The NPU path follows the torch_npu documentation: importing ``torch_npu``
registers the ``npu`` device type (``torch.device("npu:0")``) and the
``torch.npu`` namespace, which mirrors ``torch.cuda`` (``is_available``,
``device_count``, ``synchronize``, ``max_memory_allocated``,
``reset_peak_memory_stats``, ``get_device_name``). It has not been verified on
Ascend hardware; it is tested only against stand-ins.

``torch_npu`` is imported lazily, only when a selection probes for an NPU:
importing it initialises CANN, which is slow and fails noisily on machines
without the Ascend toolkit.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import re
import sys
import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from device.memory import peak_rss_bytes

log = logging.getLogger(__name__)

ENV_VAR = "ILRE_DEVICE"
KINDS = ("npu", "cuda", "cpu")  # auto-selection preference order
_SPEC = re.compile(r"^(auto|cpu|cuda|npu)(?::(\d+))?$")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
_FALLBACK = f"or pass --device cpu (or set {ENV_VAR}=cpu)"
_HINTS = {"npu": "install torch_npu matching your torch and CANN versions (pip install torch_npu)",
          "cuda": "install a CUDA build of torch and check nvidia-smi"}


class DeviceError(ValueError):
    """A device or dtype request that cannot be met; the message says how to fix it."""


@dataclass
class Timing:
    """Filled in by `Backend.timer` when its block exits."""

    seconds: float = float("nan")


@dataclass(frozen=True)
class Backend:
    """Where the model runs and in which dtype.

    ``dtype`` defaults to bfloat16 on npu/cuda (half the memory of float32, with
    float32's exponent range, so long-context activations do not overflow as in
    float16) and float32 on cpu (CPU bfloat16 matmuls are slow on most cores).

    ``attn_implementation`` is "sdpa" on all three: it dispatches to
    ``torch.nn.functional.scaled_dot_product_attention``, which every backend
    implements with a fused kernel (flash/memory-efficient on CUDA, torch_npu's
    fused attention on NPU, a flash-style kernel on CPU), so memory stays linear
    in context length. "flash_attention_2" needs the CUDA-only flash-attn
    package, and "eager" materialises the full attention matrix; callers that
    need attention probabilities (``output_attentions=True``) must ask for
    "eager" themselves, since sdpa does not return them.
    """

    name: str
    torch_device: torch.device
    dtype: torch.dtype
    attn_implementation: str = "sdpa"
    _baseline: list[int] = field(default_factory=lambda: [0], repr=False, compare=False)

    def _accel(self):
        """``torch.cuda`` or ``torch.npu``; None on cpu."""
        return None if self.name == "cpu" else getattr(torch, self.name)

    def synchronize(self) -> None:
        """Wait for queued device work, so timings cover the work itself (no-op on cpu)."""
        if (accel := self._accel()) is not None:
            accel.synchronize(self.torch_device)

    def reset_peak_memory(self) -> None:
        """Start a new peak-memory window.

        On cpu the peak resident set size cannot be reset: this records the
        current process peak as a baseline and `peak_memory_bytes` stays a
        process-lifetime peak.
        """
        if (accel := self._accel()) is not None:
            accel.reset_peak_memory_stats(self.torch_device)
            self._baseline[0] = 0
        else:
            self._baseline[0] = self.peak_memory_bytes()

    def peak_memory_bytes(self) -> int:
        """Peak tensor memory on the device since the last reset (npu/cuda), or
        the process's peak resident set size since it started (cpu)."""
        if (accel := self._accel()) is not None:
            return int(accel.max_memory_allocated(self.torch_device))
        return peak_rss_bytes()

    def peak_memory_baseline_bytes(self) -> int:
        """What the last `reset_peak_memory` recorded: on cpu the process peak
        then (a later reading equal to it means the section did not raise the
        peak); 0 on npu/cuda, whose peak really restarts."""
        return self._baseline[0]

    @contextlib.contextmanager
    def timer(self) -> Iterator[Timing]:
        """Wall-clock a block, synchronising before and after so queued device work counts."""
        timing = Timing()
        self.synchronize()
        start = time.perf_counter()
        try:
            yield timing
        finally:
            self.synchronize()
            timing.seconds = time.perf_counter() - start

    def describe(self) -> str:
        """One line for logs and reports: device, its name, dtype, torch version."""
        parts = [str(self.torch_device)]
        if (accel := self._accel()) is not None:
            try:
                parts[0] += f" ({accel.get_device_name(self.torch_device.index or 0)})"
            except Exception as exc:  # older torch_npu lacks get_device_name
                log.debug("no device name for %s: %s", self.torch_device, exc)
        else:
            parts.append(f"{torch.get_num_threads()} threads of {os.cpu_count()} cores")
        parts += [str(self.dtype).removeprefix("torch."), f"attn {self.attn_implementation}",
                  f"torch {torch.__version__}"]
        if self.name == "npu" and (npu_mod := sys.modules.get("torch_npu")) is not None:
            parts.append(f"torch_npu {getattr(npu_mod, '__version__', '?')}")
        return " | ".join(parts)


def unavailable_reason(kind: str) -> str | None:
    """Why ``kind`` ("npu", "cuda", "cpu") cannot be used here, or None if it can.

    For "npu" this imports torch_npu, which is the only place that happens.
    """
    if kind == "cpu":
        return None
    if kind == "cuda":
        if torch.cuda.is_available():
            return None
        if torch.version.cuda is None:
            return f"torch {torch.__version__} is built without CUDA"
        return "torch.cuda.is_available() is False (no GPU visible, or driver too old)"
    if kind != "npu":
        raise DeviceError(f"unknown device kind {kind!r}: use one of {', '.join(KINDS)}")
    try:
        importlib.import_module("torch_npu")
    except ModuleNotFoundError:
        return "torch_npu not installed"
    except Exception as exc:  # e.g. CANN libraries missing or mismatched
        return f"torch_npu failed to import: {type(exc).__name__}: {exc}"
    npu = getattr(torch, "npu", None)
    if npu is None:
        return "torch_npu imported but did not register torch.npu"
    if not npu.is_available():
        return "torch.npu.is_available() is False (no NPU visible: check the driver and CANN)"
    return None


def _parse_dtype(dtype: str | torch.dtype | None, kind: str) -> torch.dtype:
    name = dtype.strip().lower() if isinstance(dtype, str) else dtype
    if name is None or name == "auto":
        return torch.float32 if kind == "cpu" else torch.bfloat16
    if isinstance(name, torch.dtype) and name.is_floating_point:
        return name
    if isinstance(name, str) and name in _DTYPES:
        return _DTYPES[name]
    raise DeviceError(f"unknown dtype {dtype!r}: use one of auto, float32/fp32, "
                      "bfloat16/bf16, float16/fp16, or a floating torch.dtype")


def select_backend(explicit: str | None = None,
                   dtype: str | torch.dtype | None = None) -> Backend:
    """Choose the backend: ``explicit``, else $ILRE_DEVICE, else the first of
    npu, cuda, cpu that works. Accepts "auto", "cpu", "cuda[:N]", "npu[:N]".

    An explicit request that cannot be met raises `DeviceError` rather than
    falling back, so a run meant for an accelerator never silently uses the CPU.
    """
    origin, spec = "device", explicit
    if spec is None and os.environ.get(ENV_VAR, "").strip():
        origin, spec = ENV_VAR, os.environ[ENV_VAR]
    spec = (spec or "auto").strip().lower()
    match = _SPEC.match(spec)
    if match is None or (match[1] in ("auto", "cpu") and match[2] is not None):
        raise DeviceError(f"unknown {origin} {spec!r}: use one of auto, cpu, cuda[:N], npu[:N]")
    kind, index = match[1], int(match[2]) if match[2] else 0

    if kind == "auto":
        for kind in KINDS:
            reason = unavailable_reason(kind)
            if reason is None:
                break
            log.debug("skipping %s: %s", kind, reason)
    elif (reason := unavailable_reason(kind)) is not None:
        raise DeviceError(f"{origin} {spec!r} requested but {reason}: "
                          f"{_HINTS.get(kind, 'fix the install')}, {_FALLBACK}")

    if kind == "cpu":
        torch_device = torch.device("cpu")
    else:
        count = getattr(torch, kind).device_count()
        if index >= count:
            raise DeviceError(f"{origin} {spec!r} out of range: {count} {kind} device(s) "
                              f"visible ({kind}:0 to {kind}:{count - 1}), {_FALLBACK}")
        try:
            torch_device = torch.device(kind, index)
        except RuntimeError as exc:
            raise DeviceError(f"torch does not know the device type {kind!r} ({exc}): "
                              f"{_HINTS.get(kind, 'fix the install')}, {_FALLBACK}") from None
    backend = Backend(kind, torch_device, _parse_dtype(dtype, kind))
    log.info("device: %s", backend.describe())
    return backend
