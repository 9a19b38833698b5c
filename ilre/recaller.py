"""Recallers: turn one score per context token into the token positions the answer will read.

Both return sorted, unique positions within [0, L), never more than the budget, and all L
positions when the budget covers the context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def split_budget(budget: int, shares: tuple[float, ...]) -> list[int]:
    """Integer quotas proportional to ``shares`` that add up to exactly ``budget``."""
    total = float(sum(shares))
    raw = [budget * s / total for s in shares]
    quotas = [int(r) for r in raw]
    # Largest remainders get the tokens lost to rounding down.
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - quotas[i], reverse=True)[: budget - sum(quotas)]:
        quotas[i] += 1
    return quotas


def pool(scores: torch.Tensor, kernel: int, mode: str = "max") -> torch.Tensor:
    """Same-length 1-D pooling of [L] scores with an odd kernel (1 = the scores themselves)."""
    if kernel == 1:
        return scores
    x = scores.view(1, 1, -1)
    if mode == "max":
        out = F.max_pool1d(x, kernel, stride=1, padding=kernel // 2)
    else:
        out = F.avg_pool1d(x, kernel, stride=1, padding=kernel // 2, count_include_pad=False)
    return out.view(-1)


def _rank(primary: torch.Tensor, secondary: torch.Tensor) -> torch.Tensor:
    """Indices by descending ``primary``, ties broken by descending ``secondary``."""
    order = torch.argsort(secondary, descending=True, stable=True)
    return order[torch.argsort(primary[order], descending=True, stable=True)]


@dataclass
class PoolingRecaller:
    """ILRe's multi-pooling-kernel recall.

    A small kernel picks isolated high-scoring tokens; a large one takes whole neighbourhoods
    of a peak, keeping recalled spans semantically whole. Each kernel gets a share of the
    budget and picks its best positions not already taken, so the union is exactly the budget.
    Ties inside a pooled plateau go to the tokens that scored highest themselves.
    """

    kernels: tuple[int, ...] = (1, 7, 31)
    shares: tuple[float, ...] | None = None
    pooling: str = "max"

    def __post_init__(self) -> None:
        if not self.kernels or any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernels must be odd positive sizes, got {self.kernels}")
        if self.shares is not None and (len(self.shares) != len(self.kernels) or min(self.shares) < 0
                                        or sum(self.shares) <= 0):
            raise ValueError("shares must be non-negative, one per kernel, not all zero")
        if self.pooling not in ("max", "avg"):
            raise ValueError(f"pooling must be 'max' or 'avg', not {self.pooling!r}")

    def recall(self, scores: torch.Tensor, budget: int, unit_starts: torch.Tensor | None = None) -> torch.Tensor:
        scores = scores.float().reshape(-1)
        length = scores.numel()
        budget = max(0, min(budget, length))
        chosen = torch.zeros(length, dtype=torch.bool, device=scores.device)
        shares = self.shares or tuple(1.0 for _ in self.kernels)
        for kernel, quota in zip(self.kernels, split_budget(budget, shares)):
            if quota == 0:
                continue
            pooled = pool(scores, kernel, self.pooling).masked_fill(chosen, float("-inf"))
            secondary = scores.masked_fill(chosen, float("-inf"))
            chosen[_rank(pooled, secondary)[:quota]] = True
        return chosen.nonzero().view(-1)


@dataclass
class UnitRecaller:
    """Recall whole text units (sentences, lines) instead of pooled token neighbourhoods.

    A unit scores as its best token after pooling with ``kernel``; units are taken best first
    while they fit in the budget. Units longer than ``max_unit_tokens`` are cut into pieces so
    one run-on paragraph cannot take the whole budget. Small models are confused by fragments;
    whole units keep each recalled fact readable.
    """

    kernel: int = 1
    max_unit_tokens: int = 64

    def recall(self, scores: torch.Tensor, budget: int, unit_starts: torch.Tensor | None = None) -> torch.Tensor:
        scores = scores.float().reshape(-1)
        length = scores.numel()
        budget = max(0, min(budget, length))
        if budget == length:
            return torch.arange(length, device=scores.device)
        starts = unit_starts if unit_starts is not None else torch.zeros(1, dtype=torch.long)
        starts = split_long_units(starts.to(scores.device), length, self.max_unit_tokens)
        ends = torch.cat((starts[1:], torch.tensor([length], device=scores.device)))
        unit_of = torch.searchsorted(starts, torch.arange(length, device=scores.device), right=True) - 1
        best = torch.full((starts.numel(),), float("-inf"), device=scores.device)
        best = best.scatter_reduce(0, unit_of, pool(scores, self.kernel), reduce="amax")
        chosen = torch.zeros(length, dtype=torch.bool, device=scores.device)
        left = budget
        for u in torch.argsort(best, descending=True, stable=True).tolist():
            size = int(ends[u] - starts[u])
            if size <= left:
                chosen[starts[u]:ends[u]] = True
                left -= size
            if left == 0:
                break
        if left:  # fill what no whole unit fits with the best remaining single tokens
            rest = scores.masked_fill(chosen, float("-inf"))
            chosen[torch.argsort(rest, descending=True, stable=True)[:left]] = True
        return chosen.nonzero().view(-1)


def split_long_units(starts: torch.Tensor, length: int, max_len: int) -> torch.Tensor:
    """Add start positions so that no unit is longer than ``max_len`` tokens."""
    starts = torch.unique(torch.cat((torch.zeros(1, dtype=torch.long, device=starts.device),
                                     starts.long().clamp(0, max(length - 1, 0)))))
    ends = torch.cat((starts[1:], torch.tensor([length], device=starts.device)))
    long_units = ((ends - starts) > max_len).nonzero().view(-1).tolist()
    extra = [torch.arange(int(starts[u]) + max_len, int(ends[u]), max_len) for u in long_units]
    if extra:
        starts = torch.unique(torch.cat([starts, *[x.to(starts.device) for x in extra]]))
    return starts
