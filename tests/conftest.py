"""Tiny random Llama-family models and a byte-level tokenizer, built offline with a fixed seed."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (AutoModelForCausalLM, LlamaConfig, MistralConfig, PreTrainedTokenizerFast,
                          Qwen2Config, Qwen3Config)

CHAT_TEMPLATE = (
    "{% for m in messages %}<|user|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIALS = ["<s>", "</s>", "<|user|>", "<|end|>", "<|assistant|>"]


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="run the device exactness tests (tests/test_device_exactness.py) on this device: cpu, "
                          "cuda[:N] or npu[:N], in its dtype (bfloat16 on an accelerator)")


@pytest.fixture(scope="session")
def backend(request):
    """The device of ``pytest --device`` (default cpu), through the project's own selection."""
    from device import select_backend

    return select_backend(request.config.getoption("--device"), None)


def tiny_tokenizer(chat: bool = True) -> PreTrainedTokenizerFast:
    """One token per byte, plus a few special tokens: offsets are exact, vocabulary is tiny."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(SPECIALS + alphabet)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                  pad_token="</s>", additional_special_tokens=SPECIALS[2:])
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def _common() -> dict:
    return dict(vocab_size=len(SPECIALS) + 256, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                bos_token_id=0, eos_token_id=1, pad_token_id=1, tie_word_embeddings=False)


CONFIGS = {
    "llama": lambda: LlamaConfig(**_common()),
    "qwen2": lambda: Qwen2Config(**_common(), use_sliding_window=False),
    "qwen3": lambda: Qwen3Config(**_common(), head_dim=16, use_sliding_window=False),
    "mistral": lambda: MistralConfig(**_common(), sliding_window=None),
}


def tiny_model(kind: str = "llama", seed: int = 0):
    torch.manual_seed(seed)
    config = CONFIGS[kind]()
    config._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Random init at std 0.02 gives near-uniform attention; larger weights make positions matter.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.15)
    return model.eval()


@pytest.fixture(params=list(CONFIGS))
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny Llama with its tokenizer, loadable like any local model directory."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny_model("llama").save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def one_line_error(capsys, main, argv: list[str]) -> str:
    """The one stderr line of a command line that refuses ``argv`` with exit status 2."""
    try:
        status = main(argv)
    except SystemExit as exc:  # bad usage, refused by the argument parser
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


def load_script(name: str):
    """A script of scripts/ (not a package) as a module, registered so that its dataclasses work."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
