"""The answer's decoding on a CPU, the model's one-token products whole against split over the threads
(``ilre.decoding``), side by side in one process with one loaded model.

First every weight shape of the model (and two small ones), each multiplied by one row from memory,
as a decoding step reads it (many copies of the shape, cycled, so that none stays in the cache).

Then real answers: the questions' prompts (recall from an encoded context), each decoded greedily
by the model itself, by its split copy, and by the split copy with transformers' own cache, which
concatenates every layer's keys and values at each step, where ``arch.answer_cache`` writes them in
place, in turn; the time, the time per token written (the prompt's reading included) and whether
they wrote the same tokens.

    python scripts/bench_decoding.py --threads 2          # the code base of evaluation/data/code_questions.json
    python scripts/bench_decoding.py --context book.txt --query "Who wrote the letter?" --threads 2

The figures go to <out>/bench_decoding.json and are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

from bench_folder import add_question_options, default_code_base, questions_of  # beside this script
from ilre import cli

COLD_BYTES = 256 * 2**20
"""Each shape is cycled through copies of at least this many bytes, more than any CPU cache."""


def shape_times(shapes: list[tuple[int, int]], rounds: int = 3) -> list[dict]:
    """Per weight shape (rows, columns): microseconds of one row's product, whole and split."""
    import torch

    from ilre.decoding import SplitLinear

    rows = []
    for n, k in shapes:
        copies = max(2, COLD_BYTES // (4 * n * k))
        linears = [torch.nn.Linear(k, n, bias=False) for _ in range(copies)]
        splits = [SplitLinear(linear) for linear in linears]
        x = torch.randn(1, k)
        best = {"whole": float("inf"), "split": float("inf")}
        with torch.inference_mode():
            for _ in range(rounds):
                for name, maps in (("whole", linears), ("split", splits)):
                    t0 = time.perf_counter()
                    for m in maps:
                        m(x)
                    best[name] = min(best[name], (time.perf_counter() - t0) / copies)
        rows.append({"shape": f"{n}x{k}", "whole_us": 1e6 * best["whole"], "split_us": 1e6 * best["split"],
                     "speedup": best["whole"] / best["split"]})
        del linears, splits
    return rows


def model_shapes(model) -> list[tuple[int, int]]:
    """The distinct weight shapes of the model's linear maps, and two small ones."""
    import torch

    shapes = {tuple(m.weight.shape) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    return sorted(shapes | {(64, 64), (256, 256)}, key=lambda s: s[0] * s[1])


def answers(ilre, encoded, questions: list[str]) -> dict:
    """Each question's prompt decoded by the model, by its split copy, and by the split copy with
    transformers' own concatenating cache instead of ``arch.answer_cache``, in turn."""
    from ilre.answerer import generate
    from ilre.decoding import split_decoding_copy

    split = split_decoding_copy(ilre.model, check=False)
    ways = {"whole": (ilre.model, True), "split": (split, True), "split_concat": (split, False)}
    out = {name: {"seconds": [], "tokens": [], "answers": []} for name in ways}
    for q in questions:
        prompt = ilre.prompt(encoded, q)
        for name, (model, in_place) in ways.items():
            t0 = time.perf_counter()
            text, new = generate(model, ilre.tokenizer, prompt, ilre.config.max_new_tokens, in_place_cache=in_place)
            out[name]["seconds"].append(time.perf_counter() - t0)
            out[name]["tokens"].append(new.tolist())
            out[name]["answers"].append(text)
    for r in out.values():
        r["mean_s"] = sum(r["seconds"]) / len(r["seconds"])
        r["max_s"] = max(r["seconds"])
        r["ms_per_token"] = 1e3 * sum(r["seconds"]) / max(1, sum(map(len, r["tokens"])))
    out["same_tokens"] = sum(a == b for a, b in zip(out["whole"]["tokens"], out["split"]["tokens"]))
    out["same_tokens_concat"] = sum(a == b for a, b in zip(out["split"]["tokens"], out["split_concat"]["tokens"]))
    out["speedup"] = out["whole"]["mean_s"] / out["split"]["mean_s"]
    out["cache_speedup"] = out["split_concat"]["mean_s"] / out["split"]["mean_s"]
    return out


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python scripts/bench_decoding.py", __doc__)
    cli.add_context_option(p)
    cli.add_file_filters(p)
    add_question_options(p)
    cli.add_results_option(p, "bench_decoding")
    cli.add_model_options(p)
    return p


def run(args: argparse.Namespace) -> int | None:
    import torch

    from ilre.sources import read_sources

    folders, include, default = default_code_base()
    questions = questions_of(args, default)
    args.out.mkdir(parents=True, exist_ok=True)
    ilre = cli.load_pipeline(args)
    if ilre.device.type != "cpu":
        raise ValueError(f"the split products are for a CPU, and the model is on {ilre.device.type}: pass --device cpu")
    context = cli.read_context(args) if args.context else read_sources(folders, include)
    shapes = shape_times(model_shapes(ilre.model))
    encoded = ilre.encode(context, progress=True)
    row = answers(ilre, encoded, questions)
    doc = {"command": "python scripts/bench_decoding.py " + " ".join(sys.argv[1:]), "shapes": shapes,
           "answers": row, "tokens": len(encoded.tokens), "threads": torch.get_num_threads(),
           "cpu": f"{os.cpu_count()} cores, {platform.machine()}",
           "torch": torch.__version__, "dtype": str(ilre.model.dtype).removeprefix("torch."),
           "pipeline_splits": ilre.answer_model is not ilre.model}
    (args.out / "bench_decoding.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"one row's product from memory, {doc['threads']} threads (microseconds): whole / split")
    for s in shapes:
        print(f"  {s['shape']:>12}: {s['whole_us']:9.1f} / {s['split_us']:9.1f}  ({s['speedup']:.2f}x)")
    w, s = row["whole"], row["split"]
    print(f"{len(questions)} answers from a {doc['tokens']}-token context: whole mean {w['mean_s']:.2f} s, max "
          f"{w['max_s']:.2f} s, {w['ms_per_token']:.1f} ms a token; split mean {s['mean_s']:.2f} s, max "
          f"{s['max_s']:.2f} s, {s['ms_per_token']:.1f} ms a token ({row['speedup']:.2f}x); "
          f"{row['same_tokens']} of {len(questions)} answers token for token the same")
    c = row["split_concat"]
    print(f"split with transformers' concatenating cache: mean {c['mean_s']:.2f} s, {c['ms_per_token']:.1f} ms a token; "
          f"with the cache written in place (arch.answer_cache) {row['cache_speedup']:.2f}x faster; "
          f"{row['same_tokens_concat']} of {len(questions)} answers token for token the same")
    print(f"the pipeline's own check (ilre.decoding.split_pays) on this machine: "
          f"{'split' if doc['pipeline_splits'] else 'whole'}")


if __name__ == "__main__":
    sys.exit(cli.main(build_parser(), run))
