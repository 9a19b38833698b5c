"""Measuring ILRe: accuracy against full context and its peers, and speed. Not part of the runtime:
``ilre`` never imports it (the layer probe, the scripts and the tests do).

``tasks``: the task record and its scoring; ``generators``, ``wordings``, ``haystack``: offline
RULER-style tasks; ``ruler``: tasks from NVIDIA RULER's own generators; ``documents``: questions
about real documents. ``baselines``: the compared systems' choices of what to read; ``systems``:
the table's columns; ``harness``: runs them all on one task file, resumably; ``report``: the table
and plot (``scripts/evaluate.py`` is the command). ``bench_measure`` and ``bench_report``: the
speed benchmark of ``scripts/bench.py``.
"""
