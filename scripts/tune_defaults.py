"""Choose ILRe's recall defaults by measurement on held-out tasks.

    python scripts/tune_defaults.py --lengths 4000,16000 --samples 3 --out results/tune

Each task is encoded once (the streaming prefill is the expensive part); every recall setting
in the grid then re-scores and answers from that one encoding. Seeds are disjoint from the
tests' and the bundled example's, and the grid's winner is what ILReConfig's defaults record.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

from tqdm import tqdm

from ilre import cli
from ilre.config import ILReConfig
from ilre.pipeline import ILRe
from evaluation.generators import DEPTH_TASKS, TASKS as TASK_NAMES, generate
from evaluation.tasks import score, tokenizer_len_for

TASKS = ["passkey", "niah_single_prose", "niah_multikey", "niah_multivalue", "vt"]


def grid() -> list[dict]:
    rows = []
    for unit, budget in itertools.product(["sentence", "token"], [128, 256, 512]):
        for positions, distance in [("relative", 16), ("relative", 256), ("absolute", 0)]:
            rows.append(dict(recall_unit=unit, budget=budget, positions=positions, distance=distance))
    return rows


def default_setting() -> dict:
    c = ILReConfig()
    return dict(recall_unit=c.recall_unit, budget=c.budget, positions=c.positions, distance=c.distance)


def main() -> None:
    p = cli.Parser("python scripts/tune_defaults.py", __doc__)
    p.add_argument("--lengths", type=cli.lengths(minimum=64), default=(4000, 16000),
                   help="context lengths in tokens, e.g. 4000,16K; default: 4000,16000")
    p.add_argument("--samples", type=cli.at_least(1), default=2, help="samples per task and length; default: 2")
    p.add_argument("--tasks", type=cli.names(tuple(TASK_NAMES), "task"), default=TASKS,
                   help="comma-separated task names; default: " + ",".join(TASKS))
    cli.add_config_options(p, "layer", "window")
    p.add_argument("--defaults-only", action="store_true",
                   help="answer with the default recall setting only (to compare prefill settings such as --window)")
    cli.add_model_options(p)
    p.add_argument("--seed", type=int, default=9001, help="base seed (held out from tests and examples); default: 9001")
    cli.add_results_option(p, "tune")
    args = p.parse_args()
    cli.set_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    log_path = args.out / "rows.jsonl"
    done = set()
    if log_path.exists():
        done = {(r["task"], r["length"], r["sample"], json.dumps(r["setting"], sort_keys=True))
                for r in map(json.loads, log_path.open())}
    ilre = ILRe.from_pretrained(args.model, args.device, args.dtype, config=cli.config_from(args), max_new_tokens=24)
    base = ilre.config
    count = tokenizer_len_for(ilre.tokenizer)
    jobs = [(t, n, s) for n in args.lengths for t in args.tasks for s in range(args.samples)]
    with log_path.open("a") as log:
        for name, length, sample in tqdm(jobs, desc="tasks"):
            candidates = [default_setting()] if args.defaults_only else grid()
            settings = [g for g in candidates if (name, length, sample, json.dumps(g, sort_keys=True)) not in done]
            if not settings:
                continue
            opts = {"depth": (sample + 0.5) / args.samples} if name in DEPTH_TASKS else {}
            task = generate(name, count, length, seed=args.seed + 1000 * sample + length % 997,
                            phrasing_seed=args.seed + sample, **opts)
            t0 = time.perf_counter()
            encoded = ilre.encode(task.context)
            prefill = time.perf_counter() - t0
            for setting in settings:
                result = ilre.with_config(**setting).answer(encoded, task.question, task.answer_prefix)
                row = dict(task=name, length=length, sample=sample, setting=setting, tokens=result.context_tokens,
                           correct=score(result.answer, task),
                           recalled=any(a in " ".join(s.text for s in result.spans) for a in task.answers),
                           answer=result.answer, prefill=prefill, window=args.window, layer=base.layer)
                log.write(json.dumps(row) + "\n")
                log.flush()
    summarize(log_path, args.out / "table.md")


def summarize(log_path: Path, out: Path) -> None:
    rows = [json.loads(line) for line in log_path.open()]
    by = {}
    for r in rows:
        key = (json.dumps(r["setting"], sort_keys=True), r["length"])
        by.setdefault(key, []).append(r)
    lengths = sorted({r["length"] for r in rows})
    settings = sorted({k[0] for k in by})
    lines = ["| setting | " + " | ".join(f"{n} acc (recall)" for n in lengths) + " | mean acc |",
             "|---|" + "---|" * (len(lengths) + 1)]
    ranked = []
    for s in settings:
        cells, accs = [], []
        for n in lengths:
            rs = by.get((s, n), [])
            acc = sum(r["correct"] for r in rs) / max(len(rs), 1)
            rec = sum(r["recalled"] for r in rs) / max(len(rs), 1)
            accs.append(acc)
            cells.append(f"{acc:.2f} ({rec:.2f}) n={len(rs)}")
        ranked.append((sum(accs) / len(accs), s, cells))
    for mean, s, cells in sorted(ranked, reverse=True):
        d = json.loads(s)
        name = f"{d['recall_unit']} b={d['budget']} {d['positions']}" + (f" d={d['distance']}" if d["positions"] == "relative" else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean:.3f} |")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
