"""CPU threads for the long streaming pass, chosen while it runs, by timing it.

The prefill is thousands of small steps, each a handful of matrix products split over torch's
threads. When another process takes one of the cores, every split waits for the thread that
lost its core at every step, and the pass slows far more than the lost core explains (measured
in docs/performance.md, "A busy machine"). One thread fewer then goes faster. Which count wins
depends on the CPU and on what else runs, so it is measured, not guessed: the pass is timed in
windows of steps; when a window runs well below the best seen at that thread count, one thread
fewer is tried for a window and kept if clearly faster; one such trial also follows the first
window, for a machine busy from the start; now and then one more is tried, in case the other work
has gone. On a quiet machine that first trial is the one cost: one window on fewer threads.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)

ENV = "ILRE_ADAPT_THREADS"
"""Set to 0 to keep torch's thread count fixed during the prefill."""


@dataclass
class ThreadTuner:
    """Call :meth:`step` after each step of ``tokens``; :meth:`close` restores the thread count."""

    window: float = 0.5
    """Seconds of work per measurement."""
    slowdown: float = 0.75
    """A window below this share of the best throughput seen at its thread count starts a trial."""
    retry: int = 16
    """Windows between trials of one thread more, while below the starting count."""
    margin: float = 1.1
    """A trial count is kept only when this much faster (two threads' own jitter is not a reason)."""
    enabled: bool = field(default_factory=lambda: os.environ.get(ENV, "1") != "0")

    def __post_init__(self) -> None:
        self.start_threads = self.threads = torch.get_num_threads()
        self.best: dict[int, float] = {}
        self.trial: int | None = None  # the count whose window is a trial
        self.previous = self.threads
        self.before = 0.0  # the rate of the window that started the trial
        self.since_change = 0
        self._begin()

    def _begin(self) -> None:
        self.t0, self.tokens = time.perf_counter(), 0

    def _set(self, threads: int, trial: bool) -> None:
        self.previous, self.threads = self.threads, threads
        self.trial = threads if trial else None
        torch.set_num_threads(threads)
        self.since_change = 0

    def step(self, tokens: int) -> None:
        if not self.enabled or self.start_threads < 2:
            return
        self.tokens += tokens
        elapsed = time.perf_counter() - self.t0
        if elapsed < self.window:
            return
        rate = self.tokens / elapsed
        self._begin()
        n = self.threads
        if self.trial is not None:  # a trial window: keep the faster of the trial and the count before it
            self.trial = None
            if rate <= self.margin * self.before:
                log.debug("%d threads: %.0f tok/s, back to %d", n, rate, self.previous)
                self.best[n], self.best[self.previous] = rate, self.before  # the slower rate is the new normal
                self._set(self.previous, trial=False)
                return
            log.info("the streaming pass runs faster on %d threads now (%.0f tok/s)", n, rate)
            self.best = {n: rate}  # the load changed: old figures no longer hold
            return
        first = not self.best
        self.best[n] = max(self.best.get(n, 0.0), rate)
        self.since_change += 1
        if n > 1 and (first or rate < self.slowdown * self.best[n]):  # a machine busy from the start, too
            self.before = rate
            self._set(n - 1, trial=True)
        elif n < self.start_threads and self.since_change >= self.retry:
            self.before = rate
            self._set(n + 1, trial=True)

    def close(self) -> None:
        if self.threads != self.start_threads:
            torch.set_num_threads(self.start_threads)
