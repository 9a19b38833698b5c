"""Layer probe: choose a model's retrieval layer offline, by needle recall, and ship it as a profile.

    python -m layer_probe --model path/to/model --out profiles/mymodel.json

Library use::

    probe = LayerProbe(model, tokenizer, ILReConfig(), name="mymodel")
    results = list(probe.run(plan([4096, 16384], samples=4, seed=0)))
    run = ProbeRun(lengths=[4096, 16384], samples=4, seed=0, key_digits=[5, 64], haystacks=["noise", "prose"])
    profile, table = build_profile(model, "mymodel", probe.config, probe.layers, results, run)
    write_profile(profile, Path("profiles/mymodel.json"))   # and <cache>/profiles/mymodel.json
"""

from __future__ import annotations

from importlib import import_module

_EXPORTS = {
    "measure": ("MODES", "LayerProbe", "RecallTable", "SampleResult", "recallers", "selection_mode"),
    "needles": ("NeedleSpec", "make_task", "needle_mask", "plan"),
    "profile_writer": ("ProbeRun", "build_profile", "registered_path", "write_profile"),
    "select": ("Preference", "select_layer"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    """Import on first use: torch and transformers load only when a probe is built."""
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'layer_probe' has no attribute {name!r}")
