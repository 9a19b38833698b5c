"""ILRe end to end: stream the context to the retrieval layer, score, recall, answer at full depth."""

from __future__ import annotations

import copy
import logging
import time
import hashlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from . import __version__, arch, loading, profile, quantize
from .answerer import generate
from .config import ENCODING, ILReConfig
from .prefiller import StreamingPrefiller, StreamState
from .prompt import ContextTokens, PromptTemplate, QueryTokens, assemble, contiguous_runs, tokenize_context
from .key_cache import KeyCache
from .lagkv import LagKV
from .lexical import LexicalIndex, scaled
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
    """A context streamed once to the retrieval layer; it can answer many queries, now or, saved
    as an index (:meth:`save`, :func:`ilre.load_index`), later."""

    tokens: ContextTokens
    prefix_ids: torch.Tensor
    state: StreamState | None
    """None until a budget smaller than the context asks for recall."""
    timings: dict[str, float]
    pipeline: "ILRe | None" = field(default=None, repr=False)
    """The ILRe that encoded it (or loaded it), which answers from it."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The settings that shaped ``state`` (``ILRe.encoding``); a pipeline with others refuses it."""
    _lexical: dict[tuple[int, int], LexicalIndex] = field(default_factory=dict, repr=False)
    """The words of each unit split asked about (by ``_units_key``); a saved index brings its own."""

    @staticmethod
    def _units_key(units: TextUnits) -> tuple[int, int]:
        return len(units), int(units.starts.sum())

    def lexical(self, units: TextUnits, context: int) -> LexicalIndex:
        """The BM25 index of these units (made on first use, then kept: many questions share it)."""
        key = self._units_key(units)
        if key not in self._lexical:
            offsets, text = self.tokens.offsets, self.tokens.text
            texts = [text[int(offsets[a, 0]):int(offsets[b - 1, 1])]
                     for a, b in zip(units.starts.tolist(), units.ends.tolist())]
            self._lexical[key] = LexicalIndex.of(texts, context)
        index = self._lexical[key]
        return index if index.context == context else index.with_context(context)

    def save(self, path: str | Path) -> Path:
        """Write this encoding to ``path`` as an index file (atomically; see ilre/index.py)."""
        from . import index

        ilre = self.pipeline
        state = self.state or ilre._prefill(self)
        text = self.tokens.text.encode("utf-8")
        small = len(self.tokens.text) < 2**31 and int(self.tokens.ids.max()) < 2**31
        index_dtype = torch.int32 if small else torch.int64  # token ids and offsets: half the bytes
        tensors = {"keys": state.key_cache.keys[:, :state.key_cache.filled], "prefix_ids": self.prefix_ids,
                   "ids": self.tokens.ids.to(index_dtype), "offsets": self.tokens.offsets.to(index_dtype),
                   "unit_starts": self.tokens.unit_starts().to(index_dtype),
                   "text": torch.frombuffer(bytearray(text), dtype=torch.uint8)}
        for i, w in enumerate(state.windows):
            tensors[f"window.{i}.keys"], tensors[f"window.{i}.values"] = w.keys, w.values
        units = ilre.config.recaller().units(self.tokens.unit_starts(), len(self.tokens)) \
            if ilre.config.recall_unit == "sentence" else None
        if units is not None:  # the words of its sentences, so that a load need not find them again
            words = self.lexical(units, ilre.config.lexical_context)
            tensors.update({"words.ids": torch.from_numpy(words.word_ids), "words.bounds": torch.from_numpy(words.bounds),
                            "words.vocab": torch.frombuffer(bytearray("\n".join(words.vocab).encode()) or bytearray(1),
                                                            dtype=torch.uint8)})
        meta = {"ilre_version": __version__, "model": ilre.identity, "settings": self.settings,
                "context": {"sha256": hashlib.sha256(text).hexdigest(),
                            "tokens": len(self.tokens), "characters": len(self.tokens.text)}}
        if units is not None:
            meta["words"] = {"units": list(self._units_key(units))}
        return index.write(path, tensors, meta)


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
        self.source: str | None = None
        """Where the model was loaded from (None: the embedded model, or a model passed in)."""
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
        self._shared: dict[str, Any] = {}  # int8 layer copies, model identity: shared by with_config's copies

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
        ilre = cls(lm, tokenizer, replace(config or ILReConfig(), **overrides), name, model_dir, backend)
        ilre.source = None if model is None else str(Path(model).expanduser().resolve())
        return ilre

    @property
    def identity(self) -> dict[str, Any]:
        """The model an encoding belongs to: its name, a fingerprint of config, tokenizer and weights,
        and its dtype (computed once)."""
        if "identity" not in self._shared:
            from .index import fingerprint

            self._shared["identity"] = {"name": self.name, "fingerprint": fingerprint(self.model, self.tokenizer),
                                        "dtype": str(self.decoder.embed.weight.dtype).removeprefix("torch."),
                                        "source": self.source}
        return self._shared["identity"]

    @property
    def encoding(self) -> dict[str, Any]:
        """The settings that shape an encoding, as run: an index made under other ones is refused."""
        precision = self.prefill_precision
        run = {"chunk_size": self.config.chunk_for(precision), "prefill_precision": precision}
        return {name: run.get(name, getattr(self.config, name)) for name in ENCODING}

    def check_encoding(self, settings: dict[str, Any], origin: str = "this encoding") -> None:
        """Refuse an encoding made under other settings: answering from it would be silently wrong."""
        ours = self.encoding
        wrong = [f"{k} {settings[k]!r} (here {ours[k]!r})" for k in ours if k in settings and settings[k] != ours[k]]
        if wrong:
            raise ValueError(f"{origin} was made with other settings: {', '.join(wrong)}; encode the context again "
                             "with these settings, or use the encoding's")

    def load_index(self, path: str | Path, verify: bool = True) -> EncodedContext:
        """An index written by :meth:`EncodedContext.save`, checked against this model and settings."""
        from . import index
        from .prefiller import LayerWindow

        meta = index.read_meta(path)
        theirs = meta.get("model", {})
        if theirs.get("fingerprint") != self.identity["fingerprint"]:
            raise index.IndexFileError(
                f"index {path} was made with another model ({theirs.get('name')}, fingerprint "
                f"{theirs.get('fingerprint')}), not {self.name} ({self.identity['fingerprint']}): pass that model "
                "with --model, or make the index again with this one")
        self.check_encoding(meta["settings"], f"index {path}")
        t0 = time.perf_counter()
        tensors, meta = index.read(path, verify)
        text = bytes(tensors["text"].numpy()).decode("utf-8")
        tokens = ContextTokens(text, tensors["ids"].long(), tensors["offsets"].long(), tensors["unit_starts"].long())
        device = self.decoder.embed.weight.device
        windows = [LayerWindow(tensors[f"window.{i}.keys"].to(device), tensors[f"window.{i}.values"].to(device))
                   for i in range(self.config.layer)]
        keys = tensors["keys"].to(self.key_device(len(tokens)))
        state = StreamState(windows, KeyCache(keys, self.config.layer, keys.shape[1]), keys.shape[1])
        encoded = EncodedContext(tokens, tensors["prefix_ids"], state, {"load": time.perf_counter() - t0}, self,
                                 meta["settings"])
        if "words" in meta and "words.ids" in tensors:
            vocab = bytes(tensors["words.vocab"].numpy()).decode("utf-8")
            encoded._lexical[tuple(meta["words"]["units"])] = LexicalIndex(
                vocab.split("\n") if tensors["words.ids"].numel() else [], tensors["words.ids"].numpy(),
                tensors["words.bounds"].numpy(), self.config.lexical_context)
        return encoded

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

    def prefiller(self, progress: bool | Callable[[int, int], None] = False,
                  key_device: torch.device | None = None) -> StreamingPrefiller:
        """The streaming prefiller of this configuration (int8 layer copies made once, on first use)."""
        c = self.config
        layers = None
        precision = self.prefill_precision
        if precision == "int8":
            if len(self._shared.get("layers", ())) <= c.layer:
                self._shared["layers"] = quantize.int8_layers(self.decoder.layers, c.layer)
            layers = self._shared["layers"]
        return StreamingPrefiller(self.model, c.layer, c.sink, c.window, c.chunk_for(precision), progress, layers,
                                  getattr(torch, c.key_dtype), self.decoder, c.lag_memory, key_device)

    def _sync(self) -> None:
        if self.backend is not None:
            self.backend.synchronize()

    def encode(self, context: str, progress: bool | Callable[[int, int], None] = False) -> EncodedContext:
        """Tokenise the context and stream it to the retrieval layer (the O(L) part).

        A budget covering the context reads it whole, so there is nothing to recall and nothing
        is streamed; :meth:`recall` streams it later if a smaller budget asks.
        """
        t0 = time.perf_counter()
        tokens = tokenize_context(self.tokenizer, context)
        if len(tokens) == 0:
            raise ValueError("the context is empty: it has no tokens")
        encoded = EncodedContext(tokens, self.template.prefix_ids(), None, {"tokenize": time.perf_counter() - t0},
                                 self, self.encoding)
        self.check_memory(len(tokens))
        if whole_context(len(tokens), self.config.budget) is None:
            self._prefill(encoded, progress)
        return encoded

    def memory_needed(self, n_tokens: int) -> dict[str, int]:
        """Bytes a context of ``n_tokens`` tokens adds to the loaded model, by what holds them."""
        c, dec = self.config, self.decoder
        key_bytes = torch.empty(0, dtype=getattr(torch, c.key_dtype)).element_size()
        act = dec.embed.weight.element_size()
        n = n_tokens + self.template.prefix_ids().numel()
        query_rows = dec.num_heads * 64  # heads x a generous question length
        chunk = c.chunk_for(self.prefill_precision)
        hidden = dec.embed.weight.shape[1]
        # a lower layer's cache: sink, LagKV memory (plus a partial partition waiting), window
        cached = c.sink + c.window + (c.lag_memory + LagKV.lag - 1 if c.lag_memory else 0)
        return {
            "keys of l_R": dec.num_kv_heads * n * dec.head_dim * key_bytes,
            "token ids and offsets": n_tokens * 24,
            "windows": 2 * c.layer * dec.num_kv_heads * (cached + chunk) * dec.head_dim * act,
            "prefill activations": 12 * chunk * max(hidden, dec.num_heads * dec.head_dim) * act
                                   + dec.num_heads * chunk * (cached + chunk) * 4,
            "scoring": query_rows * min(c.score_block, n) * 4 + query_rows * (n // 8 + 1) * 4,
            "answer": 4 * min(c.budget, n_tokens) * hidden * dec.num_layers * act,
        }

    def key_device(self, n_tokens: int, need: dict[str, int] | None = None) -> torch.device:
        """Where the keys of l_R of a context of ``n_tokens`` tokens are kept (``key_memory``);
        ``need``: its ``memory_needed``, when the caller has it already."""
        from device.memory import available_bytes

        device = self.decoder.embed.weight.device
        if device.type == "cpu" or self.config.key_memory == "device":
            return device
        if self.config.key_memory == "host":
            return torch.device("cpu")
        fits = sum((need or self.memory_needed(n_tokens)).values()) <= available_bytes(str(device))
        return device if fits else torch.device("cpu")

    def check_memory(self, n_tokens: int) -> None:
        """Refuse, before the long pass, a context that would not fit in the memory available.

        Keys kept in host memory (``key_memory``) are counted there, the rest on the device.
        """
        from device.memory import available_bytes

        need = self.memory_needed(n_tokens)
        device = self.decoder.embed.weight.device
        if self.key_device(n_tokens, need).type != device.type:
            keys, free_host = need.pop("keys of l_R"), available_bytes("cpu")
            if keys > free_host:
                raise MemoryError(f"the keys of this context of {n_tokens} tokens need about {keys / 2**30:.2f} GiB "
                                  f"of host memory, and {free_host / 2**30:.2f} GiB is available: use a shorter "
                                  "context (split the document)")
        total, free = sum(need.values()), available_bytes(str(device))
        if total <= free:
            return
        gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
        parts = ", ".join(f"{k} {gib(v)}" for k, v in need.items() if v > total / 20)
        hint = "a shorter context (split the document)"
        if "keys of l_R" in need and device.type != "cpu" and total - need["keys of l_R"] <= free:
            hint = f"--key-memory host (about {gib(total - need['keys of l_R'])} on the device)"
        elif self.config.key_dtype == "float32":
            half = total - need["keys of l_R"] // 2
            if half <= free:
                hint = f"--key-dtype float16 (about {gib(half)})"
        per_token = total / max(n_tokens, 1)
        raise MemoryError(f"this context of {n_tokens} tokens needs about {gib(total)} beyond the model ({parts}), "
                          f"and {gib(free)} is available: use {hint}; about {int(free / per_token)} tokens fit")

    def _prefill(self, encoded: EncodedContext, progress: bool | Callable[[int, int], None] = False) -> StreamState:
        encoded.settings = self.encoding
        t0 = time.perf_counter()
        where = self.key_device(len(encoded.tokens))
        encoded.state = self.prefiller(progress, where).prefill(torch.cat((encoded.prefix_ids, encoded.tokens.ids)))
        self._sync()
        encoded.timings["prefill"] = time.perf_counter() - t0
        return encoded.state

    def recall(self, encoded: EncodedContext, query: str | QueryTokens,
               answer_prefix: str = "") -> tuple[torch.Tensor, dict[str, float]]:
        """Context token positions (sorted) that the answer to ``query`` will read, and the stage times."""
        self.check_encoding(encoded.settings)
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
        c = self.config
        lexical = encoded.lexical(units, c.lexical_context) if units is not None and (c.lexical_weight or c.hops) else None
        positions = self.select(scores, units, encoded.tokens, query.text, lexical)
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

    def select(self, scores: torch.Tensor, units: TextUnits | None, tokens: ContextTokens, question: str = "",
               lexical: LexicalIndex | None = None) -> torch.Tensor:
        """The positions the answer reads, from what :meth:`scores` gave.

        With ``lexical`` (the units' BM25 index), sentence recall ranks units by their attention
        plus their match with the ``question``'s words read with their neighbours
        (``lexical_weight``), each on a scale of its best. A unit above ``unit_cut`` of the best
        is taken only when its attention or its own words (neighbours left out) also reach
        ``unit_cut`` of theirs: a neighbour that only borrows the question's words is a look-alike
        that the small reader confuses with the answer.
        Then it follows chains of rare words for ``hops`` rounds while the budget lasts.
        """
        c, recaller = self.config, self.config.recaller()
        if units is None:
            return recaller.recall(scores, c.budget, tokens.unit_starts())
        if (whole := whole_context(units.length, c.budget)) is not None:
            return whole
        candidates = None
        if lexical is not None and c.lexical_weight:
            attention = scaled(scores)
            candidates = (attention >= c.unit_cut) | (scaled(lexical.own_scores(question)) >= c.unit_cut)
            scores = attention + c.lexical_weight * scaled(lexical.scores(question))
        chosen = found = recaller.choose(scores, units, c.budget, candidates)
        for _ in range(c.hops if lexical is not None else 0):
            before = len(chosen)
            chosen = recaller.extend(chosen, lexical.linked(found, question, set(chosen)), units, c.budget)
            found = chosen[before:]
            if not found:
                break
        return recaller.positions(chosen, units)

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
