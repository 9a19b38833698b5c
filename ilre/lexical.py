"""Words of the question in each recall unit: BM25, and the rare words that link units into chains.

The retrieval layer's attention of a small model is a blurry match for a question's rare words
(a name, a flag, a number), which a word count finds exactly; the attention finds what is worded
otherwise. ILRe's sentence recall adds the two (docs/parameters.md measures each alone and both).

A unit is matched with its neighbours on each side (``context``): a sentence alone is too short
for BM25's statistics, and the words that tie it to the question are often in the sentence before.
Its own words count twice, so that it ranks above the neighbours that borrow them.

The index is a few flat arrays (every unit's word ids, unit after unit), so that a million-token
context is matched in numpy without a Python loop per unit, and a saved index stores it as it is.
Its scores are BM25 Okapi exactly as rank_bm25 computes them over the same neighbourhoods with
``epsilon=0`` (tests/test_lexical.py checks it): a word in more than half of the neighbourhoods
counts nothing. rank_bm25's default floor (a quarter of the mean idf) let the words every line of a
RULER haystack shares ("special magic number") outweigh the key that tells the lines apart, and on
the tuning questions it read no more answering passages (docs/parameters.md).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Iterable

import numpy as np
import torch

_WORD = re.compile(r"[a-z0-9]+")

RARE = 3
"""A word in at most this many units names something (a variable, a key, a term): it links them."""
FORM_WORDS = 3
"""The fewest common words that make a line's form (``LexicalIndex.same_form``): two short prose
sentences may share one or two ("it is"), a list's lines share their whole wording."""
ONE_FORM = 0.8
"""How alike two lines' forms must be to be one (difflib's ratio: twice the words they share, in
order, over both lengths). A word of a key that recurs in a few lines counts as common ("wakeful"
in "wakeful-peer"), so one line of a list can hold a word more than the others."""
EMPTY = "_"
"""The one word of a neighbourhood without words (rank_bm25 needs one; it matches no question)."""


def distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values of ``values``, ascending (``np.unique``'s result), by one sort: numpy 2.4's
    ``np.unique`` hashes integers first, which took 1.5 s for the 1.5M (word, unit) pairs of a
    million-token index where the sort takes 0.1 s."""
    ordered = np.sort(values, axis=None)
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if ordered.size else ordered


def _singular(word: str) -> str:
    """A plural's singular by its spelling alone ("numbers", "entries"), so a question's "number"
    matches the text's "numbers"; words ending in -ss, -us, -is keep their s."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words(text: str) -> list[str]:
    """Lower-cased alphanumeric words, plurals made singular: what BM25 matches on."""
    return [_singular(w) for w in _WORD.findall(text.lower())]


def numbers(text: str) -> list[str]:
    """The words of ``text`` with a digit in them: numbers, versions, keys such as uuids."""
    return [w for w in words(text) if any(c.isdigit() for c in w)]


def scaled(scores: torch.Tensor) -> torch.Tensor:
    """Scores divided by their best, so that two kinds of score add on one scale (all zero stays zero)."""
    scores = scores.float().nan_to_num(nan=0.0)
    best = scores.max() if scores.numel() else scores.new_zeros(())
    return scores / best if best > 0 else torch.zeros_like(scores)


@dataclass
class LexicalIndex:
    """BM25 over a context's units, each read with ``context`` neighbours on each side (its own
    words counted twice). Built once per context and unit split, then asked many questions."""

    vocab: list[str]
    word_ids: np.ndarray
    """[N] int32: the id in ``vocab`` of every unit's words, unit after unit."""
    bounds: np.ndarray
    """[U + 1] int64: unit u's words are ``word_ids[bounds[u]:bounds[u + 1]]``."""
    context: int = 1
    k1: float = 1.5
    b: float = 0.75
    epsilon: float = 0.0
    """BM25 Okapi's parameters: rank_bm25's defaults, but for the idf floor of common words (see above)."""
    _ids: dict[str, int] = field(default_factory=dict, repr=False)
    _stats: tuple | None = field(default=None, repr=False)
    _alone: "LexicalIndex | None" = field(default=None, repr=False)
    _grouped: dict = field(default_factory=dict, repr=False)
    _counts: np.ndarray | None = field(default=None, repr=False)
    _pairs: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.context < 0:
            raise ValueError(f"context must be at least 0, got {self.context}")
        self._ids = {w: i for i, w in enumerate(self.vocab)}

    @classmethod
    def of(cls, texts: list[str], context: int = 1) -> "LexicalIndex":
        ids: dict[str, int] = {}
        flat: list[int] = []
        bounds = [0]
        for text in texts:
            flat.extend(ids.setdefault(w, len(ids)) for w in words(text))
            bounds.append(len(flat))
        return cls(list(ids), np.asarray(flat, dtype=np.int32), np.asarray(bounds, dtype=np.int64), context)

    def with_context(self, context: int) -> "LexicalIndex":
        """The same words, matched with another neighbourhood (their (word, unit) pairs shared)."""
        return LexicalIndex(self.vocab, self.word_ids, self.bounds, context, self.k1, self.b, self.epsilon,
                            _pairs=self._pairs)

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def grouped(self, firsts: list[int]) -> "LexicalIndex":
        """The same words with consecutive units grouped into passages, the ones starting at
        ``firsts`` (ascending, the first 0), each passage matched alone (kept: questions share it)."""
        key = (len(firsts), sum(firsts))
        if key not in self._grouped:
            self._grouped[key] = LexicalIndex(self.vocab, self.word_ids, self.bounds[[*firsts, len(self)]],
                                              0, self.k1, self.b, self.epsilon)
        return self._grouped[key]

    def _spread(self, per_unit: np.ndarray) -> np.ndarray:
        """Per unit values summed over each unit's neighbourhood, its own counted twice."""
        c = self.context
        kernel = np.ones(2 * c + 1)
        kernel[c] = 2
        return np.convolve(per_unit.astype(np.float64), kernel, mode="full")[c:c + len(per_unit)]

    def _unit_of_word(self) -> np.ndarray:
        return np.repeat(np.arange(len(self), dtype=np.int64), np.diff(self.bounds))

    def pairs(self) -> np.ndarray:
        """Every (word, unit) pair of the context once, as ``word * U + unit``, ascending (found
        once, then kept): what the idf, the rare words and the units holding a word count."""
        if self._pairs is None:
            self._pairs = distinct(self.word_ids.astype(np.int64) * len(self) + self._unit_of_word())
        return self._pairs

    def pairs_of(self, ids: Iterable[int]) -> np.ndarray:
        """The pairs (``pairs``) of the words ``ids`` only, ascending: the pairs are sorted by word,
        so each word's are one slice, found by binary search instead of a pass over every word."""
        ids = np.asarray(sorted(set(ids)), dtype=np.int64)
        pairs, n = self.pairs(), max(len(self), 1)
        starts, ends = np.searchsorted(pairs, ids * n), np.searchsorted(pairs, (ids + 1) * n)
        return np.concatenate([pairs[a:b] for a, b in zip(starts, ends)] or [pairs[:0]])

    def stats(self) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """(neighbourhood lengths, their mean, idf of every vocab word, the unit of every word)."""
        if self._stats is None:
            n = len(self)
            units = self._unit_of_word()
            doc_len = self._spread(np.diff(self.bounds))
            empty = doc_len == 0
            doc_len[empty] = 1  # the EMPTY word
            # df: the neighbourhoods holding each word = the union of [u - c, u + c] over its units
            pairs = self.pairs()
            term, unit = pairs // max(n, 1), pairs % max(n, 1)
            start, end = np.maximum(unit - self.context, 0), np.minimum(unit + self.context, n - 1)
            nxt = np.append(start[1:], n + 1)
            same = np.append(term[1:] == term[:-1], False)
            cover = np.where(same, np.minimum(end, nxt - 1), end) - start + 1
            df = np.bincount(term, weights=cover, minlength=len(self.vocab))
            if empty.any():
                df = np.append(df, empty.sum())
            idf = np.log(n - df + 0.5) - np.log(df + 0.5)
            idf[idf < 0] = self.epsilon * idf.mean()
            self._stats = (doc_len, float(doc_len.mean()), idf, units)
        return self._stats

    def scores(self, question: str) -> torch.Tensor:
        """BM25 of every unit (with its neighbours) against the question, [U] float32."""
        if len(self) == 0:
            return torch.zeros(0)
        doc_len, avgdl, idf, units = self.stats()
        norm = self.k1 * (1 - self.b + self.b * doc_len / avgdl)
        out = np.zeros(len(self))
        for w in words(question):
            i = self._ids.get(w)
            if i is None:
                continue
            tf = self._spread(np.bincount(units[self.word_ids == i], minlength=len(self)))
            out += idf[i] * tf * (self.k1 + 1) / (tf + norm)
        return torch.from_numpy(out).float()

    def own_scores(self, question: str) -> torch.Tensor:
        """BM25 of every unit alone (no neighbours) against the question: what the unit itself says."""
        if self.context == 0:
            return self.scores(question)
        if self._alone is None:
            self._alone = self.with_context(0)
        return self._alone.scores(question)

    def holding(self, question_words: list[str]) -> np.ndarray:
        """[U] how many of ``question_words`` (distinct) each unit holds itself."""
        pairs = self.pairs_of(self._ids[w] for w in question_words if w in self._ids)
        return np.bincount(pairs % max(len(self), 1), minlength=len(self))

    def overlap(self, unit: int, other: int) -> float:
        """The share of ``unit``'s distinct words that say something (``telling``: in at most half
        of the neighbourhoods) that ``other`` also holds; 0 for a unit without such words. Common
        words do not count: "The default is 500 milliseconds." shares "the", "is" and "milliseconds"
        with the sentence before it, yet says what that one does not."""
        mine = set(self.telling(unit, self).tolist())
        theirs = set(self.word_ids[self.bounds[other]:self.bounds[other + 1]].tolist())
        return len(mine & theirs) / len(mine) if mine else 0.0

    def unit_counts(self) -> np.ndarray:
        """[V] how many units hold each vocab word (found once, then kept): at most ``RARE`` is rare."""
        if self._counts is None:
            self._counts = np.bincount(self.pairs() // max(len(self), 1), minlength=len(self.vocab))
        return self._counts

    def form(self, unit: int) -> tuple[int, ...]:
        """The unit's words in order, its rare ones (in at most ``RARE`` units: names, keys, values)
        left out: lines of one form ("The number for <key> is: <value>.") have the same."""
        ids = self.word_ids[self.bounds[unit]:self.bounds[unit + 1]]
        return tuple(ids[self.unit_counts()[ids] > RARE].tolist())

    def same_form(self, unit: int, other: int) -> bool:
        """Whether two units are lines of one form (``one_form``)."""
        return one_form(self.form(unit), self.form(other))

    def listed(self, units: Iterable[int]) -> set[int]:
        """Those of ``units`` that are lines of a list among them: another of them has exactly their
        form, as the needles of several keys or values have. Exact, not ``one_form``: ``units`` may
        be thousands of a long document's sentences, too many to compare pairwise."""
        forms = {u: self.form(u) for u in units}
        counts = Counter(f for f in forms.values() if len(f) >= FORM_WORDS)
        return {u for u, f in forms.items() if counts[f] > 1}

    def telling(self, unit: int, among: "LexicalIndex") -> np.ndarray:
        """The word ids of ``unit`` that ``among`` (an index of the same words) counts, with an idf
        above 0: words in at most half of its units."""
        ids = self.word_ids[self.bounds[unit]:self.bounds[unit + 1]]
        return ids[among.stats()[2][ids] > 0]

    def says_something(self, unit: int, among: "LexicalIndex") -> bool:
        """Whether ``unit`` holds a word that ``among`` counts (``telling``). A unit of common words
        only (filler, boilerplate) says nothing."""
        return self.telling(unit, among).size > 0

    def linked(self, found: list[int], question: str, exclude: set[int]) -> list[int]:
        """Units, not in ``exclude`` (those taken), that share a rare word (in at most ``RARE``
        units) with the units ``found``, not with the question: the next links of a chain. Most
        shared rare words first, then text order. A line of the form of one taken (``one_form``)
        is another entry of its list (another key's line sharing a part of its name), not a link."""
        asked = {self._ids[w] for w in words(question) if w in self._ids}
        mine = {int(i) for u in found for i in self.word_ids[self.bounds[u]:self.bounds[u + 1]]} - asked
        if not mine:
            return []
        pairs = self.pairs_of(mine)
        term, unit = pairs // len(self), pairs % len(self)
        rare = (self.unit_counts()[term] <= RARE) & ~np.isin(unit, list(exclude))
        counts = np.bincount(unit[rare], minlength=len(self))
        linked = np.flatnonzero(counts)
        taken = {self.form(u) for u in exclude}
        forms = {int(u): self.form(int(u)) for u in linked[np.argsort(-counts[linked], kind="stable")]}
        return [u for u, form in forms.items() if not any(one_form(form, t) for t in taken)]


def one_form(form: tuple[int, ...], other: tuple[int, ...]) -> bool:
    """Whether two lines' forms (``LexicalIndex.form``) are one: at least ``FORM_WORDS`` common words
    each, and at least ``ONE_FORM`` alike."""
    shorter = min(len(form), len(other))
    if shorter < FORM_WORDS or 2 * shorter < ONE_FORM * (len(form) + len(other)):
        return False  # the ratio is at most 2 * shorter / both lengths
    if form == other:
        return True
    alike = SequenceMatcher(None, form, other, autojunk=False)
    return alike.quick_ratio() >= ONE_FORM and alike.ratio() >= ONE_FORM  # quick_ratio bounds ratio
