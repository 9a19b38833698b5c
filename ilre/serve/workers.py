"""The service's torch work runs on a fresh thread per call, one call at a time per pool.

torch's CPU kernels run in OpenMP teams, and GNU OpenMP keeps a team of worker threads for every
thread that ever ran a parallel region, until that thread exits. With a long-lived encoder thread
and a long-lived answer thread, a 2-core machine holds more OpenMP threads than cores, and OpenMP
then stops spinning at its barriers and sleeps instead: every encoding after the first answer ran
about twice as slow, and answers 1.1 times (``scripts/bench_workers.py`` measures it). A thread that
exits frees its team, so each call gets a thread of its own, started and joined by the pool's one
long-lived thread, which does no torch work itself.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future, ThreadPoolExecutor


class ThreadPerCall(ThreadPoolExecutor):
    """A ``ThreadPoolExecutor`` whose calls each run on a new thread (named after the pool's),
    in the context (``contextvars``: the request id of the logs) they were submitted from, at most
    ``max_workers`` at a time."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return super().submit(_on_own_thread, contextvars.copy_context(), fn, args, kwargs)


def _on_own_thread(context: contextvars.Context, fn, args: tuple, kwargs: dict):
    """``fn(*args, **kwargs)`` in ``context`` on a thread started for it; its result or its
    exception, as if called here."""
    outcome: dict = {}

    def call() -> None:
        try:
            outcome["value"] = context.run(fn, *args, **kwargs)
        except BaseException as error:  # handed back to the caller, raised there
            outcome["error"] = error

    thread = threading.Thread(target=call, name=f"{threading.current_thread().name}-call", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
