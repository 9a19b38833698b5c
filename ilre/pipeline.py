"""ILRe end to end: encode (stream the context to the retrieval layer), score, recall, answer."""

from __future__ import annotations

import copy
import time
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import arch, decoding, footprint, loading, profile, quantize
from .answerer import GREEDY, Sampling, generate
from .config import ILReConfig, PrefillConfig
from .encoded import EncodedContext, check_settings
from .identity import identity
from .index import store
from .prefiller import StreamingPrefiller, StreamState
from .prompt import PromptTemplate, QueryTokens, assemble, tokenize_context
from .recaller import RECALLERS, Recaller, whole_context
from .result import AnswerResult, spans_of
from .scorer import QueryScorer
from .sources import Sources

Progress = bool | Callable[[int, int], None]  # a bar, or a function of (tokens streamed, tokens in all)


def check_query(query: str) -> None:
    """Refuse an empty question before any work is done for it."""
    if not query.strip():
        raise ValueError("the query is empty")


class ILRe:
    """Answers questions about long contexts with a Llama-family model.

    >>> ilre = ILRe.from_pretrained()                      # the embedded SmolLM2-135M-Instruct
    >>> ilre.answer(open("book.txt").read(), "What is the pass key?").answer

    ``recaller``: what chooses the tokens to read (``ilre.recaller.Recaller``); by default the one
    of ``config.recall_unit``, with the configuration's parameters.
    """

    def __init__(self, model, tokenizer, config: ILReConfig | None = None, name: str = "model",
                 model_dir: Path | None = None, backend=None, recaller: Recaller | None = None):
        self.model, self.tokenizer, self.name, self.backend = model, tokenizer, name, backend
        self.source: str | None = None
        """Where the model was loaded from (None: the embedded model, or a model passed in)."""
        self.decoder = arch.decoder_of(model)
        self.profile = profile.find(name, self.decoder.num_layers, model_dir)
        self._shared: dict[str, Any] = {}  # int8 layer copies and answer models: shared by with_config's copies
        self._configure(config or ILReConfig(), recaller)

    def _configure(self, config: ILReConfig, recaller: Recaller | None = None) -> None:
        if config.layer is None:
            config = replace(config, layer=profile.layer_for(self.profile, self.decoder.num_layers, self.name))
        self.decoder.check_layer(config.layer)
        self.config, self._given_recaller = config, recaller
        self.template = PromptTemplate(self.tokenizer, config.instruction)
        self.scorer = config.part(QueryScorer)
        self.recaller = recaller or config.part(RECALLERS[config.recall_unit])

    @classmethod
    def from_pretrained(cls, model: str | Path | None = None, device: str | None = None,
                        dtype: str | torch.dtype | None = None, config: ILReConfig | None = None,
                        **overrides) -> "ILRe":
        """Load a local model directory, a GGUF file, or (None) the embedded default model; ``device``:
        'auto', 'cpu', 'cuda[:N]' or 'npu[:N]'; ``overrides`` set ILReConfig fields."""
        from device import select_backend

        backend = select_backend(device, dtype)
        lm, tokenizer, name = loading.load(model, backend.torch_device, backend.dtype, backend.attn_implementation)
        model_dir = Path(model) if model is not None and Path(model).is_dir() else None
        ilre = cls(lm, tokenizer, replace(config or ILReConfig(), **overrides), name, model_dir, backend)
        ilre.source = None if model is None else str(Path(model).expanduser().resolve())
        return ilre

    def with_config(self, **overrides) -> "ILRe":
        """The same model, tokenizer and int8 copies under another configuration (checked)."""
        other = copy.copy(self)
        other._configure(replace(self.config, **overrides), self._given_recaller)
        return other

    @cached_property
    def identity(self) -> dict[str, Any]:
        """The model an encoding belongs to (``ilre.identity``; computed once)."""
        return identity(self.model, self.tokenizer, self.name, self.source)

    device = property(lambda self: self.decoder.embed.weight.device)

    @property
    def prefill_precision(self) -> str:
        """'int8' or 'model': what this configuration's prefill computes on this model and device."""
        return quantize.resolve(self.config.prefill_precision, self.decoder.embed.weight)

    @property
    def encoding(self) -> dict[str, Any]:
        """The settings that shape an encoding, as run here (``ILReConfig.encoding``)."""
        return self.config.encoding(self.prefill_precision)

    def memory_needed(self, n_tokens: int) -> dict[str, int]:
        """Bytes a context of ``n_tokens`` tokens adds to the loaded model, by what holds them."""
        return footprint.memory_needed(self.config, self.decoder, n_tokens, self.template.prefix_ids().numel(),
                                       self.prefill_precision)

    def key_device(self, n_tokens: int) -> torch.device:
        """Where the keys of l_R of a context of ``n_tokens`` tokens are kept (``key_memory``)."""
        return footprint.key_device(self.config, self.device, self.memory_needed(n_tokens))

    @property
    def answer_model(self):
        """The model that decodes answers (made once, shared by ``with_config``'s copies): in the model's
        precision the model itself, its one-token products split over the CPU's threads
        (``ilre.decoding``); or its int8 decoding copy."""
        precision = self.config.answer_precision
        if precision not in self._shared:
            self._shared[precision] = (decoding.split_decoding_copy(self.model) if precision == "model"
                                       else quantize.int8_decoding_copy(self.model))
        return self._shared[precision]

    def prefiller(self, progress: Progress = False, key_device: torch.device | None = None) -> StreamingPrefiller:
        """The streaming prefiller of this configuration (int8 layer copies made once, on first use)."""
        layers = None
        if self.prefill_precision == "int8":
            if len(self._shared.get("layers", ())) <= self.config.layer:
                self._shared["layers"] = quantize.int8_layers(self.decoder.layers, self.config.layer)
            layers = self._shared["layers"]
        return StreamingPrefiller.of(self.model, self.config.layer, self.config.part(PrefillConfig), progress=progress,
                                     layers=layers, decoder=self.decoder, key_device=key_device)

    def encode(self, context: str | Sources, progress: Progress = False) -> EncodedContext:
        """Tokenise the context (a text, or the files of ``ilre.sources.read_sources``) and stream it to
        the retrieval layer (the O(L) part); not streamed when the budget covers it (read whole), until
        :meth:`recall` with a smaller budget asks."""
        t0 = time.perf_counter()
        sources = context if isinstance(context, Sources) else None
        tokens = tokenize_context(self.tokenizer, context if sources is None else sources.text)
        if sources is not None:
            tokens.files, tokens.read_with = sources.files, sources.read_with or None
        if len(tokens) == 0:
            raise ValueError("the context is empty: it has no tokens")
        encoded = EncodedContext(tokens, self.template.prefix_ids(), None, {"tokenize": time.perf_counter() - t0},
                                 self, self.encoding)
        footprint.check_memory(self.config, self.device, self.memory_needed(len(tokens)), len(tokens))
        if whole_context(len(tokens), self.config.budget) is None:
            self._prefill(encoded, progress)
        return encoded

    def _prefill(self, encoded: EncodedContext, progress: Progress = False) -> StreamState:
        encoded.settings = self.encoding
        t0 = time.perf_counter()
        prefiller = self.prefiller(progress, self.key_device(len(encoded.tokens)))
        encoded.state = prefiller.prefill(torch.cat((encoded.prefix_ids, encoded.tokens.ids)))
        self._sync()
        encoded.timings["prefill"] = time.perf_counter() - t0
        return encoded.state

    def _sync(self) -> None:
        if self.backend is not None:
            self.backend.synchronize()

    def save(self, encoded: EncodedContext, path: str | Path) -> Path:
        """Write ``encoded`` to ``path`` as an index file (``ilre/index/store.py``)."""
        if encoded.state is None:
            self._prefill(encoded)
        return store.save(encoded, path, self.identity, self.recaller.units(encoded.tokens), self.config.lexical_context)

    def load_index(self, path: str | Path, verify: bool = True) -> EncodedContext:
        """An index written by :meth:`save`, checked against this model and settings."""
        meta = store.read_meta(path)
        store.check_model(path, meta, self.identity)
        check_settings(self.encoding, meta["settings"], f"index {path}")
        encoded = store.load(path, self.config.layer, self.device, self.key_device(meta["context"]["tokens"]),
                             self.config.lexical_context, verify)
        encoded.pipeline = self
        return encoded

    def recall(self, encoded: EncodedContext, query: str | QueryTokens, answer_prefix: str = "",
               with_scores: bool = False) -> tuple:
        """Context token positions that the answer to ``query`` will read, in the order it reads
        them (``Recaller.recall``), and the stage times; ``with_scores``: also each token's attention
        score as a share of the best (its unit's with sentence recall; None when the budget covers
        the context)."""
        check_settings(self.encoding, encoded.settings)
        if (whole := whole_context(len(encoded.tokens), self.config.budget)) is not None:
            return (whole, {"score": 0.0, "recall": 0.0}) + ((None,) if with_scores else ())
        state = encoded.state or self._prefill(encoded)
        t0 = time.perf_counter()
        if isinstance(query, str):
            query = self.template.query(query, answer_prefix)
        queries = self.prefiller().query_states(state, query.ids)
        scores = self.scorer.score_context(self.decoder, queries, state.key_cache, encoded.prefix_ids.numel(),
                                           query.question, self.recaller.units(encoded.tokens))
        self._sync()
        t1 = time.perf_counter()
        positions = self.recaller.recall(scores, encoded, query.text, self.config.budget)
        times = {"score": t1 - t0, "recall": time.perf_counter() - t1}
        if not with_scores:
            return positions, times
        shares = scores.float() / scores.float().max().clamp(min=1e-30)
        return positions, times, shares if shares.numel() == len(encoded.tokens) else shares[
            self.recaller.units(encoded.tokens).index()]

    def answer(self, context: str | Sources | EncodedContext, query: str, answer_prefix: str = "", streamer=None,
               progress: bool = False, history: Sequence[dict[str, str]] = (),
               sampling: Sampling = GREEDY) -> AnswerResult:
        """Answer ``query`` about ``context`` (a string, or one encoded before with ``encode``);
        ``history`` (earlier turns of a conversation, as OpenAI's chat messages) is read by the answer
        as the turns before the last one, which holds the recalled context and the question; recall
        does not read it. ``sampling``: greedy by default."""
        check_query(query)
        encoded = context if isinstance(context, EncodedContext) else self.encode(context, progress)
        prompt, positions, token_scores, times = self._prompt(encoded, query, answer_prefix, history)
        t0 = time.perf_counter()
        text, new_ids = generate(self.answer_model, self.tokenizer, prompt, self.config.max_new_tokens, streamer, sampling)
        return AnswerResult(answer=text, answer_tokens=new_ids.tolist(), spans=spans_of(encoded.tokens, positions, token_scores),
                            layer=self.config.layer, context_tokens=len(encoded.tokens),
                            recalled_tokens=positions.numel(), prompt_tokens=prompt.numel(),
                            whole_context=positions.numel() == len(encoded.tokens),
                            timings={**encoded.timings, **times, "answer": time.perf_counter() - t0})

    def prompt(self, context: str | Sources | EncodedContext, query: str, answer_prefix: str = "",
               history: Sequence[dict[str, str]] = ()) -> torch.Tensor:
        """The tokens the full-depth pass reads to answer ``query`` (what :meth:`answer` decodes from)."""
        check_query(query)
        encoded = context if isinstance(context, EncodedContext) else self.encode(context)
        return self._prompt(encoded, query, answer_prefix, history)[0]

    def _prompt(self, encoded: EncodedContext, query: str, answer_prefix: str, history: Sequence[dict[str, str]]):
        """(the answer's prompt, the positions recalled, their scores, the recall's timings)."""
        suffix = self.template.query(query, answer_prefix)
        positions, times, token_scores = self.recall(encoded, suffix, with_scores=True)
        before, asked = (self.template.around_context(query, answer_prefix, history) if history
                         else (encoded.prefix_ids, suffix.ids))
        prompt = assemble(before, encoded.tokens.ids, positions, asked,
                          self.template.encode_text(self.config.gap_marker))
        return prompt, positions, token_scores, times

    def full_prompt_ids(self, context: str, query: str, answer_prefix: str = "") -> torch.Tensor:
        """The plain full-context prompt, token for token what a covering budget reads."""
        tokens = tokenize_context(self.tokenizer, context)
        return torch.cat((self.template.prefix_ids(), tokens.ids, self.template.suffix_ids(query, answer_prefix)))
