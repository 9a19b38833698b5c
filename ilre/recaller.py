"""Recallers: turn scores of context tokens (or of whole units) into the positions the answer reads.

Both return sorted, unique positions within [0, L), never more than the budget, and all L
positions when the budget covers the context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import POOLINGS


def whole_context(length: int, budget: int) -> torch.Tensor | None:
    """All ``length`` positions when the budget covers the context, else None.

    The one place that says it: a covering budget reads the context whole, exactly as the plain
    model does, whatever the recall method (ILRe's recallers and every compared system).
    """
    return torch.arange(length) if budget >= length else None


def _finite_order(scores: torch.Tensor) -> torch.Tensor:
    """Scores as float32 where NaN ranks lowest (torch sorts NaN above everything otherwise)."""
    return scores.float().reshape(-1).nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))


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
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {self.pooling!r}")

    def recall(self, scores: torch.Tensor, budget: int, unit_starts: torch.Tensor | None = None) -> torch.Tensor:
        scores = _finite_order(scores)
        length = scores.numel()
        if (whole := whole_context(length, budget)) is not None:
            return whole.to(scores.device)
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
class TextUnits:
    """A context's sentences/lines as token ranges [start, end), in text order."""

    starts: torch.Tensor  # [U] long
    ends: torch.Tensor    # [U] long

    @classmethod
    def of(cls, unit_starts: torch.Tensor | None, length: int, max_tokens: int) -> "TextUnits":
        """Units from their first tokens, longer ones cut into pieces of ``max_tokens``."""
        starts = unit_starts if unit_starts is not None else torch.zeros(1, dtype=torch.long)
        starts = split_long_units(starts.cpu(), length, max_tokens) if length else starts[:0]
        return cls(starts, torch.cat((starts[1:], torch.tensor([length]))) if length else starts)

    def __len__(self) -> int:
        return self.starts.numel()

    @property
    def length(self) -> int:
        return int(self.ends[-1]) if len(self) else 0

    def index(self) -> torch.Tensor:
        """The unit of every token, [L]."""
        return torch.searchsorted(self.starts, torch.arange(self.length), right=True) - 1

    def best(self, scores: torch.Tensor) -> torch.Tensor:
        """Each unit's best token score, [U]."""
        out = torch.full((len(self),), float("-inf"))
        return out.scatter_reduce(0, self.index(), scores.float().cpu().reshape(-1), reduce="amax")


@dataclass
class UnitRecaller:
    """Recall whole text units (sentences, lines) instead of pooled token neighbourhoods.

    Units are taken best first while they fit in the budget. Small models are confused by
    fragments, so whole units keep each recalled fact readable, and budget that no whole unit
    fits stays unused rather than filled with stray tokens. Units longer than
    ``max_unit_tokens`` are cut into pieces so that one run-on paragraph cannot take the whole
    budget. ``cut`` stops at the first unit scoring below ``cut`` times the best unit's score:
    a clear answer then comes with fewer look-alikes (0 keeps taking while the budget lasts).
    """

    max_unit_tokens: int = 128
    cut: float = 0.0

    def __post_init__(self) -> None:
        if self.max_unit_tokens < 1:
            raise ValueError(f"max_unit_tokens must be at least 1, got {self.max_unit_tokens}")
        if not 0.0 <= self.cut < 1.0:
            raise ValueError(f"cut must be in [0, 1), got {self.cut}")

    def units(self, unit_starts: torch.Tensor | None, length: int) -> TextUnits:
        return TextUnits.of(unit_starts, length, self.max_unit_tokens)

    def choose(self, unit_scores: torch.Tensor, units: TextUnits, budget: int,
               candidates: torch.Tensor | None = None) -> list[int]:
        """Indices of the best units that fit in ``budget`` (in the order taken), given a score per unit.

        ``candidates`` (a [U] bool mask), when given, says which units may be taken at all.
        """
        unit_scores = _finite_order(unit_scores).cpu()
        order = torch.argsort(unit_scores, descending=True, stable=True).tolist()
        floor = self.cut * float(unit_scores[order[0]]) if order and self.cut else float("-inf")
        return self.extend([], [u for u in order if unit_scores[u] >= floor and (candidates is None or candidates[u])],
                           units, budget)

    @staticmethod
    def extend(chosen: list[int], candidates: list[int], units: TextUnits, budget: int) -> list[int]:
        """``chosen`` plus the ``candidates``, in their order, that still fit in ``budget``."""
        sizes = (units.ends - units.starts).tolist()
        out, left = list(chosen), budget - sum(sizes[u] for u in chosen)
        taken = set(out)
        for u in candidates:
            if left <= 0:
                break
            if u not in taken and sizes[u] <= left:
                out.append(u)
                taken.add(u)
                left -= sizes[u]
        return out

    @staticmethod
    def positions(chosen: list[int], units: TextUnits) -> torch.Tensor:
        """Sorted token positions of the units ``chosen``."""
        if not chosen:
            return torch.zeros(0, dtype=torch.long)
        return torch.cat([torch.arange(int(units.starts[u]), int(units.ends[u])) for u in sorted(chosen)])

    def take(self, unit_scores: torch.Tensor, units: TextUnits, budget: int) -> torch.Tensor:
        """Sorted token positions of the best units that fit in ``budget``, given a score per unit."""
        if (whole := whole_context(units.length, budget)) is not None:
            return whole
        return self.positions(self.choose(unit_scores, units, budget), units)

    def recall(self, scores: torch.Tensor, budget: int, unit_starts: torch.Tensor | None = None) -> torch.Tensor:
        """Positions from one score per token: a unit scores as its best token."""
        units = self.units(unit_starts, scores.numel())
        return self.take(units.best(scores), units, budget).to(scores.device)


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
