"""NVIDIA RULER's own synthetic task generators, run offline from a RULER checkout.

The project's generators (``evaluation.tasks``) follow RULER's wording; these are RULER's scripts
themselves, so a score here compares with published RULER numbers. Nothing of RULER is
copied: the scripts run from the checkout the user names, in a subprocess, with the settings
that RULER's ``scripts/synthetic.yaml`` and ``scripts/data/synthetic/constants.py`` give each
task (read from the checkout), RULER's plain ``base`` model template (the project applies the
model's chat template itself) and the evaluated model's tokenizer (saved to a temporary
folder, passed as ``--tokenizer_type hf``).

What RULER would download is supplied locally instead:

- the Paul Graham essays (the ``essay`` haystack): the checkout's own
  ``json/PaulGrahamEssays.json`` when it has been downloaded, else a public-domain Project
  Gutenberg text, Newton's *Opticks*, which Go's source tree ships as test data (Debian:
  ``apt-get install golang-src``), or any text file passed as ``haystack``;
- nltk's punkt sentence splitter: where nltk or its data is missing, a stand-in ``nltk``
  package with a regex splitter goes on the subprocess's PYTHONPATH (and nowhere else);
- cwe's ``json/english_words.json``, a Git LFS file (only a pointer in a clone made without
  git-lfs): Webster's Second International, public domain, from the english-words package.
  wonderwords' word lists (niah keys, cwe) ship inside that PyPI package.

Each context is shorter than its length: RULER's max_seq_length also holds the question, the
answer prefix and the answer's token budget, and RULER backs a sample that overshoots off by
a whole step of haystack (500 essay words, 25 noise sentences or needles).

RULER's outputs become ``Task`` records: ``context`` is RULER's prompt up to its final
question line (its instruction, its few-shot example where it has one, the haystack),
``question`` that line, ``answer_prefix`` RULER's answer prefix, ``answers`` its expected
strings.

Scoring: RULER scores all eleven tasks with ``string_match_all``
(``scripts/eval/synthetic/constants.py``): per sample, the share of expected strings found in
the prediction, case-insensitive, averaged over samples. That is ``evaluation.tasks.score_share``
per sample (the ``share`` of each prediction row), averaged.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os
import re
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

from .tasks import Task, TokenLen, tokenizer_len_for

log = logging.getLogger(__name__)

RULER_TASKS = ("niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
               "niah_multikey_3", "niah_multivalue", "niah_multiquery", "vt", "cwe", "fwe")
SEED_STRIDE = 1_000_000
"""Task.seed = seed * SEED_STRIDE + sample index: RULER's index with the default seed 0, and
distinct seeds never collide in a results folder."""
NEEDS = ("numpy", "scipy", "tenacity", "tqdm", "transformers", "wonderwords", "yaml")
"""What RULER's generator scripts import (scipy: fwe; wonderwords: niah and cwe)."""

# A sentence ends after . ! or ? (and a closing quote or bracket), before whitespace and a
# capital letter; not after a single initial or a common title ("J. Smith", "Dr. Jones").
SENTENCE_BREAK = re.compile(
    r"(?:(?<=[.!?])|(?<=[.!?][\"'\u201d\u2019)\]]))"
    r"(?<!\b[A-Z]\.)(?<!\bMr\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bMrs\.)(?<!\bProf\.)"
    r"\s+(?=[\"'\u201c\u2018(\[]?[A-Z])")

NLTK_SHIM = '''"""Stand-in for nltk in RULER's generators: a regex sentence splitter, no downloads."""
import re

_BREAK = re.compile({pattern!r})


def sent_tokenize(text, language="english"):
    return [s for s in _BREAK.split(text.strip()) if s]


def download(*args, **kwargs):
    return False
'''

GUTENBERG_TEXT = "src/testdata/Isaac.Newton-Opticks.txt"
"""Newton's Opticks (Project Gutenberg eBook 33504) inside a Go source tree."""


class RulerError(ValueError):
    """A RULER checkout, dependency or generator problem; the message says what to do."""


def split_sentences(text: str) -> list[str]:
    """The stand-in for nltk's sent_tokenize: RULER only uses it to choose needle depths."""
    return [s for s in SENTENCE_BREAK.split(text.strip()) if s]


