"""The benchmark (evaluation.bench_measure, scripts/bench.py): FLOP counts by hand, extrapolation marking, and every
measurement on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import tiny_model, tiny_tokenizer
from ilre import cli, quantize
from evaluation import bench_measure as measure, bench_report as report
from evaluation.flops import keys_attended, prefill_flops
from ilre.prefiller import StreamingPrefiller

ROOT = Path(__file__).resolve().parents[1]


def test_keys_attended_by_hand():
    # sink 1, window 4, chunk 3, 10 tokens: chunks at 0, 3, 6, 9 see 0, 3, 5, 5 cached keys
    # plus 1..c of their own: (1+2+3) + (4+5+6) + (6+7+8) + 6 = 48.
    assert keys_attended(10, sink=1, window=4, chunk_size=3) == 48
    # A window covering everything is plain causal attention: n(n+1)/2 whatever the chunk.
    assert keys_attended(100, sink=4, window=1000, chunk_size=7) == 100 * 101 // 2


def test_prefill_flops_by_hand():
    # Tiny Llama: hidden 64, MLP 128, 4 heads / 2 KV heads of 16. Per lower layer:
    # q 64*64 + k 64*32 + v 64*32 + o 64*64 + MLP 3*64*128 = 36864 weights; k_proj at the top 2048.
    f = prefill_flops(StreamingPrefiller(tiny_model("llama"), layer=2, sink=1, window=4, chunk_size=3), 10)
    assert f["params_per_token"] == 2 * 36864 + 2048
    assert f["linear"] == 2 * (2 * 36864 + 2048) * 10
    assert f["attention"] == 4 * 48 * 4 * 16 * 2  # 4 * keys * heads * head_dim * lower layers
    assert f["total"] == 1_515_520 + 24_576
    assert f["mean_keys"] == pytest.approx(4.8)


def test_fit_recovers_a_quadratic():
    a, b = 2e-3, 3e-8
    fit = report.fit_time([(n, a * n + b * n * n) for n in (1000, 2000, 4000)])
    assert fit["a"] == pytest.approx(a, rel=1e-6) and fit["b"] == pytest.approx(b, rel=1e-6)
    assert report.predict(fit, 8000) == pytest.approx(a * 8000 + b * 64e6)
    one = report.fit_time([(1000, 5.0)])
    assert one["points"] == 1 and report.predict(one, 2000) == pytest.approx(20.0)
    assert report.fit_time([]) is None


def test_full_baseline_runs_under_the_cap_and_extrapolates_the_rest(monkeypatch):
    a, b = 1e-3, 1e-6
    calls = []

    def fake(kind, opts, timeout, isolate=True):
        n = int(opts["context_file"])
        calls.append(n)
        t = a * n + b * n * n
        return {"status": "ok", "ttft_s": t, "stages_s": {"tokenize": 0.0, "forward": t}, "peak_rss_bytes": 1}

    monkeypatch.setattr(measure, "run_isolated", fake)
    lengths = [500, 1000, 2000, 4000, 8000]
    rows = [{"length": n, "label": str(n)} for n in lengths]
    # 2000 takes 6 s; 4000 is expected at 20 s, over the 10 s cap: not run, nor anything longer.
    measure.run_full_baseline(rows, {}, {n: str(n) for n in lengths}, cap=10.0, isolate=True, limit=None)
    assert calls == [500, 1000, 2000]
    for row in rows:
        full = row["full"]
        expected = a * row["length"] + b * row["length"] ** 2
        assert full["ttft_s"] == pytest.approx(expected, rel=1e-6)
        assert full["extrapolated"] is (row["length"] > 2000)
        if full["extrapolated"]:
            assert full["fit"]["points"] == 3 and "cap" in full["reason"]


def test_a_run_over_the_cap_is_not_a_measurement(monkeypatch):
    def fake(kind, opts, timeout, isolate=True):
        n = int(opts["context_file"])
        if n >= 2000:
            return {"status": "timeout", "timeout_s": timeout}
        return {"status": "ok", "ttft_s": n / 100, "stages_s": {"forward": n / 100}}

    monkeypatch.setattr(measure, "run_isolated", fake)
    rows = [{"length": n, "label": str(n)} for n in (1000, 2000, 3000)]
    measure.run_full_baseline(rows, {}, {n: str(n) for n in (1000, 2000, 3000)}, cap=100.0, isolate=True, limit=None)
    assert rows[0]["full"]["extrapolated"] is False
    assert rows[1]["full_attempt"]["status"] == "timeout"
    assert rows[1]["full"]["extrapolated"] and rows[2]["full"]["extrapolated"]
    assert "full_attempt" not in rows[2]  # nothing longer is tried after one run over the cap


def test_earlier_measurements_join_the_fit(monkeypatch, tmp_path):
    monkeypatch.setattr(measure, "run_isolated", lambda *a, **k: pytest.fail("nothing should run"))
    earlier = {"rows": [{"length": 1000, "full": {"extrapolated": False, "ttft_s": 2.0}},
                        {"length": 2000, "full": {"extrapolated": False, "ttft_s": 6.0}},
                        {"length": 4000, "full": {"extrapolated": True, "ttft_s": 99.0}}]}
    (tmp_path / "bench.json").write_text(json.dumps(earlier))
    prior = measure.measured_full_points(tmp_path / "bench.json")
    assert prior == [(1000, 2.0), (2000, 6.0)]
    rows = [{"length": 8000, "label": "8000"}]
    measure.run_full_baseline(rows, {}, {8000: "x"}, cap=10.0, isolate=True, limit=0, prior=prior)
    # t = a L + b L^2 through (1000, 2) and (2000, 6): a = 1e-3, b = 1e-6.
    assert rows[0]["full"]["extrapolated"] and rows[0]["full"]["ttft_s"] == pytest.approx(8 + 64)


@pytest.fixture(scope="module")
def context_file(tmp_path_factory):
    ctx = measure.make_context(tiny_tokenizer(), 300, seed=1)
    from ilre.prompt import tokenize_context

    assert len(tokenize_context(tiny_tokenizer(), ctx["text"])) == 300
    path = tmp_path_factory.mktemp("ctx") / "context.json"
    path.write_text(json.dumps(ctx))
    return str(path)


def test_measure_ilre_fields(tiny_model_dir, context_file):
    opts = {"model": str(tiny_model_dir), "device": "cpu", "context_file": context_file,
            "layer": 2, "chunk_size": 64, "window": 64, "sink": 4}
    r = measure.measure_ilre(**opts)
    assert r["context_tokens"] == 300 and r["layer"] == 2 and r["chunk_size"] == 64
    assert set(r["stages_s"]) == {"tokenize", "prefill", "score", "recall", "answer"}
    assert r["ttft_s"] >= sum(r["stages_s"].values()) > 0
    params = sum(p.numel() for p in tiny_model("llama").parameters())
    assert r["weights_bytes"] == 4 * params
    assert r["peak_rss_bytes"] >= r["rss_after_load_bytes"] > r["weights_bytes"]
    expected = prefill_flops(StreamingPrefiller(tiny_model("llama"), 2, sink=4, window=64, chunk_size=64), r["streamed_tokens"])
    assert r["prefill_flops"] == expected
    assert r["prefill_gflops_per_s"] == pytest.approx(expected["total"] / r["stages_s"]["prefill"] / 1e9)


def test_measure_full_and_matmul_and_prefill(tiny_model_dir, context_file):
    r = measure.measure_full(context_file, model=str(tiny_model_dir), device="cpu")
    assert r["prompt_tokens"] > 300 and r["ttft_s"] >= r["stages_s"]["forward"] > 0
    m = measure.measure_matmul_peak("cpu", None, None, size=64, seconds=0.01)
    assert m.gflops > 0 and m.size == 64 and m.dtype == "float32"
    p = measure.measure_prefill(context_file, model=str(tiny_model_dir), device="cpu", layer=2, chunk_size=32)
    assert p.chunk_size == 32 and p.tokens_per_s > 0


def test_a_measurement_runs_in_a_process_of_its_own():
    r = measure.run_isolated("matmul", {"device": "cpu", "size": 64, "seconds": 0.01}, timeout=300)
    assert r["status"] == "ok" and r["gflops"] > 0 and r["size"] == 64


def _script(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/bench.py", *argv], capture_output=True, text=True, cwd=ROOT)


def test_end_to_end_json_and_plot(tiny_model_dir, tmp_path):
    out = tmp_path / "bench"
    argv = ["--lengths", "300,600", "--model", str(tiny_model_dir), "--device", "cpu", "--layer", "2",
            "--chunk-size", "64", "--window", "64", "--full-limit", "300", "--matmul-size", "64",
            "--matmul-seconds", "0.01", "--no-isolation", "--out", str(out)]
    done = _script(*argv)
    assert done.returncode == 0, done.stderr
    doc = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").stat().st_size > 0
    assert doc["matmul_peak_gflops"] > 0 and doc["options"]["lengths"] == [300, 600]
    first, second = doc["rows"]
    assert first["full"]["extrapolated"] is False and second["full"]["extrapolated"] is True
    assert second["full"]["ttft_s"] == pytest.approx(first["full"]["ttft_s"] * 4)  # one point: b*L^2
    assert second["speedup_extrapolated"] is True and first["speedup_extrapolated"] is False
    for row in doc["rows"]:
        assert row["ilre"]["status"] == "ok"
        assert 0 < row["ilre"]["prefill_share_of_matmul_peak"]
        assert row["ilre"]["peak_over_weights_bytes"] == row["ilre"]["peak_rss_bytes"] - row["ilre"]["weights_bytes"]
    assert "load_average_start" in doc["host"]


def test_help_lists_every_option():
    text = _script("--help").stdout
    for option in ("--lengths", "--cap-seconds", "--with-1m", "--threads", "--out", "--sweep", "--device"):
        assert option in text


def test_goals_for_the_default_and_the_exact_prefill():
    def ilre(ttft, precision, gflops):
        return {"status": "ok", "ttft_s": ttft, "prefill_precision": precision, "prefill_gflops_per_s": gflops,
                "peak_rss_bytes": 2 * report.GIB, "weights_bytes": report.GIB}

    rows = [{"length": n, "label": cli.length_label(n), "full": {"ttft_s": full, "extrapolated": False},
             "ilre": ilre(t8, "int8", 300.0), "ilre_exact": ilre(t32, "model", 40.0)}
            for n, full, t8, t32 in ((8192, 30.0, 3.0, 8.0), (32768, 300.0, 10.0, 35.0))]
    doc = {"rows": rows, "goals": {}, "matmul_peak_gflops": 100.0}
    report.summarise(doc)
    g = doc["goals"]
    assert g["speedup_8k"]["value"] == 10.0 and g["speedup_8k"]["prefill"] == "int8" and g["speedup_8k"]["holds"]
    assert g["speedup_32k_exact"]["value"] == pytest.approx(300 / 35, abs=0.01)
    assert not g["speedup_32k_exact"]["holds"]
    # The share of the fp32 matmul peak is judged on the prefill in the model's own precision.
    assert g["prefill_share"]["value"] == 0.4 and not g["prefill_share"]["holds"]
    exact_table = report.table(doc, "ilre_exact")
    assert "| 32K |" in exact_table and "| 8.6 |" in exact_table and "| 10.0 |" not in exact_table


def test_index_benchmark_runs_every_system_side_by_side(tiny_model_dir, tmp_path):
    """scripts/bench_index.py on a tiny model: every figure is there, the index answers as the text does."""
    out = tmp_path / "bi"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_index.py"), "--lengths", "1K", "--full-limit",
                          "1K", "--model", str(tiny_model_dir), "--threads", "1", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    doc = json.loads((out / "bench_index.json").read_text())
    (row,) = doc["rows"]
    assert row["same_answer"] and row["tokens"] > 1000 and row["index_bytes"] == (out / "context-1K.ilre").stat().st_size
    for key in ("encode_s", "save_s", "load_s", "question_s", "ilre_text_s", "bm25_s", "full_s"):
        assert row[key] > 0, key
    assert "question from index" in run.stdout and "gb_per_million_tokens" in doc["goals"]


def test_folder_benchmark_indexes_asks_and_updates(tiny_model_dir, tmp_path):
    """scripts/bench_folder.py on a tiny model and a small folder: every figure is there, the update
    encodes only the changed file, and the original folder is not touched."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"mod{i}.py").write_text("".join(f"def f{i}_{j}(x):\n    return x + {j}\n\n" for j in range(30)))
    before = {p.name: p.read_text() for p in src.iterdir()}
    out = tmp_path / "bf"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_folder.py"), "--context", str(src),
                          "--query", "What does f2_7 return?", "--model", str(tiny_model_dir), "--threads", "1",
                          "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    row = json.loads((out / "bench_folder.json").read_text())["row"]
    assert row["files"] == 4 and row["questions"] == 1 and not row["rebuilt"]
    assert row["change"].startswith("1 changed, 0 added, 0 removed") and 0 < row["update_tokens"] < row["tokens"]
    assert {p.name: p.read_text() for p in src.iterdir()} == before
    assert "update_share" in run.stdout or "of it" in run.stdout
    if quantize.int8_decoding_runs_on(torch.device("cpu")):  # the answer's two precisions, side by side
        assert set(row["by_precision"]) == {"model", "int8"} and "answer precision side by side" in run.stdout
        assert all(r["answer_ms_per_token"] > 0 for r in row["by_precision"].values())


