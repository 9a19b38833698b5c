"""The lexical half of sentence recall: BM25 of units with their neighbours, fusion, chain hops."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import tiny_model
from ilre.config import ILReConfig
from ilre.lexical import LexicalIndex, distinct, numbers, one_form, scaled, words
from ilre.pipeline import ILRe
from ilre.recaller import TextUnits

UNITS = ["The weather was mild.", "Nothing happened here.", "The vault code is 4417.",
         "Cats sleep a lot.", "Dogs bark at night.", "Rain fell in June.", "Trees grew tall.",
         "Boats left the harbour.", "Bread was baked daily.", "Lamps were lit at dusk."]


def test_words_are_lowercase_alphanumerics_made_singular():
    assert words("The Vault-code: 4417!") == ["the", "vault", "code", "4417"]
    assert words("magic Numbers, entries, class, status, axis") == ["magic", "number", "entry", "class", "status",
                                                                    "axis"]


def test_the_unit_with_the_questions_rare_words_scores_best():
    index = LexicalIndex.of(UNITS, context=0)
    scores = index.scores("What is the vault code?")
    assert int(scores.argmax()) == 2 and scores.shape == (len(UNITS),)


def test_neighbours_lend_their_words():
    alone = LexicalIndex.of(UNITS, context=0).scores("Which animals sleep?")
    with_neighbours = LexicalIndex.of(UNITS, context=1).scores("Which animals sleep?")
    assert alone[2] == 0 and with_neighbours[2] > 0  # unit 2 sits next to "Cats sleep a lot."


def test_scaled_puts_the_best_at_one_and_leaves_zeros():
    assert torch.equal(scaled(torch.tensor([1.0, 4.0, 2.0])), torch.tensor([0.25, 1.0, 0.5]))
    assert torch.equal(scaled(torch.zeros(3)), torch.zeros(3))


def test_linked_follows_rare_words_not_shared_with_the_question():
    chain = ["VAR QXZ = 51306.", "Filler line one.", "VAR PLM = VAR QXZ.", "Filler line two.",
             "VAR TRW = VAR PLM.", "Filler line three.", "VAR ABC = 777.", "VAR DEF = VAR ABC."]
    index = LexicalIndex.of(chain, context=0)
    question = "Which variables hold 51306?"
    assert index.linked([0], question, {0}) == [2]
    assert index.linked([2], question, {0, 2}) == [4]
    assert index.linked([4], question, {0, 2, 4}) == []


def test_linked_leaves_out_another_keys_line_that_shares_a_part_of_its_name():
    """A line of the form of one taken that shares a rare part of its key's name ("uttermost") is
    another entry of the list, not a chain's link; prose that shares it is a link."""
    keys = ["uttermost-father", "uttermost-deed", "crabby-porpoise", "shy-owl", "wakeful-peer"]
    lines = [f"One of the special magic numbers for {key} is: {100 + i}." for i, key in enumerate(keys)]
    index = LexicalIndex.of([*lines, "The uttermost care was taken.", "Nothing else happened."], context=0)
    question = "What is the special magic number for sweltering-waitress?"
    assert index.same_form(0, 1) and not index.same_form(0, 5)
    assert index.linked([0], question, {0}) == [5]  # not 1, which shares "uttermost" too


@settings(max_examples=80, deadline=None)
@given(units=st.lists(st.lists(st.sampled_from(["ab", "cd", "ef", "gh", "ij", "k1", "z9"]), max_size=6),
                      min_size=1, max_size=25),
       context=st.integers(0, 3), question=st.lists(st.sampled_from(["ab", "cd", "k1", "zz", "ef"]), max_size=5))
def test_scores_are_rank_bm25s_okapi_without_the_idf_floor_over_the_same_neighbourhoods(units, context, question):
    from rank_bm25 import BM25Okapi

    docs = [[w for part in (*units[max(0, i - context):i], units[i], *units[i:i + context + 1]) for w in part]
            or ["_"] for i in range(len(units))]
    expected = BM25Okapi(docs, epsilon=0.0).get_scores(question)
    got = LexicalIndex.of([" ".join(u) for u in units], context).scores(" ".join(question))
    assert torch.allclose(got.double(), torch.from_numpy(expected), rtol=1e-5, atol=1e-6)


def test_words_in_most_units_count_nothing():
    lines = [f"The magic number for {fruit} is {i}." for i, fruit in enumerate(("apple", "pear", "plum", "fig"))]
    scores = LexicalIndex.of(lines, context=0).scores("What is the magic number?")
    assert torch.equal(scores, torch.zeros(4))


