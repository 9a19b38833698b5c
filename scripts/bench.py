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
reaches, FLOPs counted from the model's shapes (see ``StreamingPrefiller.flops``). Results go to
``<out>/bench.json`` and ``<out>/bench.png`` (time against length, log axes).

On CUDA or an Ascend NPU the same script runs through the project's device abstraction
(``--device cuda`` / ``npu``): every timed block is synchronised, and the device's own peak
memory is reported next to the process's resident set.

The measurements and the report live in ``evaluation.bench_measure`` and ``evaluation.bench_report``; this is its command line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from ilre import cli
from evaluation import bench_measure as measure, bench_report as report
from evaluation.bench_measure import brief, progress

DEFAULT_LENGTHS = (4 * cli.K, 8 * cli.K, 16 * cli.K, 32 * cli.K, 64 * cli.K, 128 * cli.K)
CONFIG = ("layer", *cli.PREFILL)
"""The ILReConfig fields the command line sets: the retrieval layer and the streaming prefill's."""


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python scripts/bench.py", "Time to first answer token and peak memory of ILRe against a "
                   "full-context pass of the same model, per context length, each in a fresh process.")
    w = p.add_argument_group("what to measure")
    w.add_argument("--lengths", type=cli.lengths(), default=None,
                   help="context lengths in tokens, comma-separated, e.g. 4K,128K (K = 1024, M = 1024²); "
                        f"default: {','.join(map(cli.length_label, DEFAULT_LENGTHS))}, none with --sweep")
    w.add_argument("--with-1m", action="store_true",
                   help="also run ILRe on a 1M-token context (about half an hour on 2 CPU cores); the "
                        "full-context pass is extrapolated there")
    w.add_argument("--cap-seconds", type=float, default=300.0,
                   help="time cap of one full-context forward pass: lengths expected (from the fit on the "
                        "shorter ones) or found to exceed it are not run but extrapolated, and marked so; "
                        "default: %(default)s")
    w.add_argument("--full-limit", type=cli.parse_length, default=None,
                   help="never run the full-context pass beyond this length (extrapolate instead; 0: never run it)")
    w.add_argument("--no-full", action="store_true", help="skip the full-context baseline")
    w.add_argument("--fit-from", type=Path, default=None,
                   help="an earlier bench.json whose measured full-context times join the fit (e.g. to "
                        "extrapolate for a separate 1M run with --lengths 1M --full-limit 0)")
    w.add_argument("--no-exact", action="store_true",
                   help="do not also time ILRe with the exact prefill (the model's own precision) when the "
                        "default prefill is int8")
    w.add_argument("--matmul-size", type=cli.at_least(1), default=2048,
                   help="side of the square matrices of the matmul peak; default: %(default)s")
    w.add_argument("--matmul-seconds", type=float, default=3.0,
                   help="time spent measuring the matmul peak, each time; default: %(default)s")
    w.add_argument("--seed", type=int, default=0, help="seed of the generated context; default: %(default)s")
    w.add_argument("--no-isolation", action="store_true",
                   help="measure in this process instead of a fresh one each (faster to start; peak memory "
                        "is then this process's lifetime peak, and the cap is not enforced by a timeout)")

    m = p.add_argument_group("model and ILRe (the same for every measurement)")
    cli.add_model_options(m)
    cli.add_config_options(m, *CONFIG)

    s = p.add_argument_group("sweep of the streaming prefill")
    s.add_argument("--sweep", type=cli.lengths(), default=None,
                   help="also time the streaming prefill alone at these lengths for every --chunk-sizes x "
                        "--thread-counts; with --sweep and no --lengths, only the sweep runs")
    s.add_argument("--chunk-sizes", type=cli.listed(int, 1), default=None, help="chunk sizes for --sweep")
    s.add_argument("--thread-counts", type=cli.listed(int, 1), default=None, help="thread counts for --sweep")
    s.add_argument("--repeats", type=cli.at_least(1), default=1,
                   help="timed repeats per --sweep point (best is kept); default: %(default)s")

    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, default=Path("results/bench"),
                   help="folder for bench.json and bench.png; default: %(default)s")
    o.add_argument("--keep-contexts", action="store_true", help="keep the generated context files")
    return p


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_bench(args: argparse.Namespace) -> dict:
    """Every measurement of one run, as the JSON document written to <out>/bench.json."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    from ilre import loading

    lengths = list(args.lengths or (() if args.sweep else DEFAULT_LENGTHS))
    lengths += [cli.M] if args.with_1m and cli.M not in lengths else []
    isolate = not args.no_isolation
    base = {"model": args.model, "device": args.device, "dtype": args.dtype, "threads": args.threads}
    cfg = {name: getattr(args, name) for name in CONFIG}
    doc = {
        "command": " ".join(sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": {"platform": platform.platform(), "processor": _cpu_name(), "cores": os.cpu_count(),
                 "python": platform.python_version(), "load_average_start": load_average(),
                 "torch": torch.__version__, "transformers": transformers.__version__},
        "options": {**base, **cfg, "cap_seconds": args.cap_seconds, "lengths": lengths},
        "goals": {},
    }

    progress(f"matmul peak ({args.threads or 'default'} threads) ...")
    mm_opts = {"device": args.device, "dtype": args.dtype, "threads": args.threads, "size": args.matmul_size,
               "seconds": args.matmul_seconds}
    doc["matmul_start"] = measure.run_isolated("matmul", mm_opts, None, isolate)
    progress(f"  {doc['matmul_start'].get('gflops', float('nan')):.1f} GFLOP/s")

    directory, _ = loading.resolve(args.model)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    workdir = Path(tempfile.mkdtemp(prefix="ilre-bench-ctx-"))
    contexts = {}
    try:
        for n in sorted(set(lengths) | set(args.sweep or [])):
            path = workdir / f"context-{n}.json"
            path.write_text(json.dumps(measure.make_context(tokenizer, n, seed=args.seed)))
            contexts[n] = str(path)

        if args.sweep:
            doc["sweep"] = []
            for n in args.sweep:
                for threads in args.thread_counts or [args.threads]:
                    for chunk in args.chunk_sizes or [args.chunk_size]:
                        opts = {**base, **cfg, "threads": threads, "chunk_size": chunk,
                                "context_file": contexts[n], "repeats": args.repeats}
                        r = measure.run_isolated("prefill", opts, None, isolate)
                        r.update(length=n)
                        doc["sweep"].append(r)
                        progress(f"sweep {cli.length_label(n)} threads={threads} chunk={chunk}: "
                                 f"{r.get('tokens_per_s', float('nan')):.0f} tok/s, "
                                 f"{r.get('gflops_per_s', float('nan')):.1f} GFLOP/s")

        rows = []
        for n in lengths:
            row = {"length": n, "label": cli.length_label(n)}
            progress(f"ILRe {row['label']} ...")
            row["ilre"] = measure.run_isolated("ilre", {**base, **cfg, "context_file": contexts[n]}, None, isolate)
            progress(f"  {brief(row['ilre'])}")
            if not args.no_exact and row["ilre"].get("prefill_precision", "model") != "model":
                progress(f"ILRe {row['label']}, exact prefill (the model's own precision) ...")
                row["ilre_exact"] = measure.run_isolated("ilre", {**base, **cfg, "prefill_precision": "model",
                                                                  "context_file": contexts[n]}, None, isolate)
                progress(f"  {brief(row['ilre_exact'])}")
            rows.append(row)
        if not args.no_full:
            prior = measure.measured_full_points(args.fit_from) if args.fit_from else []
            if prior:
                doc["full_points_from"] = {"file": str(args.fit_from), "points": prior}
            measure.run_full_baseline(rows, base, contexts, args.cap_seconds, isolate, args.full_limit, prior)
        doc["rows"] = rows
    finally:
        if not args.keep_contexts:
            for p in workdir.iterdir():
                p.unlink()
            workdir.rmdir()
        else:
            doc["contexts_dir"] = str(workdir)

    if doc.get("rows"):
        progress("matmul peak again ...")
        doc["matmul_end"] = measure.run_isolated("matmul", mm_opts, None, isolate)
    doc["matmul_peak_gflops"] = max((d.get("gflops", 0.0) for d in (doc.get("matmul_start", {}),
                                                                     doc.get("matmul_end", {}))), default=0.0)
    report.summarise(doc)
    doc["host"]["load_average_end"] = load_average()
    doc["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return doc


def write(doc: dict, out: Path) -> None:
    """<out>/bench.json, <out>/bench.png (with matplotlib) and the report on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(doc, indent=2) + "\n")
    plotted = report.plot(doc, out / "bench.png")
    print(report.report(doc))
    print(f"wrote {out / 'bench.json'}" + (f" and {out / 'bench.png'}" if plotted else ""))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sweep and args.chunk_sizes is None and args.thread_counts is None:
        parser.error("--sweep needs --chunk-sizes and/or --thread-counts")
    cli.setup_logging()
    return cli.run(lambda: write(run_bench(args), args.out))


if __name__ == "__main__":
    sys.exit(main())
