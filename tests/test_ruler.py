"""RULER's own generators (evaluation.ruler): the sentence-splitter stand-in, turning RULER's
output into Task records, and clean errors; with ILRE_RULER set to a RULER checkout, one real
sample too. No model is loaded."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from evaluation import ruler as R
from evaluation.tasks import Task

from conftest import tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]

# Shaped like RULER's task templates and output records (made up here, not RULER's text).
TEMPLATE = "Some numbers are hidden in the text below. Remember them.\n{context}\nWhat is the number for {query}?"
HAYSTACK = "The grass is green. The sky is blue.\nThe number for wry-cat is: 4815162.\nThe sun is yellow."
RECORD = {
    "index": 97,  # RULER's niah scripts store the answer's character offset here
    "input": "A number is hidden in the text below. Remember it.\n" + HAYSTACK + "\nWhat is the number for wry-cat?",
    "outputs": ["4815162"],
    "length": 60,
    "length_w_model_temp": 60,
    "answer_prefix": " The number for wry-cat is",
    "token_position_answer": 25,
}


def words(text: str) -> int:
    return len(text.split())


@pytest.mark.parametrize("text, expected", [
    ("The grass is green. The sky is blue.", ["The grass is green.", "The sky is blue."]),
    ("Mr. Smith met Dr. Jones. They talked!", ["Mr. Smith met Dr. Jones.", "They talked!"]),
    ('He said "Stop." Then he left. Why? Nobody knows.',
     ['He said "Stop."', "Then he left.", "Why?", "Nobody knows."]),
    ("J. R. Tolkien wrote it in 1937. the end is lower case.",
     ["J. R. Tolkien wrote it in 1937. the end is lower case."]),
    ("Pi is 3.14. E is 2.72.", ["Pi is 3.14.", "E is 2.72."]),
    ("  No full stop at the end  ", ["No full stop at the end"]),
    ("", []),
])
def test_split_sentences(text, expected):
    assert R.split_sentences(text) == expected


def test_nltk_stand_in_splits_like_split_sentences(tmp_path):
    """The stand-in package written for RULER's subprocess has the same splitter and never downloads."""
    (tmp_path / "__init__.py").write_text(R.NLTK_SHIM.format(pattern=R.SENTENCE_BREAK.pattern))
    spec = importlib.util.spec_from_file_location("nltk_stand_in", tmp_path / "__init__.py")
    shim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shim)
    text = "Mr. Smith met Dr. Jones. They talked! " + HAYSTACK
    assert shim.sent_tokenize(text) == R.split_sentences(text)
    assert shim.download("punkt") is False


def test_record_becomes_task():
    task = R.to_task(RECORD, "niah_single_1", 4096, 3, words, TEMPLATE)
    assert task.context == "A number is hidden in the text below. Remember it.\n" + HAYSTACK
    assert task.question == "What is the number for wry-cat?"
    assert task.answer_prefix == "The number for wry-cat is"
    assert task.answers == ["4815162"] and task.answers[0] in task.context
    assert (task.task, task.length, task.seed) == ("ruler/niah_single_1", 4096, 3)
    assert task.tokens == words(task.context)
    assert Task.from_json(task.to_json()) == task


def test_few_shot_example_stays_in_the_context():
    """vt and cwe put a solved example, with its own question line, before the task: only the
    last question is the question."""
    template = "Track the variables.\n\n{context}\nQuestion: Which variables hold {query}?"
    example = "Track the variables.\n\nVAR AB = 1\nVAR CD = VAR AB\nQuestion: Which variables hold 1? Answer: AB CD\n"
    task_text = "Track the variables.\n\nnoise\nVAR QQ = 7\nnoise\nQuestion: Which variables hold 7?"
    record = {"index": 0, "input": example + "\n" + task_text, "outputs": ["QQ"],
              "answer_prefix": " Answer: they are: "}
    task = R.to_task(record, "vt", 4096, 0, words, template)
    assert task.question == "Question: Which variables hold 7?"
    assert task.context.startswith(example) and task.context.endswith("VAR QQ = 7\nnoise")
    assert task.answer_prefix == "Answer: they are:"


def test_input_without_the_question_is_an_error():
    with pytest.raises(R.RulerError, match="cannot find the question"):
        R.split_input("one line with no question", TEMPLATE)
    with pytest.raises(R.RulerError, match="cannot find the question"):
        R.split_input("context\nsomething else entirely", TEMPLATE)


def test_missing_checkout_is_a_clean_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        R.generate(tmp_path / "nowhere", tokenizer=None)
    with pytest.raises(ValueError, match="not a RULER checkout"):
        R.checkout(tmp_path)


def test_evaluate_reports_a_bad_checkout_in_one_line(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("evaluate_for_ruler", ROOT / "scripts" / "evaluate.py")
    evaluate = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = evaluate
    spec.loader.exec_module(evaluate)
    assert evaluate.main(["--ruler", str(tmp_path / "nowhere"), "--lengths", "1K", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nowhere" in err[0]


def test_substitute_essay_is_plain_text_in_rulers_format(tmp_path):
    text = tmp_path / "book.txt"
    text.write_text("_Opticks_ is a book.\nIt is about light.")
    assert json.loads(R._essay_json(text)) == {"text": "Opticks is a book.\nIt is about light."}


@pytest.mark.skipif(not os.environ.get("ILRE_RULER"), reason="set ILRE_RULER to a RULER checkout to run")
def test_rulers_own_generator_runs_offline():
    tasks = R.generate(os.environ["ILRE_RULER"], tiny_tokenizer(), ["niah_single_1"], [1024], samples=1)
    assert len(tasks) == 1
    task = tasks[0]
    assert task.task == "ruler/niah_single_1" and task.length == 1024 and task.question
    assert task.answers and all(a in task.context for a in task.answers)
    assert 0 < task.tokens <= 1024
