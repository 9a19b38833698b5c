"""`python -m ilre.answer`: bad input gets one clear line and a non-zero exit; good input a record."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import one_line_error
from ilre import cli
from ilre.ask import main
from ilre.config import ILReConfig

ROOT = Path(__file__).resolve().parent.parent

TEXT = "Alpha beta gamma. " * 40 + "The code is 4417. " + "Delta epsilon. " * 40


@pytest.fixture
def context(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def _error(capsys, argv: list[str]) -> str:
    return one_line_error(capsys, main, argv)


def test_missing_context_file(capsys, tmp_path):
    assert "does not exist" in _error(capsys, ["--context", str(tmp_path / "nope.txt"), "--query", "q"])


def test_empty_context_file(capsys, tmp_path):
    (tmp_path / "e.txt").write_text("  \n")
    assert "is empty" in _error(capsys, ["--context", str(tmp_path / "e.txt"), "--query", "q"])


def test_a_folder_without_text_files(capsys, tmp_path):
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\x00\x00")
    assert "no text file found" in _error(capsys, ["--context", str(tmp_path), "--query", "q"])


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
    # Whole sentences within the budget, the one that holds the code among them (its words match).
    assert record["layer"] == 2 and 0 < record["recalled_tokens"] <= 30
    assert any("4417" in span["text"] for span in record["spans"])
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


# -- what every command line shares (ilre/cli.py) -----------------------------------------------


def test_one_length_grammar():
    parse = cli.lengths()
    assert parse("4k,16k") == (4096, 16384)
    assert parse(" 16K, 1500 ,4k,4096") == (1500, 4096, 16384)
    assert parse("1.5k,1m,8K,1M") == (1536, 8192, 1048576)
    assert [cli.length_label(n) for n in (1024, 65536, 131072, 1048576, 300)] == ["1K", "64K", "128K", "1M", "300"]
    for bad in ("4x", "", ",,", "-4k", "0", "1.3"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="at least 256"):
        cli.lengths(minimum=256)("100,4K")


def test_config_options_come_from_the_config():
    """Each field's type, choices, minimum and default reach the option; help shows no 'None'."""
    parser = cli.Parser("prog", "test")
    cli.add_config_options(parser, "budget", "recall_unit", "kernels", "shares", "chunk_size", "unit_cut",
                           "question_numbers")
    args = parser.parse_args(["--kernels", "1,7", "--unit-cut", "0.5", "--question-numbers", "No"])
    config = cli.config_from(args)
    assert config == replace(ILReConfig(), kernels=(1, 7), unit_cut=0.5, question_numbers=False)
    assert cli.config_from(parser.parse_args([])) == ILReConfig()
    help_text = " ".join(parser.format_help().split())
    assert "None" not in help_text and "default: 256" in help_text and "default: 1,7,31" in help_text
    assert "default: sentence" in help_text and "{sentence,token}" in help_text
    assert "--question-numbers yes|no" in help_text and "default: yes" in help_text
    for bad in (["--budget", "0"], ["--recall-unit", "word"], ["--kernels", "1,x"], ["--chunk-size", "0"],
                ["--question-numbers", "maybe"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    with pytest.raises(ValueError, match="kernels must be odd"):
        cli.config_from(parser.parse_args(["--kernels", "2"]))


@pytest.mark.parametrize("module", ["ilre.answer", "layer_probe", "scripts/evaluate.py",
                                    "scripts/tune_defaults.py", "scripts/bench.py"])
def test_help_of_every_command_shows_each_default_once(module):
    command = [sys.executable, module, "--help"] if module.endswith(".py") else [sys.executable, "-m", module, "--help"]
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "default: None" not in out and "(default: None)" not in out
    for block in out.split("\n  -")[1:]:
        assert block.count("default:") <= 1, block
