"""Recaller invariants for any scores: sorted, unique, in range, within the budget; units whole."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ilre.recaller import PoolingRecaller, UnitRecaller, split_budget
from ilre.units import TextUnits, split_long_units

scores_st = st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32), min_size=1, max_size=300)
kernels_st = st.lists(st.sampled_from([1, 3, 5, 7, 31, 63]), min_size=1, max_size=4).map(tuple)


def _check(pos: torch.Tensor, length: int, budget: int, exact: bool = True) -> None:
    assert pos.dtype == torch.long
    if exact or budget >= length:
        assert pos.numel() == min(budget, length)
    assert pos.numel() <= budget
    assert torch.equal(pos, torch.unique(pos))  # unique and sorted
    if pos.numel():
        assert 0 <= int(pos.min()) and int(pos.max()) < length


@settings(max_examples=150, deadline=None)
@given(scores=scores_st, budget=st.integers(0, 400), kernels=kernels_st, pooling=st.sampled_from(["max", "avg"]))
def test_pooling_recaller_invariants(scores, budget, kernels, pooling):
    s = torch.tensor(scores)
    _check(PoolingRecaller(kernels, pooling=pooling).pick(s, budget), s.numel(), budget)


@settings(max_examples=150, deadline=None)
@given(scores=scores_st, budget=st.integers(0, 400), data=st.data(), max_unit=st.integers(1, 40))
def test_unit_recaller_invariants(scores, budget, data, max_unit):
    s = torch.tensor(scores)
    starts = torch.tensor(sorted(set(data.draw(st.lists(st.integers(0, s.numel() - 1), max_size=30)))), dtype=torch.long)
    recaller = UnitRecaller(max_unit_tokens=max_unit, unit_cut=data.draw(st.sampled_from([0.0, 0.5])))
    pos = recaller.pick(s, budget, starts)
    _check(pos, s.numel(), budget, exact=False)
    units = recaller.split(starts, s.numel())
    taken = torch.zeros(s.numel(), dtype=torch.bool)
    taken[pos] = True
    for a, b in zip(units.starts.tolist(), units.ends.tolist()):
        # no fragments: a unit (a line, a sentence or a piece of at most max_unit tokens) is taken whole or not at all
        assert taken[a:b].all() or not taken[a:b].any()
        assert b - a <= max_unit
    if budget < s.numel() and recaller.unit_cut:
        best = units.best(s)
        kept = best[[int(u) for u in units.index()[pos].unique()]] if pos.numel() else best[:0]
        assert (kept >= recaller.unit_cut * best.max()).all()


def test_a_line_shorter_than_the_cap_is_never_cut():
    """A 78-token line (a uuid needle) stays whole with the default cap, and is not split to fill the budget."""
    starts = torch.tensor([0, 30, 108, 140])  # the line is [30, 108)
    s = torch.zeros(200)
    s[100] = 1.0  # its best token sits near its end
    pos = UnitRecaller().pick(s, 100, starts)
    assert pos.tolist() == list(range(30, 108))


def test_budget_no_whole_unit_fits_stays_unused():
    starts = torch.tensor([0, 50])
    s = torch.arange(100, dtype=torch.float)
    assert UnitRecaller().pick(s, 40, starts).numel() == 0  # no stray single tokens


def test_cut_drops_units_far_below_the_best():
    units = TextUnits.of(torch.tensor([0, 10, 20, 30]), 40, 128)
    scores = torch.tensor([1.0, 0.9, 0.2, 0.1])
    assert UnitRecaller(unit_cut=0.5).take(scores, units, 40 - 1).tolist() == list(range(0, 20))
    assert UnitRecaller(unit_cut=0.0).take(scores, units, 39).tolist() == list(range(0, 30))


@given(budget=st.integers(0, 10_000), shares=st.lists(st.floats(0.01, 100), min_size=1, max_size=6))
def test_split_budget_adds_up(budget, shares):
    quotas = split_budget(budget, tuple(shares))
    assert sum(quotas) == budget and min(quotas) >= 0


def test_single_kernel_takes_the_top_tokens():
    s = torch.tensor([0.1, 0.9, 0.2, 0.8, 0.0, 0.7])
    assert PoolingRecaller((1,)).pick(s, 3).tolist() == [1, 3, 5]


def test_large_kernel_takes_the_neighbourhood_of_a_peak():
    s = torch.zeros(50)
    s[20] = 1.0
    s[40] = 0.5
    assert PoolingRecaller((7,)).pick(s, 7).tolist() == list(range(17, 24))


def test_multi_kernel_covers_isolated_peaks_and_a_span():
    s = torch.rand(200, generator=torch.Generator().manual_seed(0)) * 0.01
    s[[10, 100, 180]] = 1.0
    pos = PoolingRecaller((1, 9), shares=(1, 3)).pick(s, 12).tolist()
    assert {10, 100, 180} <= set(pos)
    assert len(pos) == 12


def test_unit_recaller_takes_whole_best_units():
    s = torch.zeros(30)
    s[12] = 1.0  # inside the unit [10, 15)
    starts = torch.tensor([0, 5, 10, 15, 20, 25])
    assert UnitRecaller().pick(s, 5, starts).tolist() == [10, 11, 12, 13, 14]


def test_split_long_units_caps_unit_length():
    starts = split_long_units(torch.tensor([0, 100]), 130, 40)
    assert starts.tolist() == [0, 40, 80, 100]


@pytest.mark.parametrize("bad", [dict(kernels=(2,)), dict(kernels=()), dict(kernels=(1, 3), shares=(1,)),
                                 dict(pooling="min")])
def test_bad_pooling_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        PoolingRecaller(**bad)


@pytest.mark.parametrize("bad", [dict(max_unit_tokens=0), dict(unit_cut=1.0), dict(unit_cut=-0.1)])
def test_bad_unit_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        UnitRecaller(**bad)


wild_st = st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=200)


@settings(max_examples=200, deadline=None)
@given(scores=wild_st, budget=st.integers(0, 300), kernels=kernels_st, data=st.data())
def test_any_scores_nan_and_infinities_included_give_valid_positions(scores, budget, kernels, data):
    """NaN counts as the lowest score; whatever the scores, positions stay valid."""
    s = torch.tensor(scores)
    _check(PoolingRecaller(kernels).pick(s, budget), s.numel(), budget, exact=False)
    starts = torch.tensor(sorted(set(data.draw(st.lists(st.integers(0, s.numel() - 1), max_size=20)))),
                          dtype=torch.long)
    recaller = UnitRecaller(max_unit_tokens=data.draw(st.integers(1, 30)), unit_cut=data.draw(st.sampled_from([0.0, 0.2])))
    _check(recaller.pick(s, budget, starts), s.numel(), budget, exact=False)


def test_nan_ranks_lowest():
    s = torch.tensor([float("nan"), 1.0, 0.0, float("nan")])
    assert PoolingRecaller((1,)).pick(s, 1).tolist() == [1]
    assert UnitRecaller(max_unit_tokens=1, unit_cut=0.0).pick(s, 2, torch.arange(4)).tolist() == [1, 2]


@settings(max_examples=150, deadline=None)
@given(data=st.data(), cut=st.sampled_from([0.0, 0.2, 0.5]), budget=st.integers(1, 300))
def test_choose_takes_units_best_first_above_the_cut_among_the_candidates(data, cut, budget):
    """What ``choose`` takes, against the rule written out unit by unit: units by descending score
    (ties in unit order), at least ``unit_cut`` of the best, allowed by ``candidates``, while they fit."""
    n = data.draw(st.integers(1, 60))
    scores = torch.tensor(data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 7.0, float("-inf")]),
                                             min_size=n, max_size=n)))
    candidates = data.draw(st.none() | st.lists(st.booleans(), min_size=n, max_size=n).map(torch.tensor))
    sizes = data.draw(st.lists(st.integers(1, 20), min_size=n, max_size=n))
    starts = torch.tensor([0] + sizes[:-1]).cumsum(0)
    units = TextUnits(starts, starts + torch.tensor(sizes))
    order = sorted(range(n), key=lambda u: -float(scores[u]))  # stable: ties in unit order
    floor = cut * float(scores[order[0]]) if cut else float("-inf")
    expected, left = [], budget
    for u in order:
        if float(scores[u]) >= floor and (candidates is None or bool(candidates[u])) and 0 < sizes[u] <= left:
            expected.append(u)
            left -= sizes[u]
    assert UnitRecaller(unit_cut=cut).choose(scores, units, budget, candidates) == expected


def test_best_last_reads_the_question_s_runs_best_last_then_the_hops_in_text_order():
    """Units of 10 tokens; taken for the question 1 (the best), then 5 and its neighbour 6; the hops
    added 3. 'best_last' reads 5-6, then 1 next to the question, then the hop's 3; 'text' sorts."""
    units = TextUnits(torch.arange(0, 80, 10), torch.arange(10, 90, 10))
    chosen, asked = [1, 5, 6, 3], 3
    best_last = UnitRecaller(read_order="best_last").read(units, chosen, asked)
    assert best_last.tolist() == [*range(50, 70), *range(10, 20), *range(30, 40)]
    text = UnitRecaller(read_order="text").read(units, chosen, asked)
    assert torch.equal(text, torch.sort(best_last).values)
