"""The record of an offline long-context task and how it is scored.

A task holds its context, question, answer prefix, expected answers and the planted needle
sentences, so retrieval recall can be measured, not just answer accuracy. The generators that
make RULER-style tasks are in ``evaluation.generators``; real-document tasks in
``evaluation.documents``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

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
    files: list[dict] | None = None  # a context of many files: each one's place (ilre.sources.FileSpan)

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


def file_read(task: Task, spans: Iterable[tuple[int, int]]) -> bool | None:
    """Whether the reader read any of the file that holds the task's (first) passage: the right
    file among what was recalled. None for a context that is not made of files."""
    if not task.files or not task.needles or not (found := find_passage(task.context, task.needles[0])):
        return None
    at = found[0][0]
    f = next(f for f in task.files if f["start"] <= at < f["end"])
    return any(min(y, f["end"]) > max(x, f["start"]) for x, y in spans)


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


def derive_seed(seed: int, *parts: Any) -> int:
    """A stable 31-bit seed from a base seed and labels (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(repr((seed, *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF
