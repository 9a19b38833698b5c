"""A conversation through the chat clients people use: is the document read once?

Starts ``python -m ilre.serve`` (the embedded model unless --model) on a free localhost port; then,
through each client (the openai SDK, LangChain's ChatOpenAI, LlamaIndex's OpenAILike), whole and
streamed, holds a three-turn conversation with a system prompt about a document of its own of
--length tokens, and times each turn. Turn 1 encodes the document; turns 2 and 3 should find its
encoding (a cache hit) and take a fraction of turn 1's time. Figures go to
<out>/bench_conversation.json.

    python scripts/bench_conversation.py --length 12K --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from ilre import cli

SYSTEM = "You are a careful assistant. Answer from the document, briefly."
TURNS = ["What is the pass key mentioned in the document?", "Are you sure? Give the pass key again.",
         "Repeat only the number."]
GOAL = 1 / 3
"""Each later turn within this share of the first turn's time."""


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python scripts/bench_conversation.py", __doc__)
    p.add_argument("--length", type=cli.parse_length, default=12 * cli.K, help="document length in tokens; default: 12K")
    cli.add_results_option(p, "bench_conversation")
    cli.add_model_options(p)
    return p


def run(args: argparse.Namespace) -> int | None:
    import httpx
    from transformers import AutoTokenizer

    from evaluation.bench_measure import make_context
    from evaluation.chat_clients import CLIENTS, model_options, served
    from ilre.loading import resolve

    tokenizer = AutoTokenizer.from_pretrained(resolve(args.model)[0], local_files_only=True)
    doc = {"command": "python scripts/bench_conversation.py " + " ".join(sys.argv[1:]),
           "cpu": f"{os.cpu_count()} cores, {platform.machine()}", "length": args.length, "runs": []}
    print("| client | mode | turn 1 s | turn 2 s | turn 3 s | later / first | encodings | turn 1 answer |")
    print("|---|---|---|---|---|---|---|---|")
    with served(model_options(args)) as url:
        for seed, (name, make) in enumerate(CLIENTS.items()):
            for stream in (False, True):
                context = make_context(tokenizer, args.length, seed=100 + 2 * seed + stream)
                turn = make(url, stream)
                history = [("system", SYSTEM), ("user", context["text"])]
                before = httpx.get(url.removesuffix("/v1") + "/health").json()
                seconds, answers = [], []
                for question in TURNS:
                    if answers:
                        history.append(("assistant", answers[-1]))
                    history.append(("user", question))
                    t0 = time.perf_counter()
                    answers.append(turn(history))
                    seconds.append(time.perf_counter() - t0)
                after = httpx.get(url.removesuffix("/v1") + "/health").json()
                ratio = max(seconds[1:]) / seconds[0]
                row = {"client": name, "stream": stream, "turn_s": seconds, "later_over_first": ratio,
                       "contexts_added": after["contexts"] - before["contexts"], "answers": answers,
                       "pass_key": context["answer"], "right": [context["answer"] in a for a in answers]}
                doc["runs"].append(row)
                print(f"| {name} | {'streamed' if stream else 'whole'} | " + " | ".join(f"{s:.2f}" for s in seconds)
                      + f" | {ratio:.2f} | {row['contexts_added']} | {answers[0][:40]!r} |", flush=True)
    worst = max(r["later_over_first"] for r in doc["runs"])
    doc["goal"] = {"later_over_first_max": worst, "goal": f"<= {GOAL:.2f}", "holds": worst <= GOAL}
    print(f"goal later turns within a third of the first: worst {worst:.2f} "
          f"{'holds' if worst <= GOAL else 'MISSED'}; every document added once: "
          f"{all(r['contexts_added'] == 1 for r in doc['runs'])}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_conversation.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(cli.main(build_parser(), run))
