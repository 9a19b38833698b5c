"""Time to first answer token: ILRe against a plain full-context pass of the same model.

    python scripts/bench.py                                  # 4K..128K tokens, JSON + PNG in results/bench
    python scripts/bench.py --lengths 4K,8K --cap-seconds 60 # a quick look
    python scripts/bench.py --with-1m                        # adds a 1M-token context (long on a CPU)
    python scripts/bench.py --sweep 8K --chunk-sizes 256,512,1024,2048 --thread-counts 1,2

For every context length it measures, each in a fresh process (so that the peak resident
memory is that run's own):

* ILRe, answering one question with ``max_new_tokens=1``: the time to the first answer token,
  split into its stages (tokenize, streaming prefill to the retrieval layer, scoring, recall,
  answer = prefill of the short recalled prompt + the first token), and the peak memory;
* the full-context baseline: the same model's own forward pass over the whole prompt (prefix,
  context, question), computing the LM head on the last position only (``logits_to_keep=1``),
  plus its tokenisation, while it finishes within ``--cap-seconds``. Longer contexts are not
  run: their time is extrapolated from a fitted a*L + b*L^2 curve and marked as extrapolated.

It also measures the machine's matrix-multiply peak (fp32 ``torch.mm`` of two square matrices,
same thread count, in the same run) and reports the share of it that ILRe's streaming prefill
reaches, FLOPs counted from the model's shapes (see ``prefill_flops``). Results go to
``<out>/bench.json`` and ``<out>/bench.png`` (time against length, log axes).

On CUDA or an Ascend NPU the same script runs through the project's device abstraction
(``--device cuda`` / ``npu``): every timed block is synchronised, and the device's own peak
memory is reported next to the process's resident set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 1024 ** 3
MIB = 1024 ** 2
DEFAULT_LENGTHS = "4K,8K,16K,32K,64K,128K"
ONE_M = 1024 * 1024
QUESTION = "What is the pass key mentioned in the document?"
ANSWER_PREFIX = "The pass key is"

# The goals, checked on every run where the lengths allow.
GOALS = {
    "speedup_8k": 3.0,        # full-context TTFT / ILRe TTFT at 8K
    "speedup_32k": 10.0,      # ... at 32K
    "growth_128k_32k": 4.5,   # ILRe TTFT at 128K / at 32K
    "memory_128k_gib": 1.5,   # ILRe peak RSS at 128K minus the weights
    "prefill_share": 0.5,     # streaming prefill FLOP/s / matmul peak
}


# --------------------------------------------------------------------------------------------
# small helpers


def parse_length(text: str) -> int:
    """'4K' -> 4096, '1M' -> 1048576, '5000' -> 5000 (K and M are binary)."""
    t = text.strip().upper()
    scale = {"K": 1024, "M": 1024 * 1024}.get(t[-1:], 1)
    number = t[:-1] if scale > 1 else t
    try:
        value = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a length: {text!r} (use e.g. 4096, 4K or 1M)") from None
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"not a positive whole number of tokens: {text!r}")
    return int(value)


def parse_lengths(text: str) -> list[int]:
    return sorted({parse_length(t) for t in text.split(",") if t.strip()})


def parse_ints(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def label(n: int) -> str:
    if n >= ONE_M and n % ONE_M == 0:
        return f"{n // ONE_M}M"
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}K"
    return str(n)


def peak_rss_bytes() -> int:
    """This process's peak resident set size since it started."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def current_rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # Linux fallback
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def weights_bytes(model) -> int:
    """Bytes of the model's parameters, tied tensors counted once."""
    seen, total = set(), 0
    for t in model.parameters():
        key = t.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
    return total


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def set_threads(threads: int | None) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


# --------------------------------------------------------------------------------------------
# FLOP counts


def _linear_weights(module) -> int:
    from torch import nn

    return sum(m.weight.numel() for m in module.modules() if isinstance(m, nn.Linear))


def keys_attended(n_tokens: int, sink: int, window: int, chunk_size: int) -> int:
    """Sum over all streamed tokens of the keys each one attends to in a lower layer.

    A chunk starting at stream position s sees the cache of min(s, sink + window) tokens; its
    i-th token (0-based) also sees chunk tokens 0..i, causally.
    """
    total = 0
    for start in range(0, n_tokens, chunk_size):
        c = min(chunk_size, n_tokens - start)
        cached = min(start, sink + window)
        total += c * cached + c * (c + 1) // 2
    return total


