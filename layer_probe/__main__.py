"""Find the decoder layer whose query-to-context attention best recalls planted passkeys, and write
it as the model's profile, which python -m ilre.answer then uses by default. Recall is the share of
needle tokens inside the recalled set, at the pipeline's budget and recall settings; one streaming
pass per sample serves every candidate layer. Rule: the highest recall, ties to the shallowest
layer (see --prefer).

    python -m layer_probe --model path/to/model --out profiles/mymodel.json --lengths 4k,16k --samples 20
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ilre import cli
from ilre.config import ILReConfig

from .needles import HAYSTACKS, NeedleSpec, plan
from .select import Preference

if TYPE_CHECKING:  # torch and transformers load only when a probe runs, so --help is instant
    from .measure import LayerProbe, SampleResult

log = logging.getLogger("layer_probe")


def parse_layers(text: str) -> tuple[int, ...] | None:
    """'all' (None), or layers and ranges like '8-20' or '0,4,10-12' (0-based, inclusive)."""
    if text.strip().lower() == "all":
        return None
    layers: set[int] = set()
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            lo, sep, hi = part.partition("-")
            layers.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise argparse.ArgumentTypeError("use 'all', or layers and ranges like 8-20 or 0,4,10-12") from None
    if not layers:
        raise argparse.ArgumentTypeError(f"{text!r} names no layer")
    return tuple(sorted(layers))


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python -m layer_probe", __doc__)
    io = p.add_argument_group("output")
    io.add_argument("--out", type=Path, default=None,
                    help="profile JSON to write (the PNG plot goes beside it, same name); without it the "
                         "profile is only registered in the cache")
    io.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    io.add_argument("--no-register", action="store_true",
                    help="do not also write the profile to <cache>/profiles/<model name>.json, where "
                         "ilre.answer looks for it (cache: $ILRE_CACHE, default ~/.cache/ilre)")
    cli.add_output_options(io, verbose="log each sample and file written")

    n = p.add_argument_group("needle samples")
    n.add_argument("--lengths", type=cli.lengths(minimum=256), default=(4 * cli.K, 16 * cli.K),
                   help="context lengths in tokens, comma-separated, e.g. 4K,16K (K = 1024, M = 1024²); include "
                        "lengths beyond the model's trained window; default: 4K,16K")
    n.add_argument("--samples", type=cli.at_least(1), default=4, help="passkey samples per context length; default: 4")
    n.add_argument("--key-digits", type=cli.listed(int), default=(5, 64),
                   help="passkey lengths in digits (5 to 64), comma-separated; samples cycle through them; "
                        "default: 5,64")
    n.add_argument("--haystacks", type=cli.names(HAYSTACKS, "haystack"), default=HAYSTACKS,
                   help="filler around the needle: noise (repeated sentences), prose, or both comma-separated; "
                        "default: " + ",".join(HAYSTACKS))
    n.add_argument("--seed", type=int, default=0, help="seed of the samples (keys, depths, filler, wording); default: 0")

    s = p.add_argument_group("selection")
    s.add_argument("--layers", type=parse_layers, default=None,
                   help="candidate layers (0-based): 'all', or layers and ranges like 8-20 or 0,4,10-12; default: all")
    s.add_argument("--prefer", default="best",
                   help="'best': the highest recall, ties to the shallowest layer; 'within:POINTS': the "
                        "shallowest layer within POINTS percentage points of the best (faster prefill); default: best")

    cli.add_config_options(p.add_argument_group("the pipeline's settings, measured under (its defaults)"),
                           *cli.RECALL, *cli.PREFILL)
    cli.add_model_options(p.add_argument_group("model and device"))
    return p


@dataclass
class _Setup:
    """What the command line resolved from its arguments before measuring."""

    specs: list[NeedleSpec]
    lengths: list[int]
    key_digits: list[int]
    haystacks: list[str]
    prefer: Preference
    config: ILReConfig
    backend: object
    model: object
    name: str
    probe: LayerProbe


def _setup(args: argparse.Namespace) -> _Setup:
    """Parse and check every argument, then load the model; any problem is a one-line error."""
    from device import select_backend
    from ilre.loading import load

    from .measure import LayerProbe

    if args.no_register and args.out is None:
        raise ValueError("nothing to write: pass --out, or leave out --no-register")
    lengths, key_digits, haystacks = list(args.lengths), list(args.key_digits), list(args.haystacks)
    prefer = Preference.parse(args.prefer)
    specs = plan(lengths, args.samples, args.seed, tuple(key_digits), tuple(haystacks))
    config = cli.config_from(args)
    if lengths[0] <= config.budget:
        raise ValueError(f"context length {lengths[0]} does not exceed --budget {config.budget}: a budget "
                         "covering the context recalls every needle at every layer; use longer --lengths")
    cli.set_threads(args.threads)
    backend = select_backend(args.device, args.dtype)
    model, tokenizer, name = load(args.model, backend.torch_device, backend.dtype, backend.attn_implementation)
    probe = LayerProbe(model, tokenizer, config, args.layers, name, progress=not args.no_progress)
    return _Setup(specs, lengths, key_digits, haystacks, prefer, probe.config, backend, model, name, probe)


def _measure(setup: _Setup, args: argparse.Namespace) -> list[SampleResult]:
    """Run every sample under a progress bar, printing a table whenever a context length is done."""
    from tqdm.auto import tqdm

    from .measure import RecallTable, selection_mode
    from .table import length_table

    layers, multi = setup.probe.layers, _multi_label(setup.config)
    window = getattr(setup.model.config, "max_position_embeddings", None)
    tqdm.write(f"probing {setup.name}: {len(layers)} candidate layers, {len(setup.specs)} samples "
               f"({args.samples} per length: {', '.join(map(str, setup.lengths))} tokens; trained window "
               f"{window}), budget {setup.config.budget}, layer chosen by {selection_mode(setup.config)} recall")
    results: list[SampleResult] = []
    with tqdm(total=sum(s.length for s in setup.specs), unit="tok", unit_scale=True, desc="probe",
              disable=args.no_progress, dynamic_ncols=True) as bar:
        for result in setup.probe.run(setup.specs):
            results.append(result)
            bar.update(result.spec.length)
            length = result.spec.length
            done = [r for r in results if r.spec.length == length]
            if len(done) == args.samples:
                beyond = f", {length / window:.1f}x the trained window" if window else ""
                tqdm.write(f"\nrecall (%) at {length} tokens{beyond}, mean of {len(done)} samples:")
                tqdm.write(length_table(RecallTable.from_samples(layers, done), length, multi))
    return results


def _report(setup: _Setup, args: argparse.Namespace, argv: list[str], results: list[SampleResult],
            seconds: float) -> int:
    """Apply the rule, print the summary, write the profile (and its plot) and say where."""
    import torch
    from tqdm.auto import tqdm

    from .measure import selection_mode
    from .plot import plot_recall
    from .profile_writer import ProbeRun, build_profile, write_profile
    from .table import summary_table

    say = tqdm.write
    config, name = setup.config, setup.name
    command = "python -m layer_probe" + (" " + shlex.join(argv) if argv else "")
    run_info = ProbeRun(setup.lengths, args.samples, args.seed, setup.key_digits, setup.haystacks, setup.prefer,
                        command, seconds, torch.get_num_threads(), setup.backend.describe())
    profile, table = build_profile(setup.model, name, config, setup.probe.layers, results, run_info)
    mode = selection_mode(config)
    selection = profile.extra["selection"]
    say(f"\nrecall (%) per layer, all {len(results)} samples:")
    say(summary_table(table, mode, profile.layer, selection["best_layer"], _multi_label(config)))
    try:
        paths = write_profile(profile, args.out, register=not args.no_register)
    except OSError as exc:
        print(f"error: cannot write the profile: {exc}", file=sys.stderr)
        return 1
    say(f"\nchosen layer {profile.layer} of {profile.num_layers} ({profile.rule}); "
        f"recall {100 * selection['chosen_recall']:.1f}%")
    for path in paths:
        say(f"profile written: {path}")
    if not args.no_register:
        say(f"registered for model name {name!r}: python -m ilre.answer"
            + (f" --model {args.model}" if args.model else "") + " now uses it by default")
    if not args.no_plot and paths:
        png = plot_recall(table, profile.layer, mode, paths[0].with_suffix(".png"),
                          f"{name}: needle recall per layer (budget {config.budget})", config.kernels)
        if png is not None:
            say(f"plot written: {png}")
    say(f"probe took {seconds:.0f} s for {sum(r.tokens for r in results)} context tokens")
    return 0


def _multi_label(config: ILReConfig) -> str:
    return "k " + ",".join(map(str, config.kernels))


def run(args: argparse.Namespace, argv: list[str]) -> int:
    setup = _setup(args)
    t0 = time.perf_counter()
    results = _measure(setup, args)
    return _report(setup, args, argv, results, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose)
    return cli.run(lambda: run(args, argv), interrupted="interrupted: no profile written")


if __name__ == "__main__":
    sys.exit(main())
