"""This process's resident memory: now, its lifetime peak, and its peak during a block.

The benchmark, the CPU backend and the evaluation harness all read memory here, so that their
numbers mean the same thing. psutil is imported on first use: selecting a device needs none of it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import resource
import sys
import threading


def rss_bytes() -> int:
    """This process's resident set size now."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int:
    """This process's peak resident set size since it started (``ru_maxrss``, which cannot be reset)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # KiB on Linux


LIMIT_VAR = "ILRE_MEMORY_LIMIT"
"""Environment variable capping the memory ILRe plans to use, in bytes or with K, M or G (e.g. 4G)."""


def available_bytes(device: str = "cpu") -> int:
    """Memory free for new tensors: the host's available memory, or the device's free memory on an
    accelerator; never more than ``$ILRE_MEMORY_LIMIT`` when that is set."""
    import os

    free = None
    if device != "cpu":
        import torch

        accel = getattr(torch, device.split(":")[0], None)
        if accel is not None and hasattr(accel, "mem_get_info"):
            free = int(accel.mem_get_info(torch.device(device))[0])
    if free is None:
        import psutil

        free = int(psutil.virtual_memory().available)
    limit = os.environ.get(LIMIT_VAR, "").strip().upper()
    if limit:
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(limit[-1], 1)
        try:
            free = min(free, int(float(limit.rstrip("KMG")) * scale))
        except ValueError:
            raise ValueError(f"${LIMIT_VAR}={limit!r} is not a size: use bytes or e.g. 512M, 4G") from None
    return free


def _trim_heap() -> None:
    """Give freed heap pages back to the OS, so the next baseline RSS is not inflated."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


class PeakMemory:
    """Peak resident memory of this process during a block, sampled every ``interval`` s.

    The process-lifetime peak (``ru_maxrss``) cannot be reset, so a background thread samples
    RSS instead; ``peak_mib`` is the highest sample above ``base`` (RSS at entry, or a baseline
    passed in when several blocks make one system's work). Short spikes between samples
    can be missed.
    """

    def __init__(self, base: int | None = None, interval: float = 0.005):
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.base = base
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        return self._proc.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> "PeakMemory":
        if self.base is None:
            _trim_heap()
            self.base = self._rss()
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def peak_mib(self) -> float:
        return (self.peak - self.base) / 2**20