def test_negative_context_is_refused():
    with pytest.raises(ValueError, match="context"):
        LexicalIndex.of([], context=-1)


CHAIN = ("The grass is green. " * 30 + "VAR QXZ = 51306. " + "The sky is blue. " * 30 + "VAR PLM = VAR QXZ. "
         + "The sun is warm. " * 30 + "VAR TRW = VAR PLM. " + "The sea is deep. " * 30)


@pytest.fixture
def ilre(tokenizer):
    return ILRe(tiny_model("llama"), tokenizer, ILReConfig(layer=2, budget=160, max_new_tokens=2))


def _read(ilre, encoded, question):
    positions, _ = ilre.recall(encoded, question)
    return ilre.tokenizer.decode(encoded.tokens.ids[positions])


def test_hops_follow_a_chain_that_the_first_round_misses(ilre):
    question = "Which variables hold the value 51306?"
    plain = ilre.with_config(hops=0, lexical_weight=50.0, unit_cut=0.5)
    encoded = plain.encode(CHAIN)
    first = _read(plain, encoded, question)
    assert "51306" in first and "TRW" not in first
    chained = _read(plain.with_config(hops=2), encoded, question)
    assert all(name in chained for name in ("QXZ", "PLM", "TRW"))


FRUITS = ("apple", "pear", "plum", "fig", "kiwi", "lime", "date", "melon", "grape", "peach")
LOOKALIKES = " ".join(f"The magic number for {fruit} is {10 + i}." for i, fruit in enumerate(FRUITS))


def test_a_neighbour_that_only_borrows_the_questions_words_is_not_taken(ilre):
    """Its BM25 with neighbours passes the cut, but neither its attention nor its own words do."""
    encoded = ilre.encode(LOOKALIKES)
    units = ilre.recaller.units(encoded.tokens)
    lexical = encoded.lexical(units, ilre.config.lexical_context)
    question = "What is the magic number for lime?"
    attention = torch.zeros(len(units))
    attention[0] = 1.0  # the attention's own pick: apple's line
    fused = scaled(attention) + scaled(lexical.scores(question))
    lime = 5
    assert (fused[[lime - 1, lime + 1]] >= ilre.config.unit_cut * fused.max()).all()  # a cut on the sum takes them
    read = ilre.tokenizer.decode(encoded.tokens.ids[ilre.recaller.recall(attention, encoded, question, ilre.config.budget)])
    assert "lime is 15" in read and "apple is 10" in read
    assert "date" not in read and "kiwi" not in read


def test_weight_zero_is_attention_alone(ilre):
    encoded = ilre.encode(CHAIN)
    attention = ilre.with_config(lexical_weight=0.0, lexical_passage=0, passage=0, read_order="text")
    queries = attention.prefiller().query_states(encoded.state, attention.template.query("What is QXZ?").ids)
    units = attention.recaller.units(encoded.tokens)
    scores = attention.scorer.score_context(attention.decoder, queries, encoded.state.key_cache,
                                            encoded.prefix_ids.numel(), units=units)
    expected = attention.recaller.take(scores, units, attention.config.budget)
    assert torch.equal(attention.recall(encoded, "What is QXZ?")[0], expected)


def test_a_covering_budget_still_reads_everything_with_words_and_hops(ilre):
    covering = ilre.with_config(budget=10**6, hops=3)
    encoded = covering.encode(CHAIN)
    assert torch.equal(covering.recall(encoded, "What is QXZ?")[0], torch.arange(len(encoded.tokens)))


def test_units_of_the_index_match_the_recallers(ilre):
    encoded = ilre.encode(CHAIN)
    units = TextUnits.of(encoded.tokens.unit_starts(), len(encoded.tokens), 128)
    index = encoded.lexical(units, 1)
    assert len(index) == len(units) and encoded.lexical(units, 1) is index


def test_a_saved_index_carries_the_words_and_recalls_alike(ilre, tmp_path):
    encoded = ilre.encode(CHAIN)
    question = "Which variables hold the value 51306?"
    chained = ilre.with_config(hops=2)
    expected = chained.recall(encoded, question)[0]
    path = encoded.save(tmp_path / "chain.ilre")
    loaded = chained.load_index(path)
    assert loaded.words  # the words came with the file, not found again
    assert torch.equal(chained.recall(loaded, question)[0], expected)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=30), limit=st.integers(1, 64))
