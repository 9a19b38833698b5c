"""Read a long text once, up to the retrieval layer, and save what answering needs (the keys of that
layer, the lower layers' windows, the tokens and the text) in one index file; python -m ilre.answer
--index FILE then answers any question about the text in seconds.

    python -m ilre.index --context book.txt --out book.ilre
    python -m ilre.index --info book.ilre
    python -m ilre.answer --index book.ilre --query "Who inherits the lighthouse?"

A folder (a code base, a set of manuals) is one index; --update then re-encodes only the files
that changed since it was made:

    python -m ilre.index --context src/ --include '*.py' --out src.ilre
    python -m ilre.index --context src/ --include '*.py' --out src.ilre --update

A collection (a folder of documents or projects) becomes one index per entry, spread over a Ray
cluster's workers, resumable:

    python -m ilre.index --context library/ --out library-indexes/ --ray
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from .. import cli
from .format import SUFFIX, describe


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python -m ilre.index", __doc__)
    what = p.add_mutually_exclusive_group(required=True)
    cli.add_context_option(what)
    what.add_argument("--info", type=Path, metavar="INDEX",
                      help="print what an index holds (model, settings, tokens, size, creation, format) and stop")
    p.add_argument("--out", type=Path, default=None,
                   help=f"the index file to write; default: the context's name (file or folder) with {SUFFIX}")
    p.add_argument("--update", action="store_true",
                   help="when --out exists, bring it up to the folder as it is now: the files changed, added or "
                        "removed since it was made are cut out and encoded again at the end, the rest is kept "
                        "(its model, encoding settings and, unless given again, --include/--exclude/--max-file-size "
                        "are the index's)")
    cli.add_file_filters(p.add_argument_group("files of a folder"))
    r = p.add_argument_group("a collection on Ray (pip install 'ilre[ray]'; docs/scaling.md)")
    r.add_argument("--ray", action="store_true",
                   help="index each file and subfolder of the --context folder into its own index in the --out "
                        "folder, as tasks on a Ray cluster; entries already indexed and up to date are skipped, so "
                        "the same command resumes a stopped job")
    r.add_argument("--ray-address", default=None,
                   help="the Ray cluster to join (e.g. auto); default: start a local one")
    r.add_argument("--worker-cpus", type=float, default=1.0,
                   help="CPUs each indexing task reserves (tasks at once = the cluster's CPUs / this); default: 1")
    cli.add_output_options(p)
    cli.add_model_options(p.add_argument_group("model and device"))
    cli.add_config_options(p.add_argument_group("encoding (answers from the index use the same)"),
                           "layer", *cli.PREFILL)
    return p


def index(args: argparse.Namespace) -> None:
    if args.info is not None:
        print(describe(args.info))
        return 0

    if args.ray:
        from .collection import run

        return run(args, cli.config_from(args), cli.file_filters(args))
    out = _out(args)
    if args.update and out.exists():
        return _update(args, out)
    sources = cli.read_context(args)
    t0 = time.perf_counter()
    ilre = cli.load_pipeline(args, cli.config_from(args))
    encoded = ilre.encode(sources, progress=not args.no_progress)
    path = encoded.save(out)
    seconds = time.perf_counter() - t0
    print(f"indexed {len(encoded.tokens)} tokens to layer {ilre.config.layer} in {seconds:.1f} s: "
          f"{path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


def _out(args: argparse.Namespace) -> Path:
    """The index file to write: --out, else the context's (one file or folder) name with the suffix."""
    if args.out is None and (len(args.context) > 1 or str(args.context[0]) == "-"):
        raise ValueError("several inputs or standard input: name the index file with --out")
    given = args.context[0]
    out = args.out or given.parent / (given.resolve().name + SUFFIX if given.is_dir() else given.with_suffix(SUFFIX).name)
    if any(out.resolve() == c.resolve() for c in args.context):
        raise ValueError(f"--out {out} would overwrite the context: choose another name")
    if not out.parent.is_dir():
        raise ValueError(f"cannot write {out}: folder {out.parent} does not exist")
    return out


def _update(args: argparse.Namespace, out: Path) -> int:
    """--update of an existing index: its own model, settings and (unless given) file filters,
    only what changed encoded."""
    from . import read_meta
    from .update import update

    t0 = time.perf_counter()
    meta = read_meta(out)
    recorded = meta.get("read_with")
    if recorded and not (args.include or args.exclude or args.max_file_size):
        args.include, args.exclude = recorded["include"], recorded["exclude"]
        args.max_file_size = recorded["max_file_bytes"] / 2**20
    sources = cli.read_context(args)
    args.model = args.model or meta["model"].get("source")
    ilre = cli.load_pipeline(args, replace(cli.config_from(args), **meta["settings"]))
    encoded, change = update(ilre, ilre.load_index(out), sources, progress=not args.no_progress)
    if change:
        encoded.save(out)
    print(f"{out}: {change} in {time.perf_counter() - t0:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), index, argv, interrupted="interrupted: no index written")


if __name__ == "__main__":
    sys.exit(main())
