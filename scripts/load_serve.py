"""A bounded load run of the service, on this machine only: many conversations at once.

Starts ``python -m ilre.serve`` (the embedded model unless --model) on a free localhost port, makes
--documents documents of --length tokens (prose with a pass key), and runs --conversations
conversations at once for --minutes: each, again and again, a three-turn conversation about one of
the documents through the openai SDK (which honours Retry-After on 429 and 503, twice), whole and
streamed in turn. Every request's latency and outcome is kept; the server's resident memory is
sampled every second. It prints p50/p95/max latency (first turns, which may encode, apart from
later ones), the requests lost (failed after the client's retries), the answers right, and memory
after warm-up against the end. Figures go to <out>/load_serve.json.

    python scripts/load_serve.py --threads 2 --minutes 3
    python scripts/load_serve.py --threads 1 --minutes 2 --replicas 2     # on Ray Serve
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time

from ilre import cli

TURNS = ("What is the pass key mentioned in the document?", "Are you sure? Give the pass key again.",
         "Repeat only the number.")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python scripts/load_serve.py", __doc__)
    p.add_argument("--conversations", type=cli.at_least(1), default=16, help="conversations at once; default: 16")
    p.add_argument("--documents", type=cli.at_least(1), default=4, help="documents they are about; default: 4")
    p.add_argument("--length", type=cli.parse_length, default=4 * cli.K,
                   help="tokens of each document; default: 4K")
    p.add_argument("--minutes", type=float, default=3.0, help="how long the load lasts; default: 3")
    p.add_argument("--warm-up", type=float, default=60.0,
                   help="seconds after which memory is taken as the baseline; default: 60")
    p.add_argument("--replicas", type=cli.at_least(1), default=None,
                   help="serve with this many Ray Serve replicas (sharing a temporary index folder); default: one "
                        "process, no Ray")
    cli.add_results_option(p, "load_serve")
    cli.add_model_options(p)
    return p


def run(args: argparse.Namespace) -> int | None:
    import openai
    import psutil
    from transformers import AutoTokenizer

    from evaluation.bench_measure import make_context
    from evaluation.chat_clients import model_options, served_process
    from ilre.loading import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(args.model)[0], local_files_only=True)
    documents = [make_context(tokenizer, args.length, seed=300 + i) for i in range(args.documents)]
    records: list[dict] = []
    memory: list[tuple[float, int]] = []
    lock = threading.Lock()
    import tempfile

    options = [*model_options(args), "--max-waiting", str(2 * args.conversations), "--log-level", "warning"]
    shared = tempfile.TemporaryDirectory()
    if args.replicas:
        options += ["--replicas", str(args.replicas), "--index-dir", shared.name,
                    "--replica-cpus", "0.5"]
    with shared, served_process(options) as (url, server):
        def rss() -> int:
            """The server's resident memory; with replicas, its whole process tree's (Ray's workers)."""
            root = psutil.Process(server.pid)
            tree = [root, *root.children(recursive=True)] if args.replicas else [root]
            total = 0
            for p in tree:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            return total

        client = openai.OpenAI(base_url=url, api_key="-", max_retries=2, timeout=600)
        start = time.monotonic()
        deadline = start + args.minutes * 60

        def converse(n: int) -> None:
            document, stream = documents[n % len(documents)], n % 2 == 1
            while time.monotonic() < deadline:
                messages = [{"role": "user", "content": document["text"]}]
                for turn, question in enumerate(TURNS):
                    messages.append({"role": "user", "content": question})
                    t0 = time.monotonic()
                    try:
                        if stream:
                            chunks = client.chat.completions.create(model="ilre", messages=messages, stream=True)
                            answer = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                        else:
                            answer = client.chat.completions.create(model="ilre", messages=messages) \
                                .choices[0].message.content
                        error = None
                    except openai.OpenAIError as exc:
                        answer, error = "", f"{type(exc).__name__}: {str(exc)[:200]}"
                    with lock:
                        records.append({"conversation": n, "turn": turn, "stream": stream, "at": t0 - start,
                                        "seconds": time.monotonic() - t0, "error": error,
                                        "right": document["answer"] in (answer or "")})
                    if error:
                        break
                    messages.append({"role": "assistant", "content": answer})

        threads = [threading.Thread(target=converse, args=(n,)) for n in range(args.conversations)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            memory.append((time.monotonic() - start, rss()))
            time.sleep(1.0)
        for t in threads:
            t.join()
    ok = [r for r in records if r["error"] is None]
    first = [r["seconds"] for r in ok if r["turn"] == 0]
    later = [r["seconds"] for r in ok if r["turn"] > 0]
    warm = [m for t, m in memory if t >= args.warm_up] or [m for _, m in memory]
    row = {"requests": len(records), "lost": len(records) - len(ok), "right": sum(r["right"] for r in ok),
           "first_p50_s": statistics.median(first) if first else None, "first_p95_s": percentile(first, 0.95),
           "later_p50_s": statistics.median(later) if later else None, "later_p95_s": percentile(later, 0.95),
           "max_s": max((r["seconds"] for r in ok), default=None),
           "rss_after_warm_up_mib": warm[0] / 2**20, "rss_end_mib": warm[-1] / 2**20,
           "rss_max_mib": max(warm) / 2**20, "errors": sorted({r["error"] for r in records if r["error"]})}
    import torch

    row["requests_per_minute"] = len(ok) / args.minutes
    doc = {"command": "python scripts/load_serve.py " + " ".join(sys.argv[1:]), "row": row, "replicas": args.replicas,
           "cpu": f"{os.cpu_count()} cores, {platform.machine()}", "torch": torch.__version__,
           "conversations": args.conversations, "documents": args.documents, "length": args.length,
           "minutes": args.minutes, "memory": memory, "records": records}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "load_serve.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"{row['requests']} requests in {args.minutes:g} min from {args.conversations} conversations about "
          f"{args.documents} documents: {row['lost']} lost, {row['right']} answers right")
    print(f"latency first turns p50 {row['first_p50_s']:.1f} s, p95 {row['first_p95_s']:.1f} s; later turns p50 "
          f"{row['later_p50_s']:.1f} s, p95 {row['later_p95_s']:.1f} s; max {row['max_s']:.1f} s")
    print(f"server memory after warm-up {row['rss_after_warm_up_mib']:.0f} MiB, at the end {row['rss_end_mib']:.0f} "
          f"MiB, most {row['rss_max_mib']:.0f} MiB")
    for e in row["errors"]:
        print("error:", e)


if __name__ == "__main__":
    sys.exit(cli.main(build_parser(), run))
