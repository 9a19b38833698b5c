"""LagKV (arXiv 2504.04704, by ILRe's authors): which cached tokens to keep, without attention.

The tokens after ``sink`` are cut into partitions of ``lag`` tokens. Each partition is judged
against the next one (its "lag"): every channel of its keys and of its values is min-max
normalised by the next partition's range in that channel, a token's spread across channels
(standard deviation) says how much it stands out, and a softmax within the partition turns the
spreads into scores; a token's score is that of its key plus ``v_ratio`` times that of its value.
The last full partition and what follows it have no lag to judge them by and are always kept,
like the sink. No query and no attention weights are needed, so it works with fused attention
kernels and before any question is known.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import LAG


def lag_scores(states: torch.Tensor, sink: int, lag: int) -> torch.Tensor:
    """Scores [..., P, lag] of the tokens of the P judged partitions of ``states`` [..., L, D]."""
    length = states.shape[-2]
    parts = (length - sink) // lag
    if parts < 2:
        return states.new_zeros(*states.shape[:-2], 0, lag)
    x = states[..., sink:sink + parts * lag, :].float().unflatten(-2, (parts, lag))
    judged, ref = x[..., :-1, :, :], x[..., 1:, :, :]
    low, high = ref.amin(dim=-2, keepdim=True), ref.amax(dim=-2, keepdim=True)
    return ((judged - low) / (high - low)).std(dim=-1).softmax(dim=-1)


@dataclass(frozen=True)
class LagKV:
    """LagKV's selection of tokens to keep in one layer's cache."""

    sink: int = 4
    """First tokens always kept."""
    lag: int = LAG
    """Tokens per partition; each is judged against the next."""
    v_ratio: float = 1.0
    """Weight of the values' score beside the keys'."""

    def __post_init__(self) -> None:
        if self.sink < 0 or self.lag < 2 or self.v_ratio < 0:
            raise ValueError("LagKV needs sink >= 0, lag >= 2 and v_ratio >= 0")

    def _judged(self, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Scores [..., P, lag] of the judged partitions: the keys' plus ``v_ratio`` times the values'."""
        return lag_scores(keys, self.sink, self.lag) + self.v_ratio * lag_scores(values, self.sink, self.lag)

    def scores(self, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """[..., L] per token: LagKV's score in the judged partitions, +inf for the sink and the
        tail that are always kept."""
        length = keys.shape[-2]
        judged = self._judged(keys, values)
        out = torch.full((*keys.shape[:-2], length), float("inf"), device=keys.device)
        end = self.sink + judged.shape[-2] * self.lag
        out[..., self.sink:end] = judged.flatten(-2)
        return out

    def keep(self, keys: torch.Tensor, values: torch.Tensor, ratio: float) -> torch.Tensor:
        """Kept positions [..., K], sorted: the sink, the best ``ratio`` of every judged partition,
        the tail (as the official cache keeps them after one compression)."""
        length = keys.shape[-2]
        judged = self._judged(keys, values)
        parts = judged.shape[-2]
        top = torch.topk(judged, int(ratio * self.lag), dim=-1).indices
        top = top + self.sink + self.lag * torch.arange(parts, device=top.device)[:, None]
        end = self.sink + parts * self.lag
        fixed = torch.cat((torch.arange(self.sink), torch.arange(end, length))).to(top.device)
        kept = torch.cat((fixed.expand(*top.shape[:-2], -1), top.flatten(-2)), dim=-1)
        return kept.sort(dim=-1).values


def pick_memory(keys: torch.Tensor, values: torch.Tensor, scores: torch.Tensor,
                size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``size`` best-scoring tokens of each head, in their original order: LRSA's bounded memory.

    ``keys``/``values`` [H, n, D] and ``scores`` [H, n] are the candidates (the memory so far,
    then the newly judged tokens); returns the kept keys, values and scores.
    """
    if keys.shape[1] <= size:
        return keys, values, scores
    index = scores.topk(size, dim=-1).indices.sort(dim=-1).values
    gather = lambda x: x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
    return gather(keys), gather(values), scores.gather(1, index)
