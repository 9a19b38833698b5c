"""Command line: choose a model's retrieval layer by needle recall and write its profile.

    python -m layer_probe --model path/to/model --out profiles/mymodel.json --lengths 4k,16k --samples 20
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ilre.config import PREFILL_PRECISIONS, ILReConfig

from .needles import HAYSTACKS, NeedleSpec, parse_ints, parse_lengths, plan
from .select import Preference

if TYPE_CHECKING:  # torch and transformers load only when a probe runs, so --help is instant
    from .measure import LayerProbe, SampleResult

log = logging.getLogger("layer_probe")
_DEFAULTS = ILReConfig()


class _Parser(argparse.ArgumentParser):
    """Bad usage gets one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see python -m layer_probe --help)\n")


def parse_layers(text: str, num_layers: int) -> list[int]:
    """'all', or layers and ranges like '8-20' or '0,4,10-12' (0-based, inclusive)."""
    if text.strip().lower() == "all":
        return list(range(num_layers))
    layers: set[int] = set()
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            lo, sep, hi = part.partition("-")
            layers.update(range(int(lo), int(hi) + 1) if sep else [int(lo)])
    except ValueError:
        raise ValueError(f"bad --layers {text!r}: use 'all', or layers and ranges like 8-20 or 0,4,10-12") from None
    if not layers:
        raise ValueError(f"--layers {text!r} names no layer")
    if min(layers) < 0 or max(layers) >= num_layers:
        raise ValueError(f"--layers {text!r} is out of range: the model has layers 0..{num_layers - 1}")
    return sorted(layers)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m layer_probe",
        description="Find the decoder layer whose query-to-context attention best recalls planted passkeys, "
                    "and write it as the model's profile, which `python -m ilre.answer` then uses by default. "
                    "Recall is the share of needle tokens inside the recalled set, at the pipeline's budget "
                    "and recall settings; one streaming pass per sample serves every candidate layer. "
                    "Rule: the highest recall, ties to the shallowest layer (see --prefer).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("model and output")
    io.add_argument("--model", default=None,
                    help="local Hugging Face model directory or .gguf file of the Llama family; "
                         "default: the embedded SmolLM2-135M-Instruct")
    io.add_argument("--out", type=Path, default=None,
                    help="profile JSON to write (the PNG plot goes beside it, same name); without it the "
                         "profile is only registered in the cache")
    io.add_argument("--no-register", action="store_true",
                    help="do not also write the profile to <cache>/profiles/<model name>.json, where "
                         "ilre.answer looks for it (cache: $ILRE_CACHE, default ~/.cache/ilre)")
    io.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    io.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    io.add_argument("-v", "--verbose", action="store_true", help="log each sample and file written")

    n = p.add_argument_group("needle samples")
    n.add_argument("--lengths", default="4k,16k",
                   help="context lengths in tokens, comma-separated; k = 1024, m = 1024*1024; include lengths "
                        "beyond the model's trained window")
    n.add_argument("--samples", type=int, default=4, help="passkey samples per context length")
    n.add_argument("--key-digits", default="5,64",
                   help="passkey lengths in digits (5 to 64), comma-separated; samples cycle through them")
    n.add_argument("--haystacks", default=",".join(HAYSTACKS),
                   help="filler around the needle: noise (repeated sentences), prose, or both comma-separated")
    n.add_argument("--seed", type=int, default=0, help="seed of the samples (keys, depths, filler, wording)")

    s = p.add_argument_group("selection")
    s.add_argument("--layers", default="all",
                   help="candidate layers (0-based): 'all', or layers and ranges like 8-20 or 0,4,10-12")
    s.add_argument("--prefer", default="best",
                   help="'best': the highest recall, ties to the shallowest layer; 'within:POINTS': the "
                        "shallowest layer within POINTS percentage points of the best (faster prefill)")

    r = p.add_argument_group("recall settings measured (the pipeline's defaults)")
    r.add_argument("--budget", type=int, default=_DEFAULTS.budget, help="recalled context tokens")
    r.add_argument("--recall-unit", choices=("sentence", "token"), default=_DEFAULTS.recall_unit,
                   help="the pipeline's recall unit; the layer is chosen by recall in this unit "
                        "(token: multi-kernel pooling); every unit is measured and reported anyway")
    r.add_argument("--kernels", default=",".join(map(str, _DEFAULTS.kernels)),
                   help="pooling kernel sizes of the multi-kernel mode, comma-separated odd integers")
    r.add_argument("--pooling", choices=("max", "avg"), default=_DEFAULTS.pooling, help="pooling of the scores")
    r.add_argument("--max-unit-tokens", type=int, default=_DEFAULTS.max_unit_tokens,
                   help="sentences/lines longer than this are cut into pieces (sentence unit)")
    r.add_argument("--positions", choices=("relative", "absolute"), default=_DEFAULTS.positions,
                   help="query-key positions when scoring: one short fixed distance, or the original ones")
    r.add_argument("--distance", type=int, default=_DEFAULTS.distance,
                   help="the fixed query-key distance of --positions relative")
    r.add_argument("--sink", type=int, default=_DEFAULTS.sink, help="first tokens every lower layer attends to")
    r.add_argument("--window", type=int, default=_DEFAULTS.window, help="recent tokens each lower layer attends to")
    r.add_argument("--chunk-size", type=int, default=None,
                   help="tokens per prefill step (default: 128 with the int8 prefill, 512 otherwise)")
    r.add_argument("--prefill-precision", choices=PREFILL_PRECISIONS, default=_DEFAULTS.prefill_precision,
                   help="linear maps of the prefill, as in ilre.answer: the probe measures what the pipeline "
                        f"will compute (default: {_DEFAULTS.prefill_precision}, int8 on CPU)")

    d = p.add_argument_group("compute")
    d.add_argument("--device", default=None, help="auto, cpu, cuda[:N] or npu[:N]; default: $ILRE_DEVICE, else auto")
    d.add_argument("--dtype", default=None,
                   help="float32, bfloat16 or float16; default: bfloat16 on NPU/CUDA, float32 on CPU")
    d.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (torch.set_num_threads); default: torch's own choice")
    return p


