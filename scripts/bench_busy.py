"""Speed on a busy machine: the streaming prefill and a full-context pass, alone and beside other work.

Each measurement runs in a fresh process on one generated context (--length tokens):

* quiet: alone;
* busy: beside a second process that keeps one core busy with a pure-Python loop (bounded: it
  stops by itself after --busy-seconds);
* pair: two ILRe prefills started together (each is timed; the slower counts).

The full-context pass (the model's own forward over the same tokens) is timed quiet and busy as
the reference: its slowdown is what losing one core costs a plain model. Extra environment
variables for the measured processes can be given with --env (e.g. OMP_WAIT_POLICY=PASSIVE) to
compare settings side by side. Figures go to <out>/bench_busy.json.

    python scripts/bench_busy.py --length 7K
    python scripts/bench_busy.py --length 7K --env ILRE_THREADS=all
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ilre import cli

GOAL = 2.2
"""Busy / quiet and pair / alone, at most (the issue's goal)."""

WORKER = r"""
import json, sys, time
import torch
from ilre.pipeline import ILRe
kind, path = sys.argv[1], sys.argv[2]
ilre = ILRe.from_pretrained(device="cpu")
text = json.loads(open(path).read())["text"]
ids = torch.cat((ilre.template.prefix_ids(), ilre.tokenizer(text, add_special_tokens=False,
                                                            return_tensors="pt")["input_ids"][0]))
if kind == "prefill":
    prefiller = ilre.prefiller()
    prefiller.prefill(ids[:1024])  # warm-up
    print("READY", flush=True); sys.stdin.readline()
    t0 = time.perf_counter(); prefiller.prefill(ids); seconds = time.perf_counter() - t0
else:
    with torch.inference_mode():
        ilre.model.model(input_ids=ids[None, :1024])
        print("READY", flush=True); sys.stdin.readline()
        t0 = time.perf_counter(); ilre.model.model(input_ids=ids[None]); seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "tokens": ids.numel(), "threads": torch.get_num_threads()}), flush=True)
"""

BUSY = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def run_together(kinds: list[str], context: Path, env: dict, busy_seconds: float | None) -> list[dict]:
    """Start one worker per kind, wait until all are loaded, start the busy loop, then time them."""
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, kind, str(context)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for kind in kinds]
    for p in procs:
        while p.stdout.readline().strip() != "READY":
            if p.poll() is not None:
                raise ValueError("a measurement process failed to start")
    busy = None
    if busy_seconds:
        busy = subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=busy_seconds)])
        time.sleep(0.5)
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.wait()
    if busy is not None:
        busy.kill()
        busy.wait()
    return results


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python scripts/bench_busy.py", __doc__)
    p.add_argument("--length", type=cli.parse_length, default=7 * cli.K, help="context tokens; default: 7K")
    p.add_argument("--busy-seconds", type=float, default=300.0,
                   help="how long the competing loop may run at most; default: 300")
    p.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                   help="an environment variable for the measured processes (repeatable)")
    cli.add_results_option(p, "bench_busy")
    return p


def run(args: argparse.Namespace) -> int | None:
    from transformers import AutoTokenizer

    from evaluation.bench_measure import make_context
    from ilre.loading import resolve

    env = dict(os.environ)
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--env {item!r}: use NAME=VALUE")
        env[name] = value
    args.out.mkdir(parents=True, exist_ok=True)
    context = args.out / "context.json"
    tokenizer = AutoTokenizer.from_pretrained(resolve(None)[0], local_files_only=True)
    context.write_text(json.dumps(make_context(tokenizer, args.length)))
    t = {}
    for name, kinds, busy in (("prefill quiet", ["prefill"], None), ("prefill busy", ["prefill"], args.busy_seconds),
                              ("prefill pair", ["prefill", "prefill"], None), ("full quiet", ["full"], None),
                              ("full busy", ["full"], args.busy_seconds)):
        results = run_together(kinds, context, env, busy)
        t[name] = max(r["seconds"] for r in results)
        print(f"{name}: {t[name]:.2f} s ({results[0]['tokens']} tokens, {results[0]['threads']} threads)",
              file=sys.stderr, flush=True)
    doc = {"command": "python scripts/bench_busy.py " + " ".join(sys.argv[1:]), "env": args.env,
           "cpu": f"{os.cpu_count()} cores", "seconds": t,
           "prefill_busy_slowdown": t["prefill busy"] / t["prefill quiet"],
           "prefill_pair_slowdown": t["prefill pair"] / t["prefill quiet"],
           "full_busy_slowdown": t["full busy"] / t["full quiet"]}
    (args.out / "bench_busy.json").write_text(json.dumps(doc, indent=2) + "\n")
    print("| run | seconds | against quiet |\n|---|---|---|")
    for name, s in t.items():
        base = t["prefill quiet"] if name.startswith("prefill") else t["full quiet"]
        print(f"| {name} | {s:.2f} | {s / base:.2f}x |")
    for name in ("prefill_busy_slowdown", "prefill_pair_slowdown"):
        print(f"goal {name}: {doc[name]:.2f} (<= {GOAL}) {'holds' if doc[name] <= GOAL else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(cli.main(build_parser(), run))
