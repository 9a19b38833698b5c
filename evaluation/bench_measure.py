"""The benchmark's measurements, each run in a fresh interpreter of its own.

A process's peak resident memory cannot be reset, so each measurement gets its own worker
(``python -m evaluation.bench_measure SPEC RESULT``) and reports that process's peak; without
isolation they run in the calling process instead. The full-context baseline is measured
while it fits a time cap, and extrapolated beyond it.

torch and the model are imported inside the measurements, so that the command line answers
``--help`` at once.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from ilre import cli
from .bench_report import MIB, fit_time, predict

QUESTION = "What is the pass key mentioned in the document?"
ANSWER_PREFIX = "The pass key is"


def make_context(tokenizer, n_tokens: int, seed: int = 0) -> dict:
    """Prose of ``n_tokens`` tokens (as ``tokenize_context`` counts them) with a pass key at half depth."""
    import random

    from evaluation.haystack import Haystack, render
    from ilre.prompt import tokenize_context

    rng = random.Random(seed)
    key = "".join(str(rng.randint(1, 9)) for _ in range(6))
    needle = f"The pass key is {key}. Remember it. {key} is the pass key."
    hay = Haystack("prose", seed)
    sentences = max(8, int(n_tokens / 14 * 1.15) + 8)  # ~14 tokens per sentence, with a margin
    while True:
        text = render(*hay.take(sentences), [(0.5, needle)])
        tokens = tokenize_context(tokenizer, text)
        if len(tokens) >= n_tokens:
            break
        sentences = int(sentences * 1.3) + 8
    # Cut after token n; re-tokenising can merge the last tokens differently, so step back if needed.
    for end in range(n_tokens, 0, -1):
        cut = text[: int(tokens.offsets[end - 1, 1])]
        if len(tokenize_context(tokenizer, cut)) <= n_tokens:
            return {"text": cut, "answer": key}
    raise ValueError(f"cannot cut a context of {n_tokens} tokens")


def weights_bytes(model) -> int:
    """Bytes of the model's parameters, tied tensors counted once (by their storage)."""
    return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in model.parameters()}.values())


def _footprint(backend, model, load_s: float, rss_loaded: int) -> dict:
    """What a run of the model reports besides its timings: loading, memory, threads, device."""
    import torch

    from device.memory import peak_rss_bytes

    # The kernel's high-water mark (ru_maxrss) is updated lazily: memory taken and handed back between
    # two of its updates can leave it a few pages below an RSS read earlier; a peak is at least that.
    out = {"load_s": load_s, "weights_bytes": weights_bytes(model), "rss_after_load_bytes": rss_loaded,
           "peak_rss_bytes": max(peak_rss_bytes(), rss_loaded), "threads": torch.get_num_threads(),
           "device": backend.describe()}
    if backend.name != "cpu":
        out["device_peak_bytes"] = backend.peak_memory_bytes()
    return out


# -- the measurements --------------------------------------------------------------------------


@dataclass
class MatmulPeak:
    """The best FLOP/s of ``torch.mm`` on two size x size matrices over the trials."""

    gflops: float
    size: int
    dtype: str
    threads: int
    trials: int
    device: str


def measure_matmul_peak(device: str | None = None, dtype: str | None = None, threads: int | None = None,
                        size: int = 2048, seconds: float = 2.0) -> MatmulPeak:
    """Best-of-trials FLOP/s of ``torch.mm`` on two size x size matrices (fp32 on CPU)."""
    import torch

    from device import select_backend

    cli.set_threads(threads)
    backend = select_backend(device, dtype)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(backend.torch_device, backend.dtype)
    b = torch.randn(size, size, generator=g).to(backend.torch_device, backend.dtype)
    out = torch.empty_like(a)
    for _ in range(2):  # warm-up: thread pool, caches, clocks
        torch.mm(a, b, out=out)
    best, spent, trials = math.inf, 0.0, 0
    reps = 1
    while spent < seconds or trials < 3:
        with backend.timer() as t:
            for _ in range(reps):
                torch.mm(a, b, out=out)
        best = min(best, t.seconds / reps)
        spent += t.seconds
        trials += 1
        if t.seconds < 0.05:
            reps *= 2
    return MatmulPeak(2 * size ** 3 / best / 1e9, size, str(backend.dtype).removeprefix("torch."),
                      torch.get_num_threads(), trials, backend.describe())