def test_groups_cover_the_units_in_order_within_the_limit(sizes, limit):
    starts = torch.tensor([0, *torch.tensor(sizes).cumsum(0)[:-1].tolist()])
    units = TextUnits(starts, starts + torch.tensor(sizes))
    firsts = units.groups(limit)
    assert firsts[0] == 0 and firsts == sorted(set(firsts))
    for a, b in zip(firsts, [*firsts[1:], len(sizes)]):
        assert b - a == 1 or sum(sizes[a:b]) <= limit  # a passage fits, or is one long unit alone
        assert b == len(sizes) or sum(sizes[a:b + 1]) > limit  # and takes every unit that fits


@settings(max_examples=60, deadline=None)
@given(units=st.lists(st.lists(st.sampled_from(["ab", "cd", "ef", "gh", "k1", "z9"]), max_size=5), min_size=1, max_size=20),
       cuts=st.sets(st.integers(1, 19)), question=st.lists(st.sampled_from(["ab", "cd", "k1", "zz"]), max_size=4))
def test_grouped_units_score_as_the_passages_indexed_alone(units, cuts, question):
    firsts = [0, *sorted(c for c in cuts if c < len(units))]
    passages = [" ".join(w for u in units[a:b] for w in u) for a, b in zip(firsts, [*firsts[1:], len(units)])]
    grouped = LexicalIndex.of([" ".join(u) for u in units], context=1).grouped(firsts)
    expected = LexicalIndex.of(passages, context=0).scores(" ".join(question))
    assert torch.allclose(grouped.scores(" ".join(question)), expected)


PROSE = ("The old lighthouse keeper kept a logbook. Every storm was written down by Margaret Ellis. "
         + "Fishing boats came home at dusk. " * 30)


def _passage_read(ilre, context, question, **settings):
    """What recall reads of ``context`` when the attention points only at its last unit."""
    encoded = ilre.encode(context)
    recaller = ilre.with_config(lexical_weight=0.0, hops=0, **settings).recaller
    attention = torch.zeros(len(recaller.units(encoded.tokens)))
    attention[-1] = 1.0
    return ilre.tokenizer.decode(encoded.tokens.ids[recaller.recall(attention, encoded, question, 160)])


def test_the_passage_whose_words_match_best_is_read_with_the_sentence_beside_the_match(ilre):
    question = "Who kept the lighthouse logbook?"
    assert "Margaret Ellis" in _passage_read(ilre, PROSE, question, lexical_passage=96)
    assert "Margaret" not in _passage_read(ilre, PROSE, question, lexical_passage=0)


def test_lookalikes_of_the_matching_line_are_left_out_of_the_passage(ilre):
    read = _passage_read(ilre, LOOKALIKES, "What is the magic number for melon?", lexical_passage=96)
    assert "melon is 17" in read and "peach is 19" in read  # the match, and the attention's last line
    assert [f for f in FRUITS if f in read] == ["melon", "peach"]


def test_the_passage_read_first_is_read_last_next_to_the_question(ilre):
    """The passage whose words match (melon's line) is the best: 'best_last' reads it after the
    attention's pick (peach's line, later in the text), and the prompt's last run before the
    question holds it; 'text' keeps the text's order."""
    question = "What is the magic number for melon?"
    best_last = _passage_read(ilre, LOOKALIKES, question, lexical_passage=96)
    assert best_last.index("peach") < best_last.index("melon")
    text = _passage_read(ilre, LOOKALIKES, question, lexical_passage=96, read_order="text")
    assert text.index("melon") < text.index("peach")
    assert sorted(best_last) == sorted(text)  # the same tokens, another order
    prompt = ilre.tokenizer.decode(ilre.with_config(hops=0, lexical_passage=96).prompt(LOOKALIKES, question))
    last_run = prompt[:prompt.rindex(question)].rsplit(ilre.config.gap_marker, 1)[-1]
    assert "melon is 17" in last_run and ilre.config.gap_marker in prompt


def test_a_passage_longer_than_the_budget_is_not_read(ilre):
    encoded = ilre.encode(LOOKALIKES)
    recaller = ilre.with_config(lexical_passage=64, lexical_weight=0.0, hops=0).recaller
    units = recaller.units(encoded.tokens)
    lexical = encoded.lexical(units, 1)
    assert recaller.best_passage(lexical, units, "What is the magic number for melon?", 64)
    assert recaller.best_passage(lexical, units, "What is the magic number for melon?", 3) == []
    assert recaller.best_passage(lexical, units, "Nothing matches zzz?", 64) == []


FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
PASSKEY = FILLER * 20 + "The pass key is 48213. Remember it. " + FILLER * 20


