"""Per-model profiles: the retrieval layer (and its evidence) chosen offline by the layer probe."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .loading import cache_dir

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).parent / "profiles"
PROFILE_FILE = "ilre_profile.json"


@dataclass
class Profile:
    model: str
    num_layers: int
    layer: int
    rule: str = ""
    source: str = ""
    extra: dict = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | Path) -> "Profile":
        data = json.loads(Path(path).read_text())
        known = {k: data.pop(k) for k in ("model", "num_layers", "layer", "rule") if k in data}
        return cls(**known, source=str(path), extra=data)

    def write(self, path: str | Path) -> None:
        data = {k: v for k, v in asdict(self).items() if k not in ("extra", "source")}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps({**data, **self.extra}, indent=2) + "\n")


def candidates(name: str, model_dir: Path | None) -> list[Path]:
    """Where a model's profile is looked for, first match wins."""
    paths = []
    if model_dir is not None:
        paths.append(Path(model_dir) / PROFILE_FILE)
    paths += [cache_dir() / "profiles" / f"{name}.json", SHIPPED / f"{name}.json"]
    return paths


def find(name: str, num_layers: int, model_dir: Path | None = None) -> Profile | None:
    for path in candidates(name, model_dir):
        if path.is_file():
            profile = Profile.read(path)
            if profile.num_layers == num_layers:
                return profile
            log.warning("ignoring %s: made for %d layers, the model has %d", path, profile.num_layers, num_layers)
    return None


def fallback_layer(num_layers: int) -> int:
    """Without a profile: about 60% of the depth, where the probe found retrieval for SmolLM2."""
    return min(num_layers - 1, round(0.6 * num_layers))


def layer_for(found: Profile | None, num_layers: int, name: str) -> int:
    """The retrieval layer when none is configured: the profile's, else ``fallback_layer`` (with a
    warning that says how to measure one)."""
    if found is not None:
        log.info("retrieval layer %d from profile %s", found.layer, found.source)
        return found.layer
    layer = fallback_layer(num_layers)
    log.warning("no profile for %s: using layer %d; run `python -m layer_probe` to choose one", name, layer)
    return layer
