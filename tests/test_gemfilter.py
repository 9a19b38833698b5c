"""GemFilter (arXiv 2409.17422) as a compared system: its scores are the model's own attention of the
last prompt token at the filter layer, its choice is their top tokens, and the harness runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_model
from ilre import arch
from evaluation import baselines as B
from evaluation import systems as S
from ilre.pipeline import ILRe

ROOT = Path(__file__).resolve().parents[1]
SPAN = (10, 50)


def _ids(n: int = 60, seed: int = 0) -> torch.Tensor:
    return torch.randint(5, 200, (n,), generator=torch.Generator().manual_seed(seed))


def _eager_last_row(model, ids: torch.Tensor, layer: int) -> torch.Tensor:
    """The plain model's attention probabilities of the last token at ``layer``, summed over heads."""
    impl = model.config._attn_implementation
    model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            attentions = model(ids.view(1, -1), output_attentions=True).attentions
    finally:
        model.config._attn_implementation = impl
    return attentions[layer][0, :, -1].sum(dim=0)  # [T]


@pytest.mark.parametrize("layer", [0, 2, 3])
def test_scores_are_the_models_own_last_row_attention(kind, layer):
    model = tiny_model(kind)  # sdpa below the filter layer, as in the harness
    ids = _ids()
    got = B.GemFilter().scores(model, ids, SPAN, layer)
    want = _eager_last_row(model, ids, layer)
    assert got.dtype == torch.float32 and got.shape == (SPAN[1] - SPAN[0],)
    torch.testing.assert_close(got, want[SPAN[0]:SPAN[1]], atol=1e-5, rtol=1e-4)
    # over the whole prompt, the heads' probabilities add up to the number of heads
    whole = B.GemFilter().scores(model, ids, (0, ids.numel()), layer)
    torch.testing.assert_close(whole.sum(), torch.tensor(float(model.config.num_attention_heads)))


def test_layers_above_the_filter_layer_never_run():
    model = tiny_model("llama")
    layer = 1
    ran = []
    hooks = [model.model.layers[layer].mlp.register_forward_hook(lambda *a: ran.append("mlp")),
             model.model.layers[layer].self_attn.o_proj.register_forward_hook(lambda *a: ran.append("o_proj")),
             *(m.register_forward_pre_hook(lambda *a, i=i: ran.append(i))
               for i, m in enumerate(model.model.layers) if i > layer),
             model.model.norm.register_forward_pre_hook(lambda *a: ran.append("norm")),
             model.lm_head.register_forward_pre_hook(lambda *a: ran.append("lm_head"))]
    try:
        B.GemFilter().select(model, _ids(), SPAN, layer, 8)
    finally:
        for h in hooks:
            h.remove()
    assert ran == []
    # and the hook that stopped the pass is gone: the model runs whole again
    with torch.no_grad():
        assert model(_ids().view(1, -1)).logits.shape[1] == 60


def test_choice_is_the_top_budget_of_the_scores_in_text_order():
    model = tiny_model("qwen2")
    ids = _ids(seed=1)
    gem = B.GemFilter()
    scores = gem.scores(model, ids, SPAN, 2)
    for budget in (1, 7, 39):
        pos = gem.select(model, ids, SPAN, 2, budget)
        assert pos.numel() == budget and torch.equal(pos, torch.unique(pos))  # exactly budget, sorted, unique
        assert torch.equal(pos, torch.sort(torch.topk(scores, budget).indices).values)
        # every kept token scores at least as high as every dropped one
        dropped = torch.ones(scores.numel(), dtype=torch.bool)
        dropped[pos] = False
        assert scores[pos].min() >= scores[dropped].max()


def test_covering_budget_reads_the_whole_context_without_a_pass():
    n = SPAN[1] - SPAN[0]
    for budget in (n, n + 1, 10**6):  # no model needed: nothing runs
        assert B.GemFilter().select(None, _ids(), SPAN, 2, budget).tolist() == list(range(n))
    assert B.GemFilter.top(torch.rand(5), 5).tolist() == list(range(5))


def test_bad_span_or_layer_is_refused():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="span"):
        B.GemFilter().scores(model, _ids(), (10, 70), 1)
    with pytest.raises(ValueError, match="filter layer 4 is out of range"):
        B.GemFilter().scores(model, _ids(), SPAN, 4)
    with pytest.raises(ValueError, match="out of range"):
        arch.attention_input(model, _ids(), -1)


# --- in the harness --------------------------------------------------------------------

def test_system_is_capped_and_its_fingerprint_follows_the_layer(tiny_model_dir):
    system = S.SYSTEMS["gemfilter"]
    assert system.capped and isinstance(system.selector, B.GemFilter)
    ilre = ILRe.from_pretrained(tiny_model_dir, device="cpu", budget=64)
    assert system.settings(ilre)["layer"] == ilre.config.layer
    other = ilre.with_config(layer=(ilre.config.layer + 1) % ilre.decoder.num_layers)
    assert system.fingerprint(other) != system.fingerprint(ilre)
    assert system.fingerprint(ilre.with_config(budget=32)) != system.fingerprint(ilre)


def _evaluate():
    from conftest import load_script

    return load_script("evaluate")


def test_harness_runs_it_under_the_length_cap_and_skips_it_above(tmp_path, tiny_model_dir):
    evaluate = _evaluate()
    out = tmp_path / "r"
    argv = ["--model", str(tiny_model_dir), "--tasks", "passkey", "--lengths", "300", "--samples", "1",
            "--budget", "64", "--max-new-tokens", "3", "--threads", "1", "--no-progress",
            "--systems", "gemfilter", "--out", str(out)]
    assert evaluate.main([*argv, "--max-context-tokens", "100"]) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == [S.OVER_LENGTH]
    assert evaluate.main(argv) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == [S.OVER_LENGTH, S.OK]
    row = rows[-1]
    assert row["system"] == "gemfilter" and row["kept_tokens"] == 64
    assert set(row["stages"]) == {"tokenize", "filter_pass", "recall", "answer"}
    assert row["time_s"] > 0 and row["prompt_tokens"] > 64
    assert S.SYSTEMS["gemfilter"].label in (out / "table.md").read_text()
