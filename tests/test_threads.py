"""ThreadTuner: the streaming pass runs on the cores other processes leave free."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ilre import threads


def _run(monkeypatch, others_at, steps: int = 100, start: int = 2, cpus: int = 2) -> list[int]:
    """Drive a tuner with a fake clock and load: ``others_at(step)`` cores used by other processes.

    Each step is 0.1 s of wall time during which this process uses one core per thread; returns
    the thread count after each step.
    """
    now, own, busy = [0.0], [0.0], [0.0]
    current = [start]
    monkeypatch.setattr(threads.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(threads.time, "process_time", lambda: own[0])
    monkeypatch.setattr(threads, "busy_seconds", lambda _cpus: busy[0])
    monkeypatch.setattr(threads, "usable_cpus", lambda: set(range(cpus)))
    monkeypatch.setattr(torch, "get_num_threads", lambda: current[0])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: current.__setitem__(0, n))
    tuner = threads.ThreadTuner(enabled=True)
    seen = []
    for step in range(steps):
        others = others_at(step)
        mine = min(current[0], cpus - others) if cpus > others else current[0] / 2
        now[0] += 0.1
        own[0] += 0.1 * mine
        busy[0] += 0.1 * min(cpus, mine + others)
        tuner.step()
        seen.append(current[0])
    tuner.close()
    assert current[0] == start  # restored
    return seen


def test_a_quiet_machine_keeps_its_threads(monkeypatch):
    assert set(_run(monkeypatch, lambda step: 0.05)) == {2}


def test_a_busy_core_takes_one_thread_away_and_gives_it_back(monkeypatch):
    seen = _run(monkeypatch, lambda step: 1.0 if 20 <= step < 60 else 0.0)
    assert set(seen[:20]) == {2}
    assert set(seen[25:60]) == {1}
    assert set(seen[65:]) == {2}


def test_light_background_work_is_not_a_taken_core(monkeypatch):
    assert set(_run(monkeypatch, lambda step: 0.2)) == {2}
    assert set(_run(monkeypatch, lambda step: 0.6)[5:]) == {1}


def test_never_more_than_the_count_it_was_given(monkeypatch):
    assert set(_run(monkeypatch, lambda step: 0.0, start=4, cpus=16)) == {4}
    assert set(_run(monkeypatch, lambda step: 13.0, start=4, cpus=16)[5:]) == {3}


def test_without_a_load_reading_nothing_changes(monkeypatch):
    assert threads.busy_seconds({0}, stat="/no/such/file") is None
    monkeypatch.setattr(threads, "busy_seconds", lambda _cpus: None)
    tuner = threads.ThreadTuner(enabled=True, window=0.0)
    before = torch.get_num_threads()
    for _ in range(3):
        tuner.step()
    assert torch.get_num_threads() == before


@pytest.mark.skipif(not Path(threads.STAT).exists(), reason="no /proc/stat")
def test_a_real_busy_process_is_seen(monkeypatch):
    """A pure-Python loop in a second process shows as about one core used by others."""
    cpus = threads.usable_cpus()
    if len(cpus) < 2:
        pytest.skip("one CPU")
    monkeypatch.setattr(torch, "get_num_threads", lambda: len(cpus))  # whatever earlier tests set
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    loop = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 5\nwhile time.time() < end: pass"])
    try:
        time.sleep(0.5)
        tuner = threads.ThreadTuner(enabled=True, window=0.0)
        time.sleep(1.0)
        tuner.step()
    finally:
        loop.kill()
        loop.wait()
    assert 0.6 < tuner.others <= len(cpus) + 0.2, tuner.others  # other work on the machine may add to it