def prefill_flops(model, layer: int, n_tokens: int, sink: int, window: int, chunk_size: int) -> dict:
    """Useful FLOPs of the streaming prefill of ``n_tokens`` up to ``layer`` (0-based).

    Per token: 2 x the weights of every linear map of layers < ``layer`` (q, k, v, o and the
    MLP) plus 2 x those of k_proj at ``layer``; per token and lower layer, attention costs
    4 x keys x heads x head_dim (q.k and p.v), with the keys that token actually attends to
    (sink + window + its place in the chunk; masked-out positions are not counted). Norms,
    RoPE, softmax and activations are left out (a few percent at most).
    """
    from ilre import arch

    dec = arch.decoder_of(model)
    lower = sum(_linear_weights(dec.layers[i]) for i in range(layer))
    top = dec.layers[layer].self_attn.k_proj.weight.numel()
    linear = 2 * (lower + top) * n_tokens
    keys = keys_attended(n_tokens, sink, window, chunk_size)
    attention = 4 * keys * dec.num_heads * dec.head_dim * layer
    return {
        "linear": linear,
        "attention": attention,
        "total": linear + attention,
        "params_per_token": lower + top,
        "mean_keys": keys / max(n_tokens, 1),
    }


# --------------------------------------------------------------------------------------------
# extrapolation of the full-context baseline


def fit_time(points: list[tuple[int, float]]) -> dict | None:
    """Least-squares t = a*L + b*L^2 with a, b >= 0 over measured (L, seconds) points.

    None with no points. With one point the whole time is put on the quadratic term, and the
    fit says so. Points are weighted by 1/t, so that short and long runs count alike.
    """
    import numpy as np

    pts = [(float(L), float(t)) for L, t in points if t is not None and t > 0]
    if not pts:
        return None
    if len(pts) == 1:
        L, t = pts[0]
        return {"a": 0.0, "b": t / L ** 2, "points": len(pts), "note": "one point: t = b*L^2"}
    X = np.array([[L, L * L] for L, _ in pts])
    y = np.array([t for _, t in pts])
    w = 1.0 / y
    coef, *_ = np.linalg.lstsq(X * w[:, None], y * w, rcond=None)
    a, b = float(coef[0]), float(coef[1])
    if a < 0 or b < 0:  # keep the better one-term fit
        only_b = float(np.sum(X[:, 1] * w * w * y) / np.sum((X[:, 1] * w) ** 2))
        only_a = float(np.sum(X[:, 0] * w * w * y) / np.sum((X[:, 0] * w) ** 2))
        err_b = float(np.sum(((X[:, 1] * only_b - y) * w) ** 2))
        err_a = float(np.sum(((X[:, 0] * only_a - y) * w) ** 2))
        a, b = (0.0, only_b) if err_b <= err_a else (only_a, 0.0)
    return {"a": a, "b": b, "points": len(pts)}


def predict(fit: dict, length: int) -> float:
    return fit["a"] * length + fit["b"] * length ** 2


# --------------------------------------------------------------------------------------------
# the context


def make_context(tokenizer, n_tokens: int, seed: int = 0) -> dict:
    """Prose of ``n_tokens`` tokens (as ``tokenize_context`` counts them) with a pass key at half depth."""
    import random

    from ilre.evaluation.haystack import Haystack, render
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


# --------------------------------------------------------------------------------------------
# measurements (each runs in the process that calls it; the driver gives each its own process)


