"""The int8 prefill: when it is chosen, that it leaves the model alone, and how close its keys are."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_model
from ilre import quantize
from ilre.answerer import stop_at_repeat, token_words
from ilre.config import ILReConfig
from ilre.pipeline import ILRe
from ilre.prefiller import StreamingPrefiller

LAYER = 2
needs_int8 = pytest.mark.skipif(not quantize.int8_available(), reason="this torch build has no int8 kernels")


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(5, 200, (n,), generator=torch.Generator().manual_seed(seed))


def test_model_precision_is_always_honoured():
    assert quantize.resolve("model", torch.empty(1)) == "model"
    assert quantize.resolve("model", torch.empty(1, dtype=torch.bfloat16)) == "model"


@needs_int8
def test_auto_is_int8_on_cpu_float32_only():
    assert quantize.resolve("auto", torch.empty(1)) == "int8"
    assert quantize.resolve("auto", torch.empty(1, dtype=torch.bfloat16)) == "model"
    assert quantize.resolve("auto", torch.empty(1, device="meta")) == "model"


@pytest.mark.parametrize("param, words", [(torch.empty(1, dtype=torch.bfloat16), "bfloat16"),
                                          (torch.empty(1, device="meta"), "meta")])
def test_explicit_int8_where_it_cannot_run_names_the_reason(param, words):
    with pytest.raises(ValueError, match=words):
        quantize.resolve("int8", param)


def test_auto_without_kernels_falls_back_and_int8_refuses(monkeypatch):
    monkeypatch.setattr(quantize, "int8_available", lambda: False)
    assert quantize.resolve("auto", torch.empty(1)) == "model"
    with pytest.raises(ValueError, match="no dynamic int8"):
        quantize.resolve("int8", torch.empty(1))


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="prefill_precision"):
        ILReConfig(prefill_precision="int4")


@needs_int8
def test_int8_copies_leave_the_model_untouched():
    model = tiny_model("llama")
    before = {n: p.clone() for n, p in model.named_parameters()}
    copies = quantize.int8_layers(model.model.layers, LAYER)
    assert len(copies) == LAYER + 1
    assert all(type(m) is nn.Linear for m in model.modules() if "Linear" in type(m).__name__)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert not any(type(m) is nn.Linear for m in copies.modules())


@needs_int8
def test_int8_keys_are_close_to_the_exact_keys_but_not_equal(kind):
    model = tiny_model(kind)
    ids = _ids(300)
    exact = StreamingPrefiller(model, LAYER, window=64, chunk_size=32).prefill(ids).key_cache
    copies = quantize.int8_layers(model.model.layers, LAYER)
    approx = StreamingPrefiller(model, LAYER, window=64, chunk_size=32, layers=copies).prefill(ids).key_cache
    a, b = exact.keys[:, : ids.numel()], approx.keys[:, : ids.numel()]
    cosine = torch.nn.functional.cosine_similarity(a, b, dim=-1)
    assert not torch.equal(a, b)  # really computed in int8
    assert cosine.mean() > 0.97, cosine.mean()


def test_too_few_stand_in_layers_is_an_error():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="stand-in"):
        StreamingPrefiller(model, LAYER, layers=model.model.layers[:LAYER])


@needs_int8
def test_int8_prefill_with_covering_budget_is_still_plain_generate(tokenizer):
    """A covering budget reads everything, so the answer cannot depend on the prefill's precision."""
    model = tiny_model("llama")
    context = "The secret code is 4417. " + "Dogs bark at night; birds sing at dawn. " * 8
    ilre = ILRe(model, tokenizer, ILReConfig(layer=LAYER, budget=10**6, max_new_tokens=8, prefill_precision="int8"))
    result = ilre.answer(context, "What is the code?")
    prompt = ilre.full_prompt_ids(context, "What is the code?")
    with torch.inference_mode():
        plain = model.generate(prompt.view(1, -1), attention_mask=torch.ones(1, prompt.numel(), dtype=torch.long),
                               max_new_tokens=8, do_sample=False, pad_token_id=1)
    assert result.answer_tokens == stop_at_repeat(plain[0, prompt.numel():].tolist(), key=token_words(tokenizer))


@needs_int8
def test_pipeline_makes_the_int8_copies_once_and_uses_them(tokenizer, monkeypatch):
    model = tiny_model("llama")
    made = []
    real = quantize.int8_layers
    monkeypatch.setattr(quantize, "int8_layers", lambda layers, upto: made.append(upto) or real(layers, upto))
    ilre = ILRe(model, tokenizer, ILReConfig(layer=LAYER, budget=16, max_new_tokens=2, prefill_precision="int8"))
    encoded = ilre.encode("Birds sing at dawn. " * 20)
    ilre.answer(encoded, "When do birds sing?")
    ilre.answer(encoded, "Who sings?")
    assert made == [LAYER]
    assert ilre.prefiller().decoder.layers is ilre._shared["layers"]
    exact = ILRe(model, tokenizer, ILReConfig(layer=LAYER, prefill_precision="model"))
    assert exact.prefiller().decoder.layers is model.model.layers


@needs_int8
def test_default_chunk_follows_the_prefill_precision(tokenizer):
    model = tiny_model("llama")
    chunk = lambda **kw: ILRe(model, tokenizer, ILReConfig(layer=LAYER, **kw)).prefiller().chunk_size  # noqa: E731
    assert chunk(prefill_precision="int8") == 128
    assert chunk(prefill_precision="model") == 512
    assert chunk(prefill_precision="int8", chunk_size=77) == chunk(prefill_precision="model", chunk_size=77) == 77


needs_int8_weights = pytest.mark.skipif(not quantize.int8_weights_available(),
                                        reason="this torch build has no weight-only int8 kernel")


@needs_int8_weights
def test_int8_weight_linear_is_exact_on_long_steps_and_close_on_decoding_steps():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48, bias=True)
    fast = quantize.Int8WeightLinear(linear)
    long = torch.randn(2, quantize.DECODE_ROWS + 1, 64)
    assert torch.equal(fast(long), linear(long))  # the prompt is read with the model's own weights
    step = torch.randn(1, 1, 64)
    approx, exact = fast(step), linear(step)
    assert approx.shape == exact.shape == (1, 1, 48)
    assert not torch.equal(approx, exact)  # really computed in int8
    assert (approx - exact).abs().max() < 0.02 * exact.abs().max(), (approx - exact).abs().max()


@needs_int8_weights
def test_int8_decoding_copy_shares_the_weights_and_leaves_the_model_alone():
    model = tiny_model("llama")
    before = {n: p.clone() for n, p in model.named_parameters()}
    copy = quantize.int8_decoding_copy(model)
    assert all(type(m) is nn.Linear for m in model.modules() if "Linear" in type(m).__name__)
    assert not any(type(m) is nn.Linear for m in copy.modules())
    params = {id(p) for p in model.parameters()}
    assert all(id(p) in params for p in copy.parameters())  # no float weight is copied
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    ids = _ids(40).view(1, -1)
    with torch.inference_mode():
        exact = model(ids).logits[0, -1]
        long = copy(ids).logits[0, -1]  # 40 tokens: the model's own weights
        assert torch.equal(long, exact)


@needs_int8_weights
def test_answer_precision_int8_decodes_with_the_copy_made_once(tokenizer):
    model = tiny_model("llama")
    ilre = ILRe(model, tokenizer, ILReConfig(layer=LAYER, budget=16, max_new_tokens=6, answer_precision="int8"))
    assert ilre.answer_model is ilre.answer_model is not model
    assert ilre.with_config(answer_precision="model").answer_model is model
    encoded = ilre.encode("Birds sing at dawn. " * 20)
    result = ilre.answer(encoded, "When do birds sing?")
    assert 1 <= len(result.answer_tokens) <= 6
    assert ilre.with_config(answer_precision="int8").answer_model is ilre.answer_model  # shared by copies


def test_answer_precision_int8_off_cpu_is_refused(tokenizer):
    ilre = ILRe(tiny_model("llama").to("meta"), tokenizer, ILReConfig(layer=LAYER, answer_precision="int8"))
    with pytest.raises(ValueError, match="answer_precision='int8' needs the model on CPU"):
        ilre.answer_model
