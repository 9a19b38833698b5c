"""The pipeline's own rules: a covering budget streams nothing, configurations are checked once."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model
from ilre.config import ILReConfig
from ilre.pipeline import ILRe

TEXT = "Alpha beta gamma. " * 20 + "The code is 4417. " + "Delta epsilon. " * 20


@pytest.fixture
def ilre(tokenizer):
    return ILRe(tiny_model("llama"), tokenizer, ILReConfig(layer=2, budget=10**6, max_new_tokens=4))


def test_covering_budget_streams_nothing(ilre, monkeypatch):
    calls = []
    real = ilre.prefiller
    monkeypatch.setattr(ilre, "prefiller", lambda *a, **k: calls.append(1) or real(*a, **k))
    encoded = ilre.encode(TEXT)
    assert encoded.state is None and "prefill" not in encoded.timings and not calls
    assert ilre.answer(encoded, "What is the code?").whole_context


def test_a_smaller_budget_streams_on_first_recall_as_encode_would(ilre):
    lazy = ilre.encode(TEXT)
    small = ilre.with_config(budget=64)
    positions, _ = small.recall(lazy, "What is the code?")
    eager = small.encode(TEXT)
    assert lazy.state is not None and eager.state is not None
    assert torch.equal(lazy.state.key_cache.keys, eager.state.key_cache.keys)
    assert torch.equal(positions, small.recall(eager, "What is the code?")[0])


def test_with_config_checks_like_the_constructor(ilre):
    for bad in ({"layer": 4}, {"layer": -1}, {"budget": 0}, {"recall_unit": "word"}, {"kernels": (2,)}):
        with pytest.raises(ValueError):
            ilre.with_config(**bad)
    assert ilre.with_config(layer=3).config.layer == 3 and ilre.config.layer == 2


def test_the_memory_estimate_counts_the_key_cache_exactly(ilre):
    small = ilre.with_config(budget=16)
    encoded = small.encode(TEXT)
    need = small.memory_needed(len(encoded.tokens))
    assert need["keys of l_R"] == encoded.state.key_cache.nbytes
    assert all(v >= 0 for v in need.values())


def test_a_recaller_of_ones_own_plugs_in_without_touching_the_pipeline(tokenizer):
    """Anything with the Recaller protocol's two methods chooses what the answer reads."""
    from ilre.units import TextUnits

    class LastSentence:
        def units(self, tokens):
            return TextUnits.of(tokens.unit_starts(), len(tokens), 128)

        def recall(self, scores, context, question, budget):
            units = self.units(context.tokens)
            assert scores.shape == (len(units),)  # the scorer scored the units this recaller asked for
            return units.positions([len(units) - 1])

    ilre = ILRe(tiny_model("llama"), tokenizer, ILReConfig(layer=2, budget=40, max_new_tokens=2),
                recaller=LastSentence())
    result = ilre.with_config(max_new_tokens=3).answer(TEXT.rstrip(), "What is the code?")
    assert [span.text.strip() for span in result.spans] == ["Delta epsilon."]


@pytest.mark.parametrize("unit", ["sentence", "token"])
def test_each_span_carries_the_layer_s_attention_as_a_share_of_the_best(ilre, unit):
    encoded = ilre.encode(TEXT)
    small = ilre.with_config(budget=24, recall_unit=unit)
    positions, _, shares = small.recall(encoded, "What is the code?", with_scores=True)
    assert shares.shape == (len(encoded.tokens),) and float(shares.max()) == pytest.approx(1.0)
    result = small.answer(encoded, "What is the code?")
    assert result.spans and all(0.0 <= s.score <= 1.0 for s in result.spans)
    assert max(s.score for s in result.spans) == pytest.approx(float(shares[positions].max()), abs=1e-4)
    assert all(s.score is None for s in ilre.answer(encoded, "What is the code?").spans)  # covering budget
