"""Two device choices side by side on one accelerator: the chunk mask's shape and the keys' place.

* The streaming prefill's chunk attention, with the mask ILRe gives each backend
  (``ilre.prefiller.chunk_mask``: on CUDA a lower-right causal bias that keeps flash /
  memory-efficient attention) against a dense boolean mask of the same meaning.
* One question from an encoded context with the keys of l_R kept on the device against kept in
  host memory (``--key-memory host``), which are moved to the device block by block.

Each is timed after a warm-up, with the device synchronised, and prints a Markdown table.

    python scripts/bench_device_paths.py --device cuda --random-weights path/to/SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ilre import cli

ROOT = Path(__file__).resolve().parents[1]


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python scripts/bench_device_paths.py", __doc__)
    cli.add_lengths_option(p, (32 * cli.K, 128 * cli.K))
    p.add_argument("--random-weights", type=Path, default=None, metavar="DIR",
                   help="a folder with config.json and a tokenizer: that model's shapes with random weights")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each (the best counts); default: 3")
    cli.add_model_options(p)
    return p


def run(args: argparse.Namespace) -> int | None:
    sys.path.insert(0, str(ROOT / "scripts"))
    from verify_device import load

    from device import select_backend
    from ilre import prefiller as prefiller_module
    from evaluation.bench_measure import ANSWER_PREFIX, QUESTION, make_context

    cli.set_threads(args.threads)
    backend = select_backend(args.device, args.dtype)
    ilre = load(args, backend)
    print(f"{backend.describe()}; {ilre.name}, layer {ilre.config.layer}\n")
    print("| context | prefill, ILRe's mask s | prefill, dense mask s | question, keys on device s "
          "| question, keys in host memory s |\n|---|---|---|---|---|")
    shaped = prefiller_module.chunk_mask

    def best(fn) -> float:
        fn()
        times = []
        for _ in range(args.repeats):
            with backend.timer() as t:
                fn()
            times.append(t.seconds)
        return min(times)

    for n in args.lengths:
        ctx = make_context(ilre.tokenizer, n)
        row = [cli.length_label(n)]
        for mask in (shaped, prefiller_module.dense_chunk_mask):
            prefiller_module.chunk_mask = mask
            try:
                row.append(best(lambda: ilre.encode(ctx["text"])))
            finally:
                prefiller_module.chunk_mask = shaped
        for where in ("device", "host"):
            other = ilre.with_config(key_memory=where)
            encoded = other.encode(ctx["text"])
            row.append(best(lambda: other.answer(encoded, QUESTION, ANSWER_PREFIX)))
        print("| " + " | ".join([row[0]] + [f"{s:.3f}" for s in row[1:]]) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(cli.main(build_parser(), run))
