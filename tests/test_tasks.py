"""Synthetic task generators: determinism, token budgets, needle placement, scoring, I/O."""

from __future__ import annotations

import random
import re
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evaluation import generators as G
from evaluation import tasks as T
from evaluation.haystack import Haystack, Prose, render


def count_tokens(text: str) -> int:
    """Stand-in tokenizer: words and punctuation marks."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def body_of(task: T.Task) -> tuple[str, int]:
    """The filler part of the context (after the instruction) and where it starts."""
    start = task.context.index("\n\n") + 2
    return task.context[start:], start


ALL = list(G.TASKS)
BASES = list(G.GENERATORS)
DEPTH = sorted(G.DEPTH_TASKS)


# --- determinism -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_same_seed_same_task_other_seed_other_task(name):
    a = G.generate(name, count_tokens, 2000, 11)
    b = G.generate(name, count_tokens, 2000, 11)
    c = G.generate(name, count_tokens, 2000, 12)
    assert a == b
    assert a.context != c.context and a.answers != c.answers


def test_no_global_random_state_used():
    random.seed(1)
    a = G.generate("niah_multikey", count_tokens, 1500, 5)
    random.seed(2)
    b = G.generate("niah_multikey", count_tokens, 1500, 5)
    assert a == b


# --- token budget --------------------------------------------------------------------------

@pytest.mark.parametrize("length", [1000, 4000, 16000])
@pytest.mark.parametrize("name", ALL)
def test_context_fits_budget_closely(name, length):
    t = G.generate(name, count_tokens, length, 3)
    n = count_tokens(t.context)
    assert n == t.tokens
    assert n <= length
    assert n >= 0.97 * length, f"{name} {length}: only {n} tokens"
    assert t.length == length and t.task == name


def test_budget_too_small_raises():
    with pytest.raises(ValueError):
        G.generate("niah_multivalue", count_tokens, 20, 0)


def test_long_task_needs_few_whole_counts_and_is_fast():
    calls = []

    def counting(text: str) -> int:
        calls.append(len(text))
        return count_tokens(text)

    for name in ("passkey", "niah_single_prose"):
        calls.clear()
        t0 = time.perf_counter()
        t = G.generate(name, counting, 128_000, 1, depth=0.5)
        elapsed = time.perf_counter() - t0
        big = [c for c in calls if c > 100_000]
        assert len(big) <= 8, f"{name}: counted the whole text {len(big)} times"
        assert elapsed < 10
        assert 0.97 * 128_000 <= t.tokens <= 128_000


# --- needles, answers and depth ----------------------------------------------------------

@pytest.mark.parametrize("length", [1000, 4000, 16000])
@pytest.mark.parametrize("name", DEPTH)
@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_needle_verbatim_at_requested_depth(name, length, depth):
    t = G.generate(name, count_tokens, length, 4, depth=depth)
    assert t.depth == depth
    body, _ = body_of(t)
    first = t.needles[0]
    assert first in body
    where = body.index(first) / len(body)
    slack = (160 + len(first)) / len(body)  # half a sentence either way, plus the needle
    assert abs(where - depth) <= slack


@pytest.mark.parametrize("name", DEPTH + ["vt"])
def test_answers_and_needles_are_in_context(name):
    t = G.generate(name, count_tokens, 4000, 8)
    assert t.needles
    for needle in t.needles + t.distractors:
        assert t.context.count(needle) == 1
    for answer in t.answers:
        assert answer in t.context
        assert any(answer in n for n in t.needles)
    assert T.score(" ".join(t.answers), t) == 1.0


def test_passkey_shape():
    t = G.passkey(count_tokens, 2000, 0, digits=32)
    (key,) = t.answers
    assert len(key) == 32 and key.isdigit()
    assert t.needles == [f"The pass key is {key}. Remember it. {key} is the pass key."]
    assert "The grass is green. The sky is blue. The sun is yellow." in t.context
    with pytest.raises(ValueError):
        G.passkey(count_tokens, 2000, 0, digits=65)


def test_niah_single_shape():
    t = G.niah_single(count_tokens, 2000, 0, haystack="prose")
    (value,) = t.answers
    assert re.fullmatch(r"\d{7}", value)
    key = re.search(r"for (\S+) is:", t.needles[0]).group(1)
    assert t.needles == [f"One of the special magic numbers for {key} is: {value}."]
    assert t.question == f"What is the special magic number for {key} mentioned in the provided text?"
    assert t.answer_prefix == f"The special magic number for {key} mentioned in the provided text is"
    assert re.findall(r"\b\d{7}\b", t.context) == [value]


def test_multikey_has_distractors_only_one_answer():
    t = G.niah_multikey(count_tokens, 4000, 2, keys=5)
    assert len(t.answers) == 1 and len(t.needles) == 1 and len(t.distractors) == 4
    assert len(re.findall(r"\b\d{7}\b", t.context)) == 5
    key = re.search(r"for (\S+) is:", t.needles[0]).group(1)
    assert key in t.question
    assert all(key not in d for d in t.distractors)


def test_multivalue_and_multiquery_expect_all():
    mv = G.niah_multivalue(count_tokens, 4000, 2, values=3)
    assert len(mv.answers) == 3 and len(set(mv.answers)) == 3
    assert len({re.search(r"for (\S+) is:", n).group(1) for n in mv.needles}) == 1
    mq = G.niah_multiquery(count_tokens, 4000, 2, queries=3, keys=4)
    assert len(mq.answers) == 3 and len(mq.distractors) == 1
    for n in mq.needles:
        assert re.search(r"for (\S+) is:", n).group(1) in mq.question
    assert T.score(" ".join(mq.answers[:2]), mq) == 0.0


def test_vt_chain_is_ordered_and_answers_are_its_variables():
    t = G.vt(count_tokens, 4000, 6, hops=3, chains=2)
    assert len(t.answers) == 4 and len(t.needles) == 4 and len(t.distractors) == 4
    value = re.fullmatch(r"VAR [A-Z]{5} = (\d{5})\.", t.needles[0]).group(1)
    assert value in t.question
    positions = [t.context.index(n) for n in t.needles]
    assert positions == sorted(positions)
    for prev, cur, n in zip(t.answers, t.answers[1:], t.needles[1:]):
        assert n == f"VAR {cur} = VAR {prev}."


def test_cwe_answers_are_the_most_common_words():
    for length in (1000, 8000):
        t = G.cwe(count_tokens, length, 9)
        words = re.findall(r"^\d+\. (\S+)$", t.context, flags=re.M)
        counts = Counter(words)
        assert len(t.answers) == 10
        lowest_common = min(counts[a] for a in t.answers)
        highest_rare = max(c for w, c in counts.items() if w not in t.answers)
        assert lowest_common > highest_rare
        for a in t.answers:  # substring scoring cannot be fooled by a longer word
            assert not any(a in w or w in a for w in counts if w != a)
        numbers = [int(m) for m in re.findall(r"^(\d+)\.", t.context, flags=re.M)]
        assert numbers == list(range(1, len(numbers) + 1))


def test_fwe_answers_are_the_most_frequent_in_order():
    t = G.fwe(count_tokens, 4000, 9)
    words = [w for w in body_of(t)[0].split() if w != "...."]
    ranked = [w for w, _ in Counter(words).most_common(4)]
    counts = Counter(words)
    assert ranked[:3] == t.answers
    assert counts[ranked[2]] > counts[ranked[3]]
    assert "...." in t.context
    for a in t.answers:
        assert not any(a in w or w in a for w in counts if w != a)


def test_changing_depth_keeps_the_rest():
    a = G.niah_single(count_tokens, 3000, 5, depth=0.1)
    b = G.niah_single(count_tokens, 3000, 5, depth=0.8)
    assert a.answers == b.answers and a.needles == b.needles and a.question == b.question
    assert a.context != b.context


# --- wording ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BASES)
def test_variants_change_wording_not_content(name):
    tasks = [G.generate(name, count_tokens, 1500, 3, variant=v) for v in range(3)]
    assert len({t.question for t in tasks}) == 3
    assert len({t.answer_prefix for t in tasks}) == 3
    assert all(t.answers == tasks[0].answers and t.needles == tasks[0].needles for t in tasks)
    assert [t.variant for t in tasks] == [0, 1, 2]


def test_phrasing_seed_picks_variants():
    seen = {G.niah_single(count_tokens, 800, 1, phrasing_seed=s).variant for s in range(30)}
    assert seen == {0, 1, 2}
    assert G.niah_single(count_tokens, 800, 1).variant == 0  # default is RULER's wording


# --- scoring ------------------------------------------------------------------------------

def test_score_is_case_insensitive_and_needs_all():
    t = T.Task("c", "q", "p", ["Alpha", "beta"], "x", 10, 0)
    assert T.score("ALPHA and Beta.", t) == 1.0
    assert T.score("only alpha", t) == 0.0
    assert T.score_share("only alpha", t) == 0.5
    assert T.score_share("nothing", t) == 0.0
    assert T.score("answer: alphabeta", ["alpha", "beta"]) == 1.0  # substring, like RULER


# --- serialisation -----------------------------------------------------------------------

def test_jsonl_round_trip(tmp_path):
    tasks = list(G.make_tasks(["passkey", "vt", "cwe", "niah_multiquery"], [800], 2,
                              count_tokens, seed=3))
    path = tmp_path / "tasks.jsonl"
    assert T.write_jsonl(path, tasks) == len(tasks)
    back = T.read_jsonl(path)
    assert back == tasks
    assert T.Task.from_json(tasks[0].to_json()) == tasks[0]
    assert T.Task.from_json(tasks[0].to_dict()) == tasks[0]


# --- batches -------------------------------------------------------------------------------

def test_make_tasks_combinations_seeds_and_depths():
    tasks = list(G.make_tasks(["passkey", "niah_single_prose", "fwe"], [700, 1200], 5,
                              count_tokens, seed=42))
    assert len(tasks) == 3 * 2 * 5
    again = list(G.make_tasks(["passkey", "niah_single_prose", "fwe"], [700, 1200], 5,
                              count_tokens, seed=42))
    assert tasks == again
    assert len({t.seed for t in tasks}) == len(tasks)
    pk = [t for t in tasks if t.task == "passkey" and t.length == 700]
    assert [t.depth for t in pk] == pytest.approx([0.05, 0.275, 0.5, 0.725, 0.95])
    assert all(t.depth is None for t in tasks if t.task == "fwe")
    assert {t.task for t in tasks} == {"passkey", "niah_single_prose", "fwe"}
    other = list(G.make_tasks(["passkey"], [700], 5, count_tokens, seed=43))
    assert [t.seed for t in other] != [t.seed for t in pk]


def test_make_tasks_options_and_phrasing():
    tasks = list(G.make_tasks(["passkey"], [900], 6, count_tokens, seed=1,
                              opts={"passkey": {"digits": 10}}, phrasing_seed=7))
    assert all(len(t.answers[0]) == 10 for t in tasks)
    assert len({t.variant for t in tasks}) > 1
    assert G.spread_depths(1) == [0.5]


# --- haystack ------------------------------------------------------------------------------

def test_prose_is_clean():
    text = render(*Haystack("prose", 123).take(3000))
    assert not re.search(r"\d{5,}", text)
    for phrase in ("special magic", "pass key", "VAR ", "-"):
        assert phrase not in text
    assert "\n\n" in text
    sentences = Haystack("prose", 5).take(500)[0]
    assert len(set(sentences)) > 450  # varied, not a loop


def test_haystack_prefix_is_stable():
    h = Haystack("prose", 9)
    first = h.take(10)
    h.take(1000)
    assert h.take(10) == first
    assert Haystack("prose", 9).take(10) == first
    assert Prose(random.Random(0)).sentence() == Prose(random.Random(0)).sentence()


# --- property tests ----------------------------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(depth=st.floats(0.0, 1.0), length=st.integers(300, 8000), seed=st.integers(0, 2**31 - 1),
       haystack=st.sampled_from(["noise", "prose"]))
def test_property_budget_and_depth(depth, length, seed, haystack):
    t = G.niah_single(count_tokens, length, seed, depth=depth, haystack=haystack)
    n = count_tokens(t.context)
    assert n <= length
    assert length - n <= max(0.03 * length, 40)
    body, _ = body_of(t)
    assert body.count(t.needles[0]) == 1
    where = body.index(t.needles[0]) / len(body)
    assert abs(where - depth) <= (160 + len(t.needles[0])) / len(body)


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(BASES), length=st.integers(400, 5000), seed=st.integers(0, 10**6))
def test_property_every_task_fits(name, length, seed):
    t = G.generate(name, count_tokens, length, seed)
    assert t.tokens == count_tokens(t.context) <= length
    assert length - t.tokens <= max(0.03 * length, 40)


# --- real tokenizers -----------------------------------------------------------------------

def test_tokenizer_len_for_plain_encode():
    class Plain:
        def encode(self, text, add_special_tokens=True):
            return [0] * (count_tokens(text) + (1 if add_special_tokens else 0))

    assert T.tokenizer_len_for(Plain())("a b, c") == 4


def test_tokenizer_len_for_trained_bpe():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    prose = Prose(random.Random(0))
    corpus = [prose.sentence() for _ in range(1500)] + ["The grass is green. The sky is blue."]
    tok = tokenizers.Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["[UNK]", "<s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>",
                                                model_max_length=512)
    n = T.tokenizer_len_for(fast)
    assert n("The grass is green.") == len(fast.encode("The grass is green.",
                                                         add_special_tokens=False))
    assert T.tokenizer_len_for(tok)("The grass is green.") == n("The grass is green.")
    for name in ("niah_multikey", "cwe", "fwe"):
        t = G.generate(name, n, 6000, 2)
        real = len(fast.encode(t.context, add_special_tokens=False))
        assert real == t.tokens and 0.97 * 6000 <= real <= 6000


def test_tokenizer_len_for_byte_level_fixture(tokenizer):
    n = T.tokenizer_len_for(tokenizer)
    assert n("The grass is green.") == len("The grass is green.")  # one token per byte
    t = G.generate("niah_single", n, 3000, 1)
    assert t.tokens == len(t.context.encode()) <= 3000
