"""Questions about real documents: the data file, window cutting, rendering, missing packages.

Everything here runs without a model and, but for the tests marked as using a real document
(skipped where its package is absent), without the documents themselves.
"""

from __future__ import annotations

import glob
import gzip
import importlib.metadata
import importlib.util
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evaluation import documents as D
from evaluation import tasks as T
from evaluation.tasks import Task

ROOT = Path(__file__).resolve().parents[1]


def words(text: str) -> int:
    """Stand-in tokenizer: whitespace-separated words (a window counts as its lines summed)."""
    return len(text.split())


def quarters(text: str) -> int:
    """Stand-in tokenizer that counts a text whole as more than its lines apart."""
    return len(text) // 4


def fake_document(seed: int = 0, paragraphs: int = 120) -> str:
    """Indented, wrapped paragraphs of pseudo-words separated by blank lines, like a manual."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(400)]
    out = []
    for p in range(paragraphs):
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(5, 90)))
        lines, line = [], ""
        for word in text.split():
            if len(line) + len(word) > 60:
                lines.append(line)
                line = ""
            line = f"{line} {word}" if line else word
        lines.append(line)
        out.append("\n".join("   " + x for x in lines))
    return "\n\n".join(out) + "\n"


# --- the data file ---------------------------------------------------------------------

@pytest.mark.parametrize("data", D.QUESTION_SETS.values())
def test_data_file_is_well_formed(data):
    docs, questions = D.load_data(data)
    assert len(docs) >= 5 and len(questions) >= 40
    for doc in docs.values():
        assert doc.source in ("debian", "pypi") and doc.package and doc.path and doc.version
        assert doc.render in ("text", "info", "man", "pypi-description")
    per_doc = Counter(q.document for q in questions)
    assert set(per_doc) == set(docs) and min(per_doc.values()) >= 8
    wordings = Counter(q.wording for q in questions)
    assert wordings["paraphrase"] == wordings["lexical"] == len(questions) // 2
    for q in questions:
        assert q.question.strip().endswith("?"), q.question
        assert q.answers and all(a.strip() and len(a.split()) <= 4 for a in q.answers), q.answers
        assert 10 <= len(q.evidence) <= 200, q.evidence
        assert all(a.lower() in q.evidence.lower() for a in q.answers), (q.answers, q.evidence)
    assert len({(q.document, q.question) for q in questions}) == len(questions)


def test_package_data_is_declared():
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = setuptools["package-data"]["evaluation"]
    data = sorted((ROOT / "evaluation").glob("data/*"))
    assert data and all(any(f.relative_to(ROOT / "evaluation").match(p) for p in patterns) for f in data)
    assert "evaluation*" in setuptools["packages"]["find"]["include"]


# --- finding the evidence and cutting a window -----------------------------------------

def test_evidence_matches_across_line_breaks_and_spacing():
    text = "alpha beta\n   gamma  delta\n\nepsilon gamma delta\n"
    assert T.find_passage(text, "beta gamma delta") == [(6, 26)]
    assert len(T.find_passage(text, "gamma delta")) == 2
    assert T.find_passage(text, "delta alpha") == []


def _check_window(text: str, span: tuple[int, int], count, length: int, depth: float) -> None:
    window, tokens, actual = D.cut_window(text, span, count, length, depth)
    start = text.index(window)
    assert start == 0 or text[start - 1] == "\n"  # whole lines
    assert window.endswith("\n") or start + len(window) == len(text)
    assert start <= span[0] and span[1] <= start + len(window)  # the evidence whole
    assert tokens == count(window) <= length
    if count(text) > length:
        assert tokens >= 0.9 * length
    assert 0.0 <= actual <= 1.0
    assert window.strip() and not window.startswith("\n")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), length=st.integers(200, 3000), depth=st.floats(0.0, 1.0),
       where=st.floats(0.0, 0.999), superadditive=st.booleans())
def test_window_keeps_the_evidence_whole_within_the_length(seed, length, depth, where, superadditive):
    text = fake_document(seed)
    count = quarters if superadditive else words
    start = text.index(" ", int(where * (len(text) - 200))) + 1
    end = text.index(" ", start + 40)  # an excerpt of a few words, maybe across a line break
    _check_window(text, (start, end), count, length, depth)


def test_depth_follows_the_request_away_from_the_edges():
    text = fake_document(3, paragraphs=400)
    middle = len(text) // 2
    span = (text.index(" ", middle) + 1, text.index(" ", middle + 50))
    for depth in (0.1, 0.5, 0.9):
        _, _, actual = D.cut_window(text, span, words, 1000, depth)
        assert abs(actual - depth) < 0.1, (depth, actual)


def test_short_document_gives_the_whole_document():
    text = fake_document(1, paragraphs=3)
    span = (0, 10)
    window, tokens, _ = D.cut_window(text, span, words, 10_000, 0.5)
    assert window.strip() == text.strip() and tokens == words(window)


def test_evidence_longer_than_the_length_is_an_error():
    text = fake_document(2)
    with pytest.raises(ValueError, match="too small"):
        D.cut_window(text, (0, len(text) // 2), words, 50, 0.5)


# --- document_tasks on a fabricated document -------------------------------------------

@pytest.fixture
def fabricated(tmp_path, monkeypatch):
    """A gzipped text document with two planted facts and one question of each wording."""
    text = fake_document(7).split("\n\n")
    text[30] = "   The lighthouse keeper keeps the spare key\n   under the blue stone."
    text[90] = "   Ferries leave the north pier at 0715 every morning."
    path = tmp_path / "manual.txt.gz"
    path.write_bytes(gzip.compress("\n\n".join(text).encode()))
    doc = D.Document(id="manual", title="a manual", source="debian", package="manual-doc", path=str(path),
                     render="text", version="1")
    questions = [
        D.Question("manual", "Where is the spare key kept?", ["blue stone"],
                   "keeps the spare key under the blue stone", "lexical"),
        D.Question("manual", "At what time does the first boat of the day depart?", ["0715"],
                   "Ferries leave the north pier at 0715", "paraphrase"),
    ]
    monkeypatch.setattr(D, "load_data", lambda name=D.DATA: ({"manual": doc}, questions))
    return doc


def test_document_tasks_are_tasks_named_by_wording(fabricated):
    tasks = D.document_tasks(words, 800, seed=5)
    assert [t.task for t in tasks] == ["docs/lexical", "docs/paraphrase"]
    for t in tasks:
        assert isinstance(t, Task) and t.length == 800 and t.tokens == words(t.context) <= 800
        assert t.needles[0] in t.context and all(a.lower() in t.context.lower() for a in t.answers)
        assert t.answer_prefix == "" and 0.0 <= t.depth <= 1.0
    assert "\n" in tasks[0].needles[0]  # the evidence as the window has it, line break and all
    assert len({t.seed for t in tasks}) == 2  # results folders tell tasks apart by (task, length, seed)
    assert D.summary(tasks) == {"tasks": 2, "per_task": {"docs/lexical": 1, "docs/paraphrase": 1},
                                "tokens": (min(t.tokens for t in tasks), max(t.tokens for t in tasks))}
    again = D.document_tasks(words, 800, seed=5)
    assert [t.to_dict() for t in again] == [t.to_dict() for t in tasks]
    other = D.document_tasks(words, 800, seed=6)
    assert [t.seed for t in other] != [t.seed for t in tasks]


def test_whole_documents_are_the_context_with_the_passage_located(fabricated):
    tasks = D.document_tasks(words, None, seed=5)
    text = D.render(fabricated)
    assert [t.task for t in tasks] == ["whole/lexical", "whole/paraphrase"]
    for t in tasks:
        assert t.context == text and t.length == t.tokens == words(text)
        start = T.find_passage(text, t.needles[0])[0][0]
        assert t.depth == round(start / len(text), 4)
        assert T.passage_read(t, [(0, len(text))]) == 1.0


def test_every_question_of_a_whole_document_stays_in_the_folders_task_set(fabricated, monkeypatch, tmp_path):
    """The questions of one document share its name and length: each must still be a task of its own
    in tasks.jsonl, or the table counts one question per wording."""
    _, questions = D.load_data()
    more = questions + [D.Question("manual", "What is kept under the blue stone?", ["spare key"],
                                   "keeps the spare key under the blue stone", "lexical")]
    monkeypatch.setattr(D, "load_data", lambda name=D.DATA: ({"manual": fabricated}, more))
    tasks = D.document_tasks(words, None, seed=5)
    merged = _evaluate_script().merge_tasks(tmp_path, tasks)
    assert len(tasks) == 3 and sorted(t.question for t in merged) == sorted(t.question for t in tasks)


@pytest.mark.parametrize("one, other", [(D.DATA, D.HELDOUT), (D.TUNING2, D.HELDOUT), (D.DATA, D.TUNING2)])
def test_the_question_sets_are_disjoint_and_balanced(one, other):
    tuning_docs, tuning = D.load_data(one)
    docs, questions = D.load_data(other)
    assert not set(docs) & set(tuning_docs) and len(docs) >= 6 and len(questions) >= 48
    assert not {q.question for q in questions} & {q.question for q in tuning}
    for name in docs:
        mine = [q.wording for q in questions if q.document == name]
        assert len(mine) >= 8 and mine.count("lexical") == mine.count("paraphrase")
    for q in questions:
        assert all(a.lower() in q.evidence.lower() for a in q.answers)


def test_a_changed_document_is_reported(fabricated):
    Path(fabricated.path).write_bytes(gzip.compress(b"nothing of the kind\n"))
    with pytest.raises(ValueError, match="not once"):
        D.document_tasks(words, 800)


def test_missing_documents_raise_one_error_naming_the_packages(monkeypatch, tmp_path):
    docs = {
        "a": D.Document("a", "doc a", "debian", "some-doc-package", str(tmp_path / "absent.txt.gz"), "text"),
        "b": D.Document("b", "doc b", "pypi", "no-such-distribution-xyz", "METADATA", "pypi-description"),
    }
    monkeypatch.setattr(D, "load_data", lambda name=D.DATA: (docs, []))
    with pytest.raises(ValueError) as err:
        D.document_tasks(words)
    message = str(err.value)
    assert "apt-get install some-doc-package" in message
    assert "pip install no-such-distribution-xyz" in message
    with pytest.raises(ValueError, match="unknown documents"):
        D.document_tasks(words, documents=["c"])


# --- rendering -------------------------------------------------------------------------

def test_pypi_description_is_the_body_of_metadata():
    doc = D.Document("pytest", "pytest's README", "pypi", "pytest", "METADATA", "pypi-description")
    text = D.render(doc)
    assert text.strip() and not text.startswith("Metadata-Version")


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_man_pages_render_without_hyphenation_or_justification(tmp_path):
    sentence = " ".join(["extraordinarily", "uncharacteristically", "a", "b"] * 12)
    path = tmp_path / "demo.1.gz"
    path.write_bytes(gzip.compress(f'.TH DEMO 1\n.SH DESCRIPTION\n{sentence}\n'.encode()))
    text = D.render(D.Document("demo", "demo(1)", "debian", "demo", str(path), "man"))
    body = " ".join(text.split("DESCRIPTION", 1)[1].split())
    assert body.startswith(sentence)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert not any("  " in line.strip() for line in text.splitlines()[1:])


# --- the real documents, where their packages are installed ----------------------------

def _available(doc: D.Document) -> str | None:
    """Why a real document can't be checked here, or None."""
    if doc.source == "pypi":
        try:
            version = importlib.metadata.version(doc.package)
        except importlib.metadata.PackageNotFoundError:
            return f"{doc.package} is not installed"
        return None if version == doc.version else f"{doc.package} {version}, questions checked on {doc.version}"
    if not glob.glob(doc.path):
        return f"{doc.path} is absent (package {doc.package})"
    if doc.render == "man" and shutil.which("groff") is None:
        return "groff is not installed"
    return None


