"""The exactness checks on the device of ``pytest --device`` (default cpu), in its own dtype.

On the CPU (float32) the tolerances are those of tests/test_exactness.py; in bfloat16 on an
accelerator, keys within 2% (relative norm: kernels round bfloat16 differently), scores 5e-3 absolute,
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


def _assert_close(got: torch.Tensor, expected: torch.Tensor, backend) -> None:
    """Element by element in float32; in bfloat16, whose roundings differ by kernel (flash, memory-
    efficient, the model's own), the whole tensor within 2% (relative Frobenius norm)."""
    got, expected = got.float(), expected.float()
    if backend.dtype == torch.float32:
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    else:
        assert (torch.linalg.norm(got - expected) / torch.linalg.norm(expected)).item() < 2e-2


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
    _assert_close(state.key_cache.keys, expected, backend)


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
    from ilre.answerer import stop_at_repeat, token_words

    assert result.answer_tokens == stop_at_repeat(plain[0, prompt.numel():].tolist(), key=token_words(tok))


def test_recall_on_the_device_reads_whole_units_within_the_budget(backend):
    ilre = ILRe(_model(backend), tiny_tokenizer(), ILReConfig(layer=LAYER, budget=40, max_new_tokens=3),
                backend=backend)
    result = ilre.answer(CONTEXT, "What is the code?")
    assert not result.whole_context and 0 < result.recalled_tokens <= 40
    for span in result.spans:
        assert CONTEXT[span.start:span.end] == span.text


def test_keys_kept_in_host_memory_recall_as_on_the_device(backend, tmp_path):
    """key_memory='host' (the choice for contexts whose keys do not fit the device) changes no result;
    and a saved index answers on the device as the text does."""
    model, tok = _model(backend), tiny_tokenizer()
    results = {}
    for where in ("device", "host"):
        ilre = ILRe(model, tok, ILReConfig(layer=LAYER, budget=40, max_new_tokens=4, key_memory=where),
                    backend=backend)
        encoded = ilre.encode(CONTEXT)
        expected = backend.torch_device.type if where == "device" else "cpu"
        assert encoded.state.key_cache.keys.device.type == expected
        results[where] = ilre.answer(encoded, "What is the code?")
    assert [(s.start, s.end) for s in results["host"].spans] == [(s.start, s.end) for s in results["device"].spans]
    assert results["host"].answer_tokens == results["device"].answer_tokens
    encoded.save(tmp_path / "c.ilre")
    loaded = ilre.load_index(tmp_path / "c.ilre")
    assert ilre.answer(loaded, "What is the code?").answer_tokens == results["host"].answer_tokens


def test_auto_key_memory_moves_keys_to_the_host_only_when_the_device_is_short(backend, monkeypatch):
    if backend.name == "cpu":
        pytest.skip("the CPU keeps its keys in its own memory")
    import device.memory

    ilre = ILRe(_model(backend), tiny_tokenizer(), ILReConfig(layer=LAYER, budget=40), backend=backend)
    assert ilre.key_device(10_000).type == backend.name
    monkeypatch.setattr(device.memory, "available_bytes", lambda where="cpu": 2**40 if where == "cpu" else 1)
    assert ilre.key_device(10_000).type == "cpu"


def test_the_window_prefill_keeps_the_fused_attention_kernel_on_cuda(backend):
    """Flash or memory-efficient attention only (no math fallback): the chunk mask must not rule them out."""
    if backend.name != "cuda":
        pytest.skip("CUDA's kernel choice")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = _model(backend)
    ids = _ids(300, backend)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        fused = StreamingPrefiller(model, LAYER, sink=4, window=64, chunk_size=32).prefill(ids)
    with sdpa_kernel([SDPBackend.MATH]):
        math = StreamingPrefiller(model, LAYER, sink=4, window=64, chunk_size=32).prefill(ids)
    _assert_close(fused.key_cache.keys, math.key_cache.keys, backend)


def test_the_dense_chunk_mask_is_torchs_bottom_right_causal_bias():
    """What the CPU and the NPU attend to is what CUDA's lower-right causal bias means."""
    from torch.nn.attention.bias import causal_lower_right

    from ilre.prefiller import dense_chunk_mask

    for chunk, cached in ((1, 0), (5, 0), (5, 3), (128, 260)):
        expected = causal_lower_right(chunk, cached + chunk)._materialize(torch.device("cpu"))
        assert torch.equal(dense_chunk_mask(chunk, cached, torch.device("cpu")), expected)