def test_filler_of_common_words_is_left_out_of_the_passage(ilre):
    """Lines whose every word is in most passages say nothing; around a pass key they drew a small
    reader's answer away from it."""
    encoded = ilre.encode(PASSKEY)
    recaller = ilre.with_config(lexical_passage=128).recaller
    units = recaller.units(encoded.tokens)
    passage = recaller.best_passage(encoded.lexical(units, 1), units, "What is the pass key?", 160)
    assert ilre.tokenizer.decode(encoded.tokens.ids[units.positions(passage)]) == "The pass key is 48213. Remember it. "


def test_says_something_is_false_for_a_unit_of_common_words_only():
    lexical = LexicalIndex.of(["the sky is blue", "the sky is blue", "the key is 48213", "the sky is blue"], 0)
    assert [lexical.says_something(u, lexical) for u in range(4)] == [False, False, True, False]


EXAMPLE = ("Find all variables that are assigned the value 11111 in the text above. "
           "Answer: the variables in the text above that are assigned the value 11111 are AAA and BBB. ")
WORKED = FILLER * 10 + EXAMPLE + FILLER * 10 + "VAR QXZ = 51306. " + FILLER * 10 + "VAR PLM = VAR QXZ. " + FILLER * 10
ASKED = "Find all variables that are assigned the value 51306 in the text above."


def test_numbers_are_the_words_with_a_digit():
    assert numbers("Is RFC 2822 the one of PNG-1.0, or uuid 5a2b-77?") == ["2822", "1", "0", "5a2b", "77"]


def test_holding_counts_the_distinct_words_each_unit_holds_itself():
    lexical = LexicalIndex.of(["a 7 7 b", "c 7", "d", "7 e b"], context=1)
    assert lexical.holding(["7", "b", "zz"]).tolist() == [2, 1, 0, 2]


def test_a_worked_example_of_the_question_with_another_number_is_not_read(ilre):
    """The example echoes every word of the question but its number: the words alone read it first,
    and a small reader answers with the example's answer."""
    encoded = ilre.encode(WORKED)
    words_first = ilre.with_config(hops=1, budget=300, lexical_weight=50.0, unit_cut=0.5)
    with_numbers = _read(words_first, encoded, ASKED)
    assert "51306" in with_numbers and "PLM" in with_numbers and "11111" not in with_numbers
    assert "11111" in _read(words_first.with_config(question_numbers=False), encoded, ASKED)


def test_echoes_need_a_number_of_the_question_that_the_context_holds(ilre):
    encoded = ilre.encode(WORKED)
    recaller = ilre.recaller
    lexical = encoded.lexical(recaller.units(encoded.tokens), 1)
    echoes = recaller.echoes(lexical, ASKED)
    assert echoes and all("11111" in ilre.tokenizer.decode(encoded.tokens.ids[recaller.units(encoded.tokens)
                                                                               .positions([u])]) for u in echoes)
    assert recaller.echoes(lexical, "Find all variables that are assigned a value in the text above.") == set()
    assert recaller.echoes(lexical, "Find all variables that are assigned the value 99999 in the text above.") == set()


def test_a_sentence_wrapped_before_its_number_is_not_an_echo():
    """Units follow lines: the wording of the question on one line, its number on the next, is the
    answer wrapped, not another instance of the question."""
    from ilre.recaller import UnitRecaller

    units = ["The grass is green.", "The old make has been reported to crash when given a makefile with",
             "lines longer than around 20 kB.", "The sky is blue.", "The grass is green.",
             "Some make has been reported to crash when given a makefile with lines of 7 kB."]
    lexical = LexicalIndex.of(units, context=1)
    question = "Which make has been reported to crash when given a makefile with lines longer than 20 kB?"
    assert UnitRecaller.echoes(lexical, question) == {5}


def test_lines_of_one_form_are_told_from_prose_by_their_common_words():
    keys = [f"One of the special magic uuids for {k}-4e1f is: {v}-9a0b." for k, v in
            [("ab12", "cd34"), ("ef56", "gh78"), ("ij90", "kl12"), ("mn34", "op56"), ("qr78", "st90")]]
    prose = ["The special report for the board is due in May.", "One of the drivers was late again."]
    lexical = LexicalIndex.of(keys + prose, 0)
    assert lexical.same_form(0, 3) and lexical.same_form(4, 1)
    assert not lexical.same_form(0, 5) and not lexical.same_form(5, 6)


