"""Offline RULER-style synthetic tasks for long-context evaluation.

Every generator is deterministic given its seed, builds a context that fits a token
budget measured with the model's own tokenizer (close to it, never over), and records the
planted needle sentences so retrieval recall can be measured, not just answer accuracy.

Generators share one signature, gen(tokenizer_len, length, seed, **opts) -> Task:
  passkey, niah_single, niah_multikey, niah_multivalue, niah_multiquery, vt, cwe, fwe.
Each task has a few paraphrases of its instruction and question (variant 0 follows
RULER's wording), so a method can be checked against wordings it was not tuned on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .haystack import Haystack, WordStream, pseudo_word, render, word_keys

TokenLen = Callable[[str], int]


# ---------------------------------------------------------------------------------------
# the task record


@dataclass
class Task:
    """One example: the model reads context, then question, and answers after answer_prefix."""

    context: str
    question: str
    answer_prefix: str
    answers: list[str]  # every one must appear in the prediction
    task: str
    length: int  # token budget the context was built for
    seed: int
    needles: list[str] = field(default_factory=list)  # planted sentences that hold the answer
    depth: float | None = None  # where the (first queried) needle sits, 0 = start, 1 = end
    distractors: list[str] = field(default_factory=list)  # planted look-alikes, not the answer
    variant: int = 0  # which paraphrase of the wording
    tokens: int = 0  # the context's actual token count

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str | dict[str, Any]) -> "Task":
        if isinstance(data, str):
            data = json.loads(data)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def write_jsonl(path: str | Path, tasks: Iterable[Task]) -> int:
    """Write tasks one per line; returns how many were written."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for t in tasks:
            f.write(t.to_json() + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> list[Task]:
    with open(path, encoding="utf-8") as f:
        return [Task.from_json(line) for line in f if line.strip()]


# ---------------------------------------------------------------------------------------
# scoring (RULER's string match: case-insensitive substring)


def score_share(prediction: str, task: Task | list[str]) -> float:
    """Share of the expected strings found in the prediction."""
    answers = task.answers if isinstance(task, Task) else task
    if not answers:
        return 1.0
    pred = prediction.lower()
    return sum(a.lower() in pred for a in answers) / len(answers)


def score(prediction: str, task: Task | list[str]) -> float:
    """1.0 when every expected string appears in the prediction, else 0.0."""
    return 1.0 if score_share(prediction, task) == 1.0 else 0.0


def find_passage(text: str, passage: str) -> list[tuple[int, int]]:
    """Character spans where passage occurs in text, case-insensitively, any run of whitespace
    matching any other (a line break of a rendered document may fall inside an excerpt)."""
    pattern = r"\s+".join(re.escape(word) for word in passage.split())
    return [m.span() for m in re.finditer(pattern, text, flags=re.IGNORECASE)] if pattern else []


def passage_read(task: Task, spans: Iterable[tuple[int, int]]) -> float | None:
    """Share of the task's passages (its needles) that the reader read, judged by location.

    ``spans`` are the [start, end) character ranges of the context that were read. A passage is
    read when most of it (at least half of its characters) and every answer inside it lie in
    those ranges. Found by where it is, not by its answer: in a long document an answer string
    may also occur far from the passage that states it. A passage that occurs several times
    counts as read when one of its occurrences is. None for a task without passages.
    """
    if not task.needles:
        return None
    read = sorted(spans)

    def covered(a: int, b: int) -> int:
        return sum(max(0, min(b, y) - max(a, x)) for x, y in read)

    hits = 0
    for needle in task.needles:
        for a, b in find_passage(task.context, needle):
            inside = task.context[a:b].lower()
            answers = [(a + i, a + i + len(ans)) for ans in task.answers if (i := inside.find(ans.lower())) >= 0]
            if 2 * covered(a, b) >= b - a and all(covered(x, y) == y - x for x, y in answers):
                hits += 1
                break
    return hits / len(task.needles)


# ---------------------------------------------------------------------------------------
# token counting and fitting a budget


def tokenizer_len_for(tokenizer: Any) -> TokenLen:
    """A counter of tokens without special tokens, for a transformers or tokenizers tokenizer.

    Goes straight to the fast backend when there is one: it is quicker on long texts and
    does not warn about texts longer than the model's maximum length.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and getattr(backend, "truncation", None) is None:
        return lambda text: len(backend.encode(text, add_special_tokens=False).ids)

    def count(text: str) -> int:
        out = tokenizer.encode(text, add_special_tokens=False)
        return len(out.ids) if hasattr(out, "ids") else len(out)

    return count


def fit(count: TokenLen, length: int, build: Callable[[int], str], unit_tokens: float,
        tol: float = 0.01, max_calls: int = 12) -> tuple[str, int, int]:
    """(text, tokens, n) for an n whose build(n) has count <= length, within tol of length
    when the units are fine enough (else the largest n that fits).

    build(n) must grow with n. The text is counted whole only a handful of times: guess n
    from unit_tokens, correct it by the measured tokens per unit (secant steps), and fall
    back to bisection once the answer is bracketed.
    """
    empty = build(0)
    base = count(empty)
    if base > length:
        raise ValueError(f"length {length} is too small: the task needs {base} tokens empty")
    best, best_tokens, best_n = empty, base, 0
    lo, hi = 0, None  # largest n known to fit, smallest n known not to
    aim = length * (1 - tol / 2)
    n = max(1, int((aim - base) / max(unit_tokens, 1e-9)))
    for call in range(max_calls):
        text = build(n)
        tokens = count(text)
        if tokens <= length:
            if n > lo:
                lo, best, best_tokens, best_n = n, text, tokens, n
            if tokens >= length * (1 - tol):
                break
        else:
            hi = n if hi is None else min(hi, n)
        if hi is not None and hi - lo <= 1:
            break
        rate = max(tokens - base, 1) / n
        guess = int((aim - base) / rate)
        if hi is None:
            n = max(guess, lo + 1)
        elif call >= 3:  # secant is not converging quickly: bisect
            n = (lo + hi) // 2
        else:
            n = min(max(guess, lo + 1), hi - 1)
    return best, best_tokens, best_n


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


# ---------------------------------------------------------------------------------------
# wording


def _pick(variants: tuple, variant: int | None, phrasing_seed: int | None) -> int:
    """Variant index: explicit, else drawn from phrasing_seed, else 0 (RULER's wording)."""
    if variant is not None:
        return variant % len(variants)
    if phrasing_seed is not None:
        return random.Random(phrasing_seed).randrange(len(variants))
    return 0


# (instruction, question, answer prefix)
PASSKEY_WORDING = (
    ("There is an important info hidden inside a lot of irrelevant text. Find it and "
     "memorize it. I will quiz you about the important information there.",
     "What is the pass key?", "The pass key is"),
    ("Somewhere in the long, mostly meaningless text below there is one piece of important "
     "information. Find it and remember it, because you will be asked about it afterwards.",
     "Which pass key was given in the text above?", "The pass key given in the text is"),
    ("Read the following text. Almost all of it is filler, but it hides a pass key that you "
     "will need later.",
     "Tell me the pass key that was hidden in the text.", "The hidden pass key is"),
)

# (instruction, question one key, prefix one key, question several, prefix several)
NIAH_WORDING = (
    ("Some special magic numbers are hidden within the following text. Make sure to memorize "
     "it. I will quiz you about the numbers afterwards.",
     "What is the special magic number for {key} mentioned in the provided text?",
     "The special magic number for {key} mentioned in the provided text is",
     "What are all the special magic numbers for {key} mentioned in the provided text?",
     "The special magic numbers for {key} mentioned in the provided text are"),
    ("The text below hides a few special magic numbers. Remember them: you will be asked "
     "about them once you have read it.",
     "Which special magic number does the text give for {key}?",
     "The special magic number the text gives for {key} is",
     "Which special magic numbers does the text give for {key}? List every one.",
     "The special magic numbers the text gives for {key} are"),
    ("Read the following document carefully and keep track of any special magic numbers "
     "it mentions.",
     "Looking back at the document, what number was named as the special magic number "
     "for {key}?",
     "For {key}, the special magic number is",
     "Looking back at the document, which numbers were named as special magic numbers "
     "for {key}?",
     "For {key}, the special magic numbers are"),
)

VT_WORDING = (
    ("Memorize and track the chain(s) of variable assignment hidden in the following text.",
     "Question: Find all variables that are assigned the value {value} in the text above.",
     "Answer: According to the chain(s) of variable assignment in the text above, {n} "
     "variables are assigned the value {value}, they are:"),
    ("The text below contains variable assignments scattered among unrelated sentences. "
     "Follow every assignment carefully.",
     "Which variables end up holding the value {value}, directly or through other variables?",
     "The variables that hold the value {value} are:"),
    ("Keep track of each statement of the form VAR NAME = ... that appears in the text below.",
     "List every variable whose value is {value}, following the assignments in the text.",
     "Following the assignments, the variables whose value is {value} are:"),
)

CWE_WORDING = (
    ("Below is a numbered list of words. In these words, some appear more often than others. "
     "Memorize the ones that appear most often.",
     "Question: What are the {k} most common words in the above list?",
     "Answer: The top {k} words that appear most often in the list are:"),
    ("Here is a long numbered list of words, some of them repeated many times. Keep count of "
     "how often each word occurs.",
     "Which {k} words occur most often in the list above?",
     "The {k} words that occur most often in the list are:"),
    ("Read the numbered word list that follows and notice which words keep coming back.",
     "Name the {k} words that are repeated most often in that list.",
     "The {k} most repeated words are:"),
)

FWE_WORDING = (
    ("Read the following coded text and track the frequency of each coded word. Find the "
     "{k} most frequently appeared coded words.",
     "Question: Do not provide any explanation. Please ignore the dots '....'. What are the "
     "{k} most frequently appeared words in the above coded text?",
     "Answer: According to the coded text above, the {k} most frequently appeared words "
     "are:"),
    ("The following is a text in a made-up code. Count how many times each coded word "
     "appears; the dots '....' are only separators.",
     "Which {k} coded words appear most often in the text above?",
     "The {k} coded words that appear most often are:"),
    ("Below is a long string of coded words separated now and then by dots '....'. Watch "
     "which words come up most.",
     "What are the {k} most frequent coded words? Give just the words.",
     "The {k} most frequent coded words are:"),
)


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
    v = _pick(PASSKEY_WORDING, variant, phrasing_seed)
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
    v = _pick(NIAH_WORDING, variant, phrasing_seed)
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
    v = _pick(VT_WORDING, variant, phrasing_seed)
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
    v = _pick(CWE_WORDING, variant, phrasing_seed)
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
    v = _pick(FWE_WORDING, variant, phrasing_seed)
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


def derive_seed(seed: int, *parts: Any) -> int:
    """A stable 31-bit seed from a base seed and labels (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF


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