def measure_ilre(context_file: str, model: str | None = None, device: str | None = None, dtype: str | None = None,
                 threads: int | None = None, warmup: bool = True, **config: Any) -> dict:
    """ILRe's time to first answer token on the context in ``context_file``, by stage.

    ``config``: ILReConfig fields, e.g. the retrieval layer and the prefill's sink, window,
    chunk size and precision.
    """
    from device.memory import rss_bytes
    from ilre.pipeline import ILRe

    cli.set_threads(threads)
    ctx = json.loads(Path(context_file).read_text())
    t0 = time.perf_counter()
    ilre = ILRe.from_pretrained(model, device=device, dtype=dtype, max_new_tokens=1, **config)
    load_s, rss_loaded = time.perf_counter() - t0, rss_bytes()
    backend, c = ilre.backend, ilre.config
    if warmup:  # one-time costs (thread pool, first kernels) out of the timing
        ilre.answer(ctx["text"][:2000], QUESTION, ANSWER_PREFIX)
    backend.reset_peak_memory()
    backend.synchronize()
    t0 = time.perf_counter()
    result = ilre.answer(ctx["text"], QUESTION, ANSWER_PREFIX)
    backend.synchronize()
    total = time.perf_counter() - t0
    stages = {k: result.timings.get(k, 0.0) for k in ("tokenize", "prefill", "score", "recall", "answer")}
    streamed = result.context_tokens + ilre.template.prefix_ids().numel()
    prefiller = ilre.prefiller()  # the chunk is the configured one, or the default for the precision
    from .flops import prefill_flops

    flops = prefill_flops(prefiller, streamed)
    recalled = " ".join(s.text for s in result.spans)
    return {
        "context_tokens": result.context_tokens,
        "streamed_tokens": streamed,
        "layer": c.layer,
        "num_layers": ilre.decoder.num_layers,
        "sink": c.sink, "window": c.window, "chunk_size": prefiller.chunk_size, "budget": c.budget,
        "recall_unit": c.recall_unit,
        "prefill_precision": ilre.prefill_precision,
        "stages_s": stages,
        "other_s": max(0.0, total - sum(stages.values())),
        "ttft_s": total,
        "prompt_tokens": result.prompt_tokens,
        "first_token": ilre.tokenizer.decode(result.answer_tokens),
        "needle_recalled": ctx["answer"] in recalled,
        "prefill_tokens_per_s": streamed / stages["prefill"] if stages["prefill"] > 0 else None,
        "prefill_flops": flops,
        "prefill_gflops_per_s": flops["total"] / stages["prefill"] / 1e9 if stages["prefill"] > 0 else None,
        **_footprint(backend, ilre.model, load_s, rss_loaded),
    }


def measure_full(context_file: str, model: str | None = None, device: str | None = None, dtype: str | None = None,
                 threads: int | None = None, warmup: bool = True) -> dict:
    """The model's own forward over the whole prompt, LM head on the last position only."""
    import torch

    from device import select_backend
    from device.memory import rss_bytes
    from ilre import loading
    from ilre.config import ILReConfig
    from ilre.pipeline import ILRe

    cli.set_threads(threads)
    ctx = json.loads(Path(context_file).read_text())
    backend = select_backend(device, dtype)
    t0 = time.perf_counter()
    lm, tokenizer, name = loading.load(model, backend.torch_device, backend.dtype, backend.attn_implementation)
    load_s = time.perf_counter() - t0
    # The same prompt layout (template, instruction) as ILRe's; layer does not matter here.
    ilre = ILRe(lm, tokenizer, ILReConfig(layer=0), name=name, backend=backend)
    rss_loaded = rss_bytes()

    @torch.inference_mode()
    def first_token(text: str) -> tuple[int, int, dict]:
        times = {}
        t = time.perf_counter()
        ids = ilre.full_prompt_ids(text, QUESTION, ANSWER_PREFIX).to(backend.torch_device)
        backend.synchronize()
        times["tokenize"] = time.perf_counter() - t
        t = time.perf_counter()
        logits = lm(input_ids=ids[None], logits_to_keep=1).logits
        token = int(logits[0, -1].argmax())
        backend.synchronize()
        times["forward"] = time.perf_counter() - t
        return token, ids.numel(), times

    if warmup:
        first_token(ctx["text"][:2000])
    backend.reset_peak_memory()
    t0 = time.perf_counter()
    token, prompt_tokens, times = first_token(ctx["text"])
    total = time.perf_counter() - t0
    return {"prompt_tokens": prompt_tokens, "stages_s": times, "ttft_s": total,
            "first_token": tokenizer.decode([token]), **_footprint(backend, lm, load_s, rss_loaded)}


@dataclass
class PrefillRun:
    """The streaming prefill alone, the best of its repeats."""

    tokens: int
    chunk_size: int
    window: int
    layer: int
    prefill_precision: str
    threads: int
    seconds: float
    tokens_per_s: float
    gflops_per_s: float
    flops: dict


def measure_prefill(context_file: str, model: str | None = None, device: str | None = None,
                    dtype: str | None = None, threads: int | None = None, repeats: int = 1,
                    **config: Any) -> PrefillRun:
    """The streaming prefill alone (no tokenisation, no query), for chunk-size and thread sweeps."""
    import torch

    from ilre.pipeline import ILRe

    cli.set_threads(threads)
    ctx = json.loads(Path(context_file).read_text())
    ilre = ILRe.from_pretrained(model, device=device, dtype=dtype, **config)
    ids = torch.cat((ilre.template.prefix_ids(), ilre.tokenizer(ctx["text"], add_special_tokens=False,
                                                                return_tensors="pt")["input_ids"][0]))
    prefiller = ilre.prefiller()
    prefiller.prefill(ids[: 2 * prefiller.chunk_size])  # warm-up
    best = math.inf
    for _ in range(repeats):
        with ilre.backend.timer() as t:
            prefiller.prefill(ids)
        best = min(best, t.seconds)
    from .flops import prefill_flops

    flops = prefill_flops(prefiller, ids.numel())
    return PrefillRun(ids.numel(), prefiller.chunk_size, ilre.config.window, ilre.config.layer,
                      ilre.prefill_precision, torch.get_num_threads(), best, ids.numel() / best,
                      flops["total"] / best / 1e9, flops)


