"""A context's recall units: its sentences and lines as token ranges, long ones cut."""

from __future__ import annotations

from dataclasses import dataclass

import torch


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

    @property
    def key(self) -> tuple[int, int]:
        """Tells one split of a context from another (what a saved index records of its words)."""
        return len(self), int(self.starts.sum())

    def index(self) -> torch.Tensor:
        """The unit of every token, [L]."""
        return torch.searchsorted(self.starts, torch.arange(self.length), right=True) - 1

    def best(self, scores: torch.Tensor) -> torch.Tensor:
        """Each unit's best token score, [U]."""
        out = torch.full((len(self),), float("-inf"))
        return out.scatter_reduce(0, self.index(), scores.float().cpu().reshape(-1), reduce="amax")

    def positions(self, chosen: list[int]) -> torch.Tensor:
        """Sorted token positions of the units ``chosen``."""
        if not chosen:
            return torch.zeros(0, dtype=torch.long)
        return torch.cat([torch.arange(int(self.starts[u]), int(self.ends[u])) for u in sorted(chosen)])


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
