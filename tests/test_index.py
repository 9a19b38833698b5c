"""Saved indexes (ilre/index.py): an answer from the file equals the answer from the text; bad
files and mismatches are refused with one clear message; a failed write leaves nothing."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import one_line_error, tiny_model
from ilre import index
from ilre.config import ILReConfig
from ilre.pipeline import ILRe

TEXT = " ".join(f"Line {i} says the weather was mild." for i in range(60)) + " The vault code is 4417. " + \
    " ".join(f"Note {i}: nothing happened." for i in range(60))
QUESTION = "What is the vault code?"


@pytest.fixture(params=["llama", "qwen2"])
def ilre(request, tokenizer):
    return ILRe(tiny_model(request.param), tokenizer, ILReConfig(layer=2, budget=48, max_new_tokens=6, window=32,
                                                                  chunk_size=40))


def test_answer_from_a_saved_index_equals_the_answer_from_the_text(ilre, tmp_path):
    encoded = ilre.encode(TEXT)
    path = encoded.save(tmp_path / "book.ilre")
    loaded = ilre.load_index(path)
    assert torch.equal(loaded.state.key_cache.keys, encoded.state.key_cache.keys)
    for kept, fresh in zip(loaded.state.windows, encoded.state.windows):
        assert torch.equal(kept.keys, fresh.keys) and torch.equal(kept.values, fresh.values)
    from_text = ilre.answer(TEXT, QUESTION, "The code is")
    from_index = ilre.answer(loaded, QUESTION, "The code is")
    assert from_index.answer_tokens == from_text.answer_tokens
    assert [(s.start, s.end, s.text) for s in from_index.spans] == [(s.start, s.end, s.text) for s in from_text.spans]
    # recall-only settings may differ from the ones at indexing time
    other = ilre.with_config(budget=24, recall_unit="token", max_new_tokens=3)
    assert other.answer(loaded, QUESTION).answer_tokens == other.answer(TEXT, QUESTION).answer_tokens


def test_scores_from_a_loaded_index_equal_the_in_memory_ones(ilre, tmp_path):
    encoded = ilre.encode(TEXT)
    loaded = ilre.load_index(encoded.save(tmp_path / "book.ilre"))
    query = ilre.template.query(QUESTION)
    scores = []
    for enc in (encoded, loaded):
        queries = ilre.prefiller().query_states(enc.state, query.ids)
        scores.append(ilre.scorer.score_context(ilre.decoder, queries, enc.state.key_cache, enc.prefix_ids.numel(),
                                                query.question, ilre.recaller.units(enc.tokens)))
    assert torch.equal(scores[0], scores[1])


def test_the_header_says_what_the_index_holds(ilre, tmp_path):
    path = ilre.encode(TEXT).save(tmp_path / "book.ilre")
    meta = index.read_meta(path)
    assert meta["format"] == index.FORMAT and meta["model"]["fingerprint"] == ilre.identity["fingerprint"]
    assert meta["settings"] == ilre.encoding and meta["context"]["characters"] == len(TEXT)
    text = index.describe(path)
    assert "fingerprint" in text and "layer=2" in text and "MiB" in text


def test_other_model_or_settings_are_refused(ilre, tokenizer, tmp_path):
    path = ilre.encode(TEXT).save(tmp_path / "book.ilre")
    other_model = ILRe(tiny_model("llama", seed=1), tokenizer, ilre.config)
    with pytest.raises(ValueError, match="another model"):
        other_model.load_index(path)
    for change in ({"layer": 1}, {"window": 64}, {"sink": 2}, {"chunk_size": 16}, {"instruction": "Read."}):
        with pytest.raises(ValueError, match="other settings: " + next(iter(change))):
            ilre.with_config(**change).load_index(path)


def test_bad_files_are_refused(ilre, tmp_path):
    path = ilre.encode(TEXT).save(tmp_path / "book.ilre")
    data = path.read_bytes()
    cases = {"missing.ilre": None, "truncated.ilre": data[: len(data) // 2], "text.ilre": b"just some text\n",
             "flipped.ilre": data[:-10] + bytes([data[-10] ^ 0xFF]) + data[-9:]}
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(index.IndexFileError):
            ilre.load_index(tmp_path / name)
    with pytest.raises(index.IndexFileError, match="directory"):
        ilre.load_index(tmp_path)
    # a newer format
    tensors, meta = index.read(path)
    newer = index.write(tmp_path / "newer.ilre", tensors, {k: v for k, v in meta.items() if k != "format"})
    raw = newer.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + header_len])
    inner = json.loads(header["__metadata__"]["ilre"])
    inner["format"] = index.FORMAT + 1
    header["__metadata__"]["ilre"] = json.dumps(inner)
    encoded_header = json.dumps(header).encode()
    encoded_header += b" " * (-len(encoded_header) % 8)
    (tmp_path / "newer.ilre").write_bytes(len(encoded_header).to_bytes(8, "little") + encoded_header + raw[8 + header_len:])
    with pytest.raises(index.IndexFileError, match="newer"):
        ilre.load_index(tmp_path / "newer.ilre")


def test_a_failed_write_leaves_no_file(ilre, tmp_path, monkeypatch):
    encoded = ilre.encode(TEXT)

    def interrupted(tensors, filename, metadata=None):
        open(filename, "wb").write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        encoded.save(tmp_path / "book.ilre")
    assert list(tmp_path.iterdir()) == []


# -- the command lines ---------------------------------------------------------------------------


def _json_lines(capsys) -> list[dict]:
    out = capsys.readouterr().out
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_index_then_answer_from_the_command_line(tiny_model_dir, tmp_path, capsys):
    from ilre.ask import main as answer
    from ilre.index.__main__ import main as make_index

    book = tmp_path / "book.txt"
    book.write_text(TEXT, encoding="utf-8")
    questions = tmp_path / "questions.txt"
    questions.write_text(f"{QUESTION}\n\n" + json.dumps({"query": "Which line is mild?", "answer_prefix": "Line"})
                         + "\nWhat happened?\n", encoding="utf-8")
    common = ["--model", str(tiny_model_dir), "--budget", "48", "--max-new-tokens", "5", "--no-progress"]
    encoding = ["--window", "32", "--chunk-size", "40"]
    assert make_index(["--context", str(book), "--out", str(tmp_path / "book.ilre"), "--model", str(tiny_model_dir),
                       "--no-progress", *encoding]) == 0
    assert "indexed" in capsys.readouterr().out
    assert make_index(["--info", str(tmp_path / "book.ilre")]) == 0
    assert "window=32" in capsys.readouterr().out

    assert answer(["--context", str(book), "--queries", str(questions), "--json", *common, *encoding]) == 0
    from_text = _json_lines(capsys)
    assert answer(["--index", str(tmp_path / "book.ilre"), "--queries", str(questions), "--json", *common]) == 0
    from_index = _json_lines(capsys)
    assert [r["query"] for r in from_index] == [QUESTION, "Which line is mild?", "What happened?"]
    assert [r["answer_tokens"] for r in from_index] == [r["answer_tokens"] for r in from_text]
    # --queries answers as separate runs do
    for record in from_text:
        prefix = "Line" if record["query"] == "Which line is mild?" else ""
        assert answer(["--context", str(book), "--query", record["query"], "--answer-prefix", prefix, "--json",
                       *common, *encoding]) == 0
        assert json.loads(capsys.readouterr().out)["answer_tokens"] == record["answer_tokens"]
    # an option repeating the index's setting is fine; one contradicting it is refused
    assert answer(["--index", str(tmp_path / "book.ilre"), "--query", QUESTION, "--window", "32", "--json",
                   *common]) == 0
    capsys.readouterr()
    message = one_line_error(capsys, answer, ["--index", str(tmp_path / "book.ilre"), "--query", QUESTION,
                                              "--window", "64", *common])
    assert "--window 64 contradicts the index" in message
    (tmp_path / "fake.ilre").write_text("not an index")
    assert "not an ILRe index" in one_line_error(capsys, answer, ["--index", str(tmp_path / "fake.ilre"),
                                                                  "--query", QUESTION, *common])
    (tmp_path / "bad.txt").write_text('{"question": "no query field"}\n')
    assert "needs a 'query' field" in one_line_error(capsys, answer, ["--context", str(book), "--queries",
                                                                      str(tmp_path / "bad.txt"), *common])


def test_the_python_api_encodes_saves_loads_and_answers(tiny_model_dir, tmp_path):
    import ilre as api

    settings = dict(layer=2, budget=48, window=32, max_new_tokens=5)
    enc = api.encode(TEXT, model=tiny_model_dir, device="cpu", **settings)
    path = enc.save(tmp_path / "book.ilre")
    loaded = api.load_index(path, device="cpu", budget=48, max_new_tokens=5)  # the model recorded in the index
    assert loaded.pipeline.config.window == 32 and loaded.pipeline.config.layer == 2
    assert api.answer(loaded, QUESTION).answer_tokens == api.answer(enc, QUESTION).answer_tokens \
        == api.answer(TEXT, QUESTION, model=tiny_model_dir, device="cpu", **settings).answer_tokens


def test_an_index_made_with_a_lagkv_memory_answers_as_its_text_and_only_under_that_setting(ilre, tmp_path):
    remembering = ilre.with_config(window=64, lag_memory=16)
    encoded = remembering.encode(TEXT)
    assert any(w.memory for w in encoded.state.windows)  # the memory was used
    loaded = remembering.load_index(encoded.save(tmp_path / "book.ilre"))
    assert remembering.answer(loaded, QUESTION).answer_tokens == remembering.answer(TEXT, QUESTION).answer_tokens
    with pytest.raises(ValueError, match="lag_memory 16"):
        ilre.with_config(window=64).load_index(tmp_path / "book.ilre")


def test_an_index_saved_under_the_older_split_finds_its_units_again(ilre, tmp_path):
    wrapped = TEXT.replace(" The vault code is", "\nThe vault\ncode is").replace("Line 7 says", "Line 7\nsays")
    encoded = ilre.encode(wrapped)
    tensors, meta = index.read(encoded.save(tmp_path / "book.ilre"))
    old_starts = torch.unique(torch.cat([tensors["unit_starts"], tensors["unit_starts"] + 1]))  # other units
    old = {k: v for k, v in meta.items() if k not in ("split_rule", "format", "checksum")}
    path = index.write(tmp_path / "old.ilre", {**tensors, "unit_starts": old_starts.to(tensors["unit_starts"].dtype)},
                       old)
    loaded = ilre.load_index(path)
    assert torch.equal(loaded.tokens.unit_starts(), encoded.tokens.unit_starts())
    assert ilre.answer(loaded, QUESTION).answer_tokens == ilre.answer(wrapped, QUESTION).answer_tokens
    current = ilre.load_index(tmp_path / "book.ilre")
    assert torch.equal(current.tokens.unit_starts(), encoded.tokens.unit_starts())
