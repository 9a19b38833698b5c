"""Passkey retrieval through the command line, as a user runs it, at one context length.

    python scripts/cli_passkey.py --length 32000 --tries 6

Each try writes a passkey haystack (depths spread from 5% to 95%) to a file and runs
`python -m ilre.answer --json` on it in a fresh process; prints accuracy and stage times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ilre.loading import load
from ilre.evaluation.tasks import passkey, score, spread_depths, tokenizer_len_for


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--length", type=int, default=32000, help="context length in tokens")
    p.add_argument("--tries", type=int, default=6, help="passkeys, at depths spread over the context")
    p.add_argument("--seed", type=int, default=4242, help="base seed")
    p.add_argument("--haystack", choices=("noise", "prose"), default="noise", help="filler text")
    p.add_argument("--out", type=Path, default=Path("results/cli_passkey.jsonl"), help="one JSON line per try")
    p.add_argument("extra", nargs="*", help="extra arguments for ilre.answer (after --)")
    args = p.parse_args()
    _, tokenizer, _ = load(None)
    count = tokenizer_len_for(tokenizer)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    right = 0
    with tempfile.TemporaryDirectory() as tmp, args.out.open("a") as log:
        for i, depth in enumerate(spread_depths(args.tries)):
            task = passkey(count, args.length, seed=args.seed + i, depth=depth, haystack=args.haystack)
            path = Path(tmp) / f"haystack{i}.txt"
            path.write_text(task.context, encoding="utf-8")
            t0 = time.perf_counter()
            run = subprocess.run([sys.executable, "-m", "ilre.answer", "--context", str(path), "--query",
                                  task.question, "--answer-prefix", task.answer_prefix, "--json",
                                  "--no-progress", *args.extra], capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if run.returncode:
                print(run.stderr, file=sys.stderr)
                continue
            record = json.loads(run.stdout)
            ok = score(record["answer"], task)
            right += ok
            recalled = " ".join(span["text"] for span in record["spans"])
            row = dict(length=args.length, depth=round(depth, 3), tokens=record["context_tokens"], correct=ok,
                       needle_recalled=all(a in recalled for a in task.answers), answer=record["answer"], layer=record["layer"], wall=round(wall, 1),
                       timings={k: round(v, 2) for k, v in record["timings"].items()})
            log.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print(f"accuracy {right}/{args.tries} at {args.length} tokens")


if __name__ == "__main__":
    main()
