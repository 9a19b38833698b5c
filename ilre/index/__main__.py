"""Read a long text once, up to the retrieval layer, and save what answering needs (the keys of that
layer, the lower layers' windows, the tokens and the text) in one index file; python -m ilre.answer
--index FILE then answers any question about the text in seconds.

    python -m ilre.index --context book.txt --out book.ilre
    python -m ilre.index --info book.ilre
    python -m ilre.answer --index book.ilre --query "Who inherits the lighthouse?"
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .. import cli
from ..inputs import read_text
from .format import SUFFIX, describe


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python -m ilre.index", __doc__)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--context", type=Path, help="UTF-8 text file to index; '-' reads standard input")
    what.add_argument("--info", type=Path, metavar="INDEX",
                      help="print what an index holds (model, settings, tokens, size, creation, format) and stop")
    p.add_argument("--out", type=Path, default=None,
                   help=f"the index file to write; default: the context's name with {SUFFIX}")
    cli.add_output_options(p)
    cli.add_model_options(p.add_argument_group("model and device"))
    cli.add_config_options(p.add_argument_group("encoding (answers from the index use the same)"),
                           "layer", *cli.PREFILL)
    return p


def index(args: argparse.Namespace) -> None:
    if args.info is not None:
        print(describe(args.info))
        return 0

    if args.out is None and str(args.context) == "-":
        raise ValueError("reading standard input: name the index file with --out")
    out = args.out or args.context.with_suffix(SUFFIX)
    if out.resolve() == args.context.resolve():
        raise ValueError(f"--out {out} would overwrite the context: choose another name")
    if not out.parent.is_dir():
        raise ValueError(f"cannot write {out}: folder {out.parent} does not exist")
    text = read_text(args.context)
    ilre = cli.load_pipeline(args, cli.config_from(args))
    t0 = time.perf_counter()
    encoded = ilre.encode(text, progress=not args.no_progress)
    path = encoded.save(out)
    seconds = time.perf_counter() - t0
    print(f"indexed {len(encoded.tokens)} tokens to layer {ilre.config.layer} in {seconds:.1f} s: "
          f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), index, argv, interrupted="interrupted: no index written")


if __name__ == "__main__":
    sys.exit(main())
