"""The streaming and recall machinery reduce to the plain model where they should."""

from __future__ import annotations

import pytest
import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb, repeat_kv

from conftest import tiny_model
from ilre.answerer import stop_at_repeat, token_words
from ilre.config import ILReConfig
from ilre.pipeline import ILRe
from ilre.prefiller import StreamingPrefiller
from ilre.scorer import QueryScorer

LAYER = 2


def _capture(model, ids: torch.Tensor, layer: int) -> dict[str, torch.Tensor]:
    """Pre-RoPE q and k [1, H, T, D] of one layer in a plain full forward pass, via hooks."""
    attn = model.model.layers[layer].self_attn
    got = {}
    mods = {"q": getattr(attn, "q_norm", attn.q_proj), "k": getattr(attn, "k_norm", attn.k_proj)}
    hooks = [m.register_forward_hook(lambda _m, _i, out, n=n: got.__setitem__(n, out)) for n, m in mods.items()]
    with torch.inference_mode():
        model(ids.view(1, -1))
    for h in hooks:
        h.remove()
    d = attn.head_dim
    return {n: t.reshape(1, ids.numel(), -1, d).transpose(1, 2) for n, t in got.items()}


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(5, 200, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_window_covering_context_gives_full_forward_keys(kind, chunk):
    model = tiny_model(kind)
    ids = _ids(150)
    state = StreamingPrefiller(model, LAYER, sink=4, window=1000, chunk_size=chunk).prefill(ids)
    expected = _capture(model, ids, LAYER)["k"][0]
    assert state.key_cache.filled == ids.numel()
    torch.testing.assert_close(state.key_cache.keys, expected, rtol=1e-4, atol=1e-4)


def test_keys_do_not_depend_on_chunk_size():
    model = tiny_model("llama")
    ids = _ids(90, seed=1)
    keys = [StreamingPrefiller(model, LAYER, window=200, chunk_size=c).prefill(ids).key_cache.keys for c in (1, 5, 90)]
    torch.testing.assert_close(keys[0], keys[1], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(keys[0], keys[2], rtol=1e-4, atol=1e-4)


def test_short_window_is_exact_until_it_fills_then_differs():
    model = tiny_model("llama")
    ids = _ids(120, seed=2)
    sink, window = 4, 16
    state = StreamingPrefiller(model, LAYER, sink=sink, window=window, chunk_size=8).prefill(ids)
    expected = _capture(model, ids, LAYER)["k"][0]
    exact = sink + window
    torch.testing.assert_close(state.key_cache.keys[:, :exact], expected[:, :exact], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(state.key_cache.keys[:, -10:], expected[:, -10:], atol=1e-3)
    assert all(w.length == sink + window for w in state.windows)


def test_lower_layers_never_exceed_sink_plus_window():
    model = tiny_model("qwen2")
    state = StreamingPrefiller(model, 3, sink=2, window=10, chunk_size=4).prefill(_ids(77))
    assert [w.length for w in state.windows] == [12, 12, 12]


def test_absolute_scores_are_the_full_forward_attention_to_the_context(kind):
    """Scorer with absolute positions == softmax over context keys of the plain model's q·k."""
    model = tiny_model(kind)
    ctx, query = _ids(100, seed=3), _ids(9, seed=4)
    prefiller = StreamingPrefiller(model, LAYER, window=1000, chunk_size=16)
    state = prefiller.prefill(ctx)
    scores = QueryScorer("absolute", block_size=13).score(prefiller.decoder, prefiller.query_states(state, query), state.key_cache)

    full = torch.cat((ctx, query))
    qk = _capture(model, full, LAYER)
    cos, sin = model.model.rotary_emb(qk["q"], torch.arange(full.numel()).view(1, -1))
    q, k = apply_rotary_pos_emb(qk["q"], qk["k"], cos, sin)
    attn = model.model.layers[LAYER].self_attn
    k = repeat_kv(k, attn.num_key_value_groups)[:, :, : ctx.numel()]
    probs = torch.softmax((q[:, :, ctx.numel():] @ k.transpose(-1, -2)) * attn.scaling, dim=-1)
    torch.testing.assert_close(scores, probs.mean(dim=(0, 1, 2)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("positions", ["relative", "absolute"])
def test_blocked_scoring_equals_one_block_and_sums_to_one(positions):
    model = tiny_model("llama")
    prefiller = StreamingPrefiller(model, LAYER, window=64, chunk_size=32)
    state = prefiller.prefill(_ids(300, seed=5))
    q = prefiller.query_states(state, _ids(7, seed=6))
    one = QueryScorer(positions, block_size=10_000).score(prefiller.decoder, q, state.key_cache)
    blocked = QueryScorer(positions, block_size=17).score(prefiller.decoder, q, state.key_cache)
    torch.testing.assert_close(one, blocked, rtol=1e-5, atol=1e-7)
    assert one.sum().item() == pytest.approx(1.0, abs=1e-4)


def test_unit_scores_are_each_query_tokens_best_key_in_the_unit_averaged():
    """Per-unit scoring, blocked, == for every (head, query token) the unit's best probability, averaged."""
    from ilre import arch

    model = tiny_model("llama")
    prefiller = StreamingPrefiller(model, LAYER, window=64, chunk_size=32)
    state = prefiller.prefill(_ids(300, seed=5))
    q = prefiller.query_states(state, _ids(7, seed=6))
    dec = prefiller.decoder  # by hand: queries at 50.., keys un-rotated (at 0), one softmax per head and token
    cos, sin = arch.rope_tables(dec, 50 + torch.arange(q.shape[1]), torch.float32)
    k = state.key_cache.keys.repeat_interleave(dec.groups, dim=0)
    probs = torch.softmax(arch.rotate(q, cos, sin) @ k.transpose(1, 2) * model.model.layers[LAYER].self_attn.scaling, -1)
    sentences = torch.searchsorted(torch.tensor([0, 10, 11, 90, 200, 250]), torch.arange(300), right=True) - 1
    scattered = torch.randint(0, 6, (300,), generator=torch.Generator().manual_seed(7))  # each unit in many runs
    for units in (sentences, scattered):
        got = QueryScorer("relative", distance=50, block_size=37).score(dec, q, state.key_cache, units, 6)
        want = torch.stack([probs[..., units == u].amax(dim=-1) for u in range(6)], dim=-1).mean(dim=(0, 1))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    per_key = QueryScorer("relative", distance=50).score(dec, q, state.key_cache, torch.arange(300), 300)
    torch.testing.assert_close(per_key, QueryScorer("relative", distance=50).score(dec, q, state.key_cache))


def test_query_does_not_change_the_encoded_context():
    model = tiny_model("llama")
    prefiller = StreamingPrefiller(model, LAYER, window=8, chunk_size=8)
    state = prefiller.prefill(_ids(40))
    before = [w.keys.clone() for w in state.windows]
    prefiller.query_states(state, _ids(5))
    assert all(torch.equal(a, w.keys) for a, w in zip(before, state.windows))


CONTEXT = ("The first line says hello. The second line is about cats! " * 6
           + "The secret code is 4417. " + "Dogs bark at night; birds sing at dawn. " * 5)


@pytest.mark.parametrize("chat", [True, False])
def test_budget_covering_context_gives_plain_generate(kind, chat):
    from conftest import tiny_tokenizer

    tok = tiny_tokenizer(chat)
    model = tiny_model(kind)
    ilre = ILRe(model, tok, ILReConfig(layer=LAYER, budget=10**6, max_new_tokens=12, chunk_size=64))
    result = ilre.answer(CONTEXT, "What is the code?", answer_prefix="The code is")
    prompt = ilre.full_prompt_ids(CONTEXT, "What is the code?", answer_prefix="The code is")
    with torch.inference_mode():
        plain = model.generate(prompt.view(1, -1), attention_mask=torch.ones(1, prompt.numel(), dtype=torch.long),
                               max_new_tokens=12, do_sample=False, pad_token_id=1)
    assert result.whole_context
    assert result.recalled_tokens == result.context_tokens == len(CONTEXT.encode())
    assert result.prompt_tokens == prompt.numel()
    assert result.answer_tokens == stop_at_repeat(plain[0, prompt.numel():].tolist(), key=token_words(tok))
    assert "".join(s.text for s in result.spans) == CONTEXT


@pytest.mark.parametrize("unit", ["sentence", "token"])
def test_small_budget_reads_only_the_recalled_tokens(tokenizer, unit):
    model = tiny_model("llama")
    ilre = ILRe(model, tokenizer, ILReConfig(layer=LAYER, budget=40, recall_unit=unit, max_new_tokens=4))
    result = ilre.answer(CONTEXT, "What is the code?")
    assert not result.whole_context
    # Tokens fill the budget; whole sentences fill it as far as whole ones fit, never with fragments.
    assert result.recalled_tokens == 40 if unit == "token" else 20 <= result.recalled_tokens <= 40
    assert sum(s.tokens for s in result.spans) == result.recalled_tokens
    for span in result.spans:
        assert CONTEXT[span.start:span.end] == span.text
    starts = [s.start for s in result.spans]
    assert starts == sorted(starts)
    assert result.prompt_tokens < result.context_tokens


def test_units_start_at_sentence_boundaries(tokenizer):
    from ilre.prompt import tokenize_context

    text = "One two. Three four!\nFive six? Seven"
    tokens = tokenize_context(tokenizer, text)
    starts = tokens.unit_starts().tolist()
    firsts = [text[int(tokens.offsets[i, 0]):int(tokens.offsets[i, 1])] for i in starts]
    assert starts[0] == 0 and len(starts) == 4
    assert firsts == ["O", "T", "F", "S"]


def test_captured_layers_match_their_own_truncated_runs():
    model = tiny_model("llama")
    ids, query = _ids(70, seed=8), _ids(6, seed=9)
    deep = StreamingPrefiller(model, 3, window=16, chunk_size=8)
    state = deep.prefill(ids, capture=(1, 2))
    queries = deep.query_states_by_layer(state, query)
    for layer in (1, 2):
        own = StreamingPrefiller(model, layer, window=16, chunk_size=8)
        own_state = own.prefill(ids)
        torch.testing.assert_close(state.captured[layer].keys, own_state.key_cache.keys)
        torch.testing.assert_close(queries[layer], own.query_states(own_state, query))


@pytest.mark.parametrize("chat", [True, False])
def test_question_mask_marks_the_question_and_nothing_else(chat):
    from conftest import tiny_tokenizer
    from ilre.prompt import PromptTemplate

    tok = tiny_tokenizer(chat)
    template = PromptTemplate(tok, "Read this.")
    ids = template.suffix_ids("Where is Bob?", "Bob is in")
    mask = template.question_mask("Where is Bob?", "Bob is in")
    assert mask.shape == ids.shape and mask.dtype == torch.bool
    assert tok.decode(ids[mask]) == "Where is Bob?"
    assert "Bob is in" in tok.decode(ids[~mask])
