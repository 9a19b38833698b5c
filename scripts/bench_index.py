"""A question from a saved index, against ILRe from the text, a BM25 pipeline and the full context.

For each context length (a prose haystack with a pass key at half depth), side by side in one
process with one loaded model: the index's build time and file size; its load time (memory-mapped,
checksum verified); one question answered from it; the same question answered by ILRe from the
text (the encoding's time plus that answer's); by a BM25 pipeline (tokenise, rank ~64-token chunks,
answer from the best within the same budget); and, up to --full-limit, by the full context.
Answers are capped at 16 tokens. The figures go to <out>/bench_index.json and are printed as a table.

    python scripts/bench_index.py --lengths 32K,128K --threads 2
    python scripts/bench_index.py --lengths 1M --threads 2 --out results/bench_index_1m
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from ilre import cli

GOALS = {"question_128k_s": 2.5, "question_1m_s": 5.0, "gb_per_million_tokens": 0.5, "load_1m_s": 1.0}


def seconds(work):
    """(the result of ``work()``, its wall-clock seconds)."""
    t0 = time.perf_counter()
    out = work()
    return out, time.perf_counter() - t0


def measure(ilre, n: int, folder: Path, full_limit: int) -> dict:
    """Every figure of one context length."""
    from ilre.answerer import generate
    from evaluation.bench_measure import ANSWER_PREFIX, QUESTION, make_context
    from evaluation.baselines import BM25Chunks, Sample

    ctx = make_context(ilre.tokenizer, n)
    found = lambda result: ctx["answer"] in result.answer  # noqa: E731
    row = {"length": n, "label": cli.length_label(n)}
    encoded, row["encode_s"] = seconds(lambda: ilre.encode(ctx["text"], progress=True))
    path, row["save_s"] = seconds(lambda: encoded.save(folder / f"context-{row['label']}.ilre"))
    row["index_bytes"] = path.stat().st_size
    row["gb_per_million_tokens"] = row["index_bytes"] / 1e9 / (len(encoded.tokens) / 1e6)
    loaded, row["load_s"] = seconds(lambda: ilre.load_index(path))
    from_index, row["question_s"] = seconds(lambda: ilre.answer(loaded, QUESTION, ANSWER_PREFIX))
    from_text, answer_s = seconds(lambda: ilre.answer(encoded, QUESTION, ANSWER_PREFIX))
    row.update(question_stages=from_index.timings, ilre_text_s=row["encode_s"] + answer_s,
               index_right=found(from_index), text_right=found(from_text),
               index_recalled=any(ctx["answer"] in s.text for s in from_index.spans), index_answer=from_index.answer,
               same_answer=from_index.answer_tokens == from_text.answer_tokens, tokens=len(encoded.tokens))
    encoded = loaded = None  # the keys are not needed by the systems below

    def bm25():
        sample = Sample.of(ilre, ctx["text"], QUESTION, ANSWER_PREFIX)
        return generate(ilre.model, ilre.tokenizer, sample.prompt(BM25Chunks().select(sample, ilre.config.budget)),
                        ilre.config.max_new_tokens)[0]

    text, row["bm25_s"] = seconds(bm25)
    row["bm25_answer"] = text
    row["bm25_right"] = ctx["answer"] in text
    if n <= full_limit:
        full = ilre.full_prompt_ids(ctx["text"], QUESTION, ANSWER_PREFIX)
        text, row["full_s"] = seconds(lambda: generate(ilre.model, ilre.tokenizer, full, ilre.config.max_new_tokens)[0])
        row["full_right"] = ctx["answer"] in text
    return row


def table(rows: list[dict]) -> str:
    head = ("| context | index build s | index MiB | GB per 1M tokens | load s | question from index s "
            "| ILRe from text s | BM25 s | full context s | right: index / text / BM25 / full |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    mark = lambda v: "-" if v is None else "yes" if v else "no"  # noqa: E731
    for r in rows:
        full = f"{r['full_s']:.1f}" if "full_s" in r else "-"
        lines.append(f"| {r['label']} | {r['encode_s'] + r['save_s']:.1f} | {r['index_bytes'] / 2**20:.0f} "
                     f"| {r['gb_per_million_tokens']:.2f} | {r['load_s']:.2f} | {r['question_s']:.2f} "
                     f"| {r['ilre_text_s']:.1f} | {r['bm25_s']:.2f} | {full} | {mark(r['index_right'])} / "
                     f"{mark(r['text_right'])} / {mark(r['bm25_right'])} / {mark(r.get('full_right'))} |")
    return "\n".join(lines)


def goals(rows: list[dict]) -> dict:
    by = {r["length"]: r for r in rows}
    out = {}
    if 128 * cli.K in by:
        out["question_128k_s"] = by[128 * cli.K]["question_s"]
    if cli.M in by:
        out["question_1m_s"], out["load_1m_s"] = by[cli.M]["question_s"], by[cli.M]["load_s"]
    if rows:  # at the longest context: the lower layers' windows are a fixed few MiB on top
        out["gb_per_million_tokens"] = max(rows, key=lambda r: r["length"])["gb_per_million_tokens"]
    return {k: {"value": round(v, 3), "goal": f"<= {GOALS[k]}", "holds": v <= GOALS[k]} for k, v in out.items()}


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python scripts/bench_index.py", __doc__)
    cli.add_lengths_option(p, (32 * cli.K, 128 * cli.K))
    p.add_argument("--full-limit", type=cli.parse_length, default=0,
                   help="run the full-context pass up to this length (O(L²): 32K takes minutes on 2 cores); "
                        "default: 0, never")
    cli.add_results_option(p, "bench_index")
    cli.add_model_options(p)
    return p


def run(args: argparse.Namespace) -> int | None:
    args.out.mkdir(parents=True, exist_ok=True)
    ilre, load_model_s = seconds(lambda: cli.load_pipeline(args, max_new_tokens=16))
    rows = []
    for n in args.lengths:
        rows.append(measure(ilre, n, args.out, args.full_limit))
        print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    import torch

    doc = {"command": "python scripts/bench_index.py " + " ".join(sys.argv[1:]), "rows": rows,
           "goals": goals(rows), "model_load_s": load_model_s, "threads": torch.get_num_threads(),
           "cpu": f"{os.cpu_count()} cores, {platform.machine()}", "torch": torch.__version__,
           "settings": ilre.encoding, "budget": ilre.config.budget}
    (args.out / "bench_index.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(table(rows))
    print(f"model load {load_model_s:.1f} s (once per process); torch threads {doc['threads']}")
    for name, g in doc["goals"].items():
        print(f"goal {name}: {g['value']} ({g['goal']}) {'holds' if g['holds'] else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(cli.main(build_parser(), run))