@pytest.mark.parametrize("data, name", [(data, name) for data in D.QUESTION_SETS.values()
                                        for name in sorted(D.load_data(data)[0])])
def test_real_document_questions(data, name):
    doc = D.load_data(data)[0][name]
    if (why := _available(doc)) is not None:
        pytest.skip(why)
    tasks = D.document_tasks(words, 2048, documents=[name], data=data)
    assert len(tasks) >= 8
    for t in tasks:
        assert t.needles[0] in t.context and t.tokens <= 2048
        assert all(a.lower() in t.needles[0].lower() for a in t.answers)


# --- scripts/evaluate.py --documents ---------------------------------------------------

def _evaluate_script():
    from conftest import load_script

    return load_script("evaluate")


class _Tokenizer:
    def encode(self, text: str, add_special_tokens: bool = False) -> list[str]:
        return text.split()


def test_evaluate_documents_option_generates_document_tasks(monkeypatch):
    evaluate = _evaluate_script()
    calls = []

    def fake(count, length=4096, seed=0, documents=None, data=D.DATA):
        calls.append((count("a b c"), length, seed, data))
        return [Task("ctx", "q?", "", ["a"], "docs/lexical", length, seed)]

    monkeypatch.setattr(D, "document_tasks", fake)
    parse = evaluate.build_parser().parse_args
    assert len(evaluate.generate_tasks(parse(["--documents"]), _Tokenizer())) == 1
    evaluate.generate_tasks(parse(["--documents", "--lengths", "1K,8K", "--seed", "3"]), _Tokenizer())
    evaluate.generate_tasks(parse(["--documents", "--whole", "--questions", "heldout"]), _Tokenizer())
    assert calls == [(3, 4096, 0, D.DATA), (3, 1024, 3, D.DATA), (3, 8192, 3, D.DATA), (3, None, 0, D.HELDOUT)]
    with pytest.raises(ValueError, match="--lengths"):
        evaluate.generate_tasks(parse(["--documents", "--whole", "--lengths", "4K"]), _Tokenizer())
    with pytest.raises(ValueError, match="--documents"):
        evaluate.generate_tasks(parse(["--documents", "--tasks", "passkey"]), _Tokenizer())


def test_passage_read_is_judged_by_location_not_by_the_answer_string():
    passage = "The safe opens with 4-19-33."
    context = "Elsewhere 4-19-33 appears. " + "Filler text here. " * 5 + passage + " More filler."
    start = context.index(passage)
    task = Task(context=context, question="q", answer_prefix="", answers=["4-19-33"], task="docs/lexical",
                length=0, seed=0, needles=[passage])
    assert T.passage_read(task, [(start, start + len(passage))]) == 1.0
    assert T.passage_read(task, [(0, 27)]) == 0.0  # the answer string read, far from its passage
    answer = context.index("4-19-33", start)
    assert T.passage_read(task, [(answer, answer + 7)]) == 0.0  # the answer alone: under half the passage
    assert T.passage_read(task, [(start, answer)]) == 0.0  # most of the passage, but not its answer
    assert T.passage_read(task, [(start - 3, start + 12), (start + 12, len(context))]) == 1.0  # two ranges
    assert T.passage_read(Task(context=context, question="q", answer_prefix="", answers=[], task="x",
                               length=0, seed=0), [(0, len(context))]) is None
