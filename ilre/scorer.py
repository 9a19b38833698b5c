"""Query scoring: how much attention the query pays to each context key at the retrieval layer."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from . import arch
from .config import ScoringConfig
from .key_cache import KeyCache

# torch says "index_reduce() is in beta" on its first call: its amax is what the scorer needs. Set once
# here, not around each block's call: catch_warnings swaps the process's filters, which is neither
# free on a hot path nor safe beside another thread (the service scores in its workers).
warnings.filterwarnings("ignore", message=r"index_reduce\(\) is in beta", category=UserWarning)

if TYPE_CHECKING:
    from .units import TextUnits


@dataclass
class QueryScorer(ScoringConfig):
    """Per-head softmax(q·Kᵀ/√d) in fp32, one score per key or per unit of keys.

    Per key: the attention averaged over heads and query tokens. Per unit (a sentence or line,
    given as ``units``): for every head and query token, the unit's best key; then the average
    over heads and query tokens. A unit thus scores high when many query tokens each find a
    match in it (the question's key words, each in its own place), not when one token of it
    draws the attention every query token pays to any line of that shape.

    Keys are scored in blocks with a two-pass softmax (log-sum-exp first, then probabilities),
    so no [query × context] matrix larger than one block ever exists. The logits are kept in base 2
    (the query scaled by log2(e) as well as 1/√d), so the softmax's exponentials are ``exp2``: the
    same probabilities to float32 rounding, and on a CPU torch's ``exp2`` runs three times faster
    than its ``exp``, which took a third of a large index's scoring (docs/performance.md).

    ``positions``:
      * ``"relative"`` (default): every key is placed at one short fixed ``distance`` before the
        query. Distances stay inside the trained window at any context length; measured in
        docs/ to be what makes retrieval work beyond it.
      * ``"absolute"``: keys at their stream positions, the query right after them, as the model
        would see them in a full forward pass.

    Its parameters are its config's (``ScoringConfig``): written and checked once there.
    """

    @torch.inference_mode()
    def score_context(self, decoder: arch.Decoder, queries: torch.Tensor, cache: KeyCache, n_prefix: int,
                      question: torch.Tensor | None = None, units: "TextUnits | None" = None) -> torch.Tensor:
        """Scores of the context from the queries [H, T, D] and the keys of prefix + context, on the
        CPU: one per unit of ``units`` [U] when given, else one per token [L].

        ``question`` marks the query tokens that belong to the question (``QueryTokens.question``);
        with ``query_tokens='question'`` only they score the context. The prefix keys (template,
        instruction) are scored with the rest (they take their share of the attention) and dropped.
        """
        if self.query_tokens == "question" and question is not None and question.any():
            queries = queries[:, question.to(queries.device)]
        if units is None:
            return self.score(decoder, queries, cache)[n_prefix:].cpu()
        index = torch.cat((torch.full((n_prefix,), len(units), dtype=torch.long), units.index()))
        return self.score(decoder, queries, cache, index, len(units) + 1)[:-1].cpu()

    @torch.inference_mode()
    def score(self, decoder: arch.Decoder, queries: torch.Tensor, cache: KeyCache,
              units: torch.Tensor | None = None, num_units: int = 0) -> torch.Tensor:
        """Scores (fp32) for the ``cache.filled`` keys, given pre-RoPE queries [H, T, D].

        Without ``units``: one score per key, [L]. With ``units`` (the unit index of every key,
        [L], values in 0..num_units-1): one score per unit, [num_units].
        """
        h, t, d = queries.shape
        length = cache.filled
        device = queries.device
        if self.positions == "relative":
            q_pos = self.distance + torch.arange(t, device=device)
        else:
            q_pos = length + torch.arange(t, device=device)
        cos, sin = arch.rope_tables(decoder, q_pos, torch.float32)
        q = arch.rotate(queries.float(), cos, sin)
        scale = cache_scaling(decoder, cache.layer) * LOG2_E
        # Group query heads with their shared KV head, transposed: [Hkv, D, g*T]. A block's logits are
        # then [Hkv, keys, g*T]: each key's row of logits is contiguous, so a unit's maximum is taken
        # row by row (``_keep_unit_max_``).
        q = (q.reshape(decoder.num_kv_heads, decoder.groups * t, d) * scale).transpose(1, 2).contiguous()
        rows = q.shape[0] * q.shape[2]

        # Buffers for every block's keys in float32 and its logits, reused by both passes: a fresh
        # block-sized tensor per step costs page faults that take longer than the matmul filling it.
        width = min(self.block_size, length)
        buffer = torch.empty(rows * width, dtype=torch.float32, device=device)
        convert = cache.keys.dtype != torch.float32 or cache.keys.device != device
        key_buffer = torch.empty(q.shape[0] * width * d if convert else 0, dtype=torch.float32, device=device)

        def logits(start: int) -> torch.Tensor:
            k = cache.keys[:, start:min(start + self.block_size, length)]
            if convert:
                k = key_buffer[: k.numel()].view(k.shape).copy_(k, non_blocking=True)
            if self.positions == "absolute":
                kc, ks = arch.rope_tables(decoder, torch.arange(start, start + k.shape[1], device=device),
                                          torch.float32)
                k = arch.rotate(k, kc, ks)
            out = buffer[: rows * k.shape[1]].view(q.shape[0], k.shape[1], q.shape[2])
            return torch.matmul(k, q, out=out)

        starts = range(0, length, self.block_size)
        lse = torch.full((q.shape[0], q.shape[2]), float("-inf"), device=device)
        if units is not None:
            # A unit's score is its best key's probability, 2^(best logit - lse): exp2 is monotone, so
            # the best logit, kept in the one pass that also sums the softmax's denominator, gives
            # the same value as the best probability, without a second pass over the keys.
            units = units.to(device)
            best = torch.full((q.shape[0], num_units, q.shape[2]), float("-inf"), device=device)
            for s in starts:
                block = logits(s)
                held = units[s:s + block.shape[1]]
                _keep_unit_max_(best, block, held)
                # The block's units' best logits bound its logits from above, at a logit of the
                # context (one of a unit begun in an earlier block at worst): a shift as stable as
                # the block's own maximum, read from a few hundred rows instead of every key's.
                shift = best.index_select(1, torch.unique_consecutive(held)).amax(dim=1)
                lse = torch.logaddexp2(lse, _logsumexp2_(block, shift))
            return best.sub_(lse[:, None]).exp2_().sum(dim=(0, 2)) / (h * t)
        for s in starts:
            lse = torch.logaddexp2(lse, _logsumexp2_(logits(s)))
        scores = torch.empty(length, dtype=torch.float32, device=device)
        for s in starts:
            probs = logits(s).sub_(lse[:, None]).exp2_()
            scores[s:s + probs.shape[1]] = probs.sum(dim=(0, 2)) / (h * t)
        return scores


def _keep_unit_max_(best: torch.Tensor, block: torch.Tensor, units: torch.Tensor) -> None:
    """``best[:, u] = max(best[:, u], the block's largest logits among the keys of unit u)``, for logits
    [Hkv, keys, g*T] and ``best`` [Hkv, units, g*T]: each key's row is compared whole with its unit's.

    On the CPU torch's ``index_reduce_`` does this row by row (vectorised over the row), twice as fast
    as numpy's ``maximum.reduceat`` over each run of a unit's keys in the other layout, which took a
    third of a large index's scoring (docs/performance.md). Elsewhere torch's per-value scatter,
    which accelerators run well."""
    if block.device.type != "cpu":
        best.scatter_reduce_(1, units.view(1, -1, 1).expand_as(block), block, reduce="amax")
        return
    best.index_reduce_(1, units, block, "amax")


def _logsumexp2_(x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """``log2(sum(2^x, 1))`` of base-2 logits [Hkv, keys, g*T], computed in place in ``x`` (which it
    overwrites), step for step as ``torch.logsumexp`` does it in base e (the maximum, exp2 of the
    difference, sum, log2, plus the maximum), without a temporary. ``shift`` [Hkv, g*T]: a value
    known to be at least the maximum, used in its place."""
    maxes = x.amax(dim=1) if shift is None else shift
    finite = maxes.masked_fill(maxes.abs() == float("inf"), 0.0)
    return x.sub_(finite[:, None]).exp2_().sum(dim=1).log2_().add_(finite)


LOG2_E = 1.0 / math.log(2.0)
"""exp(x) = 2^(x·log2(e)): the factor that puts a logit in base 2."""


def cache_scaling(decoder: arch.Decoder, layer: int) -> float:
    return float(decoder.layers[layer].self_attn.scaling)
