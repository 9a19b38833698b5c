"""Recallers: turn the scores of a context's units or tokens into the positions the answer reads.

Every recaller returns unique positions within [0, L), never more than the budget, and all L
positions when the budget covers the context (``whole_context``), in the order the answer reads
them: sorted (text order), or runs of consecutive tokens in the order ``read_order`` gives them.
Each is a small dataclass whose parameters are its config's (ilre/config.py), and each implements
``Recaller``, which is all the pipeline knows of it: a new recaller plugs in with
``ILRe(..., recaller=...)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from .config import PoolingRecallConfig, SentenceRecallConfig
from .lexical import LexicalIndex, numbers, scaled, words
from .units import TextUnits

if TYPE_CHECKING:
    from .prompt import ContextTokens


class Context(Protocol):
    """What a recaller reads of an encoded context besides the scores (``EncodedContext`` is one)."""

    tokens: "ContextTokens"

    def lexical(self, units: TextUnits, context: int) -> LexicalIndex:
        """The BM25 index of these units, each read with ``context`` neighbours on each side."""


class Recaller(Protocol):
    """Chooses what the answer reads, given the query's scores of the context."""

    def units(self, tokens: "ContextTokens") -> TextUnits | None:
        """The units the scorer scores as one (a score per unit); None: a score per token."""

    def recall(self, scores: torch.Tensor, context: Context, question: str, budget: int) -> torch.Tensor:
        """Context positions to read, at most ``budget``, in the order the answer reads them, from
        ``scores`` (per unit of ``units(context.tokens)``, or per token)."""


LOOKALIKE_OVERLAP = 0.5
"""A sentence of the passage read first that shares more than this share of its words that say
something (``LexicalIndex.overlap``) with the sentence that matched best is a look-alike (a list's
next line, another key's needle) and is left out: prose sentences share a few words, a list's
lines most of theirs."""

