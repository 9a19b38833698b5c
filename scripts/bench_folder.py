"""A folder as one index, measured side by side in one process with one loaded model: the index's
build (read, encode, save, as ``python -m ilre.index --context FOLDER`` does), questions answered
from it, and ``--update`` after one file changed (load, re-encode what changed, save) against a
full rebuild. The folders are copied to a temporary folder first, so the change is made on the copy.
Where the int8 answer can run (a CPU with torch's weight-only int8 kernel) the questions are asked
under both answer precisions, one after the other in the same process, so their times are a
side-by-side ratio.

    python scripts/bench_folder.py --threads 2     # the code base of evaluation/data/code_questions.json
    python scripts/bench_folder.py --context src/ --include '*.py' --threads 2

Its questions are asked with the default code base; with --context, --query (repeatable) gives them.
The figures go to <out>/bench_folder.json and are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from ilre import cli

GOALS = {"question_s": 2.0, "update_share": 1 / 3}
CHANGE = '\n\ndef added_for_the_benchmark(value):\n    """A function added after the index was made."""\n    return value * 7\n'


def seconds(work):
    """(the result of ``work()``, its wall-clock seconds)."""
    t0 = time.perf_counter()
    out = work()
    return out, time.perf_counter() - t0


def default_code_base() -> tuple[list[Path], list[str], list[str]]:
    """The folders, include patterns and questions of the code-base evaluation."""
    from importlib.resources import files

    raw = json.loads(files("evaluation").joinpath("data/code_questions.json").read_text(encoding="utf-8"))
    base = raw["codebase"]
    return [Path(base["root"]) / f for f in base["folders"]], base["include"], [q["question"] for q in raw["questions"]]


def measure(ilre, folders: list[Path], include: list[str], questions: list[str], work: Path) -> dict:
    from ilre.index.update import update
    from ilre.sources import read_sources

    copies = []
    for f in folders:
        copies.append(work / f.resolve().name)
        shutil.copytree(f, copies[-1], ignore=shutil.ignore_patterns("__pycache__"))
    sources, read_s = seconds(lambda: read_sources(copies, include))
    row = {"files": len(sources), "bytes": len(sources.text.encode()), "read_s": read_s}
    encoded, row["encode_s"] = seconds(lambda: ilre.encode(sources, progress=True))
    path, row["save_s"] = seconds(lambda: encoded.save(work / "folder.ilre"))
    row.update(tokens=len(encoded.tokens), index_mib=path.stat().st_size / 2**20,
               build_s=row["read_s"] + row["encode_s"] + row["save_s"])
    encoded = None
    loaded, row["load_s"] = seconds(lambda: ilre.load_index(path))
    row["by_precision"] = {name: ask(pipeline, loaded, questions) for name, pipeline in precisions(ilre).items()}
    row.update({k: v for k, v in row["by_precision"][ilre.config.answer_precision].items() if k != "answers"})

    # one file changes: the largest-but-one, so that the change is not the cheapest case
    changed = sorted(sources.files, key=lambda f: f.end - f.start)[-2]
    with open((work if len(copies) > 1 else copies[0]) / changed.path, "a") as fh:  # paths as read_sources names them
        fh.write(CHANGE)
    row["changed_file"] = changed.path

    def do_update():
        now = read_sources(copies, include)
        updated, change = update(ilre, ilre.load_index(path), now)
        updated.save(path)
        return change

    change, row["update_s"] = seconds(do_update)
    row.update(update_tokens=change.tokens_encoded, rebuilt=change.rebuilt, change=str(change))

    def rebuild():
        return ilre.encode(read_sources(copies, include)).save(work / "rebuilt.ilre")

    _, row["rebuild_s"] = seconds(rebuild)
    row["update_share"] = row["update_s"] / row["rebuild_s"]
    answer = ilre.answer(ilre.load_index(path), "What does the function added_for_the_benchmark return?")
    row["update_found_new_function"] = any("value * 7" in s.text for s in answer.spans)
    return row


def precisions(ilre) -> dict:
    """The pipeline under each answer precision this machine runs, by name."""
    from ilre import quantize

    if not quantize.int8_decoding_runs_on(ilre.device):
        return {ilre.config.answer_precision: ilre}
    return {p: ilre.with_config(answer_precision=p) for p in ("model", "int8")}


def ask(ilre, loaded, questions: list[str]) -> dict:
    """Each question answered from the index: times, and the answer's time per generated token."""
    ilre.answer_model  # an int8 copy is made once per loaded model, not per question
    times, finding, per_token, answers = [], [], [], []
    for q in questions:
        result, s = seconds(lambda: ilre.answer(loaded, q))
        assert all(span.file for span in result.spans)
        times.append(s)
        finding.append(result.timings["score"] + result.timings["recall"])
        per_token.append(result.timings["answer"] / max(1, len(result.answer_tokens)))
        answers.append(result.answer)
    return dict(questions=len(times), question_mean_s=sum(times) / len(times), question_max_s=max(times),
                recall_mean_s=sum(finding) / len(finding),
                answer_ms_per_token=1e3 * sum(per_token) / len(per_token), answers=answers)


