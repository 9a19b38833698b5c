"""Score ILRe and the systems it competes with (full context, SnapKV-style recall, StreamingLLM,
BM25 RAG) on offline tasks: accuracy per task and context length, time to answer and peak memory,
as a markdown table and a PNG plot. Every system answers the same tasks with the same model and
prompt layout. Resumable: rerunning the same command recomputes no finished row.

    python scripts/evaluate.py --preset quick --threads 1       # ~15 minutes on 2 CPU cores
    python scripts/evaluate.py --preset full --threads 1        # the table in docs/evaluation.md
    python scripts/evaluate.py --tasks passkey,vt --lengths 1K,32K --samples 3 --out results/mine
    python scripts/evaluate.py --ruler ../RULER --lengths 4K --samples 8
    python scripts/evaluate.py --documents --lengths 4K --threads 1
    python scripts/evaluate.py --folder code --systems ilre,rag --threads 2
    python scripts/evaluate.py --preset full --report-only
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from ilre import cli
from evaluation import ruler
from evaluation.documents import QUESTION_SETS
from evaluation.harness import Runner, Store
from evaluation.systems import DEFAULT_SYSTEMS, SYSTEMS, System, task_key
from evaluation.report import markdown, plot
from evaluation.generators import TASKS, make_tasks
from evaluation.tasks import Task, read_jsonl, tokenizer_len_for, write_jsonl

ALL_TASKS = ("passkey", "niah_single_noise", "niah_single_prose", "niah_multikey", "niah_multivalue",
             "niah_multiquery", "vt", "cwe", "fwe")
K = cli.K


@dataclass(frozen=True)
class Grid:
    """Tasks x lengths x samples: one block of a preset."""

    tasks: tuple[str, ...]
    lengths: tuple[int, ...]
    samples: int


@dataclass(frozen=True)
class Preset:
    grids: tuple[Grid, ...]
    max_context_tokens: int
    note: str


PRESETS = {
    "quick": Preset((
        Grid(("passkey", "niah_single_noise", "niah_multikey", "vt", "cwe"), (1 * K, 4 * K), 2),
        Grid(("passkey", "niah_multikey", "vt"), (16 * K,), 1),
    ), max_context_tokens=8 * K, note="5 task kinds at 1K and 4K, 3 at 16K; full context up to 8K"),
    "full": Preset((
        Grid(ALL_TASKS, (1 * K, 4 * K), 2),
        Grid(("niah_single_prose", "niah_multikey", "vt"), (16 * K, 64 * K), 1),
        Grid(("niah_single_prose",), (128 * K,), 1),
    ), max_context_tokens=16 * K, note="all 9 task kinds at 1K and 4K, 3 at 16K and 64K, 1 at 128K; "
                                        "full context up to 16K"),
}


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python scripts/evaluate.py", __doc__)
    w = p.add_argument_group("what to run")
    w.add_argument("--preset", choices=sorted(PRESETS), default="quick",
                   help="task grid: quick (" + PRESETS["quick"].note + "), full (" + PRESETS["full"].note
                        + "); default: quick")
    w.add_argument("--tasks", type=cli.names(TASKS, "task"), default=None,
                   help="comma-separated task names, replacing the preset's grid (with --lengths, --samples); "
                        f"known: {', '.join(TASKS)}")
    w.add_argument("--lengths", type=cli.lengths(minimum=64), default=None,
                   help="comma-separated context lengths in tokens of the model's tokenizer, e.g. 1K,4K,64K "
                        "(K = 1024, M = 1024²)")
    w.add_argument("--samples", type=cli.at_least(1), default=None, help="tasks per (task name, length); default: 1")
    w.add_argument("--tasks-file", type=Path, default=None,
                   help="score the tasks of this JSONL file (as written by a previous run) instead of generating")
    w.add_argument("--documents", action="store_true",
                   help="natural questions about real long documents (manuals, FAQs from Debian and PyPI "
                        "packages) instead of the synthetic tasks: a window per question at each of --lengths "
                        "(default 4K), reported as docs/lexical and docs/paraphrase; default folder: results/documents")
    w.add_argument("--questions", choices=tuple(QUESTION_SETS), default="tuning",
                   help="with --documents: the question set; 'tuning', 'tuning2' and 'tuning3' (48 questions "
                        "each about 6 documents, the sets defaults are chosen on) or 'heldout' (58 questions about 7 "
                        "other documents, written before any tuning, for held-out figures only); default: tuning")
    w.add_argument("--whole", action="store_true",
                   help="with --documents: ask every question of its whole document, encoded once as a saved "
                        "index in the results folder (indexes/), instead of a window; full context and the "
                        "other O(L²) systems are skipped over --max-context-tokens")
    w.add_argument("--document-ids", type=lambda v: [x for x in v.split(",") if x], default=None, metavar="IDS",
                   help="with --documents: comma-separated ids of the documents to ask about (as in the question "
                        "set's file); default: all of the set's")
    w.add_argument("--folder", choices=("code", "manuals"), default=None,
                   help="questions about a folder asked as one context, encoded once as a saved index in the "
                        "results folder: 'code' (48 questions about the Python standard library's email, http and "
                        "json packages, 39 files), 'manuals' (24 held-out questions about three manuals joined as "
                        "one folder); the answering file among what was read is scored too; default folder: "
                        "results/<folder>")
    w.add_argument("--ruler", type=Path, default=None, metavar="PATH",
                   help="a checkout of NVIDIA's RULER (github.com/NVIDIA/RULER): run RULER's own generators "
                        "offline for --ruler-tasks at each of --lengths (default 4K, RULER's max_seq_length: "
                        "prompt plus answer) with --samples and --seed, instead of the project's tasks; "
                        "default folder: results/ruler")
    w.add_argument("--ruler-haystack", type=Path, default=None, metavar="FILE",
                   help="with --ruler: a plain text file that replaces the essays of the essay haystack; "
                        "default: Newton's Opticks from Go's source tree (golang-src)")
    w.add_argument("--ruler-tasks", type=cli.names(ruler.RULER_TASKS, "RULER task"), default=None,
                   help=f"comma-separated RULER tasks for --ruler; default: all of {', '.join(ruler.RULER_TASKS)}")
    w.add_argument("--systems", type=cli.names(tuple(SYSTEMS), "system"), default=DEFAULT_SYSTEMS,
                   help=f"comma-separated systems; known: {', '.join(SYSTEMS)}; "
                        f"default: {','.join(DEFAULT_SYSTEMS)}")
    w.add_argument("--seed", type=int, default=0, help="seed of the task generators; default: 0")

    m = p.add_argument_group("model and budget (the same for every system)")
    cli.add_model_options(m)
    cli.add_config_options(m, "budget", "max_new_tokens")
    m.add_argument("--max-context-tokens", type=cli.parse_length, default=None,
                   help="full context and SnapKV-style (O(L²) full prefills) are skipped above this many "
                        "context tokens; default: the preset's (quick 8K, full 16K)")
    m.add_argument("--max-seconds", type=float, default=600.0,
                   help="they are also skipped at every length above one where their full prefill of a task "
                        "took longer than this many seconds; default: %(default)s")

    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, default=None, help="results folder; default: results/<preset>")
    o.add_argument("--report-only", action="store_true",
                   help="rebuild the table and plot from the folder's predictions, running nothing")
    o.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def grids(args: argparse.Namespace) -> tuple[Grid, ...]:
    if args.tasks or args.lengths or args.samples:
        if not (args.tasks and args.lengths):
            raise ValueError("--tasks and --lengths go together (and --samples, default 1): they replace the preset")
        return (Grid(args.tasks, args.lengths, args.samples or 1),)
    return PRESETS[args.preset].grids


def generate_tasks(args: argparse.Namespace, tokenizer) -> list[Task]:
    if args.tasks_file is not None:
        if not args.tasks_file.is_file():
            raise ValueError(f"tasks file {args.tasks_file} does not exist")
        tasks = read_jsonl(args.tasks_file)
        if not tasks:
            raise ValueError(f"tasks file {args.tasks_file} holds no tasks")
        return tasks
    if args.ruler is not None:
        if args.tasks or args.documents:
            raise ValueError("--ruler runs RULER's tasks: choose them with --ruler-tasks, not --tasks or --documents")
        return ruler.generate(args.ruler, tokenizer, args.ruler_tasks or ruler.RULER_TASKS, args.lengths or (4 * K,),
                              args.samples or 1, seed=args.seed, haystack=args.ruler_haystack)
    count = tokenizer_len_for(tokenizer)
    if args.folder:
        from evaluation.folders import code_tasks, manual_tasks

        if args.tasks or args.samples or args.lengths or args.documents:
            raise ValueError("--folder asks its own questions of a whole folder: it takes no --tasks, --samples, "
                             "--lengths or --documents")
        return code_tasks(count) if args.folder == "code" else manual_tasks(count)
    if args.documents:
        from evaluation.documents import document_tasks

        if args.tasks or args.samples:
            raise ValueError("--documents replaces the synthetic tasks: it takes --lengths, not --tasks or --samples")
        data = QUESTION_SETS[args.questions]
        if args.whole:
            if args.lengths:
                raise ValueError("--whole asks about whole documents: it takes no --lengths")
            return document_tasks(count, None, args.seed, args.document_ids, data)
        return [t for n in args.lengths or (4 * K,)
                for t in document_tasks(count, n, args.seed, args.document_ids, data)]
    out: list[Task] = []
    for grid in grids(args):
        out += make_tasks(grid.tasks, grid.lengths, grid.samples, count, seed=args.seed)
    return out


def merge_tasks(folder: Path, tasks: list[Task]) -> list[Task]:
    """The folder's task set: earlier tasks plus these, a regenerated task replacing its old version."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tasks.jsonl"
    by_id = {(t.task, t.length, t.seed): t for t in (read_jsonl(path) if path.is_file() else [])}
    by_id.update({(t.task, t.length, t.seed): t for t in tasks})
    merged = sorted(by_id.values(), key=lambda t: (t.length, t.task, t.seed))
    write_jsonl(path, merged)
    return merged


