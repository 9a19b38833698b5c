"""Command line: answer a question about a long text file.

    python -m ilre.answer --context book.txt --query "What is the pass key?"
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config import PREFILL_PRECISIONS, QUERY_TOKENS, RECALL_UNITS, ILReConfig

log = logging.getLogger("ilre")
_DEFAULTS = ILReConfig()


def _kernels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated odd integers like 1,7,31, got {text!r}")


def _shares(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 1,1,2, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ilre.answer",
        description="Answer a question about a long text with Intermediate Layer Retrieval: the text is "
                    "read once up to one intermediate layer, the query's attention there picks the tokens "
                    "worth reading, and the whole model answers from those alone.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument("--context", required=True, type=Path, help="UTF-8 text file to ask about")
    io.add_argument("--query", required=True, help="the question")
    io.add_argument("--answer-prefix", default="",
                    help="text the answer starts with (e.g. 'The pass key is'); it steers short answers")
    io.add_argument("--json", action="store_true",
                    help="print one JSON record (answer, recalled spans with character offsets, layer, "
                         "token counts, stage times) instead of streaming the answer")
    io.add_argument("--no-progress", action="store_true", help="hide the prefill progress bar")
    io.add_argument("-v", "--verbose", action="store_true", help="log what each stage does")

    m = p.add_argument_group("model and device")
    m.add_argument("--model", default=None,
                   help="local Hugging Face model directory or .gguf file of the Llama family (Llama, "
                        "Mistral, Qwen2/2.5/3); default: the embedded SmolLM2-135M-Instruct")
    m.add_argument("--device", default=None,
                   help="auto, cpu, cuda[:N] or npu[:N]; default: $ILRE_DEVICE, else NPU, CUDA, CPU in that order")
    m.add_argument("--dtype", default=None,
                   help="float32, bfloat16 or float16; default: bfloat16 on NPU/CUDA, float32 on CPU")

    r = p.add_argument_group("retrieval")
    r.add_argument("--layer", type=int, default=None,
                   help="0-based retrieval layer; default: from the model's profile (python -m layer_probe)")
    r.add_argument("--budget", type=int, default=_DEFAULTS.budget,
                   help="context tokens the answer reads; a budget covering the context reads all of it")
    r.add_argument("--recall-unit", choices=RECALL_UNITS, default=_DEFAULTS.recall_unit,
                   help="recall whole sentences/lines (each scored by every query token's best match in it), "
                        "or tokens by the paper's multi-kernel pooling")
    r.add_argument("--query-tokens", choices=QUERY_TOKENS, default=_DEFAULTS.query_tokens,
                   help="query tokens whose attention scores the context: the question's own, or the whole "
                        "suffix (question, chat-template end, answer prefix)")
    r.add_argument("--max-unit-tokens", type=int, default=_DEFAULTS.max_unit_tokens,
                   help="sentences/lines longer than this are recalled in pieces of this many tokens")
    r.add_argument("--unit-cut", type=float, default=_DEFAULTS.unit_cut,
                   help="stop recalling sentences at the first one scoring below this share of the best "
                        "one (0 to 1; 0 takes sentences while the budget lasts)")
    r.add_argument("--kernels", type=_kernels, default=_DEFAULTS.kernels,
                   help="pooling kernel sizes for --recall-unit token, comma-separated odd integers")
    r.add_argument("--shares", type=_shares, default=None,
                   help="budget share per kernel, comma-separated (default: equal)")
    r.add_argument("--pooling", choices=("max", "avg"), default=_DEFAULTS.pooling, help="pooling of the scores")
    r.add_argument("--positions", choices=("relative", "absolute"), default=_DEFAULTS.positions,
                   help="query-key positions when scoring: one short fixed distance, or the original ones")
    r.add_argument("--distance", type=int, default=_DEFAULTS.distance,
                   help="the fixed query-key distance for --positions relative")

    s = p.add_argument_group("streaming prefill")
    s.add_argument("--sink", type=int, default=_DEFAULTS.sink, help="first tokens every layer keeps attending to")
    s.add_argument("--window", type=int, default=_DEFAULTS.window, help="recent tokens each lower layer attends to")
    s.add_argument("--chunk-size", type=int, default=None,
                   help="tokens per prefill step (default: 128 with the int8 prefill, 512 in the model's "
                        "precision: the fastest measured on CPU for each)")
    s.add_argument("--prefill-precision", choices=PREFILL_PRECISIONS, default=_DEFAULTS.prefill_precision,
                   help="linear maps of the prefill up to the retrieval layer: 'model' = the model's own "
                        "weights (exact), 'int8' = dynamic int8 copies (CPU only, ~3x faster), 'auto' = int8 "
                        "on CPU with float32 weights, else 'model'; the answer always uses the model itself "
                        f"(default: {_DEFAULTS.prefill_precision})")

    g = p.add_argument_group("answer")
    g.add_argument("--max-new-tokens", type=int, default=_DEFAULTS.max_new_tokens, help="answer length cap")
    return p


def read_context(path: Path) -> str:
    """The file's text, or a ValueError whose message says what is wrong and what to do."""
    if not path.exists():
        raise ValueError(f"context file {path} does not exist")
    if path.is_dir():
        raise ValueError(f"context {path} is a directory: pass a text file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read context file {path}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"context file {path} is not UTF-8 (byte {exc.start}): convert it, "
                         f"e.g. iconv -f latin1 -t utf-8") from exc
    if not text.strip():
        raise ValueError(f"context file {path} is empty")
    return text


def run(args: argparse.Namespace) -> int:
    from device import DeviceError

    from .arch import UnsupportedModelError
    from .loading import ModelLoadError
    from .pipeline import ILRe

    try:
        if not args.query.strip():
            raise ValueError("the query is empty: pass --query 'your question'")
        if args.budget < 1:
            raise ValueError(f"--budget must be at least 1 token, got {args.budget}")
        context = read_context(args.context)
        config = ILReConfig(
            layer=args.layer, budget=args.budget, recall_unit=args.recall_unit, query_tokens=args.query_tokens,
            max_unit_tokens=args.max_unit_tokens, unit_cut=args.unit_cut, kernels=args.kernels,
            shares=args.shares, pooling=args.pooling, sink=args.sink, window=args.window,
            chunk_size=args.chunk_size, prefill_precision=args.prefill_precision,
            positions=args.positions, distance=args.distance,
            max_new_tokens=args.max_new_tokens,
        )
        ilre = ILRe.from_pretrained(args.model, device=args.device, dtype=args.dtype, config=config)
        streamer = None
        if not args.json:
            from transformers import TextStreamer
            streamer = TextStreamer(ilre.tokenizer, skip_prompt=True, skip_special_tokens=True)
            if args.answer_prefix:
                print(args.answer_prefix, end=" ", flush=True)
        result = ilre.answer(context, args.query, args.answer_prefix, streamer=streamer,
                             progress=not args.no_progress)
    except (ValueError, DeviceError, UnsupportedModelError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if result.whole_context:
        print(f"note: the budget ({args.budget}) covers the whole context ({result.context_tokens} tokens): "
              "the answer read all of it", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    # The one-time conversion of a GGUF model takes tens of seconds: say so.
    logging.getLogger("ilre.loading").setLevel(logging.INFO)
    if not args.verbose:  # keep transformers' own load-time chatter off the user's terminal
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
