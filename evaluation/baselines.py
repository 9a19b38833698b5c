"""The systems ILRe is compared with, each deciding WHICH context tokens the answer reads.

Every system answers from the same prompt layout as ILRe (instruction, kept context tokens in
the order it reads them with a gap marker between non-adjacent runs, question, answer prefix), and
every selecting system keeps at most the same token budget. They differ only in how they choose:

* :class:`StreamingLLM`: the first ``sink`` context tokens plus the most recent ones.
* :class:`BM25Chunks`: retrieval-augmented generation; ~64-token chunks ranked by BM25.
* :class:`SnapKVStyle`: after a full prefill, the attention the last window (the question)
  pays to each context token at every layer, pooled, top tokens.
* :class:`LagKVVotes`: after a full prefill, LagKV's per-head choices by lag-relative key and
  value scores (no question), merged by votes.
* :class:`GemFilter`: a full-attention pass over the prompt up to the retrieval layer only; the
  attention the prompt's last token pays to each context token there, summed over heads, top tokens.
* full context: every token, read by the model in one pass (:func:`full_pass`, :func:`greedy_continue`).

The SnapKV-style system and full context share one full forward pass per sample
(:func:`full_pass`), so the O(L²) work is paid once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ilre import arch
from ilre.answerer import cut_repeat, repeats, token_words
from ilre.prompt import ContextTokens, assemble, contiguous_runs, tokenize_context
from ilre.lexical import words
from ilre.recaller import pool, whole_context
from ilre.units import TextUnits, find_unit_starts


@dataclass
class Sample:
    """One task in token form, shared by every system: prompt parts around the context."""

    tokens: ContextTokens
    prefix: torch.Tensor
    suffix: torch.Tensor
    gap: torch.Tensor
    question: str

    @classmethod
    def of(cls, ilre, context: str, question: str, answer_prefix: str = "") -> "Sample":
        """The sample of a context and question, in the prompt layout of ``ilre`` (an ILRe)."""
        t = ilre.template
        return cls(tokenize_context(ilre.tokenizer, context), t.prefix_ids(), t.suffix_ids(question, answer_prefix),
                   t.encode_text(ilre.config.gap_marker), question)

    def prompt(self, positions: torch.Tensor) -> torch.Tensor:
        """The answer prompt that reads the context tokens at ``positions`` (sorted)."""
        return assemble(self.prefix, self.tokens.ids, positions, self.suffix, self.gap)

    def full_prompt(self) -> torch.Tensor:
        return torch.cat((self.prefix, self.tokens.ids, self.suffix))

    def read_spans(self, positions: torch.Tensor) -> list[tuple[int, int]]:
        """[start, end) character ranges of the context that the tokens at ``positions`` cover."""
        offsets = self.tokens.offsets
        return [(int(offsets[a, 0]), int(offsets[b - 1, 1])) for a, b in contiguous_runs(positions)]

    def kept_text(self, positions: torch.Tensor, gap: str = " ... ") -> str:
        """The context text at ``positions``, runs joined by ``gap`` (to check what was kept)."""
        offsets = self.tokens.offsets
        text = self.tokens.text
        return gap.join(text[int(offsets[a, 0]):int(offsets[b - 1, 1])] for a, b in contiguous_runs(positions))


@dataclass
class StreamingLLM:
    """Attention sinks plus a recent window: the first ``sink`` tokens and the last ones.

    What a model keeps when it can only afford a sliding window; it sees a fact only when
    the fact sits at the very start or the very end of the context.
    """

    sink: int = 4

    def select(self, sample: Sample, budget: int) -> torch.Tensor:
        n, sink = len(sample.tokens), min(self.sink, budget)
        whole = whole_context(n, budget)
        return whole if whole is not None else torch.cat((torch.arange(sink), torch.arange(n - (budget - sink), n)))


@dataclass
class BM25Chunks:
    """Retrieval-augmented generation: chunk the context, rank chunks by BM25 against the question.

    Chunks are whole sentences/lines merged up to ``chunk_tokens`` tokens (longer units are
    cut), so a retrieved chunk reads as text. The best chunks are taken while they fit in the
    budget and put back in their original order. This is what many users would try first:
    it needs no model at all to choose.
    """

    chunk_tokens: int = 64
    k1: float = 1.5
    b: float = 0.75
    best_last: ClassVar[bool] = False
    """Read the chunks from the least relevant to the best instead (``BM25ChunksBestLast``)."""

    def chunks(self, tokens: ContextTokens) -> list[tuple[int, int]]:
        """[start, end) token ranges covering the context, each at most ``chunk_tokens`` long, grouped
        as ILRe's ``lexical_passage`` groups its units (``TextUnits.groups``) but from sentences and
        lines, every line break ending one: the chunking of a plain retriever, which does not follow
        ILRe's rule for wrapped sentences (docs/parameters.md measures it both ways)."""
        starts = find_unit_starts(tokens.text, tokens.offsets, tokens.files, join_wrapped=False)
        units = TextUnits.of(starts, len(tokens), self.chunk_tokens)
        firsts = units.groups(self.chunk_tokens)
        return [(int(units.starts[a]), int(units.ends[b - 1])) for a, b in zip(firsts, [*firsts[1:], len(units)])]

    def select(self, sample: Sample, budget: int) -> torch.Tensor:
        from rank_bm25 import BM25Okapi

        n = len(sample.tokens)
        if (whole := whole_context(n, budget)) is not None:
            return whole
        chunks = self.chunks(sample.tokens)
        offsets, text = sample.tokens.offsets, sample.tokens.text
        corpus = [words(text[int(offsets[a, 0]):int(offsets[b - 1, 1])]) or ["_"] for a, b in chunks]
        scores = BM25Okapi(corpus, k1=self.k1, b=self.b).get_scores(words(sample.question))
        order = sorted(range(len(chunks)), key=lambda i: -scores[i])  # stable: ties keep text order
        chosen, left = [], budget
        for i in order:
            a, b = chunks[i]
            if b - a <= left:
                chosen.append(torch.arange(a, b))
                left -= b - a
            if left == 0:
                break
        if not chosen:
            return torch.zeros(0, dtype=torch.long)
        return torch.cat(chosen[::-1]) if self.best_last else torch.sort(torch.cat(chosen)).values


