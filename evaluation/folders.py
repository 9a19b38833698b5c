"""Questions about a folder asked as one context: a real code base, and a set of manuals.

A user points ``--context`` at a source tree or a folder of documents and asks; these tasks do the
same. ``code_tasks`` reads the code base that ``data/code_questions.json`` names (the Python
standard library's email, http and json packages, as Debian ships them) with
``ilre.sources.read_sources``, the way ``ilre.index --context`` reads a folder; ``manual_tasks``
joins several rendered documents of a question set (``evaluation.documents``) as the files of
one folder. Every question becomes a ``Task`` on the whole joined text, with each file's place
(``Task.files``), so that the harness encodes it as the files it is (code read in lines and
blocks, spans naming files) and scores whether the answering file was read. The tasks are named
code/<wording> and manuals/<wording>; their length is the context's token count.
"""

from __future__ import annotations

import json
from importlib.resources import files as package_files
from pathlib import Path

from ilre.sources import Sources, read_sources
from .documents import HELDOUT, WORDINGS, load_data, render
from .tasks import Task, TokenLen, find_passage

CODE = "data/code_questions.json"
MANUALS = ("curl-man", "coreutils-manual", "autoconf-manual")
"""The held-out documents joined as a folder of manuals (8 questions each; the larger three,
octave, guile and FOLDOC, would make a context of several million tokens)."""


def code_tasks(count_tokens: TokenLen, data: str = CODE, root: Path | None = None) -> list[Task]:
    """One task per question of ``data``, about its code base read from ``root`` (default: the
    root the data names). Raises ValueError naming the package to install when it is missing."""
    raw = json.loads(package_files("evaluation").joinpath(data).read_text(encoding="utf-8"))
    base = raw["codebase"]
    root = Path(root or base["root"])
    folders = [root / f for f in base["folders"]]
    if not all(f.is_dir() for f in folders):
        raise ValueError(f"the code base {base['id']} is not at {root}: it comes with the {base['source']} package "
                         f"{base['package']!r} (version {base['version']})")
    sources = read_sources(folders, include=base["include"])
    return _tasks(sources, raw["questions"], "code", count_tokens)


def manual_tasks(count_tokens: TokenLen, documents: tuple[str, ...] = MANUALS, data: str = HELDOUT) -> list[Task]:
    """One task per question about ``documents``, asked of all of them joined as a folder of
    manuals (each file named <id>.txt)."""
    docs, questions = load_data(data)
    sources = Sources.join((f"{name}.txt", render(docs[name])) for name in documents)
    asked = [{"file": f"{q.document}.txt", "question": q.question, "answers": q.answers, "evidence": q.evidence,
              "wording": q.wording} for q in questions if q.document in documents]
    return _tasks(sources, asked, "manuals", count_tokens)


def _tasks(sources: Sources, questions: list[dict], kind: str, count_tokens: TokenLen) -> list[Task]:
    """Tasks on the joined text of ``sources``; each question's evidence must occur once, in its file."""
    text, tokens = sources.text, count_tokens(sources.text)
    by_path = {f.path: f for f in sources.files}
    out = []
    for index, q in enumerate(questions):
        found = find_passage(text, q["evidence"])
        f = by_path.get(q["file"])
        if len(found) != 1 or f is None or not f.start <= found[0][0] < f.end or q["wording"] not in WORDINGS:
            raise ValueError(f"{kind} question {q['question']!r}: its evidence occurs {len(found)} times in the "
                             f"context, not once inside {q['file']} (another version of the files?)")
        out.append(Task(context=text, question=q["question"], answer_prefix="", answers=list(q["answers"]),
                        task=f"{kind}/{q['wording']}", length=tokens, seed=index,
                        needles=[text[found[0][0]:found[0][1]]], depth=round(found[0][0] / len(text), 4),
                        tokens=tokens, files=[f.to_dict() for f in sources.files]))
    return out
