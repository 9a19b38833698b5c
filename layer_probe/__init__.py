"""Layer probe: choose a model's retrieval layer offline, by needle recall, and ship it as a profile.

    python -m layer_probe --model path/to/model --out profiles/mymodel.json

Library use::

    probe = LayerProbe(model, tokenizer, ILReConfig(), name="mymodel")
    results = list(probe.run(plan([4096, 16384], samples=4, seed=0)))
    run = ProbeRun(lengths=[4096, 16384], samples=4, seed=0, key_digits=[5, 64], haystacks=["noise", "prose"])
    profile, table = build_profile(model, "mymodel", probe.config, probe.layers, results, run)
    write_profile(profile, Path("profiles/mymodel.json"))   # and <cache>/profiles/mymodel.json
"""

from .measure import MODES, LayerProbe, RecallTable, SampleResult, recallers, selection_mode
from .needles import NeedleSpec, make_task, needle_mask, parse_lengths, plan
from .profile_writer import ProbeRun, build_profile, registered_path, write_profile
from .select import Preference, select_layer

__all__ = [
    "MODES",
    "LayerProbe",
    "NeedleSpec",
    "Preference",
    "ProbeRun",
    "RecallTable",
    "SampleResult",
    "build_profile",
    "make_task",
    "needle_mask",
    "parse_lengths",
    "plan",
    "recallers",
    "registered_path",
    "select_layer",
    "selection_mode",
    "write_profile",
]
