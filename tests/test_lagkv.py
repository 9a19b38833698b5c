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

    from evaluation.baselines import LagKVVotes

    g = torch.Generator().manual_seed(1)
    cache = DynamicCache()
    for layer in range(3):
        cache.update(torch.randn(1, 2, 530, 8, generator=g), torch.randn(1, 2, 530, 8, generator=g), layer)
    positions = LagKVVotes(lag=64, sink=4).select(cache, (10, 522), budget=200)
    assert positions.numel() == 200 and torch.equal(positions, positions.unique())
    assert set(range(4)) <= set(positions.tolist()) and 511 in positions.tolist()
    assert LagKVVotes().select(cache, (10, 110), budget=500).tolist() == list(range(100))


# -- LRSA's policy: a LagKV memory for the lower layers of the streaming prefill ---------------

def _stream(memory: int, window: int, n: int = 700, chunk: int = 48, kind: str = "llama"):
    from conftest import tiny_model
    from ilre.prefiller import StreamingPrefiller

    model = tiny_model(kind)
    ids = torch.randint(5, 200, (n,), generator=torch.Generator().manual_seed(3))
    prefiller = StreamingPrefiller(model, 2, sink=4, window=window, chunk_size=chunk, lag_memory=memory)
    return model, ids, prefiller.prefill(ids)


def test_a_covering_window_makes_the_memory_change_nothing():
    _, _, plain = _stream(memory=0, window=1000)
    _, _, remembered = _stream(memory=32, window=1000)
    assert torch.equal(plain.key_cache.keys, remembered.key_cache.keys)
    assert all(w.memory == 0 for w in remembered.windows)


def test_the_memory_is_bounded_and_changes_the_keys():
    _, _, plain = _stream(memory=0, window=64)
    _, _, remembered = _stream(memory=32, window=64)
    for w in remembered.windows:
        assert w.memory == 32 and w.scores.shape == (w.keys.shape[0], 32)
        assert 4 + 32 + 64 <= w.length < 4 + 32 + 64 + LagKV.lag
    assert not torch.allclose(plain.key_cache.keys[:, 200:], remembered.key_cache.keys[:, 200:])
    # the first two chunks (96 tokens) saw the same cache: nothing had left the window yet
    torch.testing.assert_close(plain.key_cache.keys[:, :96], remembered.key_cache.keys[:, :96])


def test_the_memory_holds_lagkvs_best_of_all_history_that_left_the_window():
    """Layer 0's keys depend on no cache, so its memory can be checked against LagKV run once on
    the whole sequence: the best ``memory`` judged tokens of each head, in order."""
    from ilre import arch

    n, window, memory = 700, 64, 32
    model, ids, state = _stream(memory=memory, window=window, n=n)
    dec = arch.decoder_of(model)
    with torch.inference_mode():
        normed = arch.input_norm(dec.layers[0], dec.embed(ids))
        keys = arch.project_keys(dec.layers[0], normed, dec.head_dim)
        values = arch.project_values(dec.layers[0], normed, dec.head_dim)
    judged = LagKV.lag * ((n - 4 - window) // LagKV.lag)
    scores = LagKV(sink=4).scores(keys[:, :4 + judged + LagKV.lag], values[:, :4 + judged + LagKV.lag])[:, 4:4 + judged]
    best = scores.topk(memory, dim=-1).indices.sort(dim=-1).values + 4
    expected = keys.gather(1, best[..., None].expand(-1, -1, keys.shape[-1]))
    torch.testing.assert_close(state.windows[0].keys[:, 4:4 + memory], expected, rtol=1e-5, atol=1e-5)


def test_a_memory_needs_a_window_of_one_lag():
    from conftest import tiny_model
    from ilre.prefiller import StreamingPrefiller

    with pytest.raises(ValueError, match="window of at least"):
        StreamingPrefiller(tiny_model(), 2, window=LagKV.lag - 1, lag_memory=8)
