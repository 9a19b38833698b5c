"""ilre.decoding: one-token products spread over the CPU's threads compute what the model computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, LlamaConfig

from conftest import SPECIALS, tiny_model
from ilre import ILRe, ILReConfig
from ilre.answerer import generate
from ilre import decoding
from ilre.decoding import SPLIT_MIN_WEIGHTS, SplitLinear, split_decoding_copy, split_pays


@pytest.fixture
def two_threads():
    """Two torch threads for the test (the products are split in as many blocks as there are threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def wide_model(seed: int = 0):
    """A random Llama whose query, MLP and output maps (261 x 256) are large enough to be split (its
    k/v maps are not), with the vocabulary of the tiny tokenizer."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(SPECIALS) + 256, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1, tie_word_embeddings=True)
    config._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.15)
    return model.eval()


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("shape", [(1, 1, 256), (1, 256), (256,)])
def test_a_split_row_product_is_the_plain_product(two_threads, bias, shape):
    torch.manual_seed(0)
    linear = nn.Linear(256, 768, bias=bias)
    split = SplitLinear(linear)
    x = torch.randn(shape)
    with torch.inference_mode():
        plain, got = linear(x), split(x)
    assert got.shape == plain.shape
    torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-5)


def test_products_of_several_rows_and_unsplittable_weights_are_the_plain_kernel(two_threads):
    torch.manual_seed(0)
    linear, odd = nn.Linear(256, 768), nn.Linear(256, 767)  # 767 rows do not split in two
    x = torch.randn(1, 5, 256)
    with torch.inference_mode():
        assert torch.equal(SplitLinear(linear)(x), linear(x))
        assert torch.equal(SplitLinear(odd)(x[:, :1]), odd(x[:, :1]))


def test_one_thread_multiplies_whole():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        linear, x = nn.Linear(256, 768), torch.randn(1, 256)
        with torch.inference_mode():
            assert torch.equal(SplitLinear(linear)(x), linear(x))
    finally:
        torch.set_num_threads(before)


def test_the_copy_splits_only_large_float32_maps_and_shares_every_weight():
    model = wide_model()
    before = {n: p.clone() for n, p in model.named_parameters()}
    copy = split_decoding_copy(model, check=False)
    assert copy is not model
    assert all(type(m) is nn.Linear for m in model.modules() if "Linear" in type(m).__name__)
    split = {n for n, m in copy.named_modules() if isinstance(m, SplitLinear)}
    assert "model.layers.0.self_attn.q_proj" in split and "model.layers.0.mlp.down_proj" in split
    assert "lm_head" in split
    assert "model.layers.0.self_attn.k_proj" not in split  # 128 x 256 is under SPLIT_MIN_WEIGHTS
    assert all(m.weight.numel() >= SPLIT_MIN_WEIGHTS for m in copy.modules() if isinstance(m, SplitLinear))
    params = {id(p) for p in model.parameters()}
    assert all(id(p) in params for p in copy.parameters())  # nothing is copied
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_tiny_model_or_one_in_bfloat16_is_its_own_decoding_model():
    tiny = tiny_model("llama")
    assert split_decoding_copy(tiny) is tiny
    wide = wide_model().to(torch.bfloat16)
    assert split_decoding_copy(wide, check=False) is wide


def test_with_one_thread_the_split_does_not_pay_and_the_model_decodes_itself():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = wide_model()
        assert not split_pays([m for m in model.modules() if isinstance(m, nn.Linear)])
        assert split_decoding_copy(model) is model
    finally:
        torch.set_num_threads(before)


def test_decoding_with_the_copy_writes_the_models_own_tokens(two_threads, tokenizer):
    """Greedy answers of the copy and of the model itself, from the same prompts: the same tokens,
    and every step's logits within float32 rounding of the model's."""
    model = wide_model()
    copy = split_decoding_copy(model, check=False)
    for seed in range(4):
        prompt = torch.randint(5, len(SPECIALS) + 256, (60,), generator=torch.Generator().manual_seed(seed))
        _, plain = generate(model, tokenizer, prompt, 24)
        _, split = generate(copy, tokenizer, prompt, 24)
        assert torch.equal(split, plain)
        with torch.inference_mode():
            ids = torch.cat((prompt, plain)).view(1, -1)
            cache = model(ids[:, :60], use_cache=True).past_key_values
            for i in range(60, ids.shape[1]):
                step = copy(ids[:, i:i + 1], past_key_values=cache, use_cache=True).logits[0, -1]
                torch.testing.assert_close(step, model(ids[:, :i + 1]).logits[0, -1], rtol=1e-4, atol=1e-4)


def test_the_pipeline_decodes_with_the_copy_made_once(two_threads, tokenizer, monkeypatch):
    monkeypatch.setattr(decoding, "split_pays", lambda linears: True)  # whatever this machine measures
    model = wide_model()
    ilre = ILRe(model, tokenizer, ILReConfig(layer=1, budget=16, max_new_tokens=6))
    assert ilre.answer_model is ilre.answer_model is not model
    assert isinstance(ilre.answer_model.lm_head, SplitLinear)
    assert ilre.with_config(budget=32).answer_model is ilre.answer_model  # shared by copies
    result = ilre.answer("Birds sing at dawn. " * 20, "When do birds sing?")
    prompt = ilre.prompt("Birds sing at dawn. " * 20, "When do birds sing?")
    assert result.prompt_tokens == prompt.numel()
    assert result.answer_tokens == generate(model, tokenizer, prompt, 6)[1].tolist()
