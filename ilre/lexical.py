"""Words of the question in each recall unit: BM25, and the rare words that link units into chains.

The retrieval layer's attention of a small model is a blurry match for a question's rare words
(a name, a flag, a number), which a word count finds exactly; the attention finds what is worded
otherwise. ILRe's sentence recall adds the two (docs/parameters.md measures each alone and both).

A unit is matched with its neighbours on each side (``context``): a sentence alone is too short
for BM25's statistics, and the words that tie it to the question are often in the sentence before.
Its own words count twice, so that it ranks above the neighbours that borrow them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

_WORD = re.compile(r"[a-z0-9]+")

RARE = 3
"""A word in at most this many units names something (a variable, a key, a term): it links them."""


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words: what BM25 matches on."""
    return _WORD.findall(text.lower())


def scaled(scores: torch.Tensor) -> torch.Tensor:
    """Scores divided by their best, so that two kinds of score add on one scale (all zero stays zero)."""
    scores = scores.float().nan_to_num(nan=0.0)
    best = scores.max() if scores.numel() else scores.new_zeros(())
    return scores / best if best > 0 else torch.zeros_like(scores)


@dataclass
class LexicalIndex:
    """BM25 over a context's units, each unit read with ``context`` neighbours on each side
    (its own words counted twice).

    Built once per context and unit split (``EncodedContext.lexical``), then asked many questions.
    """

    unit_words: list[list[str]]
    context: int = 1
    k1: float = 1.5
    b: float = 0.75
    _bm25: object = field(default=None, repr=False)
    _postings: dict[str, list[int]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.context < 0:
            raise ValueError(f"context must be at least 0, got {self.context}")

    @classmethod
    def of(cls, texts: list[str], context: int = 1) -> "LexicalIndex":
        return cls([words(t) for t in texts], context)

    def __len__(self) -> int:
        return len(self.unit_words)

    def scores(self, question: str) -> torch.Tensor:
        """BM25 of every unit (with its neighbours) against the question, [U] float32."""
        if not self.unit_words:
            return torch.zeros(0)
        if self._bm25 is None:
            from rank_bm25 import BM25Okapi

            c, w = self.context, self.unit_words
            # the unit's own words twice, its neighbours' once: a neighbour never ties with the unit
            docs = [[x for part in (*w[max(0, i - c):i], w[i], *w[i:i + c + 1]) for x in part] or ["_"]
                    for i in range(len(w))]
            self._bm25 = BM25Okapi(docs, k1=self.k1, b=self.b)
        return torch.from_numpy(self._bm25.get_scores(words(question))).float()

    def linked(self, found: list[int], question: str, exclude: set[int]) -> list[int]:
        """Units that share a rare word (in at most ``RARE`` units) with the units ``found``, not
        with the question: the next links of a chain. Most shared rare words first, then text order."""
        if self._postings is None:
            postings: dict[str, list[int]] = {}
            for u, ws in enumerate(self.unit_words):
                for x in set(ws):
                    postings.setdefault(x, []).append(u)
            self._postings = postings
        asked = set(words(question))
        counts: dict[int, int] = {}
        for u in found:
            for x in set(self.unit_words[u]) - asked:
                units = self._postings.get(x, ())
                if len(units) <= RARE:
                    for v in units:
                        if v not in exclude:
                            counts[v] = counts.get(v, 0) + 1
        return sorted(counts, key=lambda v: (-counts[v], v))
