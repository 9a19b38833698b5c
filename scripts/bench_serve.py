"""The service under load: one document, its first turn, later turns, and concurrent clients.

Starts ``python -m ilre.serve`` (the embedded model unless --model) on a free localhost port,
sends one generated document of --length tokens with a question (the first turn: it is encoded),
asks again (a later turn: its encoding is cached), then has 1, 4 and 16 concurrent clients ask
different questions about it through the openai client, and prints the latency percentiles and
requests per second of each. Figures go to <out>/bench_serve.json.

    python scripts/bench_serve.py --length 32K --requests 32 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from ilre import cli

QUESTIONS = ["What is the pass key mentioned in the document?", "What is the pass key?",
             "Which number is the pass key?", "Tell me the pass key.", "What pass key does the text give?",
             "Find the pass key in the document.", "What is the secret pass key?", "Which pass key is mentioned?"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python scripts/bench_serve.py", __doc__)
    p.add_argument("--length", type=cli.parse_length, default=32 * cli.K, help="document length in tokens; default: 32K")
    p.add_argument("--requests", type=cli.at_least(1), default=32,
                   help="requests per concurrency level; default: 32")
    p.add_argument("--concurrency", type=cli.listed(int, 1), default=(1, 4, 16),
                   help="concurrent clients, comma-separated; default: 1,4,16")
    p.add_argument("--max-tokens", type=cli.at_least(1), default=16, help="answer length cap; default: 16")
    cli.add_results_option(p, "bench_serve")
    cli.add_model_options(p)
    return p


def run(args: argparse.Namespace) -> int | None:
    import openai
    from transformers import AutoTokenizer

    from evaluation.bench_measure import make_context
    from evaluation.chat_clients import model_options, served
    from ilre.loading import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(args.model)[0], local_files_only=True)
    document = make_context(tokenizer, args.length)["text"]
    # Every client's request is let in (the service refuses more than --max-waiting answers in flight
    # with 429, 8 by default): the figures are latency in the queue, not refusals.
    with served(model_options(args) + ["--max-waiting", str(max(args.concurrency))]) as url:
        client = openai.OpenAI(base_url=url, api_key="-", max_retries=0, timeout=3600)

        def ask(question: str) -> tuple[float, dict]:
            t0 = time.perf_counter()
            reply = client.chat.completions.create(
                model="ilre", max_tokens=args.max_tokens,
                messages=[{"role": "user", "content": document}, {"role": "user", "content": question}])
            return time.perf_counter() - t0, reply.model_extra["ilre"]

        doc: dict = {"command": "python scripts/bench_serve.py " + " ".join(sys.argv[1:]),
                     "cpu": f"{os.cpu_count()} cores", "length": args.length}
        doc["first_turn_s"], first = ask(QUESTIONS[0])
        doc["later_turn_s"], later = ask(QUESTIONS[1])
        doc["context_tokens"], doc["first_cache"], doc["later_cache"] = (first["context_tokens"], first["cache"],
                                                                         later["cache"])
        print(f"first turn {doc['first_turn_s']:.2f} s ({first['cache']}), later turn "
              f"{doc['later_turn_s']:.2f} s ({later['cache']}), {first['context_tokens']} context tokens")
        doc["load"] = []
        print("| clients | requests | p50 s | p95 s | requests/s |\n|---|---|---|---|---|")
        for clients in args.concurrency:
            questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.requests)]
            t0 = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                latencies = [t for t, _ in pool.map(ask, questions)]
            wall = time.perf_counter() - t0
            row = {"clients": clients, "requests": len(latencies), "p50_s": statistics.median(latencies),
                   "p95_s": percentile(latencies, 0.95), "rps": len(latencies) / wall}
            doc["load"].append(row)
            print(f"| {clients} | {row['requests']} | {row['p50_s']:.2f} | {row['p95_s']:.2f} | {row['rps']:.2f} |")
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_serve.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(cli.main(build_parser(), run))
