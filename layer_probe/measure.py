"""Recall of planted needles at every candidate layer, from one streaming pass per sample.

For each sample the context is streamed exactly as :meth:`ilre.pipeline.ILRe.encode` streams it
(prefix + context, the pipeline's sink, window and chunk size), but up to the deepest candidate
layer, keeping the keys of every shallower candidate on the way. The query (question + chat
suffix + answer prefix) then yields the queries of every candidate layer in one pass too. So a
sample costs one prefill to the deepest candidate, not one per layer.

Each layer's scores are recalled the way :meth:`ilre.pipeline.ILRe.recall` does, under three
recall modes, and recall is the share of needle tokens inside the recalled set:

* ``sentence``: whole sentences/lines ranked by their best token (the pipeline's default unit);
* ``single``: one pooling kernel of size 1, the top tokens themselves;
* ``multi``: the multi-kernel pooling of the configuration (default kernels 1, 7, 31).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from statistics import fmean
from typing import Iterable, Iterator, Sequence

import torch

from ilre.config import ILReConfig
from ilre.pipeline import ILRe
from ilre.prompt import tokenize_context
from ilre.encoded import EncodedContext
from ilre.recaller import PoolingRecaller, Recaller, UnitRecaller, whole_context
from evaluation.tasks import Task, tokenizer_len_for

from .needles import NeedleSpec, make_task, needle_mask

log = logging.getLogger(__name__)

MODES = ("sentence", "single", "multi")
DIGITS = 4


def recallers(config: ILReConfig) -> dict[str, Recaller]:
    """The recallers of the three modes, each the pipeline's own under ``config``."""
    return {
        "sentence": config.part(UnitRecaller),
        "single": replace(config, kernels=(1,), shares=None).part(PoolingRecaller),
        "multi": config.part(PoolingRecaller),
    }


def mode_labels(config: ILReConfig) -> dict[str, str]:
    kernels = ",".join(map(str, config.kernels))
    return {
        "sentence": f"whole sentences/lines (max {config.max_unit_tokens} tokens each), ranked by their best token",
        "single": f"{config.pooling} pooling, kernel 1",
        "multi": f"{config.pooling} pooling, kernels {kernels}"
                 + (f", shares {','.join(map(str, config.shares))}" if config.shares else ", equal shares"),
    }


def selection_mode(config: ILReConfig) -> str:
    """The mode the pipeline itself recalls with under ``config``: the one the layer is chosen by."""
    return "sentence" if config.recall_unit == "sentence" else "multi"


@dataclass
class SampleResult:
    """Recall per candidate layer (aligned with the probe's ``layers``) for each mode, on one needle."""

    spec: NeedleSpec
    tokens: int
    needle_tokens: int
    recall: dict[str, list[float]]
    seconds: float

    def to_dict(self) -> dict:
        return {**self.spec.to_dict(), "tokens": self.tokens, "needle_tokens": self.needle_tokens,
                "seconds": round(self.seconds, 2),
                "recall": {m: [round(r, DIGITS) for r in v] for m, v in self.recall.items()}}