def _config(args: argparse.Namespace) -> ILReConfig:
    config = replace(_DEFAULTS, budget=args.budget, recall_unit=args.recall_unit,
                     kernels=tuple(parse_ints(args.kernels, "--kernels")), pooling=args.pooling,
                     max_unit_tokens=args.max_unit_tokens, positions=args.positions, distance=args.distance,
                     sink=args.sink, window=args.window, chunk_size=args.chunk_size,
                     prefill_precision=args.prefill_precision)
    config.validate()
    return config


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
    import torch

    from device import select_backend
    from ilre.arch import decoder_of
    from ilre.loading import load

    from .measure import LayerProbe

    if args.no_register and args.out is None:
        raise ValueError("nothing to write: pass --out, or leave out --no-register")
    lengths = parse_lengths(args.lengths)
    prefer = Preference.parse(args.prefer)
    key_digits = parse_ints(args.key_digits, "--key-digits")
    haystacks = [h.strip() for h in args.haystacks.split(",") if h.strip()]
    specs = plan(lengths, args.samples, args.seed, tuple(key_digits), tuple(haystacks))
    config = _config(args)
    if lengths[0] <= config.budget:
        raise ValueError(f"context length {lengths[0]} does not exceed --budget {config.budget}: a budget "
                         "covering the context recalls every needle at every layer; use longer --lengths")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    backend = select_backend(args.device, args.dtype)
    model, tokenizer, name = load(args.model, backend.torch_device, backend.dtype, backend.attn_implementation)
    layers = parse_layers(args.layers, decoder_of(model).num_layers)
    probe = LayerProbe(model, tokenizer, config, layers, name, progress=not args.no_progress)
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
    from device import DeviceError
    from ilre.arch import UnsupportedModelError
    from ilre.loading import ModelLoadError

    try:
        setup = _setup(args)
        t0 = time.perf_counter()
        results = _measure(setup, args)
    except (ValueError, DeviceError, UnsupportedModelError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no profile written", file=sys.stderr)
        return 130
    return _report(setup, args, argv, results, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # keep transformers' own load-time chatter off the terminal
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    return run(args, argv)


if __name__ == "__main__":
    sys.exit(main())
