"""LagKV's selection against the authors' own code, on a fixed tensor."""

from __future__ import annotations

import pytest
import torch

from ilre.lagkv import LagKV

# What the official lag_kv.py (github.com/AI-Lab-China-Merchants-Bank/LagKV) keeps after one
# compression of this tensor with sink 4, lag 16, ratio 0.25, score_v_ratio 1.0 (run once, by hand:
# its kept rows matched back to positions, per head).
OFFICIAL = [
    [0, 1, 2, 3, 7, 8, 12, 5, 34, 26, 23, 29, 50, 42, 49, 51, 67, 56, 59, 53, *range(68, 91)],
    [0, 1, 2, 3, 19, 17, 5, 12, 22, 31, 32, 26, 42, 40, 51, 37, 61, 67, 64, 60, *range(68, 91)],
]


def _fixed():
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(1, 2, 91, 8, generator=g)
    values = torch.randn(1, 2, 91, 8, generator=g)
    return keys[0], values[0]


def test_kept_positions_equal_the_official_code():
    keys, values = _fixed()
    kept = LagKV(sink=4, lag=16).keep(keys, values, ratio=0.25)
    assert kept.tolist() == [sorted(h) for h in OFFICIAL]


def test_scores_mark_sink_and_tail_as_always_kept():
    keys, values = _fixed()
    scores = LagKV(sink=4, lag=16).scores(keys, values)
    assert scores.shape == (2, 91)
    assert torch.isinf(scores[:, :4]).all() and torch.isinf(scores[:, 68:]).all()
    assert torch.isfinite(scores[:, 4:68]).all()
    # keys' and values' softmaxes each sum to one per partition
    assert scores[:, 4:68].reshape(2, 4, 16).sum(-1) == pytest.approx(torch.full((2, 4), 2.0), abs=1e-5)


def test_too_short_to_judge_keeps_everything():
    keys = torch.randn(2, 30, 8)
    assert LagKV(sink=4, lag=16).keep(keys, keys, 0.25).tolist() == [list(range(30))] * 2


def test_lagkv_recall_in_the_evaluation(tiny_model_dir, tmp_path):
    """The LagKV system answers from a full pass's cache, within the budget, beside the full context."""
    import json

    from test_evaluate import evaluate

    out = tmp_path / "lag"
    assert evaluate.main(["--model", str(tiny_model_dir), "--tasks", "passkey", "--lengths", "600", "--samples", "1",
                          "--budget", "96", "--max-new-tokens", "3", "--threads", "1", "--no-progress",
                          "--systems", "full,lagkv", "--out", str(out)]) == 0
    rows = {r["system"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}
    assert rows["lagkv"]["status"] == "ok" and 0 < rows["lagkv"]["kept_tokens"] <= 96
    assert rows["full"]["status"] == "ok" and "LagKV" in (out / "table.md").read_text()


def test_lagkv_votes_keep_sink_and_recent_tokens_within_the_budget():
    from transformers import DynamicCache

    from ilre.evaluation.baselines import LagKVVotes

    g = torch.Generator().manual_seed(1)
    cache = DynamicCache()
    for layer in range(3):
        cache.update(torch.randn(1, 2, 530, 8, generator=g), torch.randn(1, 2, 530, 8, generator=g), layer)
    positions = LagKVVotes(lag=64, sink=4).select(cache, (10, 522), budget=200)
    assert positions.numel() == 200 and torch.equal(positions, positions.unique())
    assert set(range(4)) <= set(positions.tolist()) and 511 in positions.tolist()
    assert LagKVVotes().select(cache, (10, 110), budget=500).tolist() == list(range(100))