def measure_matmul_peak(device: str | None = None, dtype: str | None = None, threads: int | None = None,
                        size: int = 2048, seconds: float = 2.0) -> dict:
    """Best-of-trials FLOP/s of ``torch.mm`` on two size x size matrices (fp32 on CPU)."""
    import torch

    from device import select_backend

    set_threads(threads)
    backend = select_backend(device, dtype)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(backend.torch_device, backend.dtype)
    b = torch.randn(size, size, generator=g).to(backend.torch_device, backend.dtype)
    out = torch.empty_like(a)
    flops = 2 * size ** 3
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
    return {"gflops": flops / best / 1e9, "size": size, "dtype": str(backend.dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(), "trials": trials, "device": backend.describe()}


def _ilre_config(opts: dict) -> dict:
    keys = ("layer", "chunk_size", "window", "sink", "prefill_precision")
    return {k: opts[k] for k in keys if opts.get(k) is not None}


def measure_ilre(opts: dict) -> dict:
    """ILRe's time to first answer token on the context in ``opts['context_file']``, by stage."""
    import torch

    from ilre.pipeline import ILRe

    set_threads(opts.get("threads"))
    ctx = json.loads(Path(opts["context_file"]).read_text())
    t0 = time.perf_counter()
    ilre = ILRe.from_pretrained(opts.get("model"), device=opts.get("device"), dtype=opts.get("dtype"),
                                max_new_tokens=1, **_ilre_config(opts))
    load_s = time.perf_counter() - t0
    backend = ilre.backend
    rss_loaded = current_rss_bytes()
    weights = weights_bytes(ilre.model)
    c = ilre.config
    if opts.get("warmup", True):  # one-time costs (thread pool, first kernels) out of the timing
        ilre.answer(ctx["text"][:2000], QUESTION, ANSWER_PREFIX)
    backend.reset_peak_memory()
    backend.synchronize()
    t0 = time.perf_counter()
    result = ilre.answer(ctx["text"], QUESTION, ANSWER_PREFIX)
    backend.synchronize()
    total = time.perf_counter() - t0
    stages = {k: result.timings.get(k, 0.0) for k in ("tokenize", "prefill", "score", "recall", "answer")}
    streamed = result.context_tokens + ilre.template.prefix_ids().numel()
    chunk = c.chunk_for(ilre.prefill_precision)  # the configured one, or the default for the precision
    flops = prefill_flops(ilre.model, c.layer, streamed, c.sink, c.window, chunk)
    recalled = " ".join(s.text for s in result.spans)
    out = {
        "context_tokens": result.context_tokens,
        "streamed_tokens": streamed,
        "layer": c.layer,
        "num_layers": ilre.decoder.num_layers,
        "sink": c.sink, "window": c.window, "chunk_size": chunk, "budget": c.budget,
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
        "load_s": load_s,
        "weights_bytes": weights,
        "rss_after_load_bytes": rss_loaded,
        "peak_rss_bytes": peak_rss_bytes(),
        "threads": torch.get_num_threads(),
        "device": backend.describe(),
    }
    if backend.name != "cpu":
        out["device_peak_bytes"] = backend.peak_memory_bytes()
    return out


def measure_full(opts: dict) -> dict:
    """The model's own forward over the whole prompt, LM head on the last position only."""
    import torch

    from ilre import loading
    from ilre.config import ILReConfig
    from ilre.pipeline import ILRe

    from device import select_backend

    set_threads(opts.get("threads"))
    ctx = json.loads(Path(opts["context_file"]).read_text())
    backend = select_backend(opts.get("device"), opts.get("dtype"))
    t0 = time.perf_counter()
    model, tokenizer, name = loading.load(opts.get("model"), backend.torch_device, backend.dtype,
                                          backend.attn_implementation)
    load_s = time.perf_counter() - t0
    # The same prompt layout (template, instruction) as ILRe's; layer does not matter here.
    ilre = ILRe(model, tokenizer, ILReConfig(layer=0), name=name, backend=backend)
    rss_loaded = current_rss_bytes()
    weights = weights_bytes(model)
    device = backend.torch_device

    @torch.inference_mode()
    def first_token(text: str) -> tuple[int, int, dict]:
        times = {}
        t = time.perf_counter()
        ids = ilre.full_prompt_ids(text, QUESTION, ANSWER_PREFIX).to(device)
        backend.synchronize()
        times["tokenize"] = time.perf_counter() - t
        t = time.perf_counter()
        logits = model(input_ids=ids[None], logits_to_keep=1).logits
        token = int(logits[0, -1].argmax())
        backend.synchronize()
        times["forward"] = time.perf_counter() - t
        return token, ids.numel(), times

    if opts.get("warmup", True):
        first_token(ctx["text"][:2000])
    backend.reset_peak_memory()
    t0 = time.perf_counter()
    token, prompt_tokens, times = first_token(ctx["text"])
    total = time.perf_counter() - t0
    out = {
        "prompt_tokens": prompt_tokens,
        "stages_s": times,
        "ttft_s": total,
        "first_token": tokenizer.decode([token]),
        "load_s": load_s,
        "weights_bytes": weights,
        "rss_after_load_bytes": rss_loaded,
        "peak_rss_bytes": peak_rss_bytes(),
        "threads": torch.get_num_threads(),
        "device": backend.describe(),
    }
    if backend.name != "cpu":
        out["device_peak_bytes"] = backend.peak_memory_bytes()
    return out


def measure_prefill(opts: dict) -> dict:
    """The streaming prefill alone (no tokenisation, no query), for chunk-size and thread sweeps."""
    import torch

    from ilre.pipeline import ILRe

    set_threads(opts.get("threads"))
    ctx = json.loads(Path(opts["context_file"]).read_text())
    ilre = ILRe.from_pretrained(opts.get("model"), device=opts.get("device"), dtype=opts.get("dtype"),
                                **_ilre_config(opts))
    c = ilre.config
    ids = torch.cat((ilre.template.prefix_ids(), ilre.tokenizer(ctx["text"], add_special_tokens=False,
                                                                return_tensors="pt")["input_ids"][0]))
    prefiller = ilre.prefiller()
    prefiller.prefill(ids[: 2 * prefiller.chunk_size])  # warm-up
    best = math.inf
    for _ in range(opts.get("repeats", 1)):
        with ilre.backend.timer() as t:
            prefiller.prefill(ids)
        best = min(best, t.seconds)
    flops = prefill_flops(ilre.model, c.layer, ids.numel(), c.sink, c.window, prefiller.chunk_size)
    return {"tokens": ids.numel(), "chunk_size": prefiller.chunk_size, "window": c.window, "layer": c.layer,
            "prefill_precision": ilre.prefill_precision,
            "threads": torch.get_num_threads(), "seconds": best, "tokens_per_s": ids.numel() / best,
            "gflops_per_s": flops["total"] / best / 1e9, "flops": flops}


MEASURES = {"matmul": measure_matmul_peak, "ilre": measure_ilre, "full": measure_full, "prefill": measure_prefill}


# --------------------------------------------------------------------------------------------
# the driver


def run_isolated(kind: str, opts: dict, timeout: float | None, isolate: bool = True) -> dict:
    """Run one measurement in a fresh interpreter (its own peak memory), or here when not isolating.

    Returns the measurement, or {"status": "timeout"} / {"status": "error", ...}.
    """
    if not isolate:
        fn = MEASURES[kind]
        return {"status": "ok", **(fn(**opts) if kind == "matmul" else fn(opts))}
    with tempfile.TemporaryDirectory(prefix="ilre-bench-") as tmp:
        spec, result = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"kind": kind, "opts": opts}))
        env = dict(os.environ)
        if opts.get("threads"):
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(opts["threads"])
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_worker", str(spec), str(result)]
        try:
            proc = subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return {"status": "timeout", "timeout_s": timeout}
        if proc.returncode != 0 or not result.exists():
            return {"status": "error", "returncode": proc.returncode, "stderr": proc.stderr[-3000:]}
        return {"status": "ok", **json.loads(result.read_text())}