def write_report(folder: Path, systems: list[System], fingerprints: dict[str, str], meta: dict) -> Path:
    """table.md and accuracy.png from the folder's rows made under the current settings."""
    store = Store(folder)
    tasks_path = folder / "tasks.jsonl"
    if not tasks_path.is_file() or not store.predictions.is_file():
        raise ValueError(f"{folder} holds no results yet: run without --report-only first")
    keys = {task_key(t) for t in read_jsonl(tasks_path)}
    names = {s.name for s in systems}
    rows = [r for r in store.rows(fingerprints).values() if r["key"] in keys]
    if not rows:
        raise ValueError(f"{folder} holds no rows for the systems {', '.join(sorted(names))} "
                         "under the current settings")
    threads = sorted({r["threads"] for r in rows})
    meta = {**meta, "torch threads": ",".join(map(str, threads))}
    (folder / "table.md").write_text(markdown(rows, systems, meta) + "\n", encoding="utf-8")
    plot(rows, systems, folder / "accuracy.png", meta.get("title", ""))
    return folder / "table.md"


def evaluate(args: argparse.Namespace, argv: list[str]) -> int:
    if (args.whole or args.questions != "tuning" or args.document_ids) and not args.documents:
        raise ValueError("--whole, --questions and --document-ids choose real-document tasks: add --documents")
    if args.ruler_haystack is not None and not args.ruler_haystack.is_file():
        raise ValueError(f"--ruler-haystack {args.ruler_haystack} is not a file: pass a plain text file")
    if args.ruler_tasks and args.ruler is None:
        raise ValueError("--ruler-tasks needs --ruler, the path of a RULER checkout")
    if args.ruler is not None and not args.report_only:
        ruler.checkout(args.ruler)  # a bad path fails here, before the model loads
    folder = args.out or Path("results") / (
        args.folder if args.folder else ("whole" if args.whole else "documents") + ("" if args.questions == "tuning"
        else "-heldout") if args.documents else "ruler" if args.ruler else args.preset)
    systems = [SYSTEMS[n] for n in args.systems]
    cap = args.max_context_tokens or PRESETS[args.preset].max_context_tokens
    ilre = cli.load_pipeline(args, cli.config_from(args))
    kind = (f"a folder: {args.folder}" if args.folder else "documents" if args.documents
            else "RULER" if args.ruler else args.preset if not args.tasks else "custom")
    meta = {"title": f"ILRe evaluation ({kind})",
            "command": "python scripts/evaluate.py " + shlex.join(argv),
            "model": ilre.name, "retrieval layer": ilre.config.layer, "budget": f"{args.budget} tokens",
            "full context and SnapKV-style": f"up to {cli.length_label(cap)} tokens",
            "CPU": f"{psutil.cpu_count()} cores ({platform.machine()})", "torch": torch.__version__}
    if not args.report_only:
        tasks = generate_tasks(args, ilre.tokenizer)
        merge_tasks(folder, tasks)
        Runner(ilre, Store(folder), systems, max_context_tokens=cap, max_seconds=args.max_seconds,
               threads=torch.get_num_threads(), progress=not args.no_progress,
               index_dir=folder / "indexes" if args.whole or args.folder else None).run(tasks)
    table = write_report(folder, systems, {s.name: s.fingerprint(ilre) for s in systems}, meta)
    print(table.read_text(encoding="utf-8").split("## Answers")[0])
    print(f"table: {table}\nplot: {table.parent / 'accuracy.png'}\npredictions: {table.parent / 'predictions.jsonl'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    cli.setup_logging()
    return cli.run(lambda: evaluate(args, argv), interrupted="interrupted: rerun the same command to resume")


if __name__ == "__main__":
    sys.exit(main())
