"""Turning a probe's measurements into an :class:`ilre.profile.Profile`, and writing it where
:func:`ilre.profile.find` looks, so that ``ilre.answer`` uses the chosen layer by default."""

from __future__ import annotations

import datetime
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import transformers

from ilre import arch
from ilre.config import ILReConfig
from ilre.loading import cache_dir
from ilre.profile import Profile

from .measure import RecallTable, SampleResult, mode_labels, selection_mode
from .select import Preference, select_layer

log = logging.getLogger(__name__)

FORMAT = "layer_probe/1"
SETTINGS = ("budget", "recall_unit", "kernels", "shares", "pooling", "max_unit_tokens", "sink", "window",
            "chunk_size", "prefill_precision", "positions", "distance")


def registered_path(name: str) -> Path:
    """Where :func:`ilre.profile.find` looks for a profile of the model called ``name``."""
    return cache_dir() / "profiles" / f"{name}.json"


def model_identity(model, name: str) -> dict:
    """What the profile was measured on: the name ``ilre.loading.load`` gives and the architecture."""
    config = model.config
    dec = arch.decoder_of(model)
    return {
        "name": name,
        "model_type": config.model_type,
        "num_layers": dec.num_layers,
        "hidden_size": config.hidden_size,
        "num_heads": dec.num_heads,
        "num_kv_heads": dec.num_kv_heads,
        "head_dim": dec.head_dim,
        "vocab_size": config.vocab_size,
        "trained_window": getattr(config, "max_position_embeddings", None),
        "rope_theta": getattr(config, "rope_theta", None) or (getattr(config, "rope_parameters", None) or {}).get(
            "rope_theta"),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
    }


@dataclass
class ProbeRun:
    """Everything a profile records about how it was measured, besides the recall itself."""

    lengths: list[int]
    samples: int
    seed: int
    key_digits: list[int]
    haystacks: list[str]
    prefer: Preference = Preference()
    command: str = ""
    seconds: float = 0.0
    threads: int = field(default_factory=torch.get_num_threads)
    device: str = "cpu"


def build_profile(model, name: str, config: ILReConfig, layers: Sequence[int],
                  results: Sequence[SampleResult], run: ProbeRun) -> tuple[Profile, RecallTable]:
    """The profile: layer chosen by ``run.prefer`` on the pipeline's own recall mode, and the evidence."""
    table = RecallTable.from_samples(layers, results)
    mode = selection_mode(config)
    chosen = select_layer(table.layers, table.mean[mode], run.prefer)
    best = select_layer(table.layers, table.mean[mode])
    at = table.layers.index
    measure = (f"mean {mode} recall of the needle tokens over {len(results)} passkey samples "
               f"({', '.join(map(str, run.lengths))} tokens) at budget {config.budget}")
    extra = {
        "format": FORMAT,
        "identity": model_identity(model, name),
        "selection": {
            "prefer": run.prefer.name,
            "recall_mode": mode,
            "chosen_recall": round(table.mean[mode][at(chosen)], 4),
            "best_layer": best,
            "best_recall": round(table.mean[mode][at(best)], 4),
        },
        "layers": table.layers,
        "recall_modes": mode_labels(config),
        "recall": table.to_dict(),
        "needles": {
            "task": "passkey",
            "lengths": run.lengths,
            "samples_per_length": run.samples,
            "key_digits": run.key_digits,
            "haystacks": run.haystacks,
            "needle_tokens": {str(d): sorted({r.needle_tokens for r in results if r.spec.digits == d})
                              for d in run.key_digits},
        },
        "settings": {k: _jsonable(getattr(config, k)) for k in SETTINGS},
        "seed": run.seed,
        "command": run.command,
        "probe": {
            "seconds": round(run.seconds, 1),
            "context_tokens": sum(r.tokens for r in results),
            "threads": run.threads,
            "device": run.device,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "date": datetime.date.today().isoformat(),
        },
        "samples": [r.to_dict() for r in results],
    }
    profile = Profile(model=name, num_layers=arch.decoder_of(model).num_layers, layer=chosen,
                      rule=run.prefer.describe(measure), extra=extra)
    return profile, table


def write_profile(profile: Profile, out: Path | None, register: bool = True) -> list[Path]:
    """Write the profile to ``out`` and (``register``) to the cache where the pipeline finds it."""
    paths = [] if out is None else [Path(out)]
    if register:
        cached = registered_path(profile.model)
        if not any(p.resolve() == cached.resolve() for p in paths):
            paths.append(cached)
    text = profile_json(profile)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        log.info("profile written to %s", path)
    return paths


_NUMBER_LIST = re.compile(r"\[\s*(-?[\d.e+-]+(?:,\s*-?[\d.e+-]+)*)\s*\]")


def profile_json(profile: Profile) -> str:
    """The JSON :meth:`Profile.write` writes, with lists of numbers kept on one line (readable diffs)."""
    data = {"model": profile.model, "num_layers": profile.num_layers, "layer": profile.layer,
            "rule": profile.rule, **profile.extra}
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m[1].split(",")) + "]", text) + "\n"


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value
