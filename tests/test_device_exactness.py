"""The exactness checks on the device of ``pytest --device`` (default cpu), in its own dtype.

On the CPU (float32) the tolerances are those of tests/test_exactness.py; in bfloat16 on an
accelerator, a few units in bfloat16's last place (rtol 2e-2 on keys, 5e-3 absolute on scores),
and generation is compared token for token only where both paths run the same kernels.
"""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_model, tiny_tokenizer
from ilre.config import ILReConfig
from ilre.pipeline import ILRe
from ilre.prefiller import StreamingPrefiller
from ilre.scorer import QueryScorer

LAYER = 2
CONTEXT = ("The first line says hello. The second line is about cats! " * 6
           + "The secret code is 4417. " + "Dogs bark at night; birds sing at dawn. " * 5)


def _model(backend, kind: str = "llama"):
    return tiny_model(kind).to(backend.torch_device, backend.dtype)


def _tol(backend) -> dict:
    return {"rtol": 1e-4, "atol": 1e-4} if backend.dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-2}


def _ids(n: int, backend, seed: int = 0) -> torch.Tensor:
    return torch.randint(5, 200, (n,), generator=torch.Generator().manual_seed(seed)).to(backend.torch_device)


@pytest.mark.parametrize("kind", ["llama", "qwen3"])
def test_keys_equal_the_full_forward_on_the_device(backend, kind):
    model = _model(backend, kind)
    ids = _ids(150, backend)
    state = StreamingPrefiller(model, LAYER, sink=4, window=1000, chunk_size=64).prefill(ids)
    attn = model.model.layers[LAYER].self_attn
    got = {}
    hook = getattr(attn, "k_norm", attn.k_proj).register_forward_hook(lambda _m, _i, out: got.__setitem__("k", out))
    with torch.inference_mode():
        model(ids.view(1, -1))
    hook.remove()
    expected = got["k"].reshape(1, ids.numel(), -1, attn.head_dim).transpose(1, 2)[0]
    assert state.key_cache.keys.device.type == backend.torch_device.type
    torch.testing.assert_close(state.key_cache.keys.float(), expected.float(), **_tol(backend))


def test_scores_are_float32_blocked_or_not_on_the_device(backend):
    model = _model(backend)
    prefiller = StreamingPrefiller(model, LAYER, window=64, chunk_size=32)
    state = prefiller.prefill(_ids(300, backend, seed=5))
    q = prefiller.query_states(state, _ids(7, backend, seed=6))
    one = QueryScorer("relative", block_size=10_000).score(prefiller.decoder, q, state.key_cache)
    blocked = QueryScorer("relative", block_size=17).score(prefiller.decoder, q, state.key_cache)
    assert one.dtype == torch.float32 and torch.isfinite(one).all()
    torch.testing.assert_close(one, blocked, rtol=1e-5, atol=1e-6)
    assert one.sum().item() == pytest.approx(1.0, abs=1e-3)


def test_a_covering_budget_gives_plain_generate_on_the_device(backend):
    tok = tiny_tokenizer()
    model = _model(backend)
    ilre = ILRe(model, tok, ILReConfig(layer=LAYER, budget=10**6, max_new_tokens=8), backend=backend)
    result = ilre.answer(CONTEXT, "What is the code?", answer_prefix="The code is")
    prompt = ilre.full_prompt_ids(CONTEXT, "What is the code?", answer_prefix="The code is").to(backend.torch_device)
    with torch.inference_mode():
        plain = model.generate(prompt.view(1, -1), attention_mask=torch.ones_like(prompt).view(1, -1),
                               max_new_tokens=8, do_sample=False, pad_token_id=1)
    assert result.whole_context and result.prompt_tokens == prompt.numel()
    from ilre.answerer import stop_at_repeat

    assert result.answer_tokens == stop_at_repeat(plain[0, prompt.numel():].tolist())


def test_recall_on_the_device_reads_whole_units_within_the_budget(backend):
    ilre = ILRe(_model(backend), tiny_tokenizer(), ILReConfig(layer=LAYER, budget=40, max_new_tokens=3),
                backend=backend)
    result = ilre.answer(CONTEXT, "What is the code?")
    assert not result.whole_context and 0 < result.recalled_tokens <= 40
    for span in result.spans:
        assert CONTEXT[span.start:span.end] == span.text