@dataclass
class BM25ChunksBestLast(BM25Chunks):
    """``BM25Chunks`` read from the least relevant chunk to the best, the order in which ILRe's
    ``read_order`` 'best_last' reads: what that order alone gives a plain retriever."""

    best_last: ClassVar[bool] = True


@dataclass
class SnapKVStyle:
    """SnapKV's choice rule applied to recall: pooled last-window attention, top tokens.

    SnapKV keeps, in every head of every layer, the keys the observation window (the prompt's
    last tokens, here the question) attends to most, after pooling the attention with a small
    kernel so a fact's neighbours come along. A text prompt cannot keep different tokens per
    head, so the heads' choices are merged into one set:

    * ``"votes"`` (default): each (layer, head) picks its own top-``budget`` tokens as SnapKV
      would; tokens kept by the most heads win, ties going to the higher mean attention.
    * ``"mean"``: attention averaged over layers and heads, then the top tokens. Early layers
      put most of their attention on recent and structural tokens, so they drown the rest.

    Unlike ILRe it needs a full-depth prefill of the whole context first.
    """

    kernel: int = 7
    pooling: str = "avg"  # SnapKV's default
    aggregate: str = "votes"

    def __post_init__(self) -> None:
        if self.aggregate not in ("votes", "mean"):
            raise ValueError(f"aggregate must be 'votes' or 'mean', not {self.aggregate!r}")
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd positive size, got {self.kernel}")

    def select(self, attention: torch.Tensor, budget: int) -> torch.Tensor:
        """Positions from ``attention`` [layers, heads, L] (or [L]) over the context tokens."""
        rows = attention.float().reshape(-1, attention.shape[-1])
        n = rows.shape[-1]
        if (whole := whole_context(n, budget)) is not None:
            return whole
        pooled = torch.stack([pool(r, self.kernel, self.pooling) for r in rows])
        mean = pooled.mean(dim=0)
        if self.aggregate == "mean":
            score = mean
        else:
            votes = torch.zeros(n).index_add_(0, torch.topk(pooled, budget, dim=-1).indices.reshape(-1),
                                              torch.ones(rows.shape[0] * budget))
            score = votes + 0.5 * mean / mean.max().clamp_min(1e-30)  # the fraction only breaks ties
        return torch.sort(torch.topk(score, budget).indices).values


