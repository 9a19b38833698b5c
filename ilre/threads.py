"""CPU threads for the long streaming pass, matched to the cores other processes leave free.

The prefill is thousands of small steps, each a handful of matrix products split over torch's
threads. When another process takes one of the cores, every split waits for the thread that
lost its core at every step, and the pass slows far more than the lost core explains (measured
in docs/performance.md, "A busy machine"): then one thread fewer goes faster. So the pass reads,
every ``window`` seconds, how much of its cores other processes used (the busy time of the cores
it may run on, from ``/proc/stat``, less its own CPU time) and runs on the cores they left free.
Two ILRe passes side by side each see the other and settle on half the cores; when the other
work ends, the threads come back. Reading the load, not timing trial counts, costs nothing on a
quiet machine. Linux only: elsewhere the thread count is left as it is.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)

ENV = "ILRE_ADAPT_THREADS"
"""Set to 0 to keep torch's thread count fixed during the prefill."""

STAT = "/proc/stat"


def usable_cpus() -> set[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def busy_seconds(cpus: set[int], stat: str = STAT) -> float | None:
    """Seconds the given CPUs have spent on any work (not idle, not waiting for I/O) since boot.

    None where the kernel does not say (no ``/proc/stat``).
    """
    try:
        with open(stat) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    ticks = 0
    for line in lines[1:]:
        name, *fields = line.split()
        if not name.startswith("cpu"):
            break
        if int(name[3:]) in cpus:
            # user nice system idle iowait irq softirq steal (guest time is inside user already)
            v = [int(x) for x in fields[:8]]
            ticks += sum(v) - v[3] - v[4]
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class ThreadTuner:
    """Call :meth:`step` after each step of the pass; :meth:`close` restores the thread count."""

    window: float = 0.25
    """Seconds between readings of the load: short enough to follow other work coming and going,
    long enough that the kernel's 10 ms accounting ticks are a few percent of it."""
    taken: float = 0.25
    """A core counts as taken when other processes use more than this share of it: a thread that
    gets only three quarters of its core already holds every split back."""
    enabled: bool = field(default_factory=lambda: os.environ.get(ENV, "1") != "0")

    def __post_init__(self) -> None:
        self.start_threads = self.threads = torch.get_num_threads()
        self.cpus = usable_cpus()
        self.others = 0.0
        self.mark = self._read()

    def _read(self) -> tuple[float, float | None, float]:
        return time.perf_counter(), busy_seconds(self.cpus), time.process_time()

    def step(self) -> None:
        if not self.enabled or self.start_threads < 2 or self.mark[1] is None:
            return
        if time.perf_counter() - self.mark[0] < self.window:
            return
        (wall0, busy0, own0), now = self.mark, self._read()
        self.mark = now
        wall, busy, own = now
        if busy is None:
            return
        self.others = max(0.0, (busy - busy0) - (own - own0)) / (wall - wall0)  # cores' worth used by others
        taken = math.ceil(self.others - self.taken) if self.others > self.taken else 0
        threads = max(1, min(self.start_threads, len(self.cpus) - taken))
        if threads != self.threads:
            log.info("other processes use %.1f cores: the streaming pass goes on with %d threads",
                     self.others, threads)
            self.threads = threads
            torch.set_num_threads(threads)

    def close(self) -> None:
        if self.threads != self.start_threads:
            torch.set_num_threads(self.start_threads)
