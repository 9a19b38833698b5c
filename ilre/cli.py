"""What every command line shares: ILReConfig's options, the model options, one length grammar,
and one way to run a command (logging, errors as one line, exit codes).

The ILRe options are made from ``ILReConfig``'s own fields: the type, the choices, the smallest
value and the default come from the field, the help text from its docstring. A new field is
thus an option of every command that asks for it, documented once.

Only light modules are imported here, so that ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import logging
import re
import sys
import textwrap
from dataclasses import Field, fields, is_dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any, Callable

from .config import ILReConfig

log = logging.getLogger(__name__)

K, M = 1024, 1024 * 1024
RECALL = ("budget", "recall_unit", "query_tokens", "max_unit_tokens", "unit_cut", "lexical_weight", "lexical_context",
          "hops", "lexical_passage", "question_numbers", "passage", "read_order", "kernels", "shares", "pooling",
          "positions", "distance")
"""The ILReConfig fields that shape recall: the retrieval options of every command that recalls."""
PREFILL = ("sink", "window", "lag_memory", "chunk_size", "prefill_precision", "key_dtype", "key_memory")
"""The ILReConfig fields of the streaming prefill: with ``layer``, what a saved index is made with,
and where the keys it makes are kept."""
_LENGTH = re.compile(r"^(\d+(?:\.\d+)?)([km]?)$")


class Parser(argparse.ArgumentParser):
    """Bad usage gets one line on stderr naming the problem, and exit status 2 (no usage dump)."""

    def __init__(self, prog: str, description: str):
        """``description`` is usually the command module's docstring: its paragraphs are wrapped,
        its indented ones (example commands) printed as written."""
        paragraphs = [p for p in textwrap.dedent(description).strip().split("\n\n")]
        text = "\n\n".join(p if p.startswith(" ") else textwrap.fill(" ".join(p.split()), 100) for p in paragraphs)
        super().__init__(prog=prog, description=text, formatter_class=argparse.RawDescriptionHelpFormatter)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


# -- values ---------------------------------------------------------------------------------


def parse_length(text: str) -> int:
    """A token count: '5000', '4K' or '4k' (x 1024), '1M' (x 1024²), '1.5K', '0'."""
    match = _LENGTH.match(text.strip().lower())
    value = float(match[1]) * {"": 1, "k": K, "m": M}[match[2]] if match else -1
    if value < 0 or value != int(value):
        raise argparse.ArgumentTypeError(f"bad length {text!r}: use a whole number of tokens like 5000, 4K or 1M")
    return int(value)


def lengths(minimum: int = 1) -> Callable[[str], tuple[int, ...]]:
    """An argparse type: comma-separated lengths (see :func:`parse_length`), sorted, each >= ``minimum``."""
    def parse(text: str) -> tuple[int, ...]:
        values = sorted({parse_length(part) for part in text.split(",") if part.strip()})
        if not values:
            raise argparse.ArgumentTypeError(f"no length in {text!r}")
        if values[0] < minimum:
            raise argparse.ArgumentTypeError(f"length {values[0]} is too short: at least {minimum} tokens")
        return tuple(values)
    return parse


def length_label(n: int) -> str:
    """4096 -> '4K', 1048576 -> '1M', 5000 -> '5000': the grammar of :func:`parse_length`, backwards."""
    for scale, suffix in ((M, "M"), (K, "K")):
        if n >= scale and n % scale == 0:
            return f"{n // scale}{suffix}"
    return str(n)


def add_lengths_option(parser, default: tuple[int, ...], minimum: int = 1024) -> None:
    """--lengths: the context lengths a measurement runs at (see :func:`parse_length`)."""
    parser.add_argument("--lengths", type=lengths(minimum), default=default,
                        help="context lengths in tokens, comma-separated, e.g. 32K,128K,1M (K = 1024, M = 1024²); "
                             f"default: {','.join(map(length_label, default))}")


def add_results_option(parser, name: str) -> None:
    """--out: the folder a measuring script writes its results to, results/``name`` by default."""
    parser.add_argument("--out", type=Path, default=Path("results") / name,
                        help=f"folder for the results; default: results/{name}")


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def listed(kind: type, low: float | None = None) -> Callable[[str], tuple]:
    """An argparse type: comma-separated values of ``kind`` (e.g. '1,7,31'), each >= ``low``."""
    def parse(text: str) -> tuple:
        try:
            values = tuple(kind(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s like 1,7,31, "
                                             f"got {text!r}") from None
        if not values or (low is not None and min(values) < low):
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}s of at least {low}, got {text!r}")
        return values
    return parse


def names(known: tuple[str, ...], what: str) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: comma-separated names, each one of ``known``."""
    def parse(text: str) -> tuple[str, ...]:
        given = tuple(n.strip() for n in text.split(",") if n.strip())
        unknown = [n for n in given if n not in known]
        if unknown or not given:
            raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(unknown) or '(none given)'}; "
                                             f"known: {', '.join(known)}")
        return given
    return parse


