"""Evaluation of ILRe against full context and its peers on offline RULER-style tasks.

``baselines``: the comparison systems, each deciding which context tokens the answer reads.
``harness``: runs every system on the same task file, resumably, measuring time and memory.
``report``: the markdown table and the accuracy plot. ``scripts/evaluate.py`` is the command.
"""