def add_question_options(p: argparse.ArgumentParser) -> None:
    """--query and --questions: the questions asked, one's own or the code-base evaluation's."""
    p.add_argument("--query", action="append", default=None,
                   help="a question to ask (repeatable); default: the first --questions of the code-base evaluation")
    p.add_argument("--questions", type=cli.at_least(1), default=16,
                   help="how many of the code-base evaluation's questions to ask; default: %(default)s")


def questions_of(args: argparse.Namespace, default: list[str]) -> list[str]:
    """The questions to ask: --query's, else the first --questions of ``default``; a --context of
    one's own needs its own questions."""
    if args.context and not args.query:
        raise ValueError("--context needs its questions: give them with --query")
    return args.query or default[:args.questions]


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python scripts/bench_folder.py", __doc__)
    p.add_argument("--context", type=Path, nargs="+", default=None, metavar="FOLDER",
                   help="the folders to index; default: the code base of the code-base evaluation")
    p.add_argument("--include", action="append", default=None, metavar="GLOB",
                   help="read only the files that match (repeatable); default: the code base's (*.py)")
    add_question_options(p)
    cli.add_results_option(p, "bench_folder")
    cli.add_model_options(p)
    return p


def run(args: argparse.Namespace) -> int | None:
    folders, include, questions = default_code_base()
    questions = questions_of(args, questions)
    if args.context:
        folders, include = args.context, args.include or []
    args.out.mkdir(parents=True, exist_ok=True)
    ilre, load_model_s = seconds(lambda: cli.load_pipeline(args))
    with tempfile.TemporaryDirectory() as work:
        row = measure(ilre, folders, include, questions, Path(work))
    import torch

    holds = {"question_s": row["question_max_s"] <= GOALS["question_s"],
             "update_share": row["update_share"] <= GOALS["update_share"]}
    doc = {"command": "python scripts/bench_folder.py " + " ".join(sys.argv[1:]), "row": row,
           "model_load_s": load_model_s, "threads": torch.get_num_threads(),
           "cpu": f"{os.cpu_count()} cores, {platform.machine()}", "torch": torch.__version__,
           "settings": ilre.encoding, "budget": ilre.config.budget,
           "goals": {k: {"goal": f"<= {v:.3g}", "holds": holds[k]} for k, v in GOALS.items()}}
    (args.out / "bench_folder.json").write_text(json.dumps(doc, indent=2) + "\n")
    r = row
    print(f"folder: {r['files']} files, {r['bytes'] / 1e3:.0f} KB, {r['tokens']} tokens")
    print(f"index build {r['build_s']:.1f} s (read {r['read_s']:.1f}, encode {r['encode_s']:.1f}, save "
          f"{r['save_s']:.1f}); {r['index_mib']:.0f} MiB; load {r['load_s']:.2f} s")
    print(f"question from the index ({ilre.config.answer_precision} answer): mean {r['question_mean_s']:.2f} s, "
          f"max {r['question_max_s']:.2f} s "
          f"({r['questions']} questions; scoring and recall {r['recall_mean_s']:.2f} s of it, the rest the "
          f"answer); model load {load_model_s:.1f} s once per process")
    if len(r["by_precision"]) > 1:
        m, q = r["by_precision"]["model"], r["by_precision"]["int8"]
        same = sum(a == b for a, b in zip(m["answers"], q["answers"]))
        print(f"answer precision side by side: model mean {m['question_mean_s']:.2f} s, max "
              f"{m['question_max_s']:.2f} s, {m['answer_ms_per_token']:.1f} ms a token; int8 mean "
              f"{q['question_mean_s']:.2f} s, max {q['question_max_s']:.2f} s, {q['answer_ms_per_token']:.1f} ms a "
              f"token ({m['answer_ms_per_token'] / q['answer_ms_per_token']:.2f}x); {same} of {len(m['answers'])} "
              "answers the same")
    print(f"one file changed ({r['changed_file']}): --update {r['update_s']:.1f} s ({r['change']}), full rebuild "
          f"{r['rebuild_s']:.1f} s: {r['update_share']:.2f} of it; the new function recalled: "
          f"{r['update_found_new_function']}")
    for name, g in doc["goals"].items():
        print(f"goal {name}: {g['goal']} {'holds' if g['holds'] else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(cli.main(build_parser(), run))