# -- ILReConfig's options --------------------------------------------------------------------


@cache
def field_docs() -> dict[str, str]:
    """Each ILReConfig field's docstring (the string under it in its class body), as one line."""
    docs = {}
    for kind in ILReConfig.__mro__:
        if kind is object or not is_dataclass(kind):
            continue
        body = ast.parse(textwrap.dedent(inspect.getsource(kind))).body[0].body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs.setdefault(node.target.id, " ".join(after.value.value.split()))
    return docs


def yes_or_no(text: str) -> bool:
    """A switch's value: yes/no, true/false, on/off or 1/0."""
    value = {"yes": True, "true": True, "on": True, "1": True, "no": False, "false": False, "off": False, "0": False}
    if text.lower() not in value:
        raise argparse.ArgumentTypeError(f"{text!r} is not yes or no")
    return value[text.lower()]


def field_type(f: Field) -> tuple[Callable[[str], Any], str | None]:
    """The argparse type and metavar of a config field, from its annotation and range."""
    annotation, low = str(f.type), f.metadata.get("low")
    if annotation.startswith("tuple[int"):
        return listed(int, 1), "N,N,..."
    if annotation.startswith("tuple[float"):
        return listed(float, 0), "X,X,..."
    if annotation.startswith("int"):
        return (at_least(low) if low is not None else int), "N"
    if annotation.startswith("float"):
        return float, "X"
    if annotation.startswith("bool"):
        return yes_or_no, "yes|no"
    return str, None if f.metadata.get("choices") else "TEXT"


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def add_config_options(group, *names: str, **defaults: Any) -> None:
    """``--name`` options for these ILReConfig fields; ``defaults`` replace the config's own.

    Help is the field's docstring, with the default appended when there is one (a None default
    is explained by the docstring itself).
    """
    by_name = {f.name: f for f in fields(ILReConfig)}
    base = ILReConfig()
    for name in names:
        default = defaults.get(name, getattr(base, name))
        doc = field_docs()[name].replace("%", "%%").rstrip(".")
        help_text = doc[:1].lower() + doc[1:] if doc[1:2].islower() else doc
        if default is not None:
            help_text += f"; default: {_shown(default)}"
        kind, metavar = field_type(by_name[name])
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, metavar=metavar,
                           choices=by_name[name].metadata.get("choices"), default=default, help=help_text)


def given(parser: argparse.ArgumentParser, argv: list[str] | None) -> set[str]:
    """The options written on the command line ``argv``, by dest (defaults do not count)."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        written, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    finally:
        for action, default in saved:
            action.default = default
    return set(vars(written))


def config_from(args: argparse.Namespace, base: ILReConfig | None = None) -> ILReConfig:
    """``base`` (default: ILReConfig()) with every ILReConfig field the arguments carry, checked."""
    given = {f.name: getattr(args, f.name) for f in fields(ILReConfig) if hasattr(args, f.name)}
    return replace(base or ILReConfig(), **given)  # checked when made


# -- the options every command shares ---------------------------------------------------------


def add_model_options(group, threads: bool = True) -> None:
    """--model, --device, --dtype and (``threads``) --threads."""
    group.add_argument("--model", default=None,
                       help="local Hugging Face model directory or .gguf file of the Llama family (Llama, Mistral, "
                            "Qwen2/2.5/3); nothing is downloaded; default: the embedded SmolLM2-135M-Instruct")
    group.add_argument("--device", default=None,
                       help="auto, cpu, cuda[:N] or npu[:N]; default: $ILRE_DEVICE, else NPU, CUDA, CPU in that order")
    group.add_argument("--dtype", default=None,
                       help="float32, bfloat16 or float16; default: bfloat16 on NPU/CUDA, float32 on CPU")
    if threads:
        group.add_argument("--threads", type=at_least(1), default=None,
                           help="CPU threads for torch; use 1 on a shared machine; default: torch's own choice, "
                                "one per physical core")


def add_pipeline_options(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    """The options of a command that answers: the model's, then ILReConfig's in the groups
    retrieval, streaming prefill and answer; ``defaults`` replace the config's own."""
    add_model_options(parser.add_argument_group("model and device"))
    add_config_options(parser.add_argument_group("retrieval"), "layer", *RECALL, **defaults)
    add_config_options(parser.add_argument_group("streaming prefill"), *PREFILL, **defaults)
    add_config_options(parser.add_argument_group("answer"), "max_new_tokens", "answer_precision", **defaults)


