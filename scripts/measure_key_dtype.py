"""Does the precision of the kept keys change what ILRe recalls? (How key_dtype's default was chosen.)

Each held-out needle task is encoded once with float32 keys; the same keys, rounded to float16,
bfloat16 and int8 (one scale per token and head), are then scored and recalled with the
default settings. Printed per length: the share of expected answers inside the recalled text,
and how many samples recalled exactly the positions that float32 keys recall.

    python scripts/measure_key_dtype.py --lengths 32K,128K --samples 8
"""

from __future__ import annotations

import argparse
import json
import sys

from ilre import cli

TASKS = ("niah_single_prose", "niah_multikey", "niah_single_noise", "niah_multiquery")
SEED = 7000
"""Disjoint from the tests', the examples' and the evaluation's seeds."""


def int8(keys):
    scale = keys.abs().amax(dim=-1, keepdim=True).clamp(min=1e-8) / 127
    return (keys / scale).round().clamp(-127, 127) * scale


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python scripts/measure_key_dtype.py", __doc__)
    cli.add_lengths_option(p, (32 * cli.K, 128 * cli.K))
    p.add_argument("--samples", type=cli.at_least(1), default=8, help="samples per length; default: 8")
    cli.add_model_options(p)
    return p


def run(args: argparse.Namespace) -> int | None:
    from evaluation.generators import DEPTH_TASKS, generate
    from evaluation.tasks import tokenizer_len_for
    from ilre.result import spans_of

    ilre = cli.load_pipeline(args, key_dtype="float32")
    count = tokenizer_len_for(ilre.tokenizer)
    rounding = {"float32": lambda k: k, "float16": lambda k: k.half(), "bfloat16": lambda k: k.bfloat16(),
                "int8": int8}
    for n in args.lengths:
        kept = {name: 0.0 for name in rounding}
        same = {name: 0 for name in rounding}
        for i in range(args.samples):
            name = TASKS[i % len(TASKS)]
            opts = {"depth": (i + 0.5) / args.samples} if name in DEPTH_TASKS else {}
            task = generate(name, count, n, seed=SEED + 31 * i + n % 997, phrasing_seed=SEED + i, **opts)
            encoded = ilre.encode(task.context, progress=True)
            exact, reference = encoded.state.key_cache.keys.clone(), None
            for dtype, cast in rounding.items():
                encoded.state.key_cache.keys = cast(exact)
                positions, _ = ilre.recall(encoded, task.question, task.answer_prefix)
                text = " ".join(s.text for s in spans_of(encoded.tokens, positions))
                kept[dtype] += sum(a in text for a in task.answers) / len(task.answers)
                reference = positions if reference is None else reference
                same[dtype] += int(positions.equal(reference))
        print(json.dumps({"length": n, "samples": args.samples,
                          "answers_recalled": {k: round(v / args.samples, 3) for k, v in kept.items()},
                          "same_positions_as_float32": same}), flush=True)


if __name__ == "__main__":
    sys.exit(cli.main(build_parser(), run))
