"""Natural questions about real long documents, next to the synthetic RULER-style tasks.

Synthetic needles are easy to find by their odd words; real manuals and FAQs are not. The
documents are not stored here: ``data/document_questions.json`` names, for each one, the
Debian or PyPI package that ships it, the file inside that package and how to render it to
text, and holds only the questions, their short answers and a short verbatim excerpt (the
evidence) of the passage that answers each. ``document_tasks`` renders each document, cuts
a window of about ``length`` tokens around the evidence at a depth drawn from the seed, and
returns ordinary ``Task`` records, named ``docs/lexical`` or ``docs/paraphrase`` after how
the question is worded, so tables report the two separately.
"""

from __future__ import annotations

import bisect
import glob
import gzip
import importlib.metadata
import json
import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Iterable

from .tasks import Task, TokenLen, derive_seed, find_passage

DATA = "data/document_questions.json"
TUNING2 = "data/document_questions_tuning2.json"  # six other documents, to tune on beside DATA
TUNING3 = "data/document_questions_tuning3.json"  # six more (manuals and man pages), tuned on beside both
HELDOUT = "data/document_questions_heldout.json"  # written before any tuning; held-out figures only
QUESTION_SETS = {"tuning": DATA, "tuning2": TUNING2, "tuning3": TUNING3, "heldout": HELDOUT}
"""The question sets by the name the command lines take (``--questions``)."""
WORDINGS = ("lexical", "paraphrase")
DEPTH_RANGE = (0.05, 0.95)
SNAP = 0.03  # share of the length given up, at most, to start and end on paragraph boundaries
TOLERANCE = 0.03  # a window takes between (1 - TOLERANCE) * length and length tokens
# Man pages are formatted the way man(1) shows them on an 80-column terminal, but plain ASCII,
# without hyphenation or justification (man's --nh --nj: the preamble turns the requests off),
# so that words and phrases stay whole and single-spaced.
GROFF = ["groff", "-t", "-man", "-Tascii", "-rLL=78n", "-rcR=1", "-P-c", "-P-b", "-P-o", "-P-u"]
GROFF_PREAMBLE = b".ad l\n.de ad\n..\n.nh\n.de hy\n..\n"
INFO_TABLES = ("Tag Table:", "Indirect:", "Local Variables:")  # info's parts that are not nodes


@dataclass(frozen=True)
class Document:
    """Where one document comes from and how it becomes text."""

    id: str
    title: str
    source: str  # "debian" or "pypi"
    package: str
    path: str  # a file of a Debian package (or a glob of its parts), or a file of a distribution's metadata
    render: str  # "text" (gzip or plain), "info" (GNU info's nodes), "man" (groff) or "pypi-description"
    version: str = ""  # the version the questions were checked against

    @property
    def install(self) -> str:
        return (f"apt-get install {self.package}" if self.source == "debian"
                else f"pip install {self.package}")

    def missing(self, why: str) -> ValueError:
        """The error for a document not on this machine: what to install to get it."""
        return ValueError(f"document {self.id!r} ({self.title}) is not available: {why}; "
                          f"it comes with the {self.source} package {self.package!r}: `{self.install}`")


@dataclass(frozen=True)
class Question:
    """One question; answers and evidence are verbatim (case-insensitive) in the document."""

    document: str
    question: str
    answers: list[str]
    evidence: str
    wording: str


def load_data(name: str = DATA) -> tuple[dict[str, Document], list[Question]]:
    """The documents by id and the questions, in file order, of one data file (a value of QUESTION_SETS)."""
    raw = json.loads(files("evaluation").joinpath(name).read_text(encoding="utf-8"))
    documents = {d["id"]: Document(**d) for d in raw["documents"]}
    questions = [Question(**q) for q in raw["questions"]]
    for q in questions:
        if q.document not in documents or q.wording not in WORDINGS:
            raise ValueError(f"{name}: question {q.question!r} names an unknown document or wording")
    return documents, questions


# ---------------------------------------------------------------------------------------
# rendering


def _natural(path: str) -> list[Any]:
    """Sort key putting name.info-2 before name.info-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _read_file(doc: Document) -> bytes:
    """The file, gunzipped if .gz or .dz (dictzip); a glob's matches joined in natural order."""
    paths = sorted(glob.glob(doc.path), key=_natural) if glob.has_magic(doc.path) else [doc.path]
    if not paths or not all(Path(p).is_file() for p in paths):
        raise doc.missing(f"{doc.path} not found")
    data = [Path(p).read_bytes() for p in paths]
    return b"".join(gzip.decompress(d) if p.endswith((".gz", ".dz")) else d for p, d in zip(paths, data))


