"""The answer stops when it starts repeating itself, and keeps what came before the loop."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import GenerationConfig

from conftest import SPECIALS, tiny_model
from ilre import arch
from ilre.answerer import REPEAT_NGRAM, generate, repeats, stop_at_repeat, token_words

N = REPEAT_NGRAM


def test_a_loop_is_cut_after_its_first_turn():
    loop = [5, 6, 7, 8]  # "The answer is:" over and over
    assert stop_at_repeat([1, 2] + loop * 6) == [1, 2] + loop


def test_a_loop_that_starts_again_with_a_spaced_word_is_cut_from_that_word():
    """ "The pass key is 388376. The pass key is ..." begins with "The" and loops with " The": two
    ids, one word. Compared by id the cut would leave the answer ending in " The"."""
    run = list(range(1, N + 1))
    ids = [100] + run + [101] + run
    words = {100: "The", 101: "The"}.get
    assert stop_at_repeat(ids) == [100] + run + [101]
    assert stop_at_repeat(ids, key=lambda i: words(i, i)) == [100] + run


def test_token_words_are_the_tokens_text_without_whitespace(tokenizer):
    key = token_words(tokenizer)
    space, t, newline = (tokenizer(c, add_special_tokens=False)["input_ids"][-1] for c in (" ", "T", "\n"))
    assert key(t) == "T" and key(space) == key(newline) == ""


def test_an_answer_without_a_repeated_run_is_kept_whole():
    ids = list(range(40)) + list(range(N - 1))  # repeats a run one token shorter than N
    assert stop_at_repeat(ids) == ids


@given(st.lists(st.integers(0, 3), max_size=60))
def test_what_is_kept_is_a_prefix_without_a_repeated_run(ids):
    kept = stop_at_repeat(ids)
    assert ids[:len(kept)] == kept
    assert not any(repeats(kept[:k]) for k in range(len(kept) + 1))


def test_generate_stops_on_a_loop_and_matches_plain_greedy_before_it(tokenizer):
    model = tiny_model("llama")  # random weights loop early and often
    prompt = torch.tensor(tokenizer("ab ab ab ab ab ab ab ab ab ab", add_special_tokens=False)["input_ids"])
    _, ids = generate(model, tokenizer, prompt, 64)
    with torch.inference_mode():
        plain = model.generate(prompt.view(1, -1), attention_mask=torch.ones(1, prompt.numel(), dtype=torch.long),
                               max_new_tokens=64, do_sample=False, pad_token_id=1)[0, prompt.numel():].tolist()
    assert ids.tolist() == stop_at_repeat(plain, key=token_words(tokenizer))
    assert len(ids) < len(plain)  # this model does loop: the test saw the stop at work


def test_a_temperature_too_small_to_sample_with_decodes_greedily(tokenizer):
    """Logits divided by 1e-260 overflow: sampling would fail, so such a temperature is greedy."""
    from ilre.answerer import Sampling

    model = tiny_model("llama")
    prompt = torch.tensor(tokenizer("ab ab", add_special_tokens=False)["input_ids"])
    tiny = generate(model, tokenizer, prompt, 8, sampling=Sampling(temperature=1e-260, seed=1))
    assert tiny[1].tolist() == generate(model, tokenizer, prompt, 8)[1].tolist()


@pytest.mark.parametrize("capacity", [80, 8])
def test_the_answer_cache_attends_exactly_as_transformers_own(kind, tokenizer, capacity):
    """Answers decoded with ``arch.answer_cache`` (keys written in place into buffers; 8 tokens makes
    them grow twice) and with generate's own concatenating cache: every step's logits bit for bit."""
    model = tiny_model(kind)
    kwargs = arch.answer_cache(model, capacity)
    cache = next(iter(kwargs.values()))
    assert all(type(layer).__name__ == "GrowingLayer" for layer in cache.layers)
    prompt = torch.randint(5, len(SPECIALS) + 256, (1, 40), generator=torch.Generator().manual_seed(1))
    config = GenerationConfig(max_new_tokens=24, min_new_tokens=24, do_sample=False, top_k=None,
                              pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    with torch.inference_mode():
        own = model.generate(prompt, attention_mask=torch.ones_like(prompt), generation_config=config)
        grown = model.generate(prompt, attention_mask=torch.ones_like(prompt), generation_config=config, **kwargs)
    assert torch.equal(own.sequences, grown.sequences)
    assert all(torch.equal(a, b) for a, b in zip(own.logits, grown.logits, strict=True))
    assert cache.get_seq_length() == 40 + 24 - 1