class LayerProbe:
    """Measures needle recall at candidate layers of one model, with the pipeline's settings.

    It measures what the layer decides: the attention's recall. The question's words
    (``lexical_weight``, ``hops``, ``lexical_passage``) score the same at every layer, so the probe leaves them out.
    """

    def __init__(self, model, tokenizer, config: ILReConfig | None = None,
                 layers: Sequence[int] | None = None, name: str = "model", progress: bool = False):
        # The pipeline object gives the exact prompt template (and validates the configuration).
        attention_alone = dict(lexical_weight=0.0, hops=0, lexical_passage=0)
        self.pipeline = ILRe(model, tokenizer, replace(config or ILReConfig(), layer=0, **attention_alone), name)
        self.decoder = self.pipeline.decoder
        self.layers = sorted(set(range(self.decoder.num_layers) if layers is None else layers))
        if not self.layers:
            raise ValueError("no candidate layer given")
        self.decoder.check_layer(self.layers[0], "candidate layer")
        self.pipeline = self.pipeline.with_config(layer=self.decoder.check_layer(self.layers[-1], "candidate layer"))
        self.config = self.pipeline.config
        self.tokenizer = tokenizer
        self.count = tokenizer_len_for(tokenizer)
        c = self.config
        # The pipeline's own prefiller (precision, chunk size) up to the deepest candidate.
        self.prefiller = self.pipeline.prefiller(progress)
        self.config = replace(c, chunk_size=self.prefiller.chunk_size,  # as run
                              prefill_precision=self.pipeline.prefill_precision)
        self.recallers = recallers(c)

    def task(self, spec: NeedleSpec) -> Task:
        return make_task(spec, self.count)

    @torch.inference_mode()
    def measure(self, task: Task) -> tuple[dict[str, list[float]], int, int]:
        """(recall per mode per candidate layer, context tokens, needle tokens) for one task."""
        c = self.config
        template = self.pipeline.template
        tokens = tokenize_context(self.tokenizer, task.context)
        needle = needle_mask(tokens, task.needles)
        prefix = template.prefix_ids()
        query = template.query(task.question, task.answer_prefix)
        state = self.prefiller.prefill(torch.cat((prefix, tokens.ids)), capture=tuple(self.layers[:-1]))
        queries = self.prefiller.query_states_by_layer(state, query.ids)
        caches = {**state.captured, self.layers[-1]: state.key_cache}
        context = EncodedContext(tokens, prefix, None, {})
        n_ctx, n_needle = len(tokens), int(needle.sum())
        recall: dict[str, list[float]] = {m: [] for m in self.recallers}
        for layer in self.layers:
            token_scores = None  # shared by the pooling modes
            for mode, recaller in self.recallers.items():
                if whole_context(n_ctx, c.budget) is not None:  # the pipeline reads the whole context then
                    recall[mode].append(1.0)
                    continue
                # Scored and recalled exactly as the pipeline does it.
                units = recaller.units(tokens)
                if units is None and token_scores is not None:
                    scores = token_scores
                else:
                    scores = self.pipeline.scorer.score_context(self.decoder, queries[layer], caches[layer],
                                                                prefix.numel(), query.question, units)
                    token_scores = scores if units is None else token_scores
                hit = int(needle[recaller.recall(scores, context, query.text, c.budget)].sum())
                recall[mode].append(hit / n_needle)
        return recall, n_ctx, n_needle

    def run(self, specs: Iterable[NeedleSpec]) -> Iterator[SampleResult]:
        """Measure each planned sample in turn; yields as it goes, so callers can report progress."""
        for spec in specs:
            t0 = time.perf_counter()
            task = self.task(spec)
            recall, n_ctx, n_needle = self.measure(task)
            result = SampleResult(spec, n_ctx, n_needle, recall, time.perf_counter() - t0)
            log.info("length %d sample %d: %d tokens in %.1f s", spec.length, spec.index, n_ctx, result.seconds)
            yield result


@dataclass
class RecallTable:
    """Mean recall per candidate layer, overall and broken down by context length and key length."""

    layers: list[int]
    mean: dict[str, list[float]] = field(default_factory=dict)
    by_length: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    by_digits: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    samples: int = 0

    @classmethod
    def from_samples(cls, layers: Sequence[int], results: Sequence[SampleResult]) -> "RecallTable":
        if not results:
            raise ValueError("no samples were measured")
        modes = list(results[0].recall)

        def average(group: list[SampleResult], mode: str) -> list[float]:
            # Rounded to 0.01 points: what the profile states is exactly what the choice was made on.
            return [round(fmean(r.recall[mode][i] for r in group), DIGITS) for i in range(len(layers))]

        def grouped(key) -> dict[str, dict[int, list[float]]]:
            groups: dict[int, list[SampleResult]] = {}
            for r in results:
                groups.setdefault(key(r), []).append(r)
            return {m: {k: average(g, m) for k, g in sorted(groups.items())} for m in modes}

        return cls(
            layers=list(layers),
            mean={m: average(list(results), m) for m in modes},
            by_length=grouped(lambda r: r.spec.length),
            by_digits=grouped(lambda r: r.spec.digits),
            samples=len(results),
        )

    def to_dict(self) -> dict:
        return {m: {"mean": self.mean[m],
                    "by_length": {str(k): v for k, v in self.by_length[m].items()},
                    "by_key_digits": {str(k): v for k, v in self.by_digits[m].items()}}
                for m in self.mean}
