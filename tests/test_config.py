"""One owner per setting: every component's parameters default to the configuration's, each
field is checked where it is defined, and the command lines are made from the same fields."""

from __future__ import annotations

import inspect
from dataclasses import fields

import pytest

from ilre import cli
from ilre.answerer import generate
from ilre.config import PARTS, AnswerConfig, ILReConfig, PrefillConfig
from ilre.prefiller import StreamingPrefiller
from ilre.prompt import PromptTemplate
from ilre.recaller import RECALLERS, PoolingRecaller, UnitRecaller
from ilre.scorer import QueryScorer

COMPONENTS = (StreamingPrefiller, QueryScorer, UnitRecaller, PoolingRecaller, PromptTemplate, generate)
"""Everything that takes settings of ILReConfig as parameters."""


def _defaults(component) -> dict[str, object]:
    target = component.__init__ if inspect.isclass(component) else component
    return {name: p.default for name, p in inspect.signature(target).parameters.items()
            if p.default is not inspect.Parameter.empty}


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: c.__name__)
def test_a_components_defaults_are_the_configurations(component):
    config = ILReConfig()
    shared = {name: value for name, value in _defaults(component).items() if hasattr(config, name)}
    # StreamingPrefiller's key_dtype is a torch dtype (None: the model's), not the config's name.
    shared.pop("key_dtype", None)
    assert shared == {name: getattr(config, name) for name in shared}


def test_the_components_take_their_parameters_under_the_configurations_names():
    names = {f.name for f in fields(ILReConfig)}
    assert {"sink", "window", "chunk_size", "lag_memory"} <= set(inspect.signature(StreamingPrefiller).parameters)
    assert {f.name for f in fields(QueryScorer)} <= names and {f.name for f in fields(UnitRecaller)} <= names
    assert {f.name for f in fields(PoolingRecaller)} <= names


def test_the_configuration_is_its_parts_and_nothing_twice():
    own = {"layer", "budget", "recall_unit"}
    parts = [f.name for part in PARTS for f in fields(part)]
    assert len(parts) == len(set(parts))
    assert sorted(f.name for f in fields(ILReConfig)) == sorted(parts + list(own))
    assert set(RECALLERS) == set(next(f for f in fields(ILReConfig) if f.name == "recall_unit").metadata["choices"])


def test_every_field_has_help_text():
    docs = cli.field_docs()
    assert set(docs) == {f.name for f in fields(ILReConfig)}
    assert all(len(text) > 20 for text in docs.values())


@pytest.mark.parametrize("bad, field", [
    (dict(window=-1), "window"), (dict(budget=0), "budget"), (dict(pooling="min"), "pooling"),
    (dict(unit_cut=1.0), "unit_cut"), (dict(positions="sideways"), "positions"), (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(lag_memory=8, window=16), "lag_memory"), (dict(kernels=(2,)), "kernels"),
])
def test_a_bad_value_is_refused_by_its_owner_wherever_it_is_made(bad, field):
    """The same check refuses it in the whole configuration and in the component's own."""
    with pytest.raises(ValueError, match=field):
        ILReConfig(**bad)
    owner = next((part for part in PARTS if set(bad) <= {f.name for f in fields(part)}), ILReConfig)
    with pytest.raises(ValueError, match=field):
        owner(**bad)


def test_the_prefiller_is_checked_by_the_prefill_config():
    from conftest import tiny_model

    with pytest.raises(ValueError, match="lag_memory"):
        StreamingPrefiller(tiny_model(), 1, window=16, lag_memory=8)
    assert PrefillConfig().chunk_for("int8") == 128 and AnswerConfig().instruction == ILReConfig().instruction


def test_the_runtime_imports_no_measuring_code_and_ilre_answer_stays_the_function():
    """Installing and running ILRe needs neither evaluation/ nor the benchmarks."""
    import subprocess
    import sys

    code = ("import sys, ilre, ilre.pipeline, ilre.ask, ilre.index.__main__, ilre.serve.__main__; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'evaluation', 'layer_probe'})); "
            "print(callable(ilre.answer) and ilre.answer.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "ilre.api"
    run = subprocess.run([sys.executable, "-m", "ilre.answer", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "--context" in run.stdout
