"""ThreadTuner: on a quiet machine it changes nothing; under load it moves to the faster count."""

from __future__ import annotations

import torch

from ilre import threads


def _run(monkeypatch, seconds_per_step, steps: int = 400, start: int = 2) -> list[int]:
    """Drive a tuner with a fake clock: ``seconds_per_step(step, threads)``; the thread count per step."""
    now = [0.0]
    current = [start]
    monkeypatch.setattr(threads.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(torch, "get_num_threads", lambda: current[0])
    monkeypatch.setattr(torch, "set_num_threads", lambda n: current.__setitem__(0, n))
    tuner = threads.ThreadTuner(window=1.0, enabled=True)
    seen = []
    for step in range(steps):
        now[0] += seconds_per_step(step, current[0])
        tuner.step(100)
        seen.append(current[0])
    tuner.close()
    assert current[0] == start  # restored
    return seen


def test_a_quiet_machine_keeps_its_threads_after_one_trial(monkeypatch):
    seen = _run(monkeypatch, lambda step, n: 0.1 / n)
    assert seen.count(1) <= 10 and set(seen[40:]) == {2}  # one window on one thread, at the start


def test_under_load_one_thread_fewer_is_kept_while_it_is_faster(monkeypatch):
    # from step 100 a competing process makes two threads three times slower than one
    def cost(step, n):
        if step < 100:
            return 0.1 / n
        return 0.15 if n == 2 else 0.1
    seen = _run(monkeypatch, cost)
    assert set(seen[40:100]) == {2}
    assert seen[-150:].count(1) > 130  # mostly on one thread, with a short trial of two now and then


def test_a_slowdown_that_fewer_threads_do_not_cure_is_left_alone(monkeypatch):
    def cost(step, n):
        return 0.1 / n if step < 100 else 0.2 / n  # everything slows alike: two threads stay faster
    seen = _run(monkeypatch, cost)
    assert seen[-100:].count(2) >= 99