def checkout(path: str | os.PathLike) -> Path:
    """The checkout's ``scripts`` folder, or a RulerError saying what is missing."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise RulerError(f"RULER checkout {root} does not exist: pass the folder of a clone of "
                         "github.com/NVIDIA/RULER")
    scripts = root / "scripts"
    missing = [p for p in ("synthetic.yaml", "data/template.py", "data/synthetic/constants.py",
                           "data/synthetic/niah.py") if not (scripts / p).is_file()]
    if missing:
        raise RulerError(f"{root} is not a RULER checkout (no scripts/{missing[0]}): "
                         "pass the folder of a clone of github.com/NVIDIA/RULER")
    return scripts


def task_config(scripts: Path, name: str) -> dict[str, Any]:
    """RULER's settings for one task: its script, arguments, template and answer budget."""
    import yaml

    tasks = yaml.safe_load((scripts / "synthetic.yaml").read_text(encoding="utf-8"))
    if name not in tasks:
        raise RulerError(f"RULER task {name!r} is not in {scripts / 'synthetic.yaml'}")
    kind, args = tasks[name]["task"], tasks[name].get("args", {})
    base = runpy.run_path(str(scripts / "data" / "synthetic" / "constants.py"))["TASKS"][kind]
    model_template = runpy.run_path(str(scripts / "data" / "template.py"))["Templates"]["base"]
    # as RULER's prepare.py composes it, with the base (no chat) model template
    template = model_template.format(task_template=base["template"]) + base.get("answer_prefix", "")
    return {"script": scripts / "data" / "synthetic" / f"{kind}.py", "args": args, "template": template,
            "task_template": base["template"], "tokens_to_generate": base["tokens_to_generate"]}


def split_input(text: str, task_template: str) -> tuple[str, str]:
    """(context, question) of a RULER input: the question is what RULER's task template puts
    after ``{context}``, as many lines from the end as that part has line breaks."""
    tail = task_template.split("{context}", 1)[1]
    breaks = tail.count("\n")
    parts = text.rsplit("\n", breaks) if breaks else []
    first_word = tail.split()[0]
    question = "\n".join(parts[1:]).strip()
    if len(parts) != breaks + 1 or not question.startswith(first_word):
        raise RulerError(f"cannot find the question in a RULER input ending {text[-80:]!r}: "
                         f"expected it to start with {first_word!r}")
    return parts[0].rstrip(), question


def to_task(record: dict[str, Any], name: str, length: int, seed: int, count: TokenLen,
            task_template: str) -> Task:
    """One line of RULER's output as a Task (RULER's niah records keep the answer's character
    offset in ``index``, so the sample number comes from the caller)."""
    context, question = split_input(record["input"], task_template)
    return Task(context=context, question=question, answer_prefix=record.get("answer_prefix", "").strip(),
                answers=[str(a) for a in record["outputs"]], task=f"ruler/{name}", length=length, seed=seed,
                tokens=count(context))


def find_gutenberg_text() -> Path | None:
    """Newton's Opticks from an installed Go source tree (Debian's golang-src), if any."""
    roots = [os.environ.get("GOROOT", ""), "/usr/local/go", "/usr/lib/go",
             *sorted(glob.glob("/usr/share/go-*")), *sorted(glob.glob("/usr/lib/go-*"))]
    found = [Path(r) / GUTENBERG_TEXT for r in roots if r and (Path(r) / GUTENBERG_TEXT).is_file()]
    return found[0] if found else None


def _essay_json(haystack: Path | None) -> str:
    """RULER's essay file format, {"text": ...}, holding the substitute text."""
    path = haystack or find_gutenberg_text()
    if path is None or not Path(path).is_file():
        raise RulerError("the essay haystack needs RULER's Paul Graham essays or a substitute text: "
                         "install Go's source tree (Debian: apt-get install golang-src, which ships "
                         "Newton's Opticks from Project Gutenberg) or pass a text file as haystack")
    log.info("essay haystack: %s instead of the Paul Graham essays", path)
    # Project Gutenberg's plain texts mark italics with underscores: markup, not text
    return json.dumps({"text": Path(path).read_text(encoding="utf-8").replace("_", "")})


def _english_words_json() -> str:
    """RULER's english_words.json format ({key: word}) holding the words of Webster's Second
    International (public domain) from the english-words package. cwe loads the file always
    but draws from it only when it needs more words than wonderwords has (past ~100K tokens)."""
    if importlib.util.find_spec("english_words") is None:
        raise RulerError("the checkout's json/english_words.json is a Git LFS pointer: run `git lfs pull` "
                         "in it, or pip install -e '.[eval]' in the project for the english-words substitute")
    from english_words import get_english_words_set

    # one- and two-letter words would be found inside almost any answer
    words = sorted(w for w in get_english_words_set(["web2"], alpha=True, lower=True) if len(w) > 2)
    log.info("cwe's extra words: %d from Webster's Second (english-words), the checkout's file is a Git LFS "
             "pointer", len(words))
    return json.dumps({str(i): w for i, w in enumerate(words)})


def _punkt_ready() -> bool:
    """Whether the real nltk can split sentences here without downloading anything."""
    if importlib.util.find_spec("nltk") is None:
        return False
    import nltk

    try:
        nltk.sent_tokenize("One sentence. Another one.")
    except LookupError:
        return False
    return True