def _clean(text: str) -> str:
    """One newline style, no trailing spaces, at most one blank line in a row."""
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


def render(doc: Document) -> str:
    """The document as plain text, the same on every machine with the same package version."""
    if doc.render == "text":
        return _clean(_read_file(doc).decode("utf-8", errors="replace"))
    if doc.render == "info":  # the nodes joined, without node separators, tag tables and index markers
        nodes = _read_file(doc).decode("utf-8", errors="replace").split("\x1f")
        text = "".join(n for n in nodes if not n.lstrip().startswith(INFO_TABLES))
        return _clean(re.sub(r"\x00\x08\[index\x00\x08\]|\x00\x08", "", text))
    if doc.render == "man":
        source = _read_file(doc)
        if shutil.which(GROFF[0]) is None:
            raise ValueError(f"document {doc.id!r} ({doc.title}) is rendered with groff, which is not "
                             "installed: `apt-get install groff-base`")
        out = subprocess.run(GROFF, input=GROFF_PREAMBLE + source, capture_output=True,
                             env={**os.environ, "LC_ALL": "C"})
        if out.returncode != 0:
            raise ValueError(f"document {doc.id!r}: groff failed: {out.stderr.decode(errors='replace')[:200]}")
        return _clean(out.stdout.decode("ascii", errors="replace"))
    if doc.render == "pypi-description":
        try:
            meta = importlib.metadata.distribution(doc.package).read_text(doc.path)
        except importlib.metadata.PackageNotFoundError:
            meta = None
        if not meta:
            raise doc.missing(f"the Python package {doc.package} is not installed")
        return _clean(meta.split("\n\n", 1)[1] if "\n\n" in meta else "")
    raise ValueError(f"document {doc.id!r}: unknown render {doc.render!r}")


# ---------------------------------------------------------------------------------------
# cutting a window


def _paragraph_start(lines: list[str], i: int) -> bool:
    return lines[i].strip() != "" and (i == 0 or lines[i - 1].strip() == "")


def _paragraph_end(lines: list[str], j: int) -> bool:
    """Whether a window ending before line j ends a paragraph."""
    return lines[j - 1].strip() != "" and (j == len(lines) or lines[j].strip() == "")


def _select(lines: list[str], sums: list[int], a: int, b: int, budget: float, depth: float,
            slack: float) -> tuple[int, int]:
    """Lines [i, j) around the evidence's lines [a, b) whose summed counts fit budget, about depth
    of the room before the evidence, snapped to paragraph boundaries when that costs <= slack."""
    def tokens(x: int, y: int) -> int:
        return sums[y] - sums[x]

    room = budget - tokens(a, b)
    i = a
    while i > 0 and tokens(i - 1, a) <= depth * room:
        i -= 1
    i = next((k for k in range(i, a + 1) if _paragraph_start(lines, k) and tokens(i, k) <= slack), i)
    j = b
    while j < len(lines) and tokens(i, j + 1) <= budget:
        j += 1
    while i > 0 and tokens(i - 1, j) <= budget:  # the document ended: fill before instead
        i -= 1
    j = next((k for k in range(j, b - 1, -1) if _paragraph_end(lines, k) and tokens(k, j) <= slack), j)
    while i < a and not lines[i].strip():  # no blank lines at either end
        i += 1
    while j > b and not lines[j - 1].strip():
        j -= 1
    return i, j


