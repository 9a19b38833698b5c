"""The layer probe: needle tasks, the selection rule, one-pass measurement that matches the
pipeline, a hand-built retrieval layer that the probe must find, and the command line."""

from __future__ import annotations

import argparse

import json
from dataclasses import replace

import pytest
import torch

from conftest import one_line_error, tiny_model, tiny_tokenizer
from ilre.config import ILReConfig
from ilre.pipeline import ILRe
from ilre.prefiller import StreamingPrefiller
from ilre.profile import Profile, find
from ilre.prompt import tokenize_context
from layer_probe import (LayerProbe, Preference, RecallTable, SampleResult, needle_mask, plan,
                         select_layer)
from layer_probe.__main__ import main, parse_layers
from layer_probe.needles import NeedleSpec, make_task

HEAD_DIM = 16  # of the tiny test models


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A private profile cache, so no test touches the user's."""
    path = tmp_path / "cache"
    monkeypatch.setenv("ILRE_CACHE", str(path))
    return path


def retriever(layer: int, seed: int = 1):
    """A tiny Llama whose layer ``layer`` alone attends from any query token to digit tokens.

    Every layer's output projections are zeroed, so the residual stream is the embedding at
    every depth. The embedding has a constant direction (dim 1) that ``layer``'s q_proj maps onto
    one low-frequency RoPE dimension of every head, and a marker direction (dim 0), set on digit
    tokens only, that its k_proj maps onto the same dimension. Other layers keep random q/k
    projections blind to the marker.
    """
    model, tok = tiny_model("llama", seed), tiny_tokenizer()
    digits = tok.convert_tokens_to_ids(list("0123456789"))
    slow = HEAD_DIM // 2 - 1  # the rotary pair with the lowest frequency: hardly rotated at any distance used
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[:, 0], emb[:, 1] = 0.0, 1.0
        emb[digits, 0] = 3.0
        for i, block in enumerate(model.model.layers):
            block.self_attn.o_proj.weight.zero_()
            block.mlp.down_proj.weight.zero_()
            q, k = block.self_attn.q_proj.weight, block.self_attn.k_proj.weight
            if i == layer:
                q.zero_()
                k.zero_()
                q[slow::HEAD_DIM, 1] = 1.0
                k[slow::HEAD_DIM, 0] = 1.0
            else:
                q[:, 0] = 0.0
                k[:, 0] = 0.0
    return model.eval(), tok


def _result(length: int, digits: int, sentence: list[float], index: int = 0) -> SampleResult:
    spec = NeedleSpec(length, index, 0, digits, "noise", 0.5)
    return SampleResult(spec, length, 10, {"sentence": sentence, "single": [0.0] * len(sentence),
                                            "multi": [1.0] * len(sentence)}, 0.1)


# -- needle tasks ----------------------------------------------------------------------------


