"""What the question's words cost: questions from one saved index, recalled by the default
(attention plus BM25 with neighbours, then hops) and by attention alone (``lexical_weight`` 0,
``hops`` 0, as in the paper), side by side in one process with one loaded index.

The questions are those of one document of a question set (evaluation/data), so the index
should be that document's (``scripts/evaluate.py --documents --whole`` saves one per document).
Each question is asked once per setting, after one warm-up question; the first question pays for
building the lexical statistics, which a saved index brings with it. Prints the mean seconds per
stage and the ratio of the totals.

    python scripts/bench_recall.py --index results/whole-heldout/indexes/NAME.ilre \\
        --questions heldout --document-id foldoc --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from ilre import cli
from evaluation.documents import QUESTION_SETS, load_data
from evaluation.systems import SYSTEMS

SETTINGS = {"default (attention + words + hops + passages)": {}, "attention alone": SYSTEMS["ilre-attn"].ilre}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python scripts/bench_recall.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", type=Path, required=True, help="a saved index (.ilre) of the document")
    p.add_argument("--questions", choices=tuple(QUESTION_SETS), default="heldout",
                   help="the question set the document belongs to; default: heldout")
    p.add_argument("--document-id", required=True, help="the document's id in that set, e.g. foldoc")
    cli.add_model_options(p)
    return p


def bench(args: argparse.Namespace) -> int | None:
    import torch

    if not args.index.is_file():
        raise ValueError(f"--index {args.index} is not a file: pass an index saved by ilre.index")
    _, questions = load_data(QUESTION_SETS[args.questions])
    asked = [q for q in questions if q.document == args.document_id]
    if not asked:
        raise ValueError(f"no question about {args.document_id!r} in the {args.questions} set: check --document-id")
    ilre = cli.load_pipeline(args)
    t0 = time.perf_counter()
    encoded = ilre.load_index(args.index)
    print(f"{len(encoded.tokens):,} tokens loaded in {time.perf_counter() - t0:.2f} s; "
          f"{len(asked)} questions; {torch.get_num_threads()} threads")
    ilre.answer(encoded, asked[0].question)  # warm-up
    totals = {}
    for name, change in SETTINGS.items():
        variant = ilre.with_config(**change)
        stages: dict[str, list[float]] = {}
        for q in asked:
            t = time.perf_counter()
            result = variant.answer(encoded, q.question)
            stages.setdefault("total", []).append(time.perf_counter() - t)
            for stage in ("score", "recall", "answer"):
                stages.setdefault(stage, []).append(result.timings.get(stage, 0.0))
        totals[name] = statistics.mean(stages["total"])
        print(f"{name:36s} " + "  ".join(f"{k} {statistics.mean(v):.3f} s" for k, v in stages.items()))
    names = list(totals)
    print(f"ratio of the mean totals, {names[0]} / {names[1]}: {totals[names[0]] / totals[names[1]]:.2f}")


if __name__ == "__main__":
    sys.exit(cli.main(build_parser(), bench))
