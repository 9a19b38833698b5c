"""What an answer returns: the answer, and the spans of the context it read."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from .prompt import ContextTokens, contiguous_runs
from .sources import FileSpan


@dataclass
class RecalledSpan:
    """A contiguous run of recalled context tokens, inside one file: character offsets into the
    context, and the file, its lines (1-based, inclusive) and offsets inside that file."""

    start: int
    end: int
    tokens: int
    text: str
    file: str | None = None
    """The file's path, relative to the folder given (None: a text given as a string)."""
    line_start: int = 1
    line_end: int = 1
    file_start: int = 0
    file_end: int = 0
    score: float | None = None
    """The retrieval layer's attention to the span's best sentence (or token), as a share of the
    best in the whole context, 0 to 1 (None when the budget covered the context)."""

    @property
    def lines(self) -> str:
        """'line' or 'first-last'."""
        return f"{self.line_start}" if self.line_end == self.line_start else f"{self.line_start}-{self.line_end}"

    @property
    def source(self) -> str:
        """'path:line' or 'path:first-last' (lines only for a text without a name)."""
        return f"{self.file}:{self.lines}" if self.file is not None else f"lines {self.lines}"


def spans_of(tokens: ContextTokens, positions: torch.Tensor,
             token_scores: torch.Tensor | None = None) -> list[RecalledSpan]:
    """The recalled ``positions`` of a context as spans of its text, in the order read, one per run of
    adjacent tokens in one file; ``token_scores`` [L] give each span its best."""
    files = tokens.files or [FileSpan(None, 0, 0, len(tokens.text))]
    headers = [f.header for f in files]
    file_of = torch.searchsorted(torch.tensor(headers), tokens.offsets[:, 0].contiguous(), right=True) - 1
    spans = []
    for start, end in contiguous_runs(positions):
        owners = file_of[start:end]
        cuts = [start, *(start + 1 + torch.nonzero(owners[1:] != owners[:-1]).view(-1)).tolist(), end]
        for a_tok, b_tok in zip(cuts, cuts[1:]):
            f = files[max(int(file_of[a_tok]), 0)]
            a, b = int(tokens.offsets[a_tok, 0]), int(tokens.offsets[b_tok - 1, 1])
            inner_a, inner_b = min(max(a, f.start), f.end), min(max(b, f.start), f.end)
            line_start = tokens.text.count("\n", f.start, inner_a) + 1
            line_end = line_start + tokens.text.count("\n", inner_a, max(inner_b - 1, inner_a))
            score = None if token_scores is None else round(float(token_scores[a_tok:b_tok].max()), 4)
            spans.append(RecalledSpan(a, b, b_tok - a_tok, tokens.text[a:b], f.path, line_start, line_end,
                                      inner_a - f.start, inner_b - f.start, score))
    return spans


def sources_line(spans: list[RecalledSpan]) -> str:
    """What the CLI prints under an answer: the lines recalled of each file, in context order
    ("sources: a.py:4-7,30; b.md:12")."""
    by_file: dict[str | None, list[str]] = {}
    for span in sorted(spans, key=lambda s: s.start):
        by_file.setdefault(span.file, []).append(span.lines)
    return "sources: " + "; ".join(f"{'lines ' if f is None else f + ':'}{','.join(lines)}" for f, lines in by_file.items())


@dataclass
class AnswerResult:
    answer: str
    answer_tokens: list[int]
    spans: list[RecalledSpan]
    """What the answer read, in the order it read it (``read_order``)."""
    layer: int
    context_tokens: int
    recalled_tokens: int
    prompt_tokens: int
    whole_context: bool
    """True when the budget covered the whole context, so the answer read all of it."""
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)