def _workspace(scripts: Path, work: Path, tokenizer: Any, haystack: Path | None,
               configs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Lay out the temporary folder; returns the subprocess's environment.

    RULER's scripts find their data files next to themselves, so they run from a mirror of
    ``scripts/data`` made of symlinks (Python still imports their modules from the checkout)
    with the substitute data files; the checkout itself is not changed.
    """
    tokenizer.save_pretrained(work / "tokenizer")
    data = scripts / "data"
    for src in data.rglob("*"):
        if src.is_file() and "__pycache__" not in src.parts:
            link = work / "data" / src.relative_to(data)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(src.resolve())
    json_dir = work / "data" / "synthetic" / "json"
    json_dir.mkdir(parents=True, exist_ok=True)
    words = json_dir / "english_words.json"
    if any(c["script"].name == "common_words_extraction.py" for c in configs.values()) and (
            not words.is_file() or words.read_bytes()[:40].startswith(b"version https://git-lfs")):
        words.unlink(missing_ok=True)  # a Git LFS pointer: the checkout was cloned without git-lfs
        words.write_text(_english_words_json(), encoding="utf-8")
    essay = json_dir / "PaulGrahamEssays.json"
    if any(c["args"].get("type_haystack") == "essay" for c in configs.values()):
        if haystack is not None or not essay.exists():
            essay.unlink(missing_ok=True)
            essay.write_text(_essay_json(haystack), encoding="utf-8")
        else:
            log.info("essay haystack: the checkout's Paul Graham essays")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    if not _punkt_ready():
        log.info("nltk's punkt is not available: RULER's scripts get a regex sentence splitter")
        shim = work / "shim" / "nltk"
        shim.mkdir(parents=True)
        (shim / "__init__.py").write_text(NLTK_SHIM.format(pattern=SENTENCE_BREAK.pattern), encoding="utf-8")
        (shim / "tokenize.py").write_text("from nltk import sent_tokenize  # noqa: F401\n", encoding="utf-8")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shim.parent), os.environ.get("PYTHONPATH")]))
    return env


def generate(ruler: str | os.PathLike, tokenizer: Any, names: Iterable[str] = RULER_TASKS,
             lengths: Iterable[int] = (4096,), samples: int = 1, seed: int = 0,
             haystack: str | os.PathLike | None = None) -> list[Task]:
    """Run RULER's generators for every (task, length), ``samples`` each, with ``seed`` as
    RULER's random seed (RULER's own default is 42).

    ``lengths`` are RULER's max_seq_length: the whole prompt plus the answer's token budget,
    so each context is somewhat shorter. ``haystack``: a text file that replaces the essays.
    """
    scripts = checkout(ruler)
    names, lengths = list(names), list(lengths)
    unknown = [n for n in names if n not in RULER_TASKS]
    if unknown:
        raise RulerError(f"unknown RULER task {', '.join(unknown)}; known: {', '.join(RULER_TASKS)}")
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        raise RulerError(f"RULER's generators need {', '.join(missing)}: pip install -e '.[ruler]' "
                         f"in the project (or pip install {' '.join(missing)})")
    configs = {n: task_config(scripts, n) for n in names}
    count = tokenizer_len_for(tokenizer)
    tasks: list[Task] = []
    with tempfile.TemporaryDirectory(prefix="ilre-ruler-") as tmp:
        work = Path(tmp)
        env = _workspace(scripts, work, tokenizer, Path(haystack) if haystack else None, configs)
        for name in names:
            c = configs[name]
            for length in lengths:
                out = work / "out" / str(length)
                cmd = [sys.executable, str(work / "data" / "synthetic" / c["script"].name),
                       "--save_dir", str(out), "--save_name", name, "--subset", "validation",
                       "--tokenizer_type", "hf", "--tokenizer_path", str(work / "tokenizer"),
                       "--max_seq_length", str(length), "--tokens_to_generate", str(c["tokens_to_generate"]),
                       "--num_samples", str(samples), "--random_seed", str(seed), "--template", c["template"]]
                for key, value in c["args"].items():
                    cmd += [f"--{key}", str(value)]
                log.info("RULER %s at %d tokens: %d samples", name, length, samples)
                run = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
                if run.returncode != 0:
                    log.error("%s", run.stderr[-4000:])
                    last = (run.stderr.strip().splitlines() or ["no output"])[-1]
                    raise RulerError(f"RULER's {c['script'].name} failed for {name} at {length} tokens: {last}")
                with open(out / name / "validation.jsonl", encoding="utf-8") as f:
                    records = [json.loads(line) for line in f if line.strip()]
                tasks += [to_task(r, name, length, seed * SEED_STRIDE + i, count, c["task_template"])
                          for i, r in enumerate(records)]
    return tasks