def test_one_form_allows_a_key_word_that_recurs_in_a_few_lines():
    """A list's line whose key holds a word common enough to count ("wakeful") is still of the
    list's form; short forms and forms that differ in more are not one."""
    line = (1, 2, 3, 4, 5, 6, 7, 8)
    assert one_form(line, line) and one_form(line, (1, 2, 3, 4, 5, 6, 7, 99, 8))
    assert not one_form((1, 2), (1, 2)) and not one_form((1, 2, 3), (1, 2, 4))
    assert not one_form(line, (1, 2, 3, 9, 10, 11, 12, 8))


def test_neighbours_of_a_chosen_line_that_are_lines_of_its_form_are_not_read(ilre):
    keys = " ".join(f"One of the special magic numbers for {fruit} is: {100 + i}." for i, fruit in enumerate(FRUITS))
    encoded = ilre.encode(keys)
    recaller = ilre.with_config(passage=1, lexical_passage=0, hops=0, unit_cut=0.5).recaller
    units = recaller.units(encoded.tokens)
    lexical = encoded.lexical(units, 1)
    scores = torch.zeros(len(units))
    scores[5] = 1.0
    assert recaller.choose(scores, units, 200, lexical=lexical) == [5]
    assert recaller.choose(scores, units, 200) == [5]  # without the words, no neighbours at all


def test_lines_of_a_list_chosen_together_are_read_without_neighbours(ilre):
    """With ``passage``, a chosen sentence brings its neighbours, but two chosen lines of one form
    (the values of a list of needles) bring none: they would crowd out the list's other lines."""
    facts = ["Rivers carry silt toward deltas every spring.", "Bakers knead dough before sunrise daily.",
             "Miners dig copper under distant hills.", "Sailors mend torn nets after storms.",
             "Farmers plant barley across wide valleys.", "Weavers dye wool with crushed berries."]
    needles = [f"One of the special magic numbers for {fruit} is: {100 + i}." for i, fruit in enumerate(FRUITS[:5])]
    sentences = [s for pair in zip(facts, needles) for s in pair] + facts[5:]
    encoded = ilre.encode(" ".join(sentences))
    recaller = ilre.with_config(passage=1, lexical_passage=0, hops=0, unit_cut=0.5).recaller
    units = recaller.units(encoded.tokens)
    assert len(units) == len(sentences)
    lexical = encoded.lexical(units, 1)
    scores = torch.zeros(len(units))
    scores[3] = 1.0  # one needle chosen: read as a passage, with the facts on each side
    assert recaller.choose(scores, units, 200, lexical=lexical) == [3, 2, 4]
    scores[7] = 1.0  # two needles of one form chosen: a list, each line alone
    assert recaller.choose(scores, units, 200, lexical=lexical) == [3, 7]
    assert lexical.listed([3, 7]) == {3, 7} and lexical.listed([3, 4]) == set()


@given(values=st.lists(st.integers(-2**40, 2**40), max_size=300))
def test_distinct_is_numpys_unique(values):
    """The sort-based ``distinct`` (numpy 2.4's ``np.unique`` hashes integers, 15x slower on an index's
    word-unit pairs) gives exactly ``np.unique``'s ascending distinct values."""
    array = np.asarray(values, dtype=np.int64)
    np.testing.assert_array_equal(distinct(array), np.unique(array))


def test_overlap_counts_only_the_words_that_say_something():
    """The sentence after a match that shares its common words and one term says what the match does
    not: not a look-alike. Lines of a list share their words that say something: still look-alikes."""
    lexical = LexicalIndex.of(["the sky is blue", "the sea is deep", "the default is 500 milliseconds",
                               "set the time in milliseconds it waits", "the grass is green",
                               "the magic number for melon is 17", "the magic number for peach is 19"], 0)
    assert lexical.overlap(2, 3) == pytest.approx(1 / 3)  # millisecond of default, 500, millisecond
    assert lexical.overlap(5, 6) > 0.5  # magic, number of magic, number, melon, 17
    assert lexical.overlap(0, 1) == 0.0  # blue only: the and is are common


@given(texts=st.lists(st.lists(st.sampled_from("abcdefgh"), max_size=6).map(" ".join), min_size=1, max_size=20),
       asked=st.lists(st.integers(0, 7), max_size=5))
@settings(max_examples=50)
def test_pairs_of_some_words_are_those_of_a_pass_over_every_word(texts, asked):
    lexical = LexicalIndex.of(texts, 0)
    ids = [i for i in asked if i < len(lexical.vocab)]
    hit = np.isin(lexical.word_ids, ids)
    want = np.unique(lexical.word_ids[hit].astype(np.int64) * len(lexical) + lexical.stats()[3][hit])
    np.testing.assert_array_equal(lexical.pairs_of(ids), want)
