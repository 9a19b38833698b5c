"""Reading what a user hands over: a context file (or standard input) and a file of questions,
each refused with one line that says what is wrong and what to do."""

from __future__ import annotations

import json
import sys
from pathlib import Path


MAX_TEXT_BYTES = 256 * 2**20
"""The largest text read (about 60M tokens, far beyond any context that runs): a guard against a
device or a pipe that never ends, such as /dev/zero."""


def check_file(path: Path, what: str, missing: str = "", error: type[ValueError] = ValueError) -> None:
    """Raise ``error`` naming ``what`` when ``path`` does not exist (with the ``missing`` hint) or is a folder."""
    if not path.exists():
        raise error(f"{what} {path} does not exist" + (f": {missing}" if missing else ""))
    if path.is_dir():
        raise error(f"{what} {path} is a directory: pass a file")


def read_text(path: Path, what: str = "context file") -> str:
    """The file's text ('-': standard input), or a ValueError saying what is wrong and what to do."""
    try:
        if str(path) == "-":
            data = sys.stdin.buffer.read(MAX_TEXT_BYTES + 1)
        else:
            check_file(path, what)
            with open(path, "rb") as f:
                data = f.read(MAX_TEXT_BYTES + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path}: {exc.strerror}") from exc
    if len(data) > MAX_TEXT_BYTES:
        raise ValueError(f"{what} {path} is larger than {MAX_TEXT_BYTES // 2**20} MiB (a device, or a pipe that "
                         "does not end?): pass a text file, or split it")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {path} is not UTF-8 (byte {exc.start}): convert it, "
                         f"e.g. iconv -f latin1 -t utf-8") from exc
    if not text.strip():
        raise ValueError(f"{what} {path} is empty")
    if "\x00" in text:
        raise ValueError(f"{what} {path} is binary (it holds NUL bytes): pass a text file")
    return text


def read_queries(path: Path, answer_prefix: str = "") -> list[tuple[str, str]]:
    """(question, answer prefix) pairs of a --queries file: plain lines, or JSONL records."""
    questions = []
    for number, line in enumerate(read_text(path, "queries file").splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
                questions.append((str(record["query"]), str(record.get("answer_prefix", answer_prefix))))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f"{path}, line {number}: a JSON line needs a 'query' field, like "
                                 '{"query": "Who?", "answer_prefix": "It was"}') from None
        else:
            questions.append((line.strip(), answer_prefix))
    for question, _ in questions:
        if not question.strip():
            raise ValueError(f"{path} holds an empty query")
    return questions
