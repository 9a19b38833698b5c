"""The generators of the offline RULER-style tasks (evaluation/tasks.py holds the task record).

Generators share one signature, gen(tokenizer_len, length, seed, **opts) -> Task:
  passkey, niah_single, niah_multikey, niah_multivalue, niah_multiquery, vt, cwe, fwe.
Each task has a few paraphrases of its instruction and question (variant 0 follows
RULER's wording), so a method can be checked against wordings it was not tuned on.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Iterable, Iterator

from .haystack import Haystack, WordStream, pseudo_word, render, word_keys
from .tasks import Task, TokenLen, derive_seed, fit
from .wordings import CWE_WORDING, FWE_WORDING, NIAH_WORDING, PASSKEY_WORDING, VT_WORDING, pick


def _haystack_context(count: TokenLen, length: int, haystack: Haystack, instruction: str,
                      needles: list[tuple[float, str]]) -> tuple[str, int]:
    """Instruction, then filler with needles planted at their depths, fitted to length."""
    prefix = instruction + "\n\n" if instruction else ""
    sample = " ".join(haystack.take(64)[0])
    unit = count(sample) / 64

    def build(n: int) -> str:
        return prefix + render(*haystack.take(n), needles)

    text, tokens, _ = fit(count, length, build, unit)
    return text, tokens


def _join_keys(keys: list[str]) -> str:
    if len(keys) == 1:
        return keys[0]
    if len(keys) == 2:
        return f"{keys[0]} and {keys[1]}"
    return ", ".join(keys[:-1]) + f", and {keys[-1]}"


# ---------------------------------------------------------------------------------------
# generators


def passkey(tokenizer_len: TokenLen, length: int, seed: int, *, depth: float | None = None,
            digits: int = 5, haystack: str = "noise", variant: int | None = None,
            phrasing_seed: int | None = None) -> Task:
    """Classic pass-key retrieval: a number of `digits` digits hidden in filler."""
    if not 5 <= digits <= 64:  # shorter keys could collide with numbers in the prose
        raise ValueError("digits must be between 5 and 64")
    rng = random.Random(seed)
    drawn = rng.random()  # always drawn, so changing depth leaves everything else alike
    depth = drawn if depth is None else depth
    key = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(digits - 1))
    needle = f"The pass key is {key}. Remember it. {key} is the pass key."
    v = pick(PASSKEY_WORDING, variant, phrasing_seed)
    instruction, question, prefix = PASSKEY_WORDING[v]
    hay = Haystack(haystack, rng.getrandbits(64))
    context, tokens = _haystack_context(tokenizer_len, length, hay, instruction, [(depth, needle)])
    return Task(context, question, prefix, [key], "passkey", length, seed, [needle], depth,
                variant=v, tokens=tokens)


def _magic_needle(key: str, value: str) -> str:
    return f"One of the special magic numbers for {key} is: {value}."


def _niah(name: str, tokenizer_len: TokenLen, length: int, seed: int, depth: float | None,
          haystack: str, variant: int | None, phrasing_seed: int | None,
          keys: int, queries: int, values: int) -> Task:
    """Shared builder for the needle tasks: `keys` keys, the first `queries` of them asked
    about, each with `values` seven-digit values. The first needle asked about sits at
    `depth`; every other needle at a random depth."""
    if not 1 <= queries <= keys or values < 1:
        raise ValueError("need 1 <= queries <= keys and values >= 1")
    rng = random.Random(seed)
    drawn = rng.random()  # always drawn, so changing depth leaves everything else alike
    depth = drawn if depth is None else depth
    names = word_keys(rng, keys)
    numbers: set[int] = set()
    while len(numbers) < keys * values:
        numbers.add(rng.randint(1_000_000, 9_999_999))
    pool = sorted(numbers)
    rng.shuffle(pool)
    needles, distractors, answers, planted = [], [], [], []
    for i, key in enumerate(names):
        for j in range(values):
            value = str(pool[i * values + j])
            text = _magic_needle(key, value)
            if i < queries:
                needles.append(text)
                answers.append(value)
            else:
                distractors.append(text)
            at = depth if (i == 0 and j == 0) else rng.random()
            planted.append((at, text))
    v = pick(NIAH_WORDING, variant, phrasing_seed)
    instruction, q1, p1, qn, pn = NIAH_WORDING[v]
    plural = queries > 1 or values > 1
    key_text = _join_keys(names[:queries])
    question = (qn if plural else q1).format(key=key_text)
    prefix = (pn if plural else p1).format(key=key_text)
    hay = Haystack(haystack, rng.getrandbits(64))
    context, tokens = _haystack_context(tokenizer_len, length, hay, instruction, planted)
    return Task(context, question, prefix, answers, name, length, seed, needles, depth,
                distractors, v, tokens)


def niah_single(tokenizer_len: TokenLen, length: int, seed: int, *, depth: float | None = None,
                haystack: str = "noise", variant: int | None = None,
                phrasing_seed: int | None = None) -> Task:
    """One key, one seven-digit value."""
    return _niah("niah_single", tokenizer_len, length, seed, depth, haystack, variant,
                 phrasing_seed, keys=1, queries=1, values=1)


def niah_multikey(tokenizer_len: TokenLen, length: int, seed: int, *,
                  depth: float | None = None, keys: int = 4, haystack: str = "prose",
                  variant: int | None = None, phrasing_seed: int | None = None) -> Task:
    """Several keys planted, one asked about; the others are distractors."""
    return _niah("niah_multikey", tokenizer_len, length, seed, depth, haystack, variant,
                 phrasing_seed, keys=keys, queries=1, values=1)


def niah_multivalue(tokenizer_len: TokenLen, length: int, seed: int, *,
                    depth: float | None = None, values: int = 4, haystack: str = "prose",
                    variant: int | None = None, phrasing_seed: int | None = None) -> Task:
    """One key with several values, all of which are expected."""
    return _niah("niah_multivalue", tokenizer_len, length, seed, depth, haystack, variant,
                 phrasing_seed, keys=1, queries=1, values=values)


def niah_multiquery(tokenizer_len: TokenLen, length: int, seed: int, *,
                    depth: float | None = None, queries: int = 4, keys: int | None = None,
                    haystack: str = "prose", variant: int | None = None,
                    phrasing_seed: int | None = None) -> Task:
    """Several keys asked about at once; every value is expected."""
    return _niah("niah_multiquery", tokenizer_len, length, seed, depth, haystack, variant,
                 phrasing_seed, keys=queries if keys is None else keys, queries=queries,
                 values=1)


def vt(tokenizer_len: TokenLen, length: int, seed: int, *, hops: int = 4, chains: int = 1,
       haystack: str = "noise", variant: int | None = None,
       phrasing_seed: int | None = None) -> Task:
    """Variable tracking: 'VAR A = 12345', then 'VAR B = VAR A', ... hidden in filler.

    The first chain is asked about; its variables are the answers. Statements are spread
    at random depths, each chain in order; other chains (other values) are distractors.
    """
    if hops < 0 or chains < 1:
        raise ValueError("need hops >= 0 and chains >= 1")
    rng = random.Random(seed)
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    names: set[str] = set()
    while len(names) < chains * (hops + 1):
        names.add("".join(rng.choice(letters) for _ in range(5)))
    pool = sorted(names)
    rng.shuffle(pool)
    values = rng.sample(range(10_000, 100_000), chains)
    statements = []  # per chain, in order
    for c in range(chains):
        vars_ = pool[c * (hops + 1):(c + 1) * (hops + 1)]
        chain = [f"VAR {vars_[0]} = {values[c]}."]
        chain += [f"VAR {vars_[i]} = VAR {vars_[i - 1]}." for i in range(1, hops + 1)]
        statements.append((vars_, chain))
    # interleave the chains at random while keeping each chain's order
    order = [c for c in range(chains) for _ in range(hops + 1)]
    rng.shuffle(order)
    depths = sorted(rng.random() for _ in order)
    cursor = [0] * chains
    planted = []
    for c, d in zip(order, depths):
        planted.append((d, statements[c][1][cursor[c]]))
        cursor[c] += 1
    answers, needles = statements[0]
    distractors = [s for _, chain in statements[1:] for s in chain]
    v = pick(VT_WORDING, variant, phrasing_seed)
    instruction, question, prefix = VT_WORDING[v]
    question = question.format(value=values[0], n=hops + 1)
    prefix = prefix.format(value=values[0], n=hops + 1)
    hay = Haystack(haystack, rng.getrandbits(64))
    context, tokens = _haystack_context(tokenizer_len, length, hay, instruction, planted)
    return Task(context, question, prefix, list(answers), "vt", length, seed, list(needles),
                None, distractors, v, tokens)


def cwe(tokenizer_len: TokenLen, length: int, seed: int, *, common: int = 10,
        common_freq: int | None = None, rare_freq: int | None = None,
        variant: int | None = None, phrasing_seed: int | None = None) -> Task:
    """Common words: a numbered word list where `common` words recur often, the rest rarely.

    Frequencies scale with the list's length (few repeats for short budgets, RULER's 30
    versus 3 for long ones) so the common words always fill a similar share of the list.
    """
    rng = random.Random(seed)
    v = pick(CWE_WORDING, variant, phrasing_seed)
    instruction, question, prefix = (s.format(k=common) for s in CWE_WORDING[v])
    head = instruction + "\n\n"
    stream = WordStream(random.Random(rng.getrandbits(64)))
    sample = stream.take(200)
    line_tokens = tokenizer_len("\n".join(f"{i}. {w}" for i, w in enumerate(sample, 1000))) / 200
    lines = max(1.0, (length - tokenizer_len(head)) / line_tokens)
    f_common = common_freq or max(3, min(30, int(lines // 40)))
    f_rare = rare_freq or max(1, min(3, f_common // 5))
    if f_common <= f_rare:
        raise ValueError("common_freq must exceed rare_freq")
    shuffle_seed = rng.getrandbits(64)

    # substring scoring: no listed word may contain, or hide inside, an answer
    answers: list[str] = []
    for w in stream.take(4 * common):
        if len(answers) < common and not any(a in w or w in a for a in answers):
            answers.append(w)
    if len(answers) < common:
        raise ValueError(f"cannot pick {common} distinct common words")
    skip = 4 * common

    def build(n: int) -> str:
        rare = [w for w in stream.take(skip + n)[skip:]
                if not any(a in w or w in a for a in answers)]
        items = answers * f_common + rare * f_rare
        random.Random(shuffle_seed).shuffle(items)
        return head + "\n".join(f"{i}. {w}" for i, w in enumerate(items, 1))

    context, tokens, _ = fit(tokenizer_len, length, build, line_tokens * f_rare)
    return Task(context, question, prefix, answers, "cwe", length, seed, [], None,
                variant=v, tokens=tokens)


def fwe(tokenizer_len: TokenLen, length: int, seed: int, *, top: int = 3, alpha: float = 2.0,
        variant: int | None = None, phrasing_seed: int | None = None) -> Task:
    """Frequent words: coded pseudo-words with Zipf-like counts (count_i ~ M / i**alpha)."""
    rng = random.Random(seed)
    v = pick(FWE_WORDING, variant, phrasing_seed)
    instruction, question, prefix = (s.format(k=top) for s in FWE_WORDING[v])
    head = instruction + "\n\n"
    vocab: list[str] = []
    seen: set[str] = set()
    word_rng = random.Random(rng.getrandbits(64))
    shuffle_seed = rng.getrandbits(64)

    def words(n: int) -> list[str]:
        while len(vocab) < n:
            w = pseudo_word(word_rng)
            # substring scoring: answers may not contain, or hide inside, other words
            against = vocab if len(vocab) < top else vocab[:top]
            if w not in seen and not any(a in w or w in a for a in against):
                seen.add(w)
                vocab.append(w)
        return vocab[:n]

    def counts(m: int) -> list[int]:
        out, i = [], 1
        while (c := int(m / i ** alpha)) >= 1:
            out.append(c)
            i += 1
        return out

    def build(m: int) -> str:
        cs = counts(m)
        items = [w for w, c in zip(words(len(cs)), cs) for _ in range(c)]
        r = random.Random(shuffle_seed)
        r.shuffle(items)
        parts, gap = [], r.randint(5, 15)
        for i, w in enumerate(items):
            if i == gap:
                parts.append("....")
                gap += r.randint(5, 15)
            parts.append(w)
        return head + " ".join(parts)

    word_tokens = tokenizer_len(" ".join(words(100))) / 100
    zeta = sum(i ** -alpha for i in range(1, 10_000))
    context, tokens, m = fit(tokenizer_len, length, build, word_tokens * zeta * 1.1)
    cs = counts(m)[:top + 1]
    if len(cs) < top or any(a <= b for a, b in zip(cs, cs[1:])):
        raise ValueError("length too small to separate the most frequent words")
    return Task(context, question, prefix, words(top), "fwe", length, seed, [], None,
                variant=v, tokens=tokens)


# ---------------------------------------------------------------------------------------
# registry and batches

GENERATORS: dict[str, Callable[..., Task]] = {
    "passkey": passkey,
    "niah_single": niah_single,
    "niah_multikey": niah_multikey,
    "niah_multivalue": niah_multivalue,
    "niah_multiquery": niah_multiquery,
    "vt": vt,
    "cwe": cwe,
    "fwe": fwe,
}
# names that fix an option, so a run can ask for both haystacks of one task
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "niah_single_noise": ("niah_single", {"haystack": "noise"}),
    "niah_single_prose": ("niah_single", {"haystack": "prose"}),
    "passkey_prose": ("passkey", {"haystack": "prose"}),
}
TASKS = tuple(GENERATORS) + tuple(ALIASES)
DEPTH_TASKS = {"passkey", "niah_single", "niah_multikey", "niah_multivalue", "niah_multiquery"}


def generate(name: str, tokenizer_len: TokenLen, length: int, seed: int, **opts: Any) -> Task:
    """Build one task by name (a generator or an alias); the task records that name."""
    base, fixed = ALIASES.get(name, (name, {}))
    if base not in GENERATORS:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    task = GENERATORS[base](tokenizer_len, length, seed, **{**fixed, **opts})
    task.task = name
    return task


def spread_depths(samples: int, lo: float = 0.05, hi: float = 0.95) -> list[float]:
    """Evenly spaced needle depths, one per sample (the middle when there is one sample)."""
    if samples == 1:
        return [(lo + hi) / 2]
    return [lo + (hi - lo) * i / (samples - 1) for i in range(samples)]


def make_tasks(names: Iterable[str], lengths: Iterable[int], samples: int,
               tokenizer_len: TokenLen, seed: int = 0, *,
               opts: dict[str, dict[str, Any]] | None = None,
               phrasing_seed: int | None = None) -> Iterator[Task]:
    """Tasks for every (name, length, sample), with per-sample seeds and spread depths.

    opts maps a task name to extra generator options. With phrasing_seed set, each sample
    draws its wording variant from it; otherwise every task uses RULER's wording.
    """
    names, lengths = list(names), list(lengths)
    depths = spread_depths(samples)
    for name in names:
        base = ALIASES.get(name, (name, {}))[0]
        for length in lengths:
            for i in range(samples):
                extra = dict((opts or {}).get(name, {}))
                if base in DEPTH_TASKS:
                    extra.setdefault("depth", depths[i])
                if phrasing_seed is not None:
                    extra.setdefault("phrasing_seed", derive_seed(phrasing_seed, name, length, i))
                yield generate(name, tokenizer_len, length, derive_seed(seed, name, length, i),
                               **extra)
