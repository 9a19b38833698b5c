"""The service's pools: each call on a thread of its own, gone after it, one call at a time."""

import contextvars
import threading
import time

import pytest

from ilre.serve.workers import ThreadPerCall

REQUEST = contextvars.ContextVar("request", default="-")


def test_each_call_runs_on_a_new_thread_that_ends_with_it():
    pool = ThreadPerCall(1, thread_name_prefix="ilre-test")
    threads = [pool.submit(threading.current_thread).result() for _ in range(3)]
    pool.shutdown()
    assert len({id(t) for t in threads}) == 3
    assert all(t.name.startswith("ilre-test") and t.name.endswith("-call") for t in threads)
    assert not any(t.is_alive() for t in threads)  # its OpenMP team is freed with it


def test_calls_run_one_at_a_time_in_order():
    pool = ThreadPerCall(1)
    running, overlaps, order = [0], [], []

    def work(i):
        running[0] += 1
        overlaps.append(running[0])
        time.sleep(0.02)
        order.append(i)
        running[0] -= 1

    for f in [pool.submit(work, i) for i in range(5)]:
        f.result()
    pool.shutdown()
    assert order == list(range(5)) and max(overlaps) == 1


def test_the_submitting_context_and_errors_reach_through():
    pool = ThreadPerCall(1)
    REQUEST.set("abc")
    assert pool.submit(REQUEST.get).result() == "abc"

    def fails():
        raise KeyError("missing")

    with pytest.raises(KeyError, match="missing"):
        pool.submit(fails).result()
    assert pool.submit(lambda x, y=1: x + y, 2, y=3).result() == 5  # the pool goes on after an error
    pool.shutdown()
