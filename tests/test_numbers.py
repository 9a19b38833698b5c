"""Numbers: scores are float32 and finite whatever the model's dtype, for any shapes and blocks."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tiny_model
from ilre import arch
from ilre.config import ILReConfig
from ilre.key_cache import KeyCache
from ilre.pipeline import ILRe
from ilre.scorer import QueryScorer

DECODER = arch.decoder_of(tiny_model("llama"))
TEXT = " ".join(f"Line {i} says the weather was mild." for i in range(40)) + " The vault code is 4417. " + \
    " ".join(f"Note {i}: nothing happened." for i in range(40))


@settings(max_examples=60, deadline=None)
@given(length=st.integers(1, 300), queries=st.integers(1, 6), block=st.integers(1, 80),
       positions=st.sampled_from(["relative", "absolute"]), scale=st.sampled_from([0.1, 1.0, 30.0]),
       dtype=st.sampled_from([torch.float32, torch.float16, torch.bfloat16]), seed=st.integers(0, 10**6))
def test_scores_are_finite_probabilities_for_any_shapes(length, queries, block, positions, scale, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    d = DECODER
    q = (torch.randn(d.num_heads, queries, d.head_dim, generator=g) * scale).to(dtype)
    keys = (torch.randn(d.num_kv_heads, length, d.head_dim, generator=g) * scale).to(dtype)
    cache = KeyCache(keys, layer=2, filled=length)
    scorer = QueryScorer(positions, 16, block)
    per_token = scorer.score(d, q, cache)
    assert per_token.dtype == torch.float32 and torch.isfinite(per_token).all() and (per_token >= 0).all()
    assert float(per_token.sum()) == pytest.approx(1.0, abs=1e-4)  # each head and query token's probabilities
    units = torch.div(torch.arange(length), 7, rounding_mode="floor")
    per_unit = scorer.score(d, q, cache, units, int(units.max()) + 1)
    assert torch.isfinite(per_unit).all() and (per_unit >= 0).all() and (per_unit <= 1 + 1e-6).all()
    # A unit's score is its best key's probability: with one key per unit, that key's score.
    one_each = scorer.score(d, q, cache, torch.arange(length), length)
    assert torch.allclose(one_each, per_token, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_twins_give_finite_scores_and_the_same_clear_recall(tokenizer, dtype):
    config = ILReConfig(layer=2, budget=24, recall_unit="token", kernels=(1,), key_dtype="float32")
    model = tiny_model("llama")
    results = []
    for m in (model, copy.deepcopy(model).to(dtype)):
        ilre = ILRe(m, tokenizer, config)
        encoded = ilre.encode(TEXT)
        query = ilre.template.query("What is the vault code?")
        queries = ilre.prefiller().query_states(encoded.state, query.ids)
        # a clear-cut context: the code's tokens hold keys that match the question's queries strongly
        start = TEXT.index("4417")
        where = [i for i, (a, b) in enumerate(encoded.tokens.offsets.tolist()) if start <= a < start + 4]
        p = encoded.prefix_ids.numel()
        direction = queries.float().mean(dim=(0, 1))
        with torch.inference_mode():  # the cache is an inference tensor
            encoded.state.key_cache.keys[:, [p + i for i in where]] = (8 * direction / direction.norm()).to(
                encoded.state.key_cache.keys.dtype)
        scores = ilre.scorer.score_context(ilre.decoder, queries, encoded.state.key_cache, p, query.question,
                                           ilre.recaller.units(encoded.tokens))
        assert scores.dtype == torch.float32 and torch.isfinite(scores).all()
        results.append(set(torch.topk(scores, len(where)).indices.tolist()))
    assert results[0] == results[1] == set(where)