def add_context_option(group, required: bool = False) -> None:
    """--context: one text file, '-', or several files and folders (see ``ilre.sources``)."""
    group.add_argument("--context", nargs="+", type=Path, metavar="PATH", required=required,
                       help="what to ask about: a UTF-8 text file ('-' reads standard input), or folders and files "
                            "(a code base, a set of manuals): text files found recursively, .gitignore respected, "
                            "hidden folders, binary and large files skipped, joined in path order with a header "
                            "line naming each file")


def add_file_filters(group) -> None:
    """--include, --exclude and --max-file-size: which files of a folder are read."""
    group.add_argument("--include", action="append", default=[], metavar="GLOB",
                       help="read only the files of a folder that match this .gitignore-style pattern (*.py, docs/); "
                            "repeat it for several")
    group.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                       help="leave out the files of a folder that match this pattern (tests/, *_pb2.py); repeatable")
    group.add_argument("--max-file-size", type=float, default=None, metavar="MIB",
                       help="skip files of a folder larger than this many MiB; default: 1")


def file_filters(args: argparse.Namespace) -> dict:
    """--include, --exclude and --max-file-size as ``read_sources`` takes them."""
    from .sources import MAX_FILE_BYTES

    size = getattr(args, "max_file_size", None)
    if size is not None and size <= 0:
        raise ValueError(f"--max-file-size {size} must be more than 0 MiB")
    return {"include": list(getattr(args, "include", ())), "exclude": list(getattr(args, "exclude", ())),
            "max_file_bytes": int(size * 2**20) if size else MAX_FILE_BYTES}


def read_context(args: argparse.Namespace):
    """The ``Sources`` of --context (and the file filters), with a line on stderr saying what a
    folder gave (the skipped files one by one in --verbose)."""
    from .sources import read_sources, summary

    filters = file_filters(args)
    sources = read_sources(args.context, filters["include"], filters["exclude"], filters["max_file_bytes"])
    if len(sources) > 1 or sources.skipped:
        print(summary(sources), file=sys.stderr)
    return sources


def add_output_options(group, verbose: str = "log what each stage does") -> None:
    """--no-progress and -v/--verbose."""
    group.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    group.add_argument("-v", "--verbose", action="store_true", help=verbose)


def load_pipeline(args: argparse.Namespace, config: ILReConfig | None = None, **overrides: Any):
    """The ILRe of a command's model options (``--model``, ``--device``, ``--dtype``, ``--threads``)
    under ``config`` (default: ILReConfig()) with ``overrides``."""
    from .pipeline import ILRe

    set_threads(getattr(args, "threads", None))
    return ILRe.from_pretrained(args.model, device=args.device, dtype=args.dtype, config=config, **overrides)


def set_threads(threads: int | None) -> None:
    """torch's CPU thread count, when one is given."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def setup_logging(verbose: bool = False) -> None:
    """The library logs at INFO with ``verbose``, else warnings only; transformers is kept quiet
    unless ``verbose`` (its load-time notices are not the user's business)."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("ilre.loading").setLevel(logging.INFO)  # the one-time GGUF conversion takes a while
    if not verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def main(parser: argparse.ArgumentParser, body: Callable[[argparse.Namespace], int | None],
         argv: list[str] | None = None, interrupted: str = "interrupted") -> int:
    """A command's whole main: parse ``argv``, set up logging (``--verbose`` if it has one), run ``body``."""
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "verbose", False))
    return run(lambda: body(args), interrupted)


def run(command: Callable[[], int | None], interrupted: str = "interrupted") -> int:
    """Run a command's body: its exit status; a bad input (ValueError, which every error of the
    project's own is, or a context too large for the memory) becomes one line on stderr and
    status 2, a failed read or write status 1,
    Ctrl-C the ``interrupted`` line and status 130."""
    try:
        return command() or 0
    except (ValueError, MemoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
