"""The benchmark of ``python scripts/bench.py``: ILRe's time to first answer token and memory
against a full-context pass of the same model (``measure``), and what a run means (``report``)."""
