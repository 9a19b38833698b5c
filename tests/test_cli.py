"""`python -m ilre.answer`: bad input gets one clear line and a non-zero exit; good input a record."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ilre.answer import main

TEXT = "Alpha beta gamma. " * 40 + "The code is 4417. " + "Delta epsilon. " * 40


@pytest.fixture
def context(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]


def test_missing_context_file(capsys, tmp_path):
    assert "does not exist" in _error(capsys, ["--context", str(tmp_path / "nope.txt"), "--query", "q"])


def test_empty_context_file(capsys, tmp_path):
    (tmp_path / "e.txt").write_text("  \n")
    assert "is empty" in _error(capsys, ["--context", str(tmp_path / "e.txt"), "--query", "q"])


def test_directory_as_context(capsys, tmp_path):
    assert "directory" in _error(capsys, ["--context", str(tmp_path), "--query", "q"])


def test_non_utf8_context(capsys, tmp_path):
    (tmp_path / "l.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    assert "not UTF-8" in _error(capsys, ["--context", str(tmp_path / "l.txt"), "--query", "q"])


def test_unreadable_context(capsys, tmp_path):
    import os

    path = tmp_path / "secret.txt"
    path.write_text("x")
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("running as a user who can read any file")
    assert "cannot read" in _error(capsys, ["--context", str(path), "--query", "q"])


def test_empty_query(capsys, context):
    assert "query is empty" in _error(capsys, ["--context", str(context), "--query", "   "])


def test_zero_budget(capsys, context):
    assert "--budget" in _error(capsys, ["--context", str(context), "--query", "q", "--budget", "0"])


def test_missing_model_directory(capsys, context, tmp_path):
    assert "does not exist" in _error(capsys, ["--context", str(context), "--query", "q",
                                               "--model", str(tmp_path / "no-model")])


def test_unsupported_architecture(capsys, context, tmp_path):
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    msg = _error(capsys, ["--context", str(context), "--query", "q", "--model", str(tmp_path / "gpt2")])
    assert "'gpt2' is not supported" in msg


def test_unknown_device(capsys, context, tiny_model_dir):
    assert "unknown device" in _error(capsys, ["--context", str(context), "--query", "q",
                                               "--model", str(tiny_model_dir), "--device", "tpu"])


def test_layer_out_of_range(capsys, context, tiny_model_dir):
    msg = _error(capsys, ["--context", str(context), "--query", "q", "--model", str(tiny_model_dir),
                          "--layer", "9"])
    assert "layer 9 is out of range" in msg and "0..3" in msg


def test_bad_kernels(capsys, context, tiny_model_dir):
    assert "odd" in _error(capsys, ["--context", str(context), "--query", "q", "--model", str(tiny_model_dir),
                                    "--recall-unit", "token", "--kernels", "1,4"])


def test_json_record(capsys, context, tiny_model_dir):
    argv = ["--context", str(context), "--query", "What is the code?", "--model", str(tiny_model_dir),
            "--layer", "2", "--budget", "30", "--max-new-tokens", "3", "--json", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    record = json.loads(out)
    assert record["layer"] == 2 and record["recalled_tokens"] == 30
    assert record["context_tokens"] == len(TEXT.encode())
    assert set(record["timings"]) == {"tokenize", "prefill", "score", "recall", "answer"}
    for span in record["spans"]:
        assert TEXT[span["start"]:span["end"]] == span["text"]


def test_budget_over_context_is_stated(capsys, context, tiny_model_dir):
    argv = ["--context", str(context), "--query", "q?", "--model", str(tiny_model_dir), "--layer", "1",
            "--budget", "100000", "--max-new-tokens", "2", "--no-progress"]
    assert main(argv) == 0
    assert "covers the whole context" in capsys.readouterr().err


def test_help_explains_every_option():
    out = subprocess.run([sys.executable, "-m", "ilre.answer", "--help"], capture_output=True, text=True).stdout
    for option in ("--context", "--query", "--model", "--device", "--dtype", "--layer", "--budget", "--kernels",
                   "--sink", "--window", "--chunk-size", "--max-new-tokens", "--json", "--positions"):
        assert option in out
