"""The evaluation harness on a tiny random model: end to end, resumable, caps, and each
baseline's selection invariants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ilre import quantize
from ilre.answerer import generate
from evaluation import baselines as B
from evaluation import harness as H
from evaluation import systems as S
from evaluation.report import markdown
from ilre.config import ILReConfig
from ilre.pipeline import ILRe
from ilre.prompt import ContextTokens, tokenize_context
from evaluation.tasks import Task, read_jsonl, score

from conftest import load_script, tiny_model, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]
evaluate = load_script("evaluate")

SYSTEMS = ",".join(S.DEFAULT_SYSTEMS)


def run(out: Path, model_dir: Path, *extra: str) -> int:
    return evaluate.main(["--model", str(model_dir), "--tasks", "passkey,vt", "--lengths", "300", "--samples", "1",
                          "--budget", "64", "--max-new-tokens", "3", "--threads", "1", "--no-progress",
                          "--systems", SYSTEMS, "--out", str(out), *extra])


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def current_rows(out: Path, model_dir: Path, budget: int = 64) -> dict:
    ilre = ILRe.from_pretrained(model_dir, device="cpu", budget=budget, max_new_tokens=3)
    return H.Store(out).rows({s: S.SYSTEMS[s].fingerprint(ilre) for s in S.DEFAULT_SYSTEMS})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("results")
    assert run(out, tiny_model_dir) == 0
    return out


# --- the harness end to end ------------------------------------------------------------

def test_run_writes_tasks_predictions_table_and_plot(finished_run):
    out = finished_run
    for name in ("tasks.jsonl", "predictions.jsonl", "table.md", "accuracy.png", "settings.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    tasks = read_jsonl(out / "tasks.jsonl")
    assert sorted(t.task for t in tasks) == ["passkey", "vt"]
    rows = rows_of(out)
    assert len(rows) == len(tasks) * len(S.DEFAULT_SYSTEMS)
    assert {r["status"] for r in rows} == {S.OK}
    for r in rows:  # RULER scoring: every expected string, case-insensitive substring
        assert r["correct"] == score(r["prediction"], r["answers"])
        assert r["time_s"] > 0 and r["peak_mib"] >= -1e3
        if r["system"] == "full":
            assert r["kept_tokens"] == r["tokens"] and r["kept_answers"] == 1.0
        else:
            assert r["kept_tokens"] <= 64
    table = (out / "table.md").read_text()
    for s in S.DEFAULT_SYSTEMS:
        assert S.SYSTEMS[s].label in table
    assert "python scripts/evaluate.py" in table and "## Score by task" in table and "## Answers in what the system read, by task" in table


def test_second_run_recomputes_nothing(tmp_path, tiny_model_dir, monkeypatch):
    out = tmp_path / "r"
    assert run(out, tiny_model_dir) == 0
    before = (out / "predictions.jsonl").read_text()

    def fail(*args, **kwargs):
        raise AssertionError("a finished row was recomputed")

    monkeypatch.setattr(H.Runner, "_answer", fail)
    monkeypatch.setattr(H.Runner, "warm_up", fail)
    assert run(out, tiny_model_dir) == 0
    assert (out / "predictions.jsonl").read_text() == before


def test_interrupted_run_resumes_only_missing_rows(tmp_path, tiny_model_dir):
    out = tmp_path / "r"
    assert run(out, tiny_model_dir) == 0
    lines = (out / "predictions.jsonl").read_text().splitlines()
    kept = lines[:5]
    (out / "predictions.jsonl").write_text("\n".join(kept) + "\n" + lines[5][:20])  # a row cut short
    assert run(out, tiny_model_dir) == 0
    rows = current_rows(out, tiny_model_dir)
    assert len(rows) == len(lines)
    for line in kept:  # untouched, not recomputed
        r = json.loads(line)
        assert rows[(r["key"], r["system"])] == r


def test_length_cap_skips_full_context_and_snapkv(tmp_path, tiny_model_dir):
    out = tmp_path / "r"
    assert run(out, tiny_model_dir, "--max-context-tokens", "100") == 0
    rows = rows_of(out)
    capped = {r["status"] for r in rows if r["system"] in ("full", "snapkv")}
    assert capped == {S.OVER_LENGTH}
    assert {r["status"] for r in rows if r["system"] not in ("full", "snapkv")} == {S.OK}
    assert S.OVER_LENGTH in (out / "table.md").read_text()
    # raising the cap computes the skipped rows, and only those
    assert run(out, tiny_model_dir) == 0
    assert {r["status"] for r in current_rows(out, tiny_model_dir).values()} == {S.OK}


def test_time_cap_skips_longer_lengths():
    runner = H.Runner.__new__(H.Runner)
    runner.max_context_tokens, runner.max_seconds = 10**6, 100.0
    slow = {("k", "full"): {"status": S.OK, "system": "full", "length": 1024, "stages": {"full_pass": 150.0}}}
    task = Task("c", "q", "", ["a"], "passkey", 4096, 0, tokens=4000)
    assert runner._over_cap(task, slow) == S.OVER_TIME
    assert runner._over_cap(Task("c", "q", "", ["a"], "passkey", 1024, 0, tokens=1000), slow) is None
    slow[("k", "full")]["stages"]["full_pass"] = 50.0
    assert runner._over_cap(task, slow) is None
    # every system that needs the full pass counts toward the cap, the kernel-31 SnapKV too
    k31 = {("k", "snapkv-k31"): {**slow[("k", "full")], "system": "snapkv-k31", "stages": {"full_pass": 150.0}}}
    assert runner._over_cap(task, k31) == S.OVER_TIME


def test_other_settings_recompute_only_the_systems_they_touch(tmp_path, tiny_model_dir):
    out = tmp_path / "r"
    assert run(out, tiny_model_dir) == 0
    first = rows_of(out)
    assert run(out, tiny_model_dir, "--budget", "32") == 0
    added = rows_of(out)[len(first):]
    # full context reads everything whatever the budget: its rows stay; every other system reruns
    assert sorted({r["system"] for r in added}) == sorted(set(S.DEFAULT_SYSTEMS) - {"full"})
    assert all(r["kept_tokens"] <= 32 for r in added)
    table = (out / "table.md").read_text()
    assert "budget: 32 tokens" in table
    settings = json.loads((out / "settings.json").read_text())
    assert len(settings["ilre"]) == 2 and len(settings["full"]) == 1
    # the table is made of the current settings' rows only
    assert {r["config"] for r in current_rows(out, tiny_model_dir, budget=32).values() if r["system"] == "rag"} \
        == {S.SYSTEMS["rag"].fingerprint(ILRe.from_pretrained(tiny_model_dir, device="cpu", budget=32,
                                                                  max_new_tokens=3))}


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "passkey"], "go together"),
    (["--report-only", "--out", "{tmp}/empty"], "no results yet"),
    (["--tasks-file", "{tmp}/missing.jsonl"], "does not exist"),
    (["--ruler", "{tmp}", "--ruler-haystack", "{tmp}/missing.txt"], "--ruler-haystack"),
])
def test_bad_input_gets_one_line(argv, message, tmp_path, tiny_model_dir, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert evaluate.main(["--model", str(tiny_model_dir), "--threads", "1", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


@pytest.mark.parametrize("argv", [["--lengths", "4Q"], ["--tasks", "nope"], ["--systems", "gpt5"],
                                  ["--preset", "huge"], ["--budget", "0"], ["--threads", "0"]])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        evaluate.build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        evaluate.build_parser().parse_args(["--help"])
    capsys.readouterr()
    for action in evaluate.build_parser()._actions:
        assert action.help, action.dest


def test_table_marks_skipped_cells():
    rows = [dict(key="a", system="full", task="passkey", length=1024, status=S.OK, correct=1.0, share=1.0,
                 kept_answers=1.0, time_s=2.0, peak_mib=10.0),
            dict(key="b", system="full", task="passkey", length=4096, status=S.OVER_LENGTH)]
    text = markdown(rows, [S.SYSTEMS["full"]], {"title": "t"})
    assert "| Full context | 100 | skipped (over length cap) |" in text


def test_peak_memory_sees_an_allocation():
    with H.PeakMemory() as mem:
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB
        x += 1
        del x
    assert mem.peak_mib > 40


# --- baselines -------------------------------------------------------------------------

def sample_of(text: str, question: str) -> B.Sample:
    tok = tiny_tokenizer()
    e = lambda s: torch.tensor(tok(s, add_special_tokens=False)["input_ids"], dtype=torch.long)  # noqa: E731
    return B.Sample(tokenize_context(tok, text), e("<|user|>"), e(question + "<|end|><|assistant|>"), e(" ... "),
                    question)


@given(length=st.integers(1, 400), budget=st.integers(1, 500), sink=st.integers(0, 8))
@settings(max_examples=60, deadline=None)
def test_streaming_keeps_sink_and_recent_tokens(length, budget, sink):
    sample = B.Sample(ContextTokens("x" * length, torch.arange(length), torch.zeros(length, 2, dtype=torch.long)),
                      *(torch.zeros(0, dtype=torch.long),) * 3, "q")
    pos = B.StreamingLLM(sink).select(sample, budget)
    if budget >= length:
        assert pos.tolist() == list(range(length))
        return
    assert pos.numel() == budget and torch.equal(pos, torch.unique(pos))
    assert pos[: min(sink, budget)].tolist() == list(range(min(sink, budget)))
    assert pos[min(sink, budget):].tolist() == list(range(length - (budget - min(sink, budget)), length))


FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "


def test_rag_picks_the_chunk_with_the_question_words():
    needle = "The violet giraffe of Oslo keeps the code 8812."
    text = FILLER * 20 + needle + " " + FILLER * 20
    sample = sample_of(text, "Which code does the violet giraffe of Oslo keep?")
    rag = B.BM25Chunks(chunk_tokens=64)
    chunks = rag.chunks(sample.tokens)
    assert chunks[0][0] == 0 and chunks[-1][1] == len(sample.tokens)
    assert all(a < b <= a + 64 for a, b in chunks) and all(x[1] == y[0] for x, y in zip(chunks, chunks[1:]))
    pos = rag.select(sample, 64)
    assert pos.numel() <= 64 and torch.equal(pos, torch.unique(pos))
    assert "8812" in sample.kept_text(pos)


def test_snapkv_style_keeps_the_attended_region_within_budget():
    torch.manual_seed(0)
    att = torch.rand(3, 4, 500) * 0.01
    att[1:, :, 300:305] += 1.0  # two of three layers attend to one place
    for aggregate in ("votes", "mean"):
        pos = B.SnapKVStyle(kernel=7, aggregate=aggregate).select(att, 40)
        assert pos.numel() == 40 and torch.equal(pos, torch.unique(pos))
        assert set(range(300, 305)) <= set(pos.tolist())
    assert B.SnapKVStyle().select(att, 600).tolist() == list(range(500))
    with pytest.raises(ValueError):
        B.SnapKVStyle(aggregate="max")


def test_window_attention_matches_eager_attention():
    model = tiny_model("llama")
    model.config._attn_implementation = "eager"
    ids = torch.randint(5, 200, (1, 60))
    with torch.no_grad():
        eager = model(ids, output_attentions=True).attentions
        with B.WindowAttention(model, 8, (10, 50)) as probe:
            model(ids)
    got = probe.scores()
    want = torch.stack([a[0, :, -8:, 10:50].mean(dim=1) for a in eager])
    assert got.shape == want.shape == (4, 4, 40)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_full_pass_answer_equals_generate(tiny_model_dir):
    ilre = ILRe.from_pretrained(tiny_model_dir, device="cpu")
    text = FILLER * 6
    ids = ilre.full_prompt_ids(text, "What is green?", "It is")
    sample = sample_of(text, "q")
    assert torch.equal(sample.prompt(torch.arange(len(sample.tokens))), sample.full_prompt())
    fp = B.full_pass(ilre.model, ids, 10)
    got, got_ids = B.greedy_continue(ilre.model, ilre.tokenizer, fp.cache, fp.last_logits, 12)
    want, want_ids = generate(ilre.model, ilre.tokenizer, ids, 12)
    assert got_ids.tolist() == want_ids.tolist() and got == want


@pytest.mark.skipif(not quantize.int8_available(), reason="this torch build has no int8 kernels")
def test_ilre_variants_share_a_prefill_only_when_its_settings_match(tmp_path, tiny_model_dir, monkeypatch):
    calls = []
    real = ILRe.encode
    monkeypatch.setattr(ILRe, "encode", lambda self, *a, **k: calls.append(self.config.prefill_precision)
                        or real(self, *a, **k))
    out = tmp_path / "r"
    assert evaluate.main(["--model", str(tiny_model_dir), "--tasks", "passkey", "--lengths", "300",
                          "--budget", "64", "--max-new-tokens", "2", "--threads", "1", "--no-progress",
                          "--systems", "ilre,ilre-mk,ilre-exact,ilre-int8", "--out", str(out)]) == 0
    warm_up = 1
    # 'auto' is int8 on this CPU: ilre, ilre-mk and ilre-int8 share one prefill, the exact one streams its own.
    assert sorted(calls[warm_up:]) == ["auto", "model"]
    assert {r["system"] for r in rows_of(out) if r["status"] == "ok"} == {"ilre", "ilre-mk", "ilre-exact", "ilre-int8"}


def test_a_shared_context_is_encoded_once_into_an_index_and_read_back(tmp_path, monkeypatch):
    ilre = ILRe(tiny_model("llama"), tiny_tokenizer(), ILReConfig(layer=2, budget=32, max_new_tokens=3))
    context = "The lamp is green. " * 40 + "The code is 4417. " + "The sea is calm. " * 40
    tasks = [Task(context, q, "", ["4417"], "whole/lexical", 900, 0, needles=["The code is 4417."])
             for q in ("What is the code?", "Which code is it?")]
    encodes = []
    real = ILRe.encode
    monkeypatch.setattr(ILRe, "encode", lambda self, text, *a, **k: encodes.append(text == context) or real(self, text, *a, **k))
    systems = [S.SYSTEMS["ilre"], S.SYSTEMS["rag"]]
    rows = H.Runner(ilre, H.Store(tmp_path / "a"), systems, progress=False, index_dir=tmp_path / "idx").run(tasks)
    assert sum(encodes) == 1 and len(list((tmp_path / "idx").glob("*.ilre"))) == 1
    assert {r["status"] for r in rows.values()} == {S.OK} and len(rows) == 4
    fresh = H.Runner(ilre, H.Store(tmp_path / "b"), systems, progress=False, index_dir=tmp_path / "idx").run(tasks)
    assert sum(encodes) == 1  # the second run reads the index
    for key, row in rows.items():
        assert fresh[key]["prediction"] == row["prediction"] and fresh[key]["kept_passage"] == row["kept_passage"]


def test_a_folder_s_tasks_are_encoded_as_files_and_score_the_answering_file(tmp_path):
    from evaluation.folders import _tasks
    from ilre.sources import Sources

    sources = Sources.join([("notes.txt", "The lamp is green. " * 30), ("vault.py", "def code():\n    return 4417\n"),
                            ("sea.txt", "The sea is calm. " * 30)])
    asked = [{"file": "vault.py", "question": "What does code return?", "answers": ["4417"],
              "evidence": "return 4417", "wording": "lexical"}]
    (task,) = _tasks(sources, asked, "code", len)
    assert task.task == "code/lexical" and [f["path"] for f in task.files] == ["notes.txt", "vault.py", "sea.txt"]
    with pytest.raises(ValueError, match="not once inside notes.txt"):
        _tasks(sources, [{**asked[0], "file": "notes.txt"}], "code", len)
    vault = sources.files[1]
    assert H.file_read(task, [(vault.start, vault.start + 5)]) is True
    assert H.file_read(task, [(0, vault.header + 3)]) is False  # its header line alone is not the file
    ilre = ILRe(tiny_model("llama"), tiny_tokenizer(), ILReConfig(layer=2, budget=24, max_new_tokens=2))
    rows = H.Runner(ilre, H.Store(tmp_path / "a"), [S.SYSTEMS["ilre"], S.SYSTEMS["rag"]], progress=False,
                    index_dir=tmp_path / "idx").run([task])
    assert {r["status"] for r in rows.values()} == {S.OK}
    assert all(isinstance(r["kept_file"], bool) for r in rows.values())
    encoded = ilre.load_index(next((tmp_path / "idx").glob("*.ilre")))
    assert [f.path for f in encoded.tokens.files] == ["notes.txt", "vault.py", "sea.txt"]
