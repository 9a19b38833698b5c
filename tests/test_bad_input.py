"""Every kind of bad or odd input through the command line: an answer, or one clear line and a
non-zero exit; never a traceback, never a hang."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from conftest import one_line_error
from ilre.ask import main

TEXT = "Alpha beta gamma. " * 30 + "The code is 4417. " + "Delta epsilon. " * 30


@pytest.fixture
def run(tiny_model_dir, tmp_path, capsys):
    """``run(text_or_path, *options)`` -> the JSON record of a successful answer."""
    def call(context, *options: str, query: str = "What is the code?") -> dict:
        if not isinstance(context, os.PathLike):
            path = tmp_path / "context.txt"
            path.write_text(context, encoding="utf-8")
            context = path
        assert main(["--context", str(context), "--query", query, "--model", str(tiny_model_dir), "--json",
                     "--max-new-tokens", "3", "--no-progress", *options]) == 0
        return json.loads(capsys.readouterr().out)
    return call


def _fails(capsys, tiny_model_dir, context, *options: str, query: str = "q") -> str:
    return one_line_error(capsys, main, ["--context", str(context), "--query", query, "--model", str(tiny_model_dir),
                                         *options])


def test_mixed_scripts_are_answered_with_exact_offsets(run):
    text = "東京の天気は晴れ。 " * 20 + "مرحبا بالعالم. " * 20 + "The code is 4417 🔑. " + "Ünïcödé ok. " * 20
    record = run(text, "--budget", "64")
    assert record["context_tokens"] > 64
    for span in record["spans"]:
        assert text[span["start"]:span["end"]] == span["text"]


def test_standard_input(run, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(TEXT.encode())))
    assert run(Path("-"))["context_tokens"] > 0


def test_one_line_of_200k_characters(run):
    record = run("word " * 40_000, "--budget", "300")
    assert record["context_tokens"] >= 200_000 and record["recalled_tokens"] <= 300


def test_a_query_longer_than_the_context(run):
    record = run("The code is 4417.", query="What is the code? " * 20)
    assert record["whole_context"]


@pytest.mark.parametrize("budget", ["1", "100000000"])
def test_budgets_of_one_and_far_above_the_context(run, budget):
    record = run(TEXT, "--budget", budget)
    assert record["recalled_tokens"] <= int(budget)
    assert record["whole_context"] == (budget != "1")


def test_refused_inputs_get_one_line(capsys, tiny_model_dir, tmp_path):
    cases = {"blank.txt": b"   \n\t\n", "nul.txt": b"text\x00more text", "latin1.txt": "caf\xe9".encode("latin-1"),
             "binary.bin": bytes(range(256)) * 4}
    expected = {"blank.txt": "is empty", "nul.txt": "binary", "latin1.txt": "not UTF-8", "binary.bin": "not UTF-8"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert expected[name] in _fails(capsys, tiny_model_dir, tmp_path / name)
    (tmp_path / "ok.txt").write_text(TEXT)
    assert "out of range" in _fails(capsys, tiny_model_dir, tmp_path / "ok.txt", "--layer", "99")
    assert "invalid choice" in _fails(capsys, tiny_model_dir, tmp_path / "ok.txt", "--recall-unit", "word")
    assert "at least 1" in _fails(capsys, tiny_model_dir, tmp_path / "ok.txt", "--budget", "0")
    assert "query is empty" in _fails(capsys, tiny_model_dir, tmp_path / "ok.txt", query="  ")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_an_endless_device_is_refused_by_size(capsys, tiny_model_dir):
    assert "larger than" in _fails(capsys, tiny_model_dir, "/dev/zero")


def test_a_context_that_would_not_fit_is_refused_before_the_long_pass(capsys, tiny_model_dir, tmp_path, monkeypatch):
    (tmp_path / "book.txt").write_text(TEXT * 4)
    monkeypatch.setenv("ILRE_MEMORY_LIMIT", "1M")
    message = _fails(capsys, tiny_model_dir, tmp_path / "book.txt", "--key-dtype", "float32")
    assert "needs about" in message and "0.00 GiB is available" in message and "tokens fit" in message
    monkeypatch.setenv("ILRE_MEMORY_LIMIT", "8G")
    assert main(["--context", str(tmp_path / "book.txt"), "--query", "q", "--model", str(tiny_model_dir),
                 "--max-new-tokens", "2", "--json"]) == 0


def test_a_model_that_would_not_fit_is_refused_before_loading(capsys, tiny_model_dir, tmp_path, monkeypatch):
    (tmp_path / "book.txt").write_text(TEXT)
    monkeypatch.setenv("ILRE_MEMORY_LIMIT", "10K")
    assert "weights need about" in _fails(capsys, tiny_model_dir, tmp_path / "book.txt")