@dataclass
class LagKVVotes:
    """LagKV (ilre/lagkv.py, the ILRe authors' earlier method) applied to recall at a budget.

    After a full-depth prefill, every layer and KV head keeps the context's first ``sink`` tokens,
    its last partition and the best tokens of every other partition, by LagKV's lag-relative
    scores of the cached keys and values, at the one ratio that fills the budget. A text prompt
    cannot keep different tokens per head, so the heads vote: the tokens kept most often are read,
    ties going to the later token. No question is looked at.
    """

    lag: int = 64
    sink: int = 4

    def select(self, cache, span: tuple[int, int], budget: int) -> torch.Tensor:
        """Context positions from a full pass's KV ``cache`` over the prompt; ``span`` is the context's."""
        from ilre.lagkv import LagKV

        a, b = span
        n = b - a
        if (whole := whole_context(n, budget)) is not None:
            return whole
        lagkv = LagKV(self.sink, self.lag)
        parts = max(0, (n - self.sink) // self.lag)
        judged = max(0, parts - 1) * self.lag
        ratio = max(0.0, (budget - (n - judged)) / judged) if judged else 0.0
        votes = torch.zeros(n)
        for layer in cache.layers:
            keys, values = layer.keys[0, :, a:b].float().cpu(), layer.values[0, :, a:b].float().cpu()
            kept = lagkv.keep(keys, values, min(ratio, 1.0))
            votes.index_add_(0, kept.reshape(-1), torch.ones(kept.numel()))
        score = votes + 0.5 * torch.arange(n) / n  # the fraction only breaks ties, toward recent tokens
        return torch.sort(torch.topk(score, budget).indices).values


@dataclass
class GemFilter:
    """GemFilter (Shi et al., arXiv 2409.17422): the lower layers' attention of the last token picks the tokens.

    The model's layers up to a filter layer run over the whole prompt (context and question) with
    full causal attention, no streaming; at the filter layer, the attention probabilities of the
    prompt's last token (the query) to every context token, summed over heads, rank the context
    tokens, and the top ``budget`` are read in their original order. The layers above the filter
    layer never see the context. Here the filter layer is ILRe's retrieval layer and the budget
    ILRe's, so the two differ only in how the keys are made (full attention against ILRe's
    streaming windows) and in who asks (the last token against every question token).

    No parameters of its own: the layer and the budget are given per call.
    """

    @torch.inference_mode()
    def scores(self, model: torch.nn.Module, prompt_ids: torch.Tensor, span: tuple[int, int],
               layer: int) -> torch.Tensor:
        """[end - start] float32 scores of the context at ``span`` of ``prompt_ids`` [T].

        The model's own attention probabilities at ``layer`` of the last prompt token (softmax
        over every prompt key, rotary at the true positions), summed over the query heads; only
        that one row is computed, from the layer's own q/k projections.
        """
        a, b = span
        t = prompt_ids.numel()
        if not 0 <= a <= b <= t:
            raise ValueError(f"context span [{a}, {b}) is not within the {t}-token prompt")
        dec = arch.decoder_of(model)
        attn_layer = dec.layers[dec.check_layer(layer, "filter layer")]
        hidden = arch.attention_input(model, prompt_ids, layer)  # [T, hidden], normed
        cos, sin = arch.rope_tables(dec, torch.arange(t, device=hidden.device), hidden.dtype)
        k = arch.rotate(arch.project_keys(attn_layer, hidden, dec.head_dim), cos, sin)  # [Hkv, T, D]
        q = arch.rotate(arch.project_queries(attn_layer, hidden[-1:], dec.head_dim), cos[-1:], sin[-1:])  # [H, 1, D]
        q = q.float().view(dec.num_kv_heads, dec.groups, dec.head_dim)  # query heads grouped by their KV head
        logits = (q @ k.float().transpose(1, 2)) * float(attn_layer.self_attn.scaling)  # [Hkv, groups, T]
        # the last token sees every key: no mask
        return torch.softmax(logits, dim=-1).sum(dim=(0, 1))[a:b].cpu()

    @staticmethod
    def top(scores: torch.Tensor, budget: int) -> torch.Tensor:
        """The ``budget`` best-scored positions, sorted (all of them when the budget covers the scores)."""
        if (whole := whole_context(scores.numel(), budget)) is not None:
            return whole
        return torch.sort(torch.topk(scores.float().nan_to_num(nan=float("-inf")), budget).indices).values

    def select(self, model: torch.nn.Module, prompt_ids: torch.Tensor, span: tuple[int, int], layer: int,
               budget: int) -> torch.Tensor:
        """Sorted context positions (0-based within ``span``) the answer reads.

        ``prompt_ids`` is the full prompt (:meth:`Sample.full_prompt`), ``span`` the context's
        [start, end) in it. A budget covering the context reads it whole, with no pass at all.
        """
        if (whole := whole_context(span[1] - span[0], budget)) is not None:
            return whole
        return self.top(self.scores(model, prompt_ids, span, layer), budget)


# ---------------------------------------------------------------------------------------
# the shared full-depth pass (full context and SnapKV-style)


@dataclass
class WindowAttention:
    """Forward hooks that record, at every layer and head, the attention the last ``window``
    prompt tokens pay to each prompt token in ``span`` (averaged over the window tokens).

    Computed from the layer's own q/k projections and rotary tables, so the forward pass
    itself keeps its fused attention and never materialises [L × L].
    """

    model: torch.nn.Module
    window: int
    span: tuple[int, int] | None = None
    """[start, end) prompt positions to keep (the context); None keeps every position."""
    rows: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0
    _handles: list = field(default_factory=list)

    def __enter__(self) -> "WindowAttention":
        dec = arch.decoder_of(self.model)
        for layer in dec.layers:
            self._handles.append(layer.self_attn.register_forward_pre_hook(
                self._hook(layer, dec), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, layer: torch.nn.Module, dec: arch.Decoder):
        def hook(module, args, kwargs):
            t0 = time.perf_counter()
            hidden = kwargs.get("hidden_states", args[0] if args else None)[0]  # [T, hidden], normed
            cos, sin = (x[0] for x in kwargs["position_embeddings"])
            t, w = hidden.shape[0], min(self.window, hidden.shape[0])
            k = arch.rotate(arch.project_keys(layer, hidden, dec.head_dim), cos, sin)
            q = arch.rotate(arch.project_queries(layer, hidden[-w:], dec.head_dim), cos[-w:], sin[-w:])
            k = k.float().repeat_interleave(dec.groups, dim=0)
            logits = (q.float() @ k.transpose(1, 2)) * float(module.scaling)  # [H, w, T]
            # window token i sits at t - w + i and sees keys up to there
            future = torch.arange(t, device=k.device)[None, :] > (t - w + torch.arange(w, device=k.device))[:, None]
            probs = torch.softmax(logits.masked_fill(future, float("-inf")), dim=-1).mean(dim=1)  # [H, T]
            a, b = self.span or (0, t)
            self.rows.append(probs[:, a:b].cpu())
            self.seconds += time.perf_counter() - t0
        return hook

    def scores(self) -> torch.Tensor:
        """[layers, heads, span] attention of the window (mean over its tokens)."""
        if not self.rows:
            raise RuntimeError("no forward pass ran inside the WindowAttention block")
        return torch.stack(self.rows)


@dataclass
class FullPass:
    """One full-depth forward pass over the full prompt."""

    cache: object
    last_logits: torch.Tensor
    window_attention: torch.Tensor
    """[layers, heads, span] window attention (see :class:`WindowAttention`)."""
    seconds: float
    probe_seconds: float
    """Part of ``seconds`` spent computing the window attention (not needed by full context)."""


@torch.inference_mode()
def full_pass(model: torch.nn.Module, prompt_ids: torch.Tensor, window: int,
              span: tuple[int, int] | None = None) -> FullPass:
    """Prefill ``prompt_ids`` through the whole model, keeping its KV cache and window attention.

    Runs the base model (no logits over the whole prompt: at 16K tokens those alone would
    take gigabytes), then the head on the last position only.
    """
    device = next(model.parameters()).device
    ids = prompt_ids.reshape(1, -1).to(device)
    t0 = time.perf_counter()
    with WindowAttention(model, window, span) as probe:
        out = model.model(input_ids=ids, use_cache=True)
    logits = model.lm_head(out.last_hidden_state[:, -1])[0]
    return FullPass(out.past_key_values, logits, probe.scores(), time.perf_counter() - t0, probe.seconds)


def eos_ids(model: torch.nn.Module, tokenizer) -> set[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos) if isinstance(eos, (list, tuple)) else {eos}


@torch.inference_mode()
def greedy_continue(model: torch.nn.Module, tokenizer, cache, last_logits: torch.Tensor,
                    max_new_tokens: int) -> tuple[str, torch.Tensor]:
    """Greedy decoding from a prefilled cache: the same tokens ``answerer.generate`` would give."""
    device = next(model.parameters()).device
    stop = eos_ids(model, tokenizer)
    new, key = [int(last_logits.argmax())], token_words(tokenizer)
    handed = arch.cache_argument(model, cache)  # the same cache object, filled in place every step
    while new[-1] not in stop and len(new) < max_new_tokens and not repeats(new, key=key):
        out = model(input_ids=torch.tensor([[new[-1]]], device=device), use_cache=True, **handed)
        new.append(int(out.logits[0, -1].argmax()))
    ids = torch.tensor(cut_repeat(new, key=key), dtype=torch.long)
    return tokenizer.decode(ids, skip_special_tokens=True).strip(), ids
