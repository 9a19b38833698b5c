"""Recall settings side by side on the real-document questions, recall alone (no answers): how
often what the reader would read holds the answering passage, judged by its location, per wording.

    python scripts/tune_recall.py --seeds 0,2,3 --threads 2 \\
        --setting lexical_passage=0 --setting lexical_passage=96

Each question's window is encoded once with the default prefill; every setting (the defaults, then
each --setting, a comma-separated list of ILReConfig fields) recalls from that one encoding, so a
column costs seconds, not a rerun. The tuning questions are the default; ``--questions heldout``
gives held-out figures and must not be used to choose a setting. BM25 of 64-token chunks at the
same budget (the evaluation's RAG system) is the last column. Rows go to <out>/tune_recall.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from tqdm import tqdm

from evaluation.documents import QUESTION_SETS, document_tasks
from ilre import cli
from ilre.config import ILReConfig


def setting(text: str) -> dict:
    """'key=value,key=value' as ILReConfig overrides, each value parsed as its --option parses it."""
    by_name = {f.name: f for f in fields(ILReConfig)}
    out = {}
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key not in by_name or not value:
            raise argparse.ArgumentTypeError(f"{part!r} is not FIELD=VALUE of an ILReConfig field")
        out[key] = cli.field_type(by_name[key])[0](value)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python scripts/tune_recall.py", __doc__)
    p.add_argument("--setting", type=setting, action="append", default=[], metavar="FIELD=VALUE[,...]",
                   help="a recall setting to measure beside the defaults (repeatable)")
    p.add_argument("--questions", choices=tuple(QUESTION_SETS), default="tuning",
                   help="the question set; 'heldout' for held-out figures only; default: %(default)s")
    p.add_argument("--seeds", type=cli.listed(int, 0), default=(0, 2, 3),
                   help="window seeds, comma-separated; default: 0,2,3")
    p.add_argument("--length", type=cli.lengths(minimum=256), default=(4 * cli.K,),
                   help="window length in tokens; default: 4K")
    cli.add_results_option(p, "tune_recall")
    cli.add_model_options(p)
    return p


def run(args: argparse.Namespace) -> int | None:
    from evaluation.baselines import Sample
    from evaluation.systems import SYSTEMS
    from evaluation.tasks import passage_read, tokenizer_len_for

    ilre = cli.load_pipeline(args)
    count = tokenizer_len_for(ilre.tokenizer)
    tasks = [t for seed in args.seeds for t in document_tasks(count, args.length[0], seed,
                                                              data=QUESTION_SETS[args.questions])]
    names = ["default"] + [",".join(f"{k}={v}" for k, v in s.items()) for s in args.setting] + ["bm25"]
    variants = [ilre] + [ilre.with_config(**s) for s in args.setting]
    args.out.mkdir(parents=True, exist_ok=True)
    totals = {name: {} for name in names}
    with open(args.out / "tune_recall.jsonl", "w") as log:
        for task in tqdm(tasks, desc="windows"):
            encoded = ilre.encode(task.context)
            sample = Sample.of(ilre, task.context, task.question)
            read = {}
            for name, variant in zip(names, variants):
                positions = variant.recall(encoded, task.question)[0]
                read[name] = passage_read(task, sample.read_spans(positions))
            bm25 = SYSTEMS["rag"].selector.select(sample, ilre.config.budget)
            read["bm25"] = passage_read(task, sample.read_spans(bm25))
            row = {"task": task.task, "seed": task.seed, "question": task.question, "read": read}
            log.write(json.dumps(row) + "\n")
            for name, value in read.items():
                cell = totals[name].setdefault(task.task.split("/")[-1], [0.0, 0])
                cell[0] += value
                cell[1] += 1
    wordings = sorted({w for cells in totals.values() for w in cells})
    print("| recall | " + " | ".join(f"{w} ({totals['default'][w][1]})" for w in wordings) + " | all |")
    print("| --- " * (len(wordings) + 2) + "|")
    for name in names:
        cells = [totals[name][w][0] for w in wordings]
        print(f"| {name} | " + " | ".join(f"{c:g}" for c in cells) + f" | {sum(cells):g} |")


if __name__ == "__main__":
    sys.exit(cli.main(build_parser(), run))
