"""ILRe end to end: stream the context to the retrieval layer, score, recall, answer at full depth."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from . import arch, loading, profile, quantize
from .answerer import generate
from .config import ILReConfig
from .prefiller import StreamingPrefiller, StreamState
from .prompt import ContextTokens, PromptTemplate, QueryTokens, assemble, contiguous_runs, tokenize_context
from .key_cache import KeyCache
from .recaller import TextUnits, UnitRecaller, whole_context

log = logging.getLogger(__name__)


@dataclass
class RecalledSpan:
    """A contiguous run of recalled context tokens, as character offsets into the context."""

    start: int
    end: int
    tokens: int
    text: str


@dataclass
class AnswerResult:
    answer: str
    answer_tokens: list[int]
    spans: list[RecalledSpan]
    layer: int
    context_tokens: int
    recalled_tokens: int
    prompt_tokens: int
    whole_context: bool
    """True when the budget covered the whole context, so the answer read all of it."""
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EncodedContext:
    """A context streamed once to the retrieval layer; it can answer many queries."""

    tokens: ContextTokens
    prefix_ids: torch.Tensor
    state: StreamState | None
    """None until a budget smaller than the context asks for recall."""
    timings: dict[str, float]


class ILRe:
    """Answers questions about long contexts with a Llama-family model.

    >>> ilre = ILRe.from_pretrained()                      # the embedded SmolLM2-135M-Instruct
    >>> ilre.answer(open("book.txt").read(), "What is the pass key?").answer
    """

    def __init__(self, model, tokenizer, config: ILReConfig | None = None, name: str = "model",
                 model_dir: Path | None = None, backend=None):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.backend = backend
        self.decoder = arch.decoder_of(model)
        config = config or ILReConfig()
        self.profile = profile.find(name, self.decoder.num_layers, model_dir)
        if config.layer is None:
            if self.profile is not None:
                config = replace(config, layer=self.profile.layer)
                log.info("retrieval layer %d from profile %s", config.layer, self.profile.source)
            else:
                config = replace(config, layer=profile.fallback_layer(self.decoder.num_layers))
                log.warning("no profile for %s: using layer %d; run `python -m layer_probe` to choose one",
                            name, config.layer)
        self.config = self._checked(config)
        self.template = PromptTemplate(tokenizer, config.instruction)
        self._int8: dict[str, torch.nn.ModuleList] = {}  # shared by copies made with copy.copy

    @classmethod
    def from_pretrained(cls, model: str | Path | None = None, device: str | None = None,
                        dtype: str | torch.dtype | None = None, config: ILReConfig | None = None,
                        **overrides) -> "ILRe":
        """Load a local model directory, a GGUF file, or (None) the embedded default model.

        ``device`` is 'auto', 'cpu', 'cuda[:N]' or 'npu[:N]'; ``overrides`` set ILReConfig fields.
        """
        from device import select_backend

        backend = select_backend(device, dtype)
        lm, tokenizer, name = loading.load(model, backend.torch_device, backend.dtype, backend.attn_implementation)
        model_dir = Path(model) if model is not None and Path(model).is_dir() else None
        return cls(lm, tokenizer, replace(config or ILReConfig(), **overrides), name, model_dir, backend)

    def with_config(self, **overrides) -> "ILRe":
        """The same model, tokenizer and int8 copies under another configuration (checked)."""
        other = copy.copy(self)
        other.config = self._checked(replace(self.config, **overrides))
        other.template = PromptTemplate(self.tokenizer, other.config.instruction)
        return other

    def _checked(self, config: ILReConfig) -> ILReConfig:
        """``config`` if it is valid for this model (its layer included), else a ValueError."""
        config.validate()
        self.decoder.check_layer(config.layer)
        return config

    # -- stages ---------------------------------------------------------------------------

    @property
    def prefill_precision(self) -> str:
        """'int8' or 'model': what this configuration's prefill computes on this model and device."""
        return quantize.resolve(self.config.prefill_precision, self.decoder.embed.weight)

    def prefiller(self, progress: bool = False) -> StreamingPrefiller:
        """The streaming prefiller of this configuration (int8 layer copies made once, on first use)."""
        c = self.config
        layers = None
        precision = self.prefill_precision
        if precision == "int8":
            if len(self._int8.get("layers", ())) <= c.layer:
                self._int8["layers"] = quantize.int8_layers(self.decoder.layers, c.layer)
            layers = self._int8["layers"]
        return StreamingPrefiller(self.model, c.layer, c.sink, c.window, c.chunk_for(precision), progress, layers)

    def _sync(self) -> None:
        if self.backend is not None:
            self.backend.synchronize()

    def encode(self, context: str, progress: bool = False) -> EncodedContext:
        """Tokenise the context and stream it to the retrieval layer (the O(L) part).

        A budget covering the context reads it whole, so there is nothing to recall and nothing
        is streamed; :meth:`recall` streams it later if a smaller budget asks.
        """
        t0 = time.perf_counter()
        tokens = tokenize_context(self.tokenizer, context)
        if len(tokens) == 0:
            raise ValueError("the context is empty: it has no tokens")
        encoded = EncodedContext(tokens, self.template.prefix_ids(), None, {"tokenize": time.perf_counter() - t0})
        if whole_context(len(tokens), self.config.budget) is None:
            self._prefill(encoded, progress)
        return encoded

    def _prefill(self, encoded: EncodedContext, progress: bool = False) -> StreamState:
        t0 = time.perf_counter()
        encoded.state = self.prefiller(progress).prefill(torch.cat((encoded.prefix_ids, encoded.tokens.ids)))
        self._sync()
        encoded.timings["prefill"] = time.perf_counter() - t0
        return encoded.state

    def recall(self, encoded: EncodedContext, query: str | QueryTokens,
               answer_prefix: str = "") -> tuple[torch.Tensor, dict[str, float]]:
        """Context token positions (sorted) that the answer to ``query`` will read, and the stage times."""
        if (whole := whole_context(len(encoded.tokens), self.config.budget)) is not None:
            return whole, {"score": 0.0, "recall": 0.0}
        state = encoded.state or self._prefill(encoded)
        t0 = time.perf_counter()
        if isinstance(query, str):
            query = self.template.query(query, answer_prefix)
        queries = self.prefiller().query_states(state, query.ids)
        scores, units = self.scores(queries, state.key_cache, encoded.tokens, encoded.prefix_ids.numel(),
                                    query.question)
        self._sync()
        t1 = time.perf_counter()
        positions = self.select(scores, units, encoded.tokens)
        return positions, {"score": t1 - t0, "recall": time.perf_counter() - t1}

    def scores(self, queries: torch.Tensor, cache: KeyCache, tokens: ContextTokens, n_prefix: int,
               question: torch.Tensor | None = None) -> tuple[torch.Tensor, TextUnits | None]:
        """Scores of the context from the queries [H, T, D] of a layer and that layer's keys of
        prefix + context: one per unit (and the units) for sentence recall, else one per token.

        ``question`` marks the query tokens that belong to the question (``QueryTokens.question``);
        with ``query_tokens='question'`` only they score the context.
        """
        c = self.config
        if c.query_tokens == "question" and question is not None and question.any():
            queries = queries[:, question.to(queries.device)]
        recaller = c.recaller()
        if isinstance(recaller, UnitRecaller):
            units = recaller.units(tokens.unit_starts(), len(tokens))
            # Prefix keys (template, instruction) form one extra unit that is never recalled.
            index = torch.cat((torch.full((n_prefix,), len(units), dtype=torch.long), units.index()))
            return c.scorer().score(self.decoder, queries, cache, index, len(units) + 1)[:-1].cpu(), units
        return c.scorer().score(self.decoder, queries, cache)[n_prefix:].cpu(), None

    def select(self, scores: torch.Tensor, units: TextUnits | None, tokens: ContextTokens) -> torch.Tensor:
        """The positions the answer reads, from what :meth:`scores` gave."""
        recaller = self.config.recaller()
        if units is not None:
            return recaller.take(scores, units, self.config.budget)
        return recaller.recall(scores, self.config.budget, tokens.unit_starts())

    def answer(self, context: str | EncodedContext, query: str, answer_prefix: str = "",
               streamer=None, progress: bool = False) -> AnswerResult:
        """Answer ``query`` about ``context`` (a string, or one encoded before with ``encode``)."""
        if not query.strip():
            raise ValueError("the query is empty")
        encoded = context if isinstance(context, EncodedContext) else self.encode(context, progress)
        suffix = self.template.query(query, answer_prefix)
        positions, times = self.recall(encoded, suffix)
        gap = self.template.encode_text(self.config.gap_marker)
        prompt = assemble(encoded.prefix_ids, encoded.tokens.ids, positions, suffix.ids, gap)
        t0 = time.perf_counter()
        text, new_ids = generate(self.model, self.tokenizer, prompt, self.config.max_new_tokens, streamer)
        timings = {**encoded.timings, **times, "answer": time.perf_counter() - t0}
        return AnswerResult(
            answer=text,
            answer_tokens=new_ids.tolist(),
            spans=self._spans(encoded.tokens, positions),
            layer=self.config.layer,
            context_tokens=len(encoded.tokens),
            recalled_tokens=positions.numel(),
            prompt_tokens=prompt.numel(),
            whole_context=positions.numel() == len(encoded.tokens),
            timings=timings,
        )

    def full_prompt_ids(self, context: str, query: str, answer_prefix: str = "") -> torch.Tensor:
        """The plain full-context prompt, token for token what a covering budget reads."""
        tokens = tokenize_context(self.tokenizer, context)
        return torch.cat((self.template.prefix_ids(), tokens.ids, self.template.suffix_ids(query, answer_prefix)))

    @staticmethod
    def _spans(tokens: ContextTokens, positions: torch.Tensor) -> list[RecalledSpan]:
        spans = []
        for start, end in contiguous_runs(positions):
            a, b = int(tokens.offsets[start, 0]), int(tokens.offsets[end - 1, 1])
            spans.append(RecalledSpan(a, b, end - start, tokens.text[a:b]))
        return spans
