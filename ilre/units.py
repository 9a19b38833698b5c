"""A context's recall units: sentences of prose, lines and blocks of code, as token ranges.

Prose is cut after each sentence and at line breaks. Code is cut at lines only, into blocks: a
block starts after a blank line, at a definition (``def``, ``class``, ``function``, ``fn``, a
decorator...), and where the code returns to the left margin; a block longer than
``CODE_BLOCK_TOKENS`` is cut at its line starts. So a recalled unit of code is whole lines, and
often a whole small function. Each file's header line is a unit of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .sources import FileSpan

# A unit ends after . ! or ? followed by space, or at a line break that is not a wrap. Not after a
# colon: "the number for X is: 1298782." must stay one unit with its answer.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|(?P<line>\n+)")
_ITEM = re.compile(r"[-*+|>#=]|\d+[.)]\s")
SPLIT_RULE = 2
"""The version of the rule that cuts prose into units, saved with an index: an index saved under
another finds its units again from its text (1: every line break ended a unit)."""
WRAP_MIN_CHARS = 40
"""A line of at least this many characters, followed by one at the same indentation that is not a
list item, continues on it: a manual or man page wraps its sentences at about 72-79 columns, and a
unit cut at the line's end parts a sentence from its answer ("... limits an allocation to about" /
"1GB in size.")."""

_DEFINITION = re.compile(r"[ \t]*(?:@|(?:async[ \t]+)?def[ \t]|class[ \t]|(?:export[ \t]+)?function[ \t]|func[ \t]|fn[ \t]"
                         r"|(?:pub[ \t]+)?(?:struct|enum|impl|trait|interface|mod)[ \t]|\[[\w. \t\"'-]+\][ \t]*$)")
CODE_BLOCK_TOKENS = 96
"""The longest block of code kept whole, in tokens: below ``max_unit_tokens``'s default, so that
the recaller never cuts a block in the middle of a line (a single line longer than a unit is)."""


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def wraps(text: str, end: int) -> bool:
    """Whether the single line break at ``text[end]`` wraps a sentence (see ``WRAP_MIN_CHARS``)."""
    line = text[text.rfind("\n", 0, end) + 1:end]
    after = end + 1
    stop = text.find("\n", after)
    following = text[after:stop if stop >= 0 else len(text)]
    return (len(line.strip()) >= WRAP_MIN_CHARS and bool(following.strip()) and _indent(following) == _indent(line)
            and not _ITEM.match(following.lstrip()) and not line.rstrip().endswith(":"))


def _prose_ends(text: str, start: int = 0, end: int | None = None, join_wrapped: bool = True) -> list[int]:
    """Character starts of the units after the first in text[start:end]: after each sentence and
    at each line break (that does not wrap a sentence, with ``join_wrapped``)."""
    found = _SENTENCE_END.finditer(text, start, len(text) if end is None else end)
    return [m.end() for m in found if not (join_wrapped and m.group("line") == "\n" and wraps(text, m.start()))]


def find_unit_starts(text: str, offsets: torch.Tensor, files: "list[FileSpan] | None" = None,
                     join_wrapped: bool = True) -> torch.Tensor:
    """Token index of the first token of each unit of a context (``offsets``: [L, 2] characters of
    each token); ``files`` says which parts of ``text`` are prose and which code (None: all prose);
    ``join_wrapped`` False: every line break ends a unit (``SPLIT_RULE`` 1)."""
    length = offsets.shape[0]
    if length == 0:
        return torch.zeros(0, dtype=torch.long)
    ends = offsets[:, 1].contiguous()

    def token_at(chars: list[int]) -> torch.Tensor:
        # The token that holds each character (tokens often carry the space before a word, so that
        # token may begin before the boundary).
        return torch.searchsorted(ends, torch.tensor(chars, dtype=torch.long), right=True)

    if files is None:
        char_starts, token_starts = [0, *_prose_ends(text, join_wrapped=join_wrapped)], []
    else:
        char_starts, token_starts = [], []
        for f in files:
            char_starts += [f.header, f.start]
            if f.kind == "code":
                token_starts += code_block_starts(text, f.start, f.end, token_at, CODE_BLOCK_TOKENS)
            else:
                char_starts += _prose_ends(text, f.start, f.end, join_wrapped)
    starts = torch.cat((token_at(char_starts), torch.tensor(token_starts, dtype=torch.long)))
    return torch.unique(starts.clamp(max=length - 1))


def code_block_starts(text: str, start: int, end: int, token_at, max_tokens: int) -> list[int]:
    """First tokens of the blocks of the code in text[start:end] (see the module's docstring)."""
    lines = text[start:end].splitlines(keepends=True)
    line_starts = [start]
    for line in lines:
        line_starts.append(line_starts[-1] + len(line))
    tokens = token_at(line_starts).tolist()  # tokens[i]: first token of line i; tokens[-1]: the end
    out, block, after_blank, indented, decorated = [], tokens[0], True, False, False
    for i, line in enumerate(lines):
        if not line.strip():
            after_blank = True
            continue
        this_indented = line[0] in " \t"
        definition = bool(_DEFINITION.match(line))
        closing = line.lstrip()[0] in ")]}"
        new_block = after_blank or (definition and not decorated) or (indented and not this_indented and not closing)
        if new_block or (tokens[i + 1] - block > max_tokens and tokens[i] > block):
            block = tokens[i]
            out.append(block)
        after_blank, indented = False, this_indented
        decorated = line.lstrip().startswith("@")
    return out


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

    def groups(self, max_tokens: int) -> list[int]:
        """The first unit of each passage: consecutive units merged while they add up to at most
        ``max_tokens`` tokens (a longer unit is a passage alone), covering the context in order."""
        sizes = (self.ends - self.starts).tolist()
        firsts, size = [], max_tokens + 1
        for u, n in enumerate(sizes):
            if size + n > max_tokens:
                firsts.append(u)
                size = 0
            size += n
        return firsts

    def positions(self, chosen: list[int]) -> torch.Tensor:
        """Sorted token positions of the units ``chosen``."""
        return self.read(self.runs(chosen))

    def runs(self, chosen: list[int]) -> list[list[int]]:
        """The units ``chosen`` as runs of consecutive units (adjacent text), in text order."""
        out: list[list[int]] = []
        for u in sorted(set(chosen)):
            if out and u == out[-1][-1] + 1:
                out[-1].append(u)
            else:
                out.append([u])
        return out

    def read(self, runs: list[list[int]]) -> torch.Tensor:
        """The token positions of ``runs`` (each consecutive units) in the order given."""
        if not runs:
            return torch.zeros(0, dtype=torch.long)
        return torch.cat([torch.arange(int(self.starts[run[0]]), int(self.ends[run[-1]])) for run in runs])


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