def _worker(spec_path: str, result_path: str) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    spec = json.loads(Path(spec_path).read_text())
    fn = MEASURES[spec["kind"]]
    opts = spec["opts"]
    result = fn(**opts) if spec["kind"] == "matmul" else fn(opts)
    Path(result_path).write_text(json.dumps(result))
    return 0


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_bench(args: argparse.Namespace) -> dict:
    """Every measurement of one run, as the JSON document written to <out>/bench.json."""
    from transformers import AutoTokenizer

    from ilre import loading

    lengths = list(args.lengths) + ([ONE_M] if args.with_1m and ONE_M not in args.lengths else [])
    isolate = not args.no_isolation
    base = {"model": args.model, "device": args.device, "dtype": args.dtype, "threads": args.threads}
    cfg = {"layer": args.layer, "chunk_size": args.chunk_size, "window": args.window, "sink": args.sink,
           "prefill_precision": args.prefill_precision}
    doc = {
        "command": " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": {"platform": platform.platform(), "processor": _cpu_name(), "cores": os.cpu_count(),
                 "python": platform.python_version(), "load_average_start": load_average()},
        "options": {**base, **cfg, "cap_seconds": args.cap_seconds, "lengths": lengths},
        "goals": {},
    }
    import torch
    import transformers

    doc["host"]["torch"] = torch.__version__
    doc["host"]["transformers"] = transformers.__version__

    _log(f"matmul peak ({args.threads or 'default'} threads) ...")
    mm_opts = {**{k: base[k] for k in ("device", "dtype", "threads")}, "size": args.matmul_size,
               "seconds": args.matmul_seconds}
    doc["matmul_start"] = run_isolated("matmul", mm_opts, None, isolate)
    _log(f"  {doc['matmul_start'].get('gflops', float('nan')):.1f} GFLOP/s")

    directory, _ = loading.resolve(args.model)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    workdir = Path(tempfile.mkdtemp(prefix="ilre-bench-ctx-"))
    contexts = {}
    try:
        for n in sorted(set(lengths) | set(args.sweep or [])):
            ctx = make_context(tokenizer, n, seed=args.seed)
            path = workdir / f"context-{n}.json"
            path.write_text(json.dumps(ctx))
            contexts[n] = str(path)

        if args.sweep:
            doc["sweep"] = []
            for n in args.sweep:
                for threads in args.thread_counts or [args.threads]:
                    for chunk in args.chunk_sizes or [args.chunk_size]:
                        opts = {**base, **cfg, "threads": threads, "chunk_size": chunk,
                                "context_file": contexts[n], "repeats": args.repeats}
                        r = run_isolated("prefill", opts, None, isolate)
                        r.update(length=n)
                        doc["sweep"].append(r)
                        _log(f"sweep {label(n)} threads={threads} chunk={chunk}: "
                             f"{r.get('tokens_per_s', float('nan')):.0f} tok/s, "
                             f"{r.get('gflops_per_s', float('nan')):.1f} GFLOP/s")
            if not args.lengths_given:
                lengths = []

        rows = []
        for n in lengths:
            row = {"length": n, "label": label(n)}
            _log(f"ILRe {label(n)} ...")
            row["ilre"] = run_isolated("ilre", {**base, **cfg, "context_file": contexts[n]}, None, isolate)
            _log(f"  {_brief(row['ilre'])}")
            if not args.no_exact and row["ilre"].get("prefill_precision", "model") != "model":
                _log(f"ILRe {label(n)}, exact prefill (the model's own precision) ...")
                row["ilre_exact"] = run_isolated("ilre", {**base, **cfg, "prefill_precision": "model",
                                                          "context_file": contexts[n]}, None, isolate)
                _log(f"  {_brief(row['ilre_exact'])}")
            rows.append(row)
        if not args.no_full:
            prior = measured_full_points(args.fit_from) if args.fit_from else []
            if prior:
                doc["full_points_from"] = {"file": str(args.fit_from), "points": prior}
            run_full_baseline(rows, base, contexts, args.cap_seconds, isolate, args.full_limit, prior)
        doc["rows"] = rows
    finally:
        if not args.keep_contexts:
            for p in workdir.iterdir():
                p.unlink()
            workdir.rmdir()
        else:
            doc["contexts_dir"] = str(workdir)

    if doc.get("rows"):
        _log("matmul peak again ...")
        doc["matmul_end"] = run_isolated("matmul", mm_opts, None, isolate)
    doc["matmul_peak_gflops"] = max((d.get("gflops", 0.0) for d in (doc.get("matmul_start", {}),
                                                                     doc.get("matmul_end", {}))), default=0.0)
    summarise(doc)
    doc["host"]["load_average_end"] = load_average()
    doc["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return doc


def _brief(r: dict) -> str:
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
            _log(f"full context {label(n)} ..." + (f" (expected {expected:.0f} s)" if expected else ""))
            # The cap bounds the forward pass; loading and tokenising get their own allowance.
            r = run_isolated("full", {**base, "context_file": contexts[n]}, cap + 120 if isolate else None,
                             isolate)
            if r.get("status") == "ok" and r["stages_s"]["forward"] <= cap:
                r["extrapolated"] = False
                row["full"] = r
                measured.append((n, r["ttft_s"]))
                _log(f"  {_brief(r)}")
                continue
            over = True
            row["full_attempt"] = {k: v for k, v in r.items() if k in ("status", "ttft_s", "timeout_s", "stderr")}
            _log(f"  over the cap ({cap:.0f} s): {row['full_attempt']}")
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


def summarise(doc: dict) -> None:
    """Speedups, prefill shares of the matmul peak, and the goals."""
    peak = doc.get("matmul_peak_gflops") or None
    by_len = {}
    for row in doc.get("rows", []):
        full = row.get("full", {})
        for key, suffix in (("ilre", ""), ("ilre_exact", "_exact")):
            ilre = row.get(key, {})
            if ilre.get("status") != "ok":
                continue
            if peak and ilre.get("prefill_gflops_per_s"):
                ilre["prefill_share_of_matmul_peak"] = ilre["prefill_gflops_per_s"] / peak
            ilre["peak_over_weights_bytes"] = ilre["peak_rss_bytes"] - ilre["weights_bytes"]
            if full.get("ttft_s"):
                row["speedup" + suffix] = full["ttft_s"] / ilre["ttft_s"]
                row["speedup_extrapolated"] = bool(full.get("extrapolated"))
        by_len[row["length"]] = row
    goals = doc["goals"]

    def speed_goal(name: str, n: int, suffix: str = "") -> None:
        row = by_len.get(n)
        if row and row.get("speedup" + suffix):
            value = row["speedup" + suffix]
            goals[name + suffix] = {"target": f">= {GOALS[name]}x", "value": round(value, 2),
                                    "holds": value >= GOALS[name], "extrapolated": row["speedup_extrapolated"],
                                    "prefill": row["ilre" + suffix].get("prefill_precision")}

    for suffix in ("", "_exact"):
        speed_goal("speedup_8k", 8192, suffix)
        speed_goal("speedup_32k", 32768, suffix)
    a, b = by_len.get(32768, {}).get("ilre", {}), by_len.get(131072, {}).get("ilre", {})
    if a.get("ttft_s") and b.get("ttft_s"):
        g = b["ttft_s"] / a["ttft_s"]
        goals["growth_128k_32k"] = {"target": f"<= {GOALS['growth_128k_32k']}", "value": round(g, 2),
                                    "holds": g <= GOALS["growth_128k_32k"]}
    if b.get("peak_rss_bytes"):
        over = b["peak_over_weights_bytes"] / GIB
        goals["memory_128k_gib"] = {"target": f"peak <= weights + {GOALS['memory_128k_gib']} GiB",
                                    "value": round(over, 3), "holds": over <= GOALS["memory_128k_gib"]}
    # The share of the fp32 matmul peak means something for the prefill in the model's own
    # precision: the exact rows when there are any (int8 runs count fp32-equivalent FLOPs).
    exact = [r.get(k, {}) for r in doc.get("rows", []) if r["length"] >= 8192 for k in ("ilre", "ilre_exact")]
    shares = [i["prefill_share_of_matmul_peak"] for i in exact
              if i.get("prefill_precision", "model") == "model" and i.get("prefill_share_of_matmul_peak")]
    if shares:
        goals["prefill_share"] = {"target": f">= {GOALS['prefill_share']}", "value": round(min(shares), 3),
                                  "holds": min(shares) >= GOALS["prefill_share"],
                                  "note": "lowest share over lengths >= 8K, prefill in the model's precision"}
    one_m = by_len.get(ONE_M, {}).get("ilre", {})
    if one_m:
        goals["one_million"] = {"target": "completes", "holds": one_m.get("status") == "ok",
                                "ttft_s": one_m.get("ttft_s"), "peak_rss_bytes": one_m.get("peak_rss_bytes")}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


# --------------------------------------------------------------------------------------------
# output


def table(doc: dict, key: str = "ilre") -> str:
    """The per-length table as Markdown, for ILRe's default rows or ``key='ilre_exact'``."""
    head = ("| context | tokenize s | prefill s | score s | recall s | answer s | ILRe TTFT s | ILRe peak MiB "
            "| full TTFT s | full peak MiB | speedup | prefill tok/s | prefill GFLOP/s | share of mm peak |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    speedup = "speedup" if key == "ilre" else "speedup_exact"
    for row in doc.get("rows", []):
        i, f = row.get(key, {}), row.get("full", {})
        if not i:
            continue
        st = i.get("stages_s", {})
        num = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
        if f.get("extrapolated"):
            full_t = "-" if f.get("ttft_s") is None else f"~{f['ttft_s']:.0f} (extrapolated)"
        else:
            full_t = num(f.get("ttft_s"), 1)
        share = i.get("prefill_share_of_matmul_peak")
        lines.append(
            f"| {row['label']} | {num(st.get('tokenize'))} | {num(st.get('prefill'))} | {num(st.get('score'))} "
            f"| {num(st.get('recall'))} | {num(st.get('answer'))} | {num(i.get('ttft_s'))} "
            f"| {num(i.get('peak_rss_bytes', 0) / MIB if i.get('peak_rss_bytes') else None, 0)} "
            f"| {full_t} | {num(f.get('peak_rss_bytes', 0) / MIB if f.get('peak_rss_bytes') else None, 0)} "
            f"| {num(row.get(speedup), 1)}{'*' if row.get('speedup_extrapolated') else ''} "
            f"| {num(i.get('prefill_tokens_per_s'), 0)} | {num(i.get('prefill_gflops_per_s'), 1)} "
            f"| {'-' if share is None else f'{share:.0%}'} |")
    return "\n".join(lines)


def sweep_table(doc: dict) -> str:
    lines = ["| context | prefill | threads | chunk | prefill s | tok/s | GFLOP/s |", "|---|---|---|---|---|---|---|"]
    for r in doc.get("sweep", []):
        if r.get("status") == "ok":
            lines.append(f"| {label(r['length'])} | {r.get('prefill_precision', 'model')} | {r['threads']} "
                         f"| {r['chunk_size']} | {r['seconds']:.2f} "
                         f"| {r['tokens_per_s']:.0f} | {r['gflops_per_s']:.1f} |")
    return "\n".join(lines)


def plot(doc: dict, path: Path) -> bool:
    """Time to first token against context length, log axes; memory beside it. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = [r for r in doc.get("rows", []) if r.get("ilre", {}).get("status") == "ok"]
    if not rows:
        return False
    fig, (ax, mx) = plt.subplots(1, 2, figsize=(12, 4.8))
    xs = [r["length"] for r in rows]
    ax.plot(xs, [r["ilre"]["ttft_s"] for r in rows], "o-", color="tab:blue", label="ILRe, time to first token")
    ax.plot(xs, [r["ilre"]["stages_s"]["prefill"] for r in rows], ".:", color="tab:blue", alpha=0.6,
            label="ILRe, streaming prefill alone")
    exact = [(r["length"], r["ilre_exact"]["ttft_s"]) for r in rows if r.get("ilre_exact", {}).get("status") == "ok"]
    if exact:
        ax.plot(*zip(*exact), "^-", color="tab:green", label="ILRe, exact prefill (model precision)")
    full = [(r["length"], r["full"]) for r in doc.get("rows", []) if r.get("full", {}).get("ttft_s")]
    meas = [(n, f["ttft_s"]) for n, f in full if not f.get("extrapolated")]
    extra = [(n, f["ttft_s"]) for n, f in full if f.get("extrapolated")]
    if meas:
        ax.plot(*zip(*meas), "s-", color="tab:red", label="full context, measured")
    if extra:
        joined = meas[-1:] + extra
        ax.plot(*zip(*joined), "--", color="tab:red", alpha=0.7)
        ax.plot(*zip(*extra), "s", mfc="none", color="tab:red", label="full context, extrapolated (a·L + b·L²)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context tokens")
    ax.set_ylabel("seconds")
    ax.set_xticks(xs, [r["label"] for r in rows])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    layer = rows[0]["ilre"].get("layer")
    precision = rows[0]["ilre"].get("prefill_precision", "model")
    ax.set_title(f"Time to first answer token (retrieval layer {layer}, {precision} prefill)", fontsize=10)

    mx.plot(xs, [r["ilre"]["peak_rss_bytes"] / GIB for r in rows], "o-", color="tab:blue", label="ILRe peak RSS")
    fm = [(r["length"], r["full"]["peak_rss_bytes"] / GIB) for r in doc.get("rows", [])
          if r.get("full", {}).get("peak_rss_bytes")]
    if fm:
        mx.plot(*zip(*fm), "s-", color="tab:red", label="full context peak RSS")
    weights = rows[0]["ilre"]["weights_bytes"] / GIB
    mx.axhline(weights, color="gray", ls=":", label="model weights")
    mx.axhline(weights + GOALS["memory_128k_gib"], color="gray", ls="--", label="weights + 1.5 GiB")
    mx.set_xscale("log", base=2)
    mx.set_xticks(xs, [r["label"] for r in rows])
    mx.set_xlabel("context tokens")
    mx.set_ylabel("GiB")
    mx.grid(True, which="both", alpha=0.3)
    mx.legend(fontsize=8)
    mx.set_title("Peak resident memory", fontsize=10)
    fig.suptitle(doc["rows"][0]["ilre"].get("device", ""), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def report(doc: dict) -> str:
    lines = []
    m = doc.get("matmul_peak_gflops")
    if m:
        lines.append(f"matmul peak: {m:.1f} GFLOP/s (fp32 mm {doc['matmul_start'].get('size')}², "
                     f"{doc['matmul_start'].get('threads')} threads; best of start and end of the run)")
    rows = [r for r in doc.get("rows", []) if r.get("ilre", {}).get("status") == "ok"]
    if rows:
        i = rows[0]["ilre"]
        lines.append(f"retrieval layer: {i['layer']} of {i['num_layers']} | sink {i['sink']} window {i['window']} "
                     f"chunk {i['chunk_size']} | weights {i['weights_bytes'] / MIB:.0f} MiB | {i['device']}")
        lines.append(f"ILRe, prefill precision {i.get('prefill_precision', 'model')}:")
        lines.append(table(doc))
        if any(r.get("ilre_exact") for r in doc["rows"]):
            lines.append("ILRe, exact prefill (the model's own precision):")
            lines.append(table(doc, "ilre_exact"))
        lines.append("* speedup against an extrapolated full-context time")
    if doc.get("sweep"):
        lines.append(sweep_table(doc))
    for name, g in doc.get("goals", {}).items():
        lines.append(f"goal {name}: {'holds' if g['holds'] else 'FAILS'} ({g})")
    load = doc["host"]
    lines.append(f"load average at start {load.get('load_average_start')}, at end {load.get('load_average_end')}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from ilre.config import PREFILL_PRECISIONS  # light: no torch

    p = argparse.ArgumentParser(
        prog="python scripts/bench.py",
        description="Time to first answer token and peak memory of ILRe against a full-context pass of the "
                    "same model, per context length, each measured in a fresh process. Writes <out>/bench.json "
                    "and <out>/bench.png.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--lengths", type=parse_lengths, default=parse_lengths(DEFAULT_LENGTHS),
                   help="context lengths in tokens, comma-separated; K = 1024, M = 1024*1024")
    p.add_argument("--with-1m", action="store_true",
                   help="also run ILRe on a 1M-token context (about half an hour on 2 CPU cores); the "
                        "full-context pass is extrapolated there")
    p.add_argument("--cap-seconds", type=float, default=300.0,
                   help="time cap of one full-context forward pass: lengths expected (from the fit on the "
                        "shorter ones) or found to exceed it are not run but extrapolated, and marked so")
    p.add_argument("--full-limit", type=lambda t: 0 if t.strip() == "0" else parse_length(t), default=None,
                   help="never run the full-context pass beyond this length (extrapolate instead; 0: never run it)")
    p.add_argument("--no-full", action="store_true", help="skip the full-context baseline")
    p.add_argument("--fit-from", type=Path, default=None,
                   help="an earlier bench.json whose measured full-context times join the fit (e.g. to "
                        "extrapolate for a separate 1M run with --lengths 1M --full-limit 0)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for every measurement, the matmul peak included (default: torch's own, "
                        "one per physical core)")
    p.add_argument("--out", type=Path, default=Path("results/bench"), help="folder for bench.json and bench.png")
    p.add_argument("--model", default=None,
                   help="local model directory or .gguf file (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda[:N] or npu[:N] (default: $ILRE_DEVICE, else auto)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: fp32 on cpu, bf16 else)")
    p.add_argument("--layer", type=int, default=None,
                   help="retrieval layer (0-based; default: the model's profile, as ILRe.from_pretrained picks)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="streaming prefill chunk (default: ILReConfig's, 128 for the int8 prefill, 512 else)")
    p.add_argument("--window", type=int, default=None, help="sliding window of the lower layers (default: ILReConfig's)")
    p.add_argument("--sink", type=int, default=None, help="sink tokens (default: ILReConfig's)")
    p.add_argument("--prefill-precision", choices=PREFILL_PRECISIONS, default=None,
                   help="linear maps of the streaming prefill (default: ILReConfig's, 'auto': int8 on CPU)")
    p.add_argument("--no-exact", action="store_true",
                   help="do not also time ILRe with the exact prefill (the model's own precision) when the "
                        "default prefill is int8")
    p.add_argument("--matmul-size", type=int, default=2048, help="side of the square matrices of the matmul peak")
    p.add_argument("--matmul-seconds", type=float, default=3.0, help="time spent measuring the matmul peak, each time")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated context")
    p.add_argument("--sweep", type=parse_lengths, default=None,
                   help="also time the streaming prefill alone at these lengths for every --chunk-sizes x "
                        "--thread-counts; with --sweep and no --lengths, only the sweep runs")
    p.add_argument("--chunk-sizes", type=parse_ints, default=None, help="chunk sizes for --sweep")
    p.add_argument("--thread-counts", type=parse_ints, default=None, help="thread counts for --sweep")
    p.add_argument("--repeats", type=int, default=1, help="timed repeats per --sweep point (best is kept)")
    p.add_argument("--keep-contexts", action="store_true", help="keep the generated context files")
    p.add_argument("--no-isolation", action="store_true",
                   help="measure in this process instead of a fresh one each (faster to start; peak memory "
                        "is then this process's lifetime peak, and the cap is not enforced by a timeout)")
    p.add_argument("--_worker", nargs=2, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args._worker:
        return _worker(*args._worker)
    args.lengths_given = any(a == "--lengths" or a.startswith("--lengths=") for a in argv)
    if args.sweep and (args.chunk_sizes is None and args.thread_counts is None):
        parser.error("--sweep needs --chunk-sizes and/or --thread-counts")
    doc = run_bench(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(doc, indent=2) + "\n")
    plotted = plot(doc, args.out / "bench.png")
    print(report(doc))
    print(f"wrote {args.out / 'bench.json'}" + (f" and {args.out / 'bench.png'}" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