def test_parse_layers():
    assert parse_layers("all") is None
    assert parse_layers("3,0-1") == (0, 1, 3)
    for bad in ("a-b", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_layers(bad)


def test_candidate_layers_out_of_range(tokenizer):
    for layers in ([4], [2, 5], [-1, 0], []):
        with pytest.raises(ValueError, match="out of range|no candidate"):
            LayerProbe(tiny_model("llama"), tokenizer, layers=layers)


def test_plan_is_deterministic_and_mixes_keys_haystacks_and_depths():
    specs = plan([1000, 3000], 4, seed=7)
    assert specs == plan([1000, 3000], 4, seed=7)
    assert specs != plan([1000, 3000], 4, seed=8)
    for length in (1000, 3000):
        group = [s for s in specs if s.length == length]
        assert sorted((s.digits, s.haystack) for s in group) == [(5, "noise"), (5, "prose"), (64, "noise"),
                                                                  (64, "prose")]
        assert sorted(s.depth for s in group) == [0.125, 0.375, 0.625, 0.875]
    assert len({s.seed for s in specs}) == len(specs)
    with pytest.raises(ValueError):
        plan([1000], 2, 0, key_digits=(4,))
    with pytest.raises(ValueError):
        plan([1000], 2, 0, haystacks=("lorem",))


def test_needle_mask_marks_exactly_the_needle_without_its_final_stop():
    tok = tiny_tokenizer()  # one token per byte: the mask must match character positions exactly
    task = make_task(NeedleSpec(600, 0, 3, 5, "noise", 0.5), lambda text: len(tok(text)["input_ids"]))
    tokens = tokenize_context(tok, task.context)
    mask = needle_mask(tokens, task.needles)
    needle = task.needles[0]
    at = task.context.index(needle)
    assert needle.endswith(".") and mask.sum() == len(needle) - 1
    assert mask[at:at + len(needle) - 1].all() and not mask[at + len(needle) - 1]
    assert tok.decode(tokens.ids[mask]) == needle[:-1]
    with pytest.raises(ValueError):
        needle_mask(tokens, ["a sentence that is not there"])


# -- the selection rule on hand-made tables ----------------------------------------------------


def test_best_takes_the_highest_recall():
    assert select_layer([0, 1, 2, 3], [0.2, 0.9, 0.95, 0.5]) == 2


def test_ties_go_to_the_shallowest_layer():
    assert select_layer([0, 1, 2, 3, 4], [0.1, 0.8, 1.0, 0.7, 1.0]) == 2
    assert select_layer([3, 5, 9], [1.0, 1.0, 1.0]) == 3
    assert select_layer([0, 1, 2], [0.3, 0.1 + 0.2, 0.3]) == 0  # equal up to float rounding


def test_within_points_trades_recall_for_a_shallower_layer():
    layers, recall = [0, 1, 2, 3, 4], [0.10, 0.985, 0.97, 0.999, 1.0]
    assert select_layer(layers, recall, Preference.parse("best")) == 4
    assert select_layer(layers, recall, Preference.parse("within:1")) == 3
    assert select_layer(layers, recall, Preference.parse("within:2")) == 1
    assert select_layer(layers, recall, Preference.parse("within:3.5")) == 1
    assert select_layer(layers, recall, Preference.parse("within:100")) == 0


def test_preference_parsing_and_wording():
    assert Preference.parse("BEST") == Preference(0.0)
    assert Preference.parse("within:1").name == "within:1"
    assert "ties go to the shallowest" in Preference().describe("recall")
    assert "within 1 percentage point of" in Preference(1).describe("recall")
    for bad in ("fastest", "within", "within:x", "within:-1", "within:101", "best:1"):
        with pytest.raises(ValueError, match="--prefer"):
            Preference.parse(bad)


def test_recall_table_averages_per_length_and_key_length():
    results = [_result(1000, 5, [0.0, 1.0, 0.5]), _result(1000, 64, [1.0, 0.0, 0.5], 1),
               _result(4000, 5, [0.0, 0.5, 1.0])]
    table = RecallTable.from_samples([3, 6, 9], results)
    assert table.mean["sentence"] == [pytest.approx(1 / 3, abs=1e-4), 0.5, pytest.approx(2 / 3, abs=1e-4)]
    assert table.by_length["sentence"] == {1000: [0.5, 0.5, 0.5], 4000: [0.0, 0.5, 1.0]}
    assert table.by_digits["sentence"] == {5: [0.0, 0.75, 0.75], 64: [1.0, 0.0, 0.5]}
    assert table.mean["multi"] == [1.0, 1.0, 1.0]
    assert select_layer(table.layers, table.mean["sentence"]) == 9


# -- measuring -------------------------------------------------------------------------------


def test_one_prefill_per_sample_serves_every_layer(monkeypatch):
    calls = []
    original = StreamingPrefiller.prefill

    def counting(self, ids, capture=()):
        calls.append((self.layer, tuple(capture)))
        return original(self, ids, capture)

    monkeypatch.setattr(StreamingPrefiller, "prefill", counting)
    probe = LayerProbe(tiny_model("llama"), tiny_tokenizer(), ILReConfig(budget=32))
    results = list(probe.run(plan([700], 3, seed=0)))
    assert calls == [(3, (0, 1, 2))] * 3
    assert all(len(r.recall[m]) == 4 for r in results for m in ("sentence", "single", "multi"))
    assert all(0.0 <= x <= 1.0 for r in results for v in r.recall.values() for x in v)


@pytest.mark.parametrize("recall_unit, kernels, mode", [("sentence", (1, 7, 31), "sentence"),
                                                       ("token", (1, 7, 31), "multi"), ("token", (1,), "single")])
def test_probe_recall_is_what_the_pipeline_recalls(recall_unit, kernels, mode):
    """Each layer's recall equals the needle share of ILRe.recall's own positions at that layer
    (attention alone: the probe leaves the question's words out)."""
    model, tok = retriever(2)
    layers = [0, 2, 3]
    # A window shorter than the context, so the streaming (not a plain forward pass) is what is compared.
    config = ILReConfig(budget=48, recall_unit=recall_unit, kernels=kernels, window=64, chunk_size=100)
    probe = LayerProbe(model, tok, config, layers=layers)
    task = probe.task(NeedleSpec(900, 0, 11, 5, "prose", 0.4))
    recall, n_ctx, _ = probe.measure(task)
    assert any(0 < r < 1 for r in recall[mode])  # not a trivial all-or-nothing comparison
    for i, layer in enumerate(layers):
        ilre = ILRe(model, tok, replace(config, layer=layer, lexical_weight=0.0, hops=0, lexical_passage=0))
        encoded = ilre.encode(task.context)
        positions, _ = ilre.recall(encoded, task.question, task.answer_prefix)
        needle = needle_mask(encoded.tokens, task.needles)
        assert len(encoded.tokens) == n_ctx
        assert recall[mode][i] == pytest.approx(needle[positions].sum().item() / needle.sum().item())


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_probe_finds_the_hand_built_retrieval_layer(layer):
    model, tok = retriever(layer)
    probe = LayerProbe(model, tok, ILReConfig(budget=160))
    results = list(probe.run(plan([800, 1600], 2, seed=0, haystacks=("noise",))))
    table = RecallTable.from_samples(probe.layers, results)
    for mode in ("sentence", "single", "multi"):
        assert select_layer(table.layers, table.mean[mode]) == layer, mode
    sentence = table.mean["sentence"]
    assert sentence[layer] > 0.5
    assert max(r for i, r in enumerate(sentence) if i != layer) < sentence[layer] - 0.3


# -- the command line ------------------------------------------------------------------------


def _error(capsys, argv: list[str]) -> str:
    return one_line_error(capsys, main, argv)


def test_cli_bad_input_gets_one_line(capsys, tmp_path, cache):
    assert "does not exist" in _error(capsys, ["--model", str(tmp_path / "nope"), "--out", str(tmp_path / "p.json")])
    assert "bad length" in _error(capsys, ["--lengths", "4x,16k"])
    assert "unknown --prefer rule" in _error(capsys, ["--prefer", "fastest"])
    assert "key lengths" in _error(capsys, ["--key-digits", "3"])
    assert "haystack" in _error(capsys, ["--haystacks", "noise,lorem"])
    assert "nothing to write" in _error(capsys, ["--no-register"])
    assert "does not exceed --budget" in _error(capsys, ["--lengths", "300,4k", "--budget", "512"])
    with pytest.raises(SystemExit) as exit_:
        main(["--samples", "many"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--samples" in err[0]
    assert not cache.exists()


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for option in ("--model", "--out", "--lengths", "--samples", "--prefer", "--threads", "--layers", "--budget",
                   "--key-digits", "--haystacks", "--seed", "--no-register", "--recall-unit", "--kernels"):
        assert option in out


def test_cli_writes_a_valid_profile_that_the_pipeline_uses(tiny_model_dir, tmp_path, cache, capsys):
    out = tmp_path / "profiles" / "tiny.json"
    argv = ["--model", str(tiny_model_dir), "--out", str(out), "--lengths", "600,1200", "--samples", "2",
            "--budget", "48", "--threads", "1", "--no-progress", "--seed", "5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "recall (%) at 600 tokens" in printed and "<- chosen" in printed

    data = json.loads(out.read_text())
    profile = Profile.read(out)
    extra = profile.extra
    assert profile.model == tiny_model_dir.name and profile.num_layers == 4
    assert extra["layers"] == [0, 1, 2, 3]
    for mode in ("sentence", "single", "multi"):
        assert set(extra["recall"][mode]["by_length"]) == {"600", "1200"}
        assert set(extra["recall"][mode]["by_key_digits"]) == {"5", "64"}
        assert all(len(v) == 4 and all(0 <= x <= 1 for x in v) for v in extra["recall"][mode]["by_length"].values())
    assert profile.layer == select_layer(extra["layers"], extra["recall"]["sentence"]["mean"])
    assert "ties go to the shallowest" in profile.rule
    assert extra["seed"] == 5 and extra["needles"]["key_digits"] == [5, 64]
    assert extra["needles"]["lengths"] == [600, 1200] and len(extra["samples"]) == 4
    assert extra["settings"]["budget"] == 48 and extra["settings"]["kernels"] == [1, 7, 31]
    assert extra["command"].startswith("python -m layer_probe --model") and "--lengths 600,1200" in extra["command"]
    assert data["layer"] == profile.layer and extra["identity"]["num_layers"] == 4
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    registered = cache / "profiles" / f"{tiny_model_dir.name}.json"
    assert registered.read_text() == out.read_text()
    assert find(tiny_model_dir.name, 4).source == str(registered)
    ilre = ILRe.from_pretrained(tiny_model_dir, device="cpu")
    assert ilre.config.layer == profile.layer and ilre.profile.source == str(registered)


def test_cli_prefer_within_takes_a_shallower_layer(tiny_model_dir, tmp_path, cache):
    out = tmp_path / "p.json"
    argv = ["--model", str(tiny_model_dir), "--out", str(out), "--lengths", "600", "--samples", "2",
            "--prefer", "within:100", "--layers", "1-3", "--no-register", "--no-plot", "--no-progress"]
    assert main(argv) == 0
    profile = Profile.read(out)
    assert profile.layer == 1 and profile.extra["layers"] == [1, 2, 3]
    assert profile.extra["selection"]["prefer"] == "within:100" and "within 100 percentage points" in profile.rule
    assert not out.with_suffix(".png").exists() and not cache.exists()


def test_shipped_default_profile_is_valid():
    from ilre.profile import SHIPPED

    path = SHIPPED / "SmolLM2-135M-Instruct.json"
    if not path.is_file():
        pytest.skip("no shipped profile yet")
    profile = Profile.read(path)
    extra = profile.extra
    assert profile.model == "SmolLM2-135M-Instruct" and profile.num_layers == 30
    assert extra["layers"] == list(range(30))
    mode = extra["selection"]["recall_mode"]
    assert mode == "sentence" and extra["settings"]["budget"] == ILReConfig().budget
    assert profile.layer == select_layer(extra["layers"], extra["recall"][mode]["mean"])
    assert extra["command"].startswith("python -m layer_probe") and "/" not in extra["command"].split("--out")[0]
