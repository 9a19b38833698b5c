"""Verify ILRe on a device in one command, and write a Markdown report to paste into docs/.

    python scripts/verify_device.py --device cuda --out report.md
    python scripts/verify_device.py --device npu --out report.md
    python scripts/verify_device.py --device cpu --lengths 32K --out report.md

It runs, on that device and in its dtype: the device exactness tests (tests/test_device_exactness.py
through ``pytest --device``); the bundled example with the model (the embedded one by default);
and a benchmark at each of --lengths: the streaming prefill to the retrieval layer, one question
from the encoding (scoring, recall, a 16-token answer), the device's peak memory, and the model's
own full-context forward up to --full-limit. --random-weights DIR times a model of DIR's
config.json with random weights, for machines that cannot hold or reach the real weights: the
timings are those of the real shapes, the answers mean nothing.
"""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path

from ilre import cli

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "What is the combination of the old lighthouse safe?"
EXAMPLE_ANSWER = "7342"


def versions(backend) -> list[str]:
    import torch
    import transformers

    import ilre

    rows = [f"ilre {ilre.__version__}", f"torch {torch.__version__}", f"transformers {transformers.__version__}",
            f"python {platform.python_version()}"]
    if backend.name == "cuda":
        rows.append(f"CUDA {torch.version.cuda}")
    if backend.name == "npu":
        import torch_npu

        rows.append(f"torch_npu {torch_npu.__version__}")
    return rows


def load(args, backend):
    """The pipeline: the model of --model, or one of --random-weights' shapes with random weights."""
    from ilre.pipeline import ILRe

    if args.random_weights is None:
        return ILRe.from_pretrained(args.model, device=args.device, dtype=args.dtype, max_new_tokens=16)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(args.random_weights, local_files_only=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=backend.dtype, attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(args.random_weights, local_files_only=True)
    name = getattr(config, "ilre_name", None) or Path(args.random_weights).name
    from ilre.config import ILReConfig

    return ILRe(model.to(backend.torch_device).eval(), tokenizer, ILReConfig(max_new_tokens=16), name=name,
                backend=backend)


def benchmark(ilre, backend, n: int, full_limit: int) -> dict:
    import torch

    from evaluation.bench_measure import ANSWER_PREFIX, QUESTION as ASK, make_context

    ctx = make_context(ilre.tokenizer, n)
    row = {"length": cli.length_label(n)}
    backend.reset_peak_memory()
    with backend.timer() as t:
        encoded = ilre.encode(ctx["text"])
    row["prefill_s"] = t.seconds
    with backend.timer() as t:
        result = ilre.answer(encoded, ASK, ANSWER_PREFIX)
    row.update(question_s=t.seconds, recalled=any(ctx["answer"] in s.text for s in result.spans),
               peak_gib=backend.peak_memory_bytes() / 2**30, tokens=result.context_tokens)
    del encoded
    if n <= full_limit:
        ids = ilre.full_prompt_ids(ctx["text"], ASK, ANSWER_PREFIX).to(backend.torch_device)
        try:
            with torch.inference_mode(), backend.timer() as t:
                ilre.model(input_ids=ids[None], logits_to_keep=1)
            row["full_s"] = t.seconds
        except torch.OutOfMemoryError:
            row["full_s"] = "out of memory"
    return row


def main() -> int:
    p = cli.Parser("python scripts/verify_device.py", __doc__)
    p.add_argument("--lengths", type=cli.lengths(minimum=1024), default=(32 * cli.K, 128 * cli.K, cli.M),
                   help="benchmark context lengths; default: 32K,128K,1M")
    p.add_argument("--full-limit", type=cli.parse_length, default=32 * cli.K,
                   help="time the full-context forward up to this length; default: 32K")
    p.add_argument("--random-weights", type=Path, default=None, metavar="DIR",
                   help="a folder with config.json and a tokenizer: time that model's shapes with random weights")
    p.add_argument("--out", type=Path, default=Path("device_report.md"), help="the report; default: device_report.md")
    cli.add_model_options(p)
    args = p.parse_args()

    def run() -> int:
        from device import select_backend

        cli.set_threads(args.threads)
        backend = select_backend(args.device, args.dtype)
        lines = [f"# ILRe on {backend.describe()}", "", f"{time.strftime('%Y-%m-%d')}, "
                 + ", ".join(versions(backend)), ""]
        t0 = time.perf_counter()
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                "tests/test_device_exactness.py", "--device", args.device or "auto"],
                               cwd=ROOT, capture_output=True, text=True)
        summary = (tests.stdout.strip().splitlines() or ["no output"])[-1]
        lines += ["## Exactness tests", "", f"`pytest tests/test_device_exactness.py --device {args.device}`: "
                  f"{summary} ({'pass' if tests.returncode == 0 else 'FAIL'}, {time.perf_counter() - t0:.0f} s)", ""]
        if tests.returncode != 0:
            lines += ["```", tests.stdout[-3000:], "```", ""]
        print("\n".join(lines), flush=True)
        ilre = load(args, backend)
        lines += [f"Model: {ilre.name}" + (" (random weights: timings only)" if args.random_weights else "")
                  + f", {backend.dtype}, retrieval layer {ilre.config.layer} of {ilre.decoder.num_layers}, "
                  f"prefill {ilre.prefill_precision}, keys {ilre.config.key_dtype}", ""]
        if args.random_weights is None:
            text = (ROOT / "ilre" / "examples" / "town_chronicle.txt").read_text(encoding="utf-8")
            with backend.timer() as t:
                result = ilre.answer(text, QUESTION)
            right = EXAMPLE_ANSWER in result.answer
            lines += ["## The bundled example", "", f"{result.context_tokens} tokens, {t.seconds:.2f} s: "
                      f"\"{result.answer}\" ({'right' if right else 'WRONG'})", ""]
        lines += ["## Benchmark", "", "| context | prefill s | one question s | needle recalled | peak device GiB "
                  "| full forward s |", "|---|---|---|---|---|---|"]
        for n in args.lengths:
            r = benchmark(ilre, backend, n, args.full_limit)
            full = r.get("full_s", "-")
            lines.append(f"| {r['length']} | {r['prefill_s']:.2f} | {r['question_s']:.2f} | "
                         f"{'yes' if r['recalled'] else 'no'} | {r['peak_gib']:.2f} | "
                         f"{full if isinstance(full, str) else f'{full:.2f}'} |")
            print(lines[-1], flush=True)
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"report: {args.out}")
        return 0 if tests.returncode == 0 else 1

    return cli.run(run)


if __name__ == "__main__":
    sys.exit(main())