def cut_window(text: str, span: tuple[int, int], count: TokenLen, length: int, depth: float,
               line_tokens: list[int] | None = None) -> tuple[str, int, float]:
    """(window, its tokens, the evidence's depth in it): whole lines of text around span, at most
    length tokens and within TOLERANCE of it when the document is long enough, with about depth
    of the room left by the evidence's lines before them.

    The window starts and ends on a paragraph boundary when that costs at most SNAP of the
    length, else on a line boundary. Lines are counted apart (line_tokens, reusable across the
    windows of one document), then the window whole: the budget is corrected by the difference
    a few times, as a text counted whole takes fewer tokens than its lines apart.
    """
    lines = text.splitlines(keepends=True)
    tokens = line_tokens if line_tokens is not None else [count(line) for line in lines]
    starts, sums = [0], [0]
    for line, n in zip(lines, tokens):
        starts.append(starts[-1] + len(line))
        sums.append(sums[-1] + n)
    a = bisect.bisect_right(starts, span[0]) - 1
    b = bisect.bisect_left(starts, span[1])  # the evidence's lines: [a, b)
    if sums[b] - sums[a] > length:
        raise ValueError(f"length {length} is too small: the evidence's lines take {sums[b] - sums[a]} tokens")
    budget, best, measured_at = float(length), None, {}
    for _ in range(8):
        i, j = _select(lines, sums, a, b, budget, depth, SNAP * length)
        window = "".join(lines[i:j])
        repeats = (i, j) in measured_at
        if not repeats:
            measured_at[i, j] = count(window)
        measured = measured_at[i, j]
        if measured <= length and (best is None or measured > best[2]):
            best = (i, window, measured)
        if length * (1 - TOLERANCE) <= measured <= length or (i == 0 and j == len(lines)):
            break
        # from what these lines sum to, by the difference (twice, when snapping kept the same lines)
        budget = sums[j] - sums[i] + (length - measured) * (2 if repeats else 1)
    if best is None:  # still over: give up lines after, then before the evidence, until it fits
        while measured > length and (j > b or i < a):
            j, i = (j - 1, i) if j > b else (j, i + 1)
            window = "".join(lines[i:j])
            measured = count(window)
        if measured > length:
            raise ValueError(f"length {length} is too small for the evidence's lines")
        best = (i, window, measured)
    i, window, measured = best
    return window, measured, count(window[: span[0] - starts[i]]) / max(measured, 1)


# ---------------------------------------------------------------------------------------
# the tasks


def document_tasks(count_tokens: TokenLen, length: int | None = 4096, seed: int = 0,
                   documents: Iterable[str] | None = None, data: str = DATA) -> list[Task]:
    """One task per question of ``data``: a window of about length tokens of its document
    (measured with count_tokens) that holds the evidence at a depth drawn from seed, named
    docs/<wording>; with length None, the whole document, named whole/<wording>, its length the
    document's token count (so a table has a column per document).

    documents picks some by id (default: all). Documents that are not on this machine raise
    one ValueError naming the packages to install. A document whose text no longer holds an
    evidence excerpt once, with its answers (another version of the package), raises too.
    """
    docs, questions = load_data(data)
    wanted = list(docs) if documents is None else list(documents)
    unknown = [d for d in wanted if d not in docs]
    if unknown:
        raise ValueError(f"unknown documents {', '.join(unknown)}; known: {', '.join(docs)}")
    texts: dict[str, str] = {}
    missing: list[str] = []
    for name in wanted:
        try:
            texts[name] = render(docs[name])
        except ValueError as exc:
            missing.append(str(exc))
    if missing:
        raise ValueError("\n".join(missing))
    out = []
    for name, text in texts.items():
        whole = count_tokens(text) if length is None else 0
        line_tokens = [count_tokens(line) for line in text.splitlines(keepends=True)] if length else None
        for index, q in enumerate(x for x in questions if x.document == name):
            spans = find_passage(text, q.evidence)
            found = text[spans[0][0]:spans[0][1]].lower() if len(spans) == 1 else ""
            if not found or not all(a.lower() in found for a in q.answers):
                raise ValueError(f"document {name!r}: the evidence {q.evidence!r} with its answers occurs "
                                 f"{len(spans)} times, not once (version {docs[name].version} expected)")
            evidence = text[spans[0][0]:spans[0][1]]  # as it appears in the text, line breaks and all
            if length is None:
                # A seed of its own, as a window's: a task is known by (name, length, seed), and the
                # questions of one document share the other two.
                out.append(Task(context=text, question=q.question, answer_prefix="", answers=list(q.answers),
                                task=f"whole/{q.wording}", length=whole, seed=derive_seed(seed, "whole", name, index),
                                needles=[evidence],
                                depth=round(spans[0][0] / len(text), 4), tokens=whole))
                continue
            task_seed = derive_seed(seed, "docs", name, index, length)
            depth = random.Random(task_seed).uniform(*DEPTH_RANGE)
            window, tokens, actual = cut_window(text, spans[0], count_tokens, length, depth, line_tokens)
            out.append(Task(context=window, question=q.question, answer_prefix="", answers=list(q.answers),
                            task=f"docs/{q.wording}", length=length, seed=task_seed, needles=[evidence],
                            depth=round(actual, 4), tokens=tokens))
    return out


def summary(tasks: list[Task]) -> dict[str, Any]:
    """Counts per wording and the range of token counts, for a quick look at a task set."""
    per: dict[str, int] = {}
    for t in tasks:
        per[t.task] = per.get(t.task, 0) + 1
    sizes = [t.tokens for t in tasks]
    return {"tasks": len(tasks), "per_task": per,
            "tokens": (min(sizes), max(sizes)) if sizes else None}