MEASURES = {"matmul": measure_matmul_peak, "ilre": measure_ilre, "full": measure_full, "prefill": measure_prefill}


# -- running them --------------------------------------------------------------------------------


def run(kind: str, opts: dict) -> dict:
    """One measurement in this process, as the JSON object the run records."""
    result = MEASURES[kind](**opts)
    return asdict(result) if is_dataclass(result) else result


def run_isolated(kind: str, opts: dict, timeout: float | None, isolate: bool = True) -> dict:
    """Run one measurement in a fresh interpreter (its own peak memory), or here when not isolating.

    Returns the measurement, or {"status": "timeout"} / {"status": "error", ...}.
    """
    if not isolate:
        return {"status": "ok", **run(kind, opts)}
    with tempfile.TemporaryDirectory(prefix="ilre-bench-") as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"kind": kind, "opts": opts}))
        env = dict(os.environ)
        if opts.get("threads"):
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(opts["threads"])
        cmd = [sys.executable, "-m", "evaluation.bench_measure", str(spec), str(result)]
        try:
            proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "timeout_s": timeout}
        if proc.returncode != 0 or not result.exists():
            return {"status": "error", "returncode": proc.returncode, "stderr": proc.stderr[-3000:]}
        return {"status": "ok", **json.loads(result.read_text())}


def progress(msg: str) -> None:
    """A progress line on stderr (stdout is the report's)."""
    print(msg, file=sys.stderr, flush=True)


def brief(r: dict) -> str:
    """One line for a run of ILRe or the full context: time to first token by stage, peak memory."""
    if r.get("status") != "ok":
        return f"{r.get('status')}: {r.get('stderr', '')[-500:]}"
    s = " ".join(f"{k} {v:.2f}" for k, v in r["stages_s"].items())
    peak = f", peak {r['peak_rss_bytes'] / MIB:.0f} MiB" if r.get("peak_rss_bytes") else ""
    return f"ttft {r['ttft_s']:.2f} s ({s}){peak}"


def run_full_baseline(rows: list[dict], base: dict, contexts: dict, cap: float, isolate: bool,
                      limit: int | None, prior: list[tuple[int, float]] = ()) -> None:
    """Measure the full-context pass in increasing length while it fits the cap; extrapolate the rest.

    ``prior``: (length, seconds) measured earlier (``--fit-from``), used in the fit as well.
    """
    measured: list[tuple[int, float]] = [(int(n), float(t)) for n, t in prior]
    over = False
    for row in sorted(rows, key=lambda r: r["length"]):
        n = row["length"]
        fit = fit_time(measured)
        expected = predict(fit, n) if fit and fit["points"] >= 2 else None
        skip = over or (limit is not None and n > limit) or (expected is not None and expected > cap)
        if not skip:
            progress(f"full context {cli.length_label(n)} ..." + (f" (expected {expected:.0f} s)" if expected else ""))
            # The cap bounds the forward pass; loading and tokenising get their own allowance.
            r = run_isolated("full", {**base, "context_file": contexts[n]}, cap + 120 if isolate else None,
                             isolate)
            if r.get("status") == "ok" and r["stages_s"]["forward"] <= cap:
                r["extrapolated"] = False
                row["full"] = r
                measured.append((n, r["ttft_s"]))
                progress(f"  {brief(r)}")
                continue
            over = True
            row["full_attempt"] = {k: v for k, v in r.items() if k in ("status", "ttft_s", "timeout_s", "stderr")}
            progress(f"  over the cap ({cap:.0f} s): {row['full_attempt']}")
        row["full"] = {"status": "not run", "extrapolated": True}
    fit = fit_time(measured)
    for row in rows:
        full = row.get("full", {})
        if full.get("extrapolated"):
            full["ttft_s"] = predict(fit, row["length"]) if fit else None
            full["fit"] = fit
            full["reason"] = f"not run: expected or found to exceed the cap of {cap:.0f} s"


def measured_full_points(path: Path) -> list[tuple[int, float]]:
    """(length, seconds) of the full-context runs that were measured, not extrapolated, in a bench.json."""
    doc = json.loads(Path(path).read_text())
    return [(r["length"], r["full"]["ttft_s"]) for r in doc.get("rows", [])
            if r.get("full", {}).get("extrapolated") is False and r["full"].get("ttft_s")]


def main(spec_path: str, result_path: str) -> None:
    """The worker: the measurement described in ``spec_path``, written as JSON to ``result_path``."""
    cli.setup_logging()
    spec = json.loads(Path(spec_path).read_text())
    Path(result_path).write_text(json.dumps(run(spec["kind"], spec["opts"])))


if __name__ == "__main__":
    main(*sys.argv[1:])