ECHO_SHARE = 0.5
"""A unit holding at least this share of a question's words, but none of its numbers, echoes it
(``UnitRecaller.echoes``)."""


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
class PoolingRecaller(PoolingRecallConfig):
    """ILRe's multi-pooling-kernel recall.

    A small kernel picks isolated high-scoring tokens; a large one takes whole neighbourhoods
    of a peak, keeping recalled spans semantically whole. Each kernel gets a share of the
    budget and picks its best positions not already taken, so the union is exactly the budget.
    Ties inside a pooled plateau go to the tokens that scored highest themselves.
    """

    def units(self, tokens: "ContextTokens") -> None:
        return None

    def recall(self, scores: torch.Tensor, context: Context, question: str, budget: int) -> torch.Tensor:
        return self.pick(scores, budget)

    def pick(self, scores: torch.Tensor, budget: int) -> torch.Tensor:
        """Positions from one score per token."""
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
class UnitRecaller(SentenceRecallConfig):
    """Recall whole text units (sentences, lines) instead of pooled token neighbourhoods.

    Units are taken best first while they fit in the budget. Small models are confused by
    fragments, so whole units keep each recalled fact readable, and budget that no whole unit
    fits stays unused rather than filled with stray tokens. Units longer than
    ``max_unit_tokens`` are cut into pieces so that one run-on paragraph cannot take the whole
    budget. ``unit_cut`` stops at the first unit scoring below that share of the best unit's
    score: a clear answer then comes with fewer look-alikes (0 keeps taking while the budget lasts).

    With ``lexical_weight``, units rank by their attention plus their match with the question's
    words read with their neighbours, each on a scale of its best. A unit above the cut is taken
    only when its attention or its own words (neighbours left out) also reach ``unit_cut`` of
    theirs: a neighbour that only borrows the question's words is a look-alike that a small reader
    confuses with the answer. Then ``hops`` rounds follow chains of rare words while the budget lasts.

    With ``lexical_passage``, all this comes after the passage (consecutive whole units) whose
    words match the question best, read first as retrieval-augmented generation reads it: the
    answer often sits beside the sentence that matches.
    """

    def units(self, tokens: "ContextTokens") -> TextUnits:
        return self.split(tokens.unit_starts(), len(tokens))

    def split(self, unit_starts: torch.Tensor | None, length: int) -> TextUnits:
        """The units of a context of ``length`` tokens whose sentences start at ``unit_starts``."""
        return TextUnits.of(unit_starts, length, self.max_unit_tokens)

    def recall(self, scores: torch.Tensor, context: Context, question: str, budget: int) -> torch.Tensor:
        units = self.units(context.tokens)
        if (whole := whole_context(units.length, budget)) is not None:
            return whole
        matched = self.lexical_weight or self.hops or self.lexical_passage or self.passage
        lexical = context.lexical(units, self.lexical_context) if matched else None
        echoes = self.echoes(lexical, question) if lexical is not None and self.question_numbers else set()
        first = self.best_passage(lexical, units, question, budget, echoes) if lexical is not None else []
        candidates = None
        if lexical is not None and self.lexical_weight:
            attention = scaled(scores)
            candidates = (attention >= self.unit_cut) | (scaled(lexical.own_scores(question)) >= self.unit_cut)
            scores = attention + self.lexical_weight * scaled(lexical.scores(question))
        if echoes:
            candidates = torch.ones(len(units), dtype=torch.bool) if candidates is None else candidates.clone()
            candidates[list(echoes)] = False
        chosen = found = self.choose(scores, units, budget, candidates, first, lexical)
        asked = len(chosen)
        for _ in range(self.hops if lexical is not None else 0):
            before = len(chosen)
            chosen = self.extend(chosen, lexical.linked(found, question, set(chosen) | echoes), units, budget)
            found = chosen[before:]
            if not found:
                break
        return self.read(units, chosen, asked)

    def read(self, units: TextUnits, chosen: list[int], asked: int) -> torch.Tensor:
        """The token positions of the units ``chosen`` (in the order taken: the first ``asked`` for
        the question, the rest by the hops) in the order ``read_order`` says: with 'best_last', the
        runs of adjacent units chosen for the question by their best unit's place, the first taken
        last, then the runs the hops added, in text order (a chain goes on from its first link)."""
        runs = units.runs(chosen)
        if self.read_order == "text":
            return units.read(runs)
        place = {u: i for i, u in enumerate(chosen)}
        best = [min(place[u] for u in run) for run in runs]
        for_question = sorted((i for i in range(len(runs)) if best[i] < asked), key=best.__getitem__, reverse=True)
        by_hops = [i for i in range(len(runs)) if best[i] >= asked]
        return units.read([runs[i] for i in for_question + by_hops])

    @staticmethod
    def echoes(lexical: LexicalIndex, question: str) -> set[int]:
        """Units that repeat the question's wording (at least ``ECHO_SHARE`` of its other words) but
        hold none of its numbers that the context holds, nor do their neighbours (a sentence wrapped
        over two lines keeps its number in the next): the same question asked of another value (a
        worked example), not its answer. None when the question holds no such number."""
        asked = set(numbers(question))
        held = lexical.holding(list(asked))
        if not held.any():
            return set()
        near = np.convolve(held > 0, np.ones(2 * lexical.context + 1), mode="same") > 0
        others = set(words(question)) - asked
        share = lexical.holding(list(others)) / max(1, len(others))
        return set(np.flatnonzero((share >= ECHO_SHARE) & ~near).tolist())

    def best_passage(self, lexical: LexicalIndex, units: TextUnits, question: str, budget: int,
                     echoes: set[int] = frozenset()) -> list[int]:
        """The units of the passage of at most ``lexical_passage`` tokens whose words match the
        question best (the first such in text order), without look-alikes of its best-matching unit
        (``LOOKALIKE_OVERLAP``), ``echoes`` of the question and units of common words only (filler that
        draws a small reader away from the answer); with ``question_numbers``, the best among the
        passages holding the most of the question's numbers. None when no word matches or it does
        not fit."""
        if not self.lexical_passage:
            return []
        firsts = units.groups(self.lexical_passage)
        passages = lexical.grouped(firsts)
        scores = passages.scores(question)
        if not scores.numel() or float(scores.max()) <= 0:
            return []
        if self.question_numbers and (held := passages.holding(numbers(question))).any():
            scores = torch.from_numpy(held).float() * (float(scores.max()) + 1) + scores  # numbers first
        g = int(torch.argmax(scores))
        passage = [u for u in range(firsts[g], firsts[g + 1] if g + 1 < len(firsts) else len(units))
                   if u not in echoes]
        if not passage:
            return []
        anchor = passage[int(torch.argmax(lexical.own_scores(question)[passage]))]
        passage = [u for u in passage if u == anchor or self.beside(lexical, u, anchor, passages)]
        return passage if int((units.ends[passage] - units.starts[passage]).sum()) <= budget else []

    @staticmethod
    def beside(lexical: LexicalIndex, unit: int, anchor: int, among: LexicalIndex) -> bool:
        """Whether ``unit`` is worth reading beside ``anchor``: not a look-alike of it (sharing more
        than ``LOOKALIKE_OVERLAP`` of its words that say something, or a line of the same form:
        another key's line of a list) and not filler, words that most of ``among``'s units hold."""
        return (lexical.overlap(unit, anchor) <= LOOKALIKE_OVERLAP and lexical.says_something(unit, among)
                and not lexical.same_form(unit, anchor))

    def choose(self, unit_scores: torch.Tensor, units: TextUnits, budget: int,
               candidates: torch.Tensor | None = None, first: list[int] = (),
               lexical: LexicalIndex | None = None) -> list[int]:
        """Indices of the best units that fit in ``budget`` (in the order taken), given a score per unit.

        ``candidates`` (a [U] bool mask), when given, says which units may be taken at all;
        ``first``: units already taken, which fit in the budget; ``lexical``: the units' words, by
        which ``passage`` judges a unit's neighbours: none beside a line of a list
        (``LexicalIndex.listed``: they would crowd out the list's other lines, the needles of several
        keys or values), nor any not worth reading beside it (``beside``); without words, none.
        """
        unit_scores = _finite_order(unit_scores).cpu()
        order = torch.argsort(unit_scores, descending=True, stable=True)
        floor = self.unit_cut * float(unit_scores[order[0]]) if order.numel() and self.unit_cut else float("-inf")
        allowed = unit_scores >= floor  # one comparison for all units: a million-token context has ~80K
        if candidates is not None:
            allowed &= candidates.cpu()
        taken = order[allowed[order]].tolist()
        if self.passage and lexical is not None:  # each unit, then its neighbours nearest first, judged lazily
            listed = lexical.listed([*first, *taken])
            taken = (v for u in taken for d in range(self.passage + 1) for v in ((u - d, u + d) if d else (u,))
                     if 0 <= v < len(units) and (not d or (u not in listed and self.beside(lexical, v, u, lexical))))
        return self.extend(list(first), taken, units, budget)

    @staticmethod
    def extend(chosen: list[int], candidates: Iterable[int], units: TextUnits, budget: int) -> list[int]:
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

    def take(self, unit_scores: torch.Tensor, units: TextUnits, budget: int) -> torch.Tensor:
        """Sorted token positions of the best units that fit in ``budget``, given a score per unit."""
        if (whole := whole_context(units.length, budget)) is not None:
            return whole
        return units.positions(self.choose(unit_scores, units, budget))

    def pick(self, scores: torch.Tensor, budget: int, unit_starts: torch.Tensor | None = None) -> torch.Tensor:
        """Positions from one score per token: a unit scores as its best token."""
        units = self.split(unit_starts, scores.numel())
        return self.take(units.best(scores), units, budget).to(scores.device)


RECALLERS = {"sentence": UnitRecaller, "token": PoolingRecaller}
"""The recaller of each ``ILReConfig.recall_unit``."""
