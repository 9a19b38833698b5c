"""Device abstraction: choose Ascend NPU, CUDA or CPU, and time and measure work on it.

Importing this package never imports torch_npu; only `select_backend` (or
`unavailable_reason("npu")`) does, when it probes for an NPU.
"""

from device.backend import (
    ENV_VAR,
    KINDS,
    Backend,
    DeviceError,
    Timing,
    select_backend,
    unavailable_reason,
)

__all__ = [
    "ENV_VAR",
    "KINDS",
    "Backend",
    "DeviceError",
    "Timing",
    "select_backend",
    "unavailable_reason",
]