def test_decoding_benchmark_times_both_ways_and_compares_their_tokens(tiny_model_dir, tmp_path):
    """scripts/bench_decoding.py on a tiny model: the shape table, and every answer decoded each way."""
    context = tmp_path / "notes.txt"
    context.write_text("The boat leaves at noon. " * 40 + "The pass key is 4412. " + "Birds sing. " * 40)
    out = tmp_path / "bd"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_decoding.py"), "--context", str(context),
                          "--query", "What is the pass key?", "--query", "When does the boat leave?",
                          "--model", str(tiny_model_dir), "--threads", "2", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    doc = json.loads((out / "bench_decoding.json").read_text())
    assert {"64x64", "256x256"} <= {s["shape"] for s in doc["shapes"]}
    assert all(s["whole_us"] > 0 and s["split_us"] > 0 for s in doc["shapes"])
    row = doc["answers"]
    assert len(row["whole"]["seconds"]) == len(row["split"]["seconds"]) == 2 and row["same_tokens"] == 2
    assert len(row["split_concat"]["seconds"]) == 2 and row["same_tokens_concat"] == 2
    assert "token for token the same" in run.stdout and "concatenating cache" in run.stdout


def test_recall_tuning_refuses_a_setting_that_is_not_a_field():
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "tune_recall.py"), "--setting", "close_passage=0.5"],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode != 0 and "not FIELD=VALUE of an ILReConfig field" in run.stderr
    assert "Traceback" not in run.stderr


def test_load_run_counts_every_request_and_samples_memory(tiny_model_dir, tmp_path):
    """scripts/load_serve.py for a few seconds on a tiny model: conversations at once, nothing lost."""
    out = tmp_path / "load"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "load_serve.py"), "--conversations", "3",
                          "--documents", "2", "--length", "1K", "--minutes", "0.1", "--warm-up", "1",
                          "--model", str(tiny_model_dir), "--threads", "1", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    doc = json.loads((out / "load_serve.json").read_text())
    row = doc["row"]
    assert row["requests"] >= 3 and row["lost"] == 0 and doc["memory"]
    assert {r["conversation"] for r in doc["records"]} == {0, 1, 2}
    assert "lost" in run.stdout and "p95" in run.stdout
