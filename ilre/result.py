"""What an answer returns: the answer, and the spans of the context it read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from .prompt import ContextTokens, contiguous_runs


@dataclass
class RecalledSpan:
    """A contiguous run of recalled context tokens, as character offsets into the context."""

    start: int
    end: int
    tokens: int
    text: str


def spans_of(tokens: ContextTokens, positions: torch.Tensor) -> list[RecalledSpan]:
    """The recalled ``positions`` (sorted) of a context as spans of its text."""
    spans = []
    for start, end in contiguous_runs(positions):
        a, b = int(tokens.offsets[start, 0]), int(tokens.offsets[end - 1, 1])
        spans.append(RecalledSpan(a, b, end - start, tokens.text[a:b]))
    return spans


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
