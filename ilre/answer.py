"""Command line: answer a question about a long text file.

    python -m ilre.answer --context book.txt --query "What is the pass key?"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import cli

RECALL = ("layer", "budget", "recall_unit", "query_tokens", "max_unit_tokens", "unit_cut", "kernels", "shares",
          "pooling", "positions", "distance")
"""The ILReConfig fields offered as options of the retrieval group (every command offers the same)."""
PREFILL = ("sink", "window", "chunk_size", "prefill_precision")
"""... of the streaming-prefill group."""


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(
        prog="python -m ilre.answer",
        description="Answer a question about a long text with Intermediate Layer Retrieval: the text is "
                    "read once up to one intermediate layer, the query's attention there picks the tokens "
                    "worth reading, and the whole model answers from those alone.",
    )
    io = p.add_argument_group("input and output")
    io.add_argument("--context", required=True, type=Path, help="UTF-8 text file to ask about")
    io.add_argument("--query", required=True, help="the question")
    io.add_argument("--answer-prefix", default="",
                    help="text the answer starts with (e.g. 'The pass key is'); it steers short answers")
    io.add_argument("--json", action="store_true",
                    help="print one JSON record (answer, recalled spans with character offsets, layer, "
                         "token counts, stage times) instead of streaming the answer")
    cli.add_output_options(io)
    cli.add_model_options(p.add_argument_group("model and device"))
    cli.add_config_options(p.add_argument_group("retrieval"), *RECALL)
    cli.add_config_options(p.add_argument_group("streaming prefill"), *PREFILL)
    cli.add_config_options(p.add_argument_group("answer"), "max_new_tokens")
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


def answer(args: argparse.Namespace) -> int:
    from .pipeline import ILRe

    if not args.query.strip():
        raise ValueError("the query is empty: pass --query 'your question'")
    context = read_context(args.context)
    config = cli.config_from(args)
    cli.set_threads(args.threads)
    ilre = ILRe.from_pretrained(args.model, device=args.device, dtype=args.dtype, config=config)
    streamer = None
    if not args.json:
        from transformers import TextStreamer
        streamer = TextStreamer(ilre.tokenizer, skip_prompt=True, skip_special_tokens=True)
        if args.answer_prefix:
            print(args.answer_prefix, end=" ", flush=True)
    result = ilre.answer(context, args.query, args.answer_prefix, streamer=streamer, progress=not args.no_progress)
    if result.whole_context:
        print(f"note: the budget ({config.budget}) covers the whole context ({result.context_tokens} tokens): "
              "the answer read all of it", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: answer(args))


if __name__ == "__main__":
    sys.exit(main())
