"""Answer a question about a long text with Intermediate Layer Retrieval: the text is read once up
to one intermediate layer, the query's attention there picks the tokens worth reading, and the
whole model answers from those alone.

    python -m ilre.answer --context book.txt --query "What is the pass key?"
    python -m ilre.answer --index book.ilre --queries questions.txt --json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from . import cli
from .inputs import read_queries



def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python -m ilre.answer", __doc__)
    io = p.add_argument_group("input and output")
    source = io.add_mutually_exclusive_group(required=True)
    cli.add_context_option(source)
    source.add_argument("--index", type=Path,
                        help="an index made by python -m ilre.index: answers without reading the context again; "
                             "its encoding settings are used, and options that contradict them are refused")
    ask = io.add_mutually_exclusive_group(required=True)
    ask.add_argument("--query", help="the question")
    ask.add_argument("--queries", type=Path,
                     help="a file of questions, one per line, or JSONL records with 'query' and an optional "
                          "'answer_prefix'; one encoding of the context serves them all")
    io.add_argument("--answer-prefix", default="",
                    help="text the answer starts with (e.g. 'The pass key is'); it steers short answers; with "
                         "--queries, for the questions that give none")
    io.add_argument("--json", action="store_true",
                    help="print a JSON record (answer, recalled spans with character offsets, layer, token counts, "
                         "stage times) instead of streaming the answer; one line per question with --queries")
    cli.add_output_options(io)
    cli.add_file_filters(p.add_argument_group("files of a folder"))
    cli.add_pipeline_options(p)
    return p


def load(args: argparse.Namespace, given: set[str]):
    """(the pipeline, the encoded context): the context encoded, or the index loaded and checked."""
    from . import index

    config = cli.config_from(args)
    model = args.model
    sources = cli.read_context(args) if args.context is not None else None  # before the model loads
    if args.index is not None:
        meta = index.read_meta(args.index)
        made = meta["settings"]
        for name in sorted(given & set(made)):
            if getattr(config, name) != made[name]:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(config, name)} contradicts the index, made with "
                                 f"{name} {made[name]}: leave the option out, or make the index again with it")
        config = replace(config, **made)
        model = model or meta["model"].get("source")
    args.model = model
    ilre = cli.load_pipeline(args, config)
    if args.index is not None:
        return ilre, ilre.load_index(args.index)
    return ilre, ilre.encode(sources, progress=not args.no_progress)


def ask(args: argparse.Namespace, given: set[str]) -> int:
    from .result import sources_line  # torch: imported inside the command, where Ctrl-C is handled

    questions = ([(args.query, args.answer_prefix)] if args.queries is None
                 else read_queries(args.queries, args.answer_prefix))
    if not all(q.strip() for q, _ in questions):
        raise ValueError("the query is empty: pass --query 'your question'")
    ilre, encoded = load(args, given)
    for n, (question, prefix) in enumerate(questions):
        streamer = None
        if not args.json:
            from transformers import TextStreamer
            streamer = TextStreamer(ilre.tokenizer, skip_prompt=True, skip_special_tokens=True)
            if args.queries is not None:
                print(("\n" if n else "") + f"Q: {question}")
            if prefix:
                print(prefix, end=" ", flush=True)
        result = ilre.answer(encoded, question, prefix, streamer=streamer)
        if result.whole_context and n == 0:
            print(f"note: the budget ({ilre.config.budget}) covers the whole context ({result.context_tokens} "
                  "tokens): the answer read all of it", file=sys.stderr)
        if not args.json:
            print(sources_line(result.spans))
        if args.json and args.queries is not None:
            print(json.dumps({"query": question, **result.to_dict()}, ensure_ascii=False), flush=True)
        elif args.json:
            print(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: ask(args, cli.given(parser, argv)))


if __name__ == "__main__":
    sys.exit(main())
