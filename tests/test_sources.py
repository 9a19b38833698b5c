"""A folder as one context (ilre/sources.py): which files are read and in what order, code read in
whole lines and blocks, every span naming its file and lines, and --update encoding only what changed."""

from __future__ import annotations

import json
import json.decoder
from pathlib import Path

import pytest
import torch

from conftest import one_line_error, tiny_model, tiny_tokenizer
from ilre.config import ILReConfig
from ilre.index.update import update
from ilre.pipeline import ILRe
from ilre.prefiller import StreamingPrefiller
from ilre.prompt import tokenize_context
from ilre.result import spans_of
from ilre.sources import HEADER, Sources, read_sources
from ilre.units import CODE_BLOCK_TOKENS, find_unit_starts

CODE = '''import os


def parse_header(line):
    """Split one header line."""
    name, _, value = line.partition(":")
    return name.strip().lower(), value.strip()


class Reader:
    limit = 8192

    def read(self, f):
        return f.read(self.limit)
'''


def _tree(root: Path) -> Path:
    (root / "sub").mkdir(parents=True)
    (root / "app.py").write_text(CODE)
    (root / "README.md").write_text("The gate code is 4412. Ask the porter.\n")
    (root / "sub" / "notes.txt").write_text("Nothing happened on Monday.\nThe porter left on Tuesday.\n")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "secret.txt").write_text("hidden\n")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"\x00\x01compiled")
    (root / "logo.png").write_bytes(b"\x89PNG\x00\x00")
    (root / "empty.txt").write_text("  \n")
    (root / "big.txt").write_text("x" * 5000)
    (root / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    (root / ".gitignore").write_text("build/\n*.log\n")
    (root / "build").mkdir()
    (root / "build" / "out.txt").write_text("built\n")
    (root / "run.log").write_text("log\n")
    return root


def test_a_folder_is_its_text_files_in_path_order_each_under_a_header(tmp_path):
    sources = read_sources([_tree(tmp_path / "repo")], max_file_bytes=4096)
    assert [f.path for f in sources.files] == ["README.md", "app.py", "sub/notes.txt"]
    assert dict(sources.skipped) == {"big.txt": "larger than 0.00390625 MiB", "empty.txt": "empty",
                                     "latin.txt": "not UTF-8", "logo.png": "binary"}
    for f in sources.files:
        assert sources.text[f.header:f.start] == HEADER.format(path=f.path)
        assert sources.file_text(f) == (tmp_path / "repo" / f.path).read_text()
    assert [f.kind for f in sources.files] == ["prose", "code", "prose"]


def test_include_exclude_and_several_inputs(tmp_path):
    root = _tree(tmp_path / "repo")
    assert [f.path for f in read_sources([root], include=["*.py"]).files] == ["app.py"]
    assert [f.path for f in read_sources([root], exclude=["sub/", "*.md", "big.*"]).files] == ["app.py"]
    other = tmp_path / "docs"
    other.mkdir()
    (other / "guide.txt").write_text("Read the guide.\n")
    paths = [f.path for f in read_sources([root, other, root / "app.py"], max_file_bytes=4096).files]
    assert paths == ["repo/README.md", "repo/app.py", "repo/sub/notes.txt", "docs/guide.txt", "app.py"]
    with pytest.raises(ValueError, match="no text file found"):
        read_sources([root], include=["*.rs"])


def test_one_file_is_its_own_text_without_a_header(tmp_path):
    (tmp_path / "book.txt").write_text("Once upon a time.\n")
    sources = read_sources([tmp_path / "book.txt"])
    assert sources.text == "Once upon a time.\n" and sources.files[0].path == "book.txt"


def test_code_units_are_whole_lines_and_definitions_start_them():
    text = Path(json.decoder.__file__).read_text()
    sources = Sources.join([("decoder.py", text), ("app.py", CODE)])
    tokens = tokenize_context(tiny_tokenizer(), sources.text)  # one token per byte
    starts = find_unit_starts(sources.text, tokens.offsets, sources.files).tolist()
    chars = [int(tokens.offsets[s, 0]) for s in starts]
    assert all(c == 0 or sources.text[c - 1] == "\n" for c in chars)  # never inside a line
    lines = {sources.text[c:].split("\n", 1)[0] for c in chars}
    assert {"def parse_header(line):", "class Reader:", "    def read(self, f):",
            "def py_scanstring(s, end, strict=True,"} <= lines
    ends = starts[1:] + [len(tokens)]
    for a, b in zip(starts, ends):
        unit = sources.text[int(tokens.offsets[a, 0]):int(tokens.offsets[b - 1, 1])]
        unit = unit.rstrip("\n")  # blank lines end a block
        assert len(unit) <= CODE_BLOCK_TOKENS or unit.count("\n") == 0  # longer only when one line is


def test_a_span_names_its_file_and_lines_and_stops_at_the_file_s_end(tmp_path):
    sources = read_sources([_tree(tmp_path / "repo")], max_file_bytes=4096)
    tokens = tokenize_context(tiny_tokenizer(), sources.text)
    tokens.files = sources.files
    app = sources.files[1]
    a = sources.text.index("def parse_header")
    b = sources.text.index("value.strip()") + len("value.strip()")
    first = int(torch.searchsorted(tokens.offsets[:, 0].contiguous(), torch.tensor(a)))
    last = int(torch.searchsorted(tokens.offsets[:, 0].contiguous(), torch.tensor(b)))
    (span,) = spans_of(tokens, torch.arange(first, last))
    assert (span.file, span.line_start, span.line_end) == ("app.py", 4, 7) and span.source == "app.py:4-7"
    assert CODE[span.file_start:span.file_end] == span.text == sources.text[a:b]
    # a run of tokens across two files is two spans
    notes = sources.files[2]
    across = spans_of(tokens, torch.arange(last, int(torch.searchsorted(tokens.offsets[:, 0].contiguous(),
                                                                        torch.tensor(notes.start + 10)))))
    assert [s.file for s in across] == ["app.py", "sub/notes.txt"]
    assert across[1].line_start == 1 and across[1].file_start == 0 and across[0].line_end == 14


@pytest.fixture
def ilre(tokenizer):
    return ILRe(tiny_model("llama"), tokenizer, ILReConfig(layer=2, budget=48, max_new_tokens=4, window=32,
                                                           chunk_size=40))


def test_a_stream_goes_on_as_if_never_stopped(ilre, tokenizer):
    """With a window that covers the text, continuing a stream equals streaming everything at once."""
    ids = tokenize_context(tokenizer, CODE * 3).ids
    prefiller = StreamingPrefiller(ilre.model, 2, sink=4, window=4096, chunk_size=40)
    whole = prefiller.prefill(ids)
    went_on = prefiller.prefill(ids[100:], after=prefiller.prefill(ids[:100]))
    torch.testing.assert_close(went_on.key_cache.keys, whole.key_cache.keys, rtol=1e-5, atol=1e-5)


def test_update_encodes_only_what_changed(ilre, tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    for i in range(6):
        (root / f"part{i}.txt").write_text(" ".join(f"Part {i} line {j} is plain." for j in range(12)) + "\n")
    encoded = ilre.encode(read_sources([root]))
    loaded = ilre.load_index(encoded.save(tmp_path / "repo.ilre"))
    assert [f.path for f in loaded.tokens.files] == [f"part{i}.txt" for i in range(6)]

    same, change = update(ilre, loaded, read_sources([root]))
    assert not change and same is loaded and str(change) == "up to date"

    (root / "part2.txt").write_text("The vault code is 4417.\n")
    (root / "part4.txt").unlink()
    (root / "part6.txt").write_text("A new part.\n")
    updated, change = update(ilre, loaded, read_sources([root]))
    assert (change.changed, change.added, change.removed) == (["part2.txt"], ["part6.txt"], ["part4.txt"])
    assert not change.rebuilt and change.tokens_encoded < len(loaded.tokens) / 3
    order = ["part0.txt", "part1.txt", "part3.txt", "part5.txt", "part2.txt", "part6.txt"]
    assert [f.path for f in updated.tokens.files] == order
    expected = Sources.join([(p, (root / p).read_text()) for p in order])
    assert updated.tokens.text == expected.text and updated.tokens.files == expected.files
    assert updated.tokens.text[int(updated.tokens.offsets[-1, 0]):] == updated.tokens.text[-1:]
    assert tokenize_context(ilre.tokenizer, updated.tokens.text).ids.tolist() == updated.tokens.ids.tolist()
    n = encoded.prefix_ids.numel()
    keys = updated.state.key_cache.keys
    assert keys.shape[1] == n + len(updated.tokens) == updated.state.key_cache.filled
    before = loaded.tokens.files[2].header  # the files before the first cut keep their keys
    kept = int((loaded.tokens.offsets[:, 0] < before).sum())
    assert torch.equal(keys[:, :n + kept], loaded.state.key_cache.keys[:, :n + kept])
    # the index saved again answers from the new text, and its spans name the new file
    reloaded = ilre.load_index(updated.save(tmp_path / "repo.ilre"))
    result = ilre.answer(reloaded, "What is the vault code?")
    assert "part2.txt" in {s.file for s in result.spans}
    assert all(s.text == reloaded.tokens.text[s.start:s.end] for s in result.spans)


def test_folder_index_answer_and_update_from_the_command_line(tiny_model_dir, tmp_path, capsys):
    from ilre.ask import main as answer
    from ilre.index.__main__ import main as make_index

    root = _tree(tmp_path / "repo")
    common = ["--model", str(tiny_model_dir), "--no-progress", "--window", "32", "--chunk-size", "40"]
    out = tmp_path / "repo.ilre"
    assert make_index(["--context", str(root), "--out", str(out), "--max-file-size", "0.004", *common]) == 0
    captured = capsys.readouterr()
    assert "indexed" in captured.out and "read 3 files" in captured.err and "skipped 4" in captured.err
    assert answer(["--index", str(out), "--query", "What is the gate code?", "--budget", "24", "--json",
                   "--max-new-tokens", "3", "--model", str(tiny_model_dir), "--no-progress"]) == 0
    spans = json.loads(capsys.readouterr().out)["spans"]
    assert spans and all(s["file"] in {"README.md", "app.py", "sub/notes.txt"} and s["line_start"] >= 1 for s in spans)
    assert answer(["--context", str(root), "--query", "What is the gate code?", "--budget", "24",
                   "--max-new-tokens", "3", *common]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("sources: ") and all(p.split(":")[0] in {"README.md", "app.py", "sub/notes.txt"}
                                                for p in line.removeprefix("sources: ").split("; "))

    (root / "README.md").write_text("The gate code is 9921.\n")
    assert make_index(["--context", str(root), "--out", str(out), "--update", "--max-file-size", "0.004",
                       "--no-progress"]) == 0
    assert "1 changed, 0 added, 0 removed" in capsys.readouterr().out
    assert make_index(["--info", str(out)]) == 0 and "files      3" in capsys.readouterr().out
    assert make_index(["--context", str(root), "--out", str(out), "--update", "--no-progress"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert "no text file found" in one_line_error(capsys, make_index, ["--context", str(root / "__pycache__"),
                                                                      "--out", str(tmp_path / "x.ilre")])


def test_the_python_api_takes_a_folder(tiny_model_dir, tmp_path):
    import ilre

    root = _tree(tmp_path / "repo")
    encoded = ilre.encode(root, model=tiny_model_dir, include=["*.py", "*.md"], window=32, chunk_size=40)
    assert [f.path for f in encoded.tokens.files] == ["README.md", "app.py"]
    result = ilre.answer(encoded, "What is the gate code?", budget=24, max_new_tokens=2)
    assert result.spans and {s.file for s in result.spans} <= {"README.md", "app.py"}
    assert ilre.answer([root / "app.py", root / "README.md"], "Which limit?", model=tiny_model_dir,
                       max_new_tokens=2).spans[0].file == "app.py"
