"""The service's threads, side by side: encodings and answers on two long-lived threads (a plain
``ThreadPoolExecutor`` each, as the service had them) against a fresh thread per call
(``ilre.serve.workers.ThreadPerCall``, as it has them now).

Each way runs in a fresh process of its own, twice, alternating: it encodes --documents contexts
of --length tokens one after the other on its encoder and, after each, answers a question about it
on its answer thread, as a chat service does with new documents. Prints the seconds of the first
encoding (before any answer ran), the later encodings and the answers, and the ratios.

    python scripts/bench_workers.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context

from ilre import cli

WAYS = ("long-lived threads", "a thread per call")


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python scripts/bench_workers.py", __doc__)
    p.add_argument("--length", type=cli.parse_length, default=12 * cli.K,
                   help="tokens per document; default: 12K")
    p.add_argument("--documents", type=cli.at_least(2), default=5,
                   help="documents per process, at least 2 (the first encoding is the baseline); default: 5")
    p.add_argument("--rounds", type=cli.at_least(1), default=2, help="processes per way, alternating; default: 2")
    cli.add_model_options(p)
    return p


def one_process(way: str, args: argparse.Namespace) -> dict[str, list[float]]:
    """Encode and answer in this (fresh) process the way ``way`` says; the seconds of each."""
    from evaluation.bench_measure import make_context
    from ilre.serve.workers import ThreadPerCall

    ilre = cli.load_pipeline(args, max_new_tokens=24)
    pool = ThreadPerCall if way == WAYS[1] else ThreadPoolExecutor
    encoder, answerer = pool(1), pool(1)
    seconds: dict[str, list[float]] = {"encode": [], "answer": []}
    kept = []
    for seed in range(args.documents):
        text = make_context(ilre.tokenizer, args.length, seed=100 + seed)["text"]
        t = time.perf_counter()
        encoded = encoder.submit(ilre.encode, text).result()
        seconds["encode"].append(time.perf_counter() - t)
        t = time.perf_counter()
        answerer.submit(ilre.answer, encoded, "What is the pass key?").result()
        seconds["answer"].append(time.perf_counter() - t)
        kept.append(encoded)  # a service keeps its encodings
    return seconds


def run(args: argparse.Namespace) -> None:
    print(f"{os.cpu_count()} cores, {platform.machine()}; "
          f"{args.documents} documents of {args.length} tokens per process, {args.rounds} processes per way")
    runs: dict[str, list[dict[str, list[float]]]] = {way: [] for way in WAYS}
    for _ in range(args.rounds):
        for way in WAYS:
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as process:
                runs[way].append(process.submit(one_process, way, args).result())
    means = {}
    print("| threads | first encoding s | later encodings s (mean) | answers s (mean) |\n| --- | --- | --- | --- |")
    for way, done in runs.items():
        first = statistics.mean(r["encode"][0] for r in done)
        later = statistics.mean(x for r in done for x in r["encode"][1:])
        answer = statistics.mean(x for r in done for x in r["answer"])
        means[way] = (later, answer)
        print(f"| {way} | {first:.2f} | {later:.2f} | {answer:.2f} |")
    (old_later, old_answer), (new_later, new_answer) = means[WAYS[0]], means[WAYS[1]]
    print(f"later encodings: {old_later / new_later:.2f}x faster with a thread per call; "
          f"answers: {old_answer / new_answer:.2f}x")


if __name__ == "__main__":
    sys.exit(cli.main(build_parser(), run))
