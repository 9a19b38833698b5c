"""Run every system on the same tasks with the same model, resumably, timing each answer.

One results folder holds:
  tasks.jsonl        the tasks (context, question, answer prefix, expected answers, ...)
  predictions.jsonl  one row per (task, system, settings), appended as soon as it is computed;
                     a row already there is never recomputed, so an interrupted run resumes
  settings.json      per system, the settings its rows depend on and their fingerprint

A row carries the fingerprint of the settings its system depends on (an ILRe variant: the
model and the whole ILRe configuration; full context: the model and the prompt; the others:
also the budget and their own parameters). When a setting changes, only the systems that
depend on it are recomputed, and rows made under other settings never mix into a table.

Work is shared where the systems share it: the ILRe variants answer from one streaming
prefill per task, and full context and the SnapKV-style recall from one full-depth pass
(GemFilter runs its own full-attention pass, up to the retrieval layer only).
The time and memory of a shared stage are charged in full to every system that needs it,
so each row reads as the cost of answering one question about a fresh context.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from tqdm.auto import tqdm

from device.memory import PeakMemory

from ilre.answerer import generate
from ilre.recaller import whole_context
from ilre.sources import FileSpan, Sources
from .tasks import Task, file_read, passage_read, score, score_share
from .baselines import Sample, full_pass, greedy_continue
from .systems import OK, OVER_LENGTH, OVER_TIME, SYSTEMS, System, prefill_key, task_key

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# the store


@dataclass
class Store:
    """The results folder: settings, tasks and the append-only predictions file."""

    folder: Path

    @property
    def predictions(self) -> Path:
        return self.folder / "predictions.jsonl"

    def record_settings(self, settings: dict[str, dict]) -> None:
        """Add these systems' settings (by fingerprint) to settings.json, for the record."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / "settings.json"
        known = json.loads(path.read_text()) if path.is_file() else {}
        for system, entry in settings.items():
            known.setdefault(system, {})[entry["fingerprint"]] = entry["settings"]
        path.write_text(json.dumps(known, indent=2) + "\n")

    def rows(self, fingerprints: dict[str, str]) -> dict[tuple[str, str], dict]:
        """Rows by (task key, system) of the systems in ``fingerprints``, made under those settings.

        A later row for the same pair replaces an earlier one.
        """
        out: dict[tuple[str, str], dict] = {}
        if self.predictions.is_file():
            with open(self.predictions, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError:  # a line cut short by an interruption
                            continue
                        if fingerprints.get(row["system"]) == row.get("config"):
                            out[(row["key"], row["system"])] = row
        return out

    def append(self, row: dict) -> None:
        with open(self.predictions, "ab+") as f:
            if f.seek(0, 2) and (f.seek(-1, 2), f.read(1))[1] != b"\n":
                f.write(b"\n")  # end a line cut short by an interruption, so it stays one bad line
            f.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))


def finished(row: dict | None) -> bool:
    """Computed rows are final; skipped and failed rows are looked at again on the next run."""
    return row is not None and row["status"] == OK


# ---------------------------------------------------------------------------------------
# the runner


@dataclass
class Runner:
    """Answers every task with every system and appends one row per (task, system)."""

    ilre: Any  # ilre.pipeline.ILRe
    store: Store
    systems: list[System]
    max_context_tokens: int = 16384
    """Full context and SnapKV-style are skipped on longer contexts (their cost is O(L²))."""
    max_seconds: float = 600.0
    """... and at every length above one where a sample of theirs took longer than this."""
    threads: int = 1
    progress: bool = True
    index_dir: Path | None = None
    """Where ILRe's encodings are saved as index files and read back (whole documents, asked many
    questions: each is encoded once); None encodes each task's context afresh."""
    _last: dict[str, Any] = field(default_factory=dict, repr=False)
    """The last context's sample and encodings, reused while tasks share that context."""

    @property
    def budget(self) -> int:
        return self.ilre.config.budget

    @property
    def fingerprints(self) -> dict[str, str]:
        return {s.name: s.fingerprint(self.ilre) for s in self.systems}

    def run(self, tasks: Iterable[Task]) -> dict[tuple[str, str], dict]:
        tasks = sorted(tasks, key=lambda t: (t.length, t.task, t.seed))
        fingerprints = self.fingerprints
        self.store.record_settings({s.name: {"fingerprint": fingerprints[s.name], "settings": s.settings(self.ilre)}
                                    for s in self.systems})
        rows = self.store.rows(fingerprints)
        total = len(tasks) * len(self.systems)
        done = sum(finished(rows.get((task_key(t), s.name))) for t in tasks for s in self.systems)
        if done < total:
            self.warm_up()
        bar = tqdm(total=total, initial=done, unit="answer", desc="evaluate", disable=not self.progress,
                   dynamic_ncols=True)
        for task in tasks:
            key = task_key(task)
            todo = [s for s in self.systems if not finished(rows.get((key, s.name)))]
            if not todo:
                continue
            bar.set_postfix_str(f"{task.task} {task.length // 1024}K")
            for row in self._answer(task, key, todo, rows):
                rows[(key, row["system"])] = row
                self.store.append(row)
                bar.update(1)
        bar.close()
        return rows

    def warm_up(self) -> None:
        """One untimed pass through each code path: one-time allocations are not charged to a row."""
        text = "The grass is green. The sky is blue. " * 40
        encoded = self.ilre.encode(text)
        self.ilre.answer(encoded, "What colour is the sky?")
        sample = self._sample(Task(text, "What colour is the sky?", "", [], "warm-up", 0, 0))
        p = sample.prefix.numel()
        fp = full_pass(self.ilre.model, sample.full_prompt(), sample.suffix.numel(), (p, p + len(sample.tokens)))
        greedy_continue(self.ilre.answer_model, self.ilre.tokenizer, fp.cache, fp.last_logits, 4)

    # -- one task -------------------------------------------------------------------------

    def _answer(self, task: Task, key: str, todo: list[System], rows: dict) -> Iterable[dict]:
        fingerprints = self.fingerprints
        base = dict(key=key, task=task.task, length=task.length, seed=task.seed, tokens=task.tokens,
                    answers=task.answers, threads=self.threads)
        t0 = time.perf_counter()
        sample = self._sample(task)
        tokenize = time.perf_counter() - t0

        def row(system: System, status: str = OK, **fields) -> dict:
            return {**base, "system": system.name, "config": fingerprints[system.name], "status": status, **fields}

        ilre_variants = [s for s in todo if s.kind == "ilre"]
        capped = [s for s in todo if s.capped]
        selecting = [s for s in todo if s.kind == "select"]
        if ilre_variants:
            yield from self._guard(ilre_variants, row, lambda: self._ilre(task, sample, ilre_variants, row))
        if capped:
            reason = self._over_cap(task, rows)
            if reason:
                for s in capped:
                    yield row(s, reason)
            else:
                full = [s for s in capped if s.kind != "gemfilter"]
                if full:
                    yield from self._guard(full, row, lambda: self._full(task, sample, tokenize, full, row))
                for s in capped:
                    if s.kind == "gemfilter":
                        yield from self._guard([s], row, lambda s=s: [self._gemfilter(task, sample, tokenize, s, row)])
        for s in selecting:
            yield from self._guard([s], row, lambda s=s: [self._select(task, sample, tokenize, s, row)])

    def _guard(self, systems: list[System], row: Callable, work: Callable[[], Iterable[dict]]) -> Iterable[dict]:
        """Rows of ``work``; a failure becomes an error row for the systems not yet answered."""
        answered = set()
        try:
            for r in work():
                answered.add(r["system"])
                yield r
        except (RuntimeError, ValueError, MemoryError) as exc:
            log.warning("%s failed: %s", ",".join(s.name for s in systems), exc)
            for s in systems:
                if s.name not in answered:
                    yield row(s, f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")

    def _sample(self, task: Task) -> Sample:
        last = self._last.get("sample")
        if last is not None and last.tokens.text == task.context:  # the same long context: tokenised once
            return replace(Sample.of(self.ilre, "", task.question, task.answer_prefix), tokens=last.tokens)
        self._last["sample"] = Sample.of(self.ilre, task.context, task.question, task.answer_prefix)
        return self._last["sample"]

    def _over_cap(self, task: Task, rows: dict) -> str | None:
        if task.tokens > self.max_context_tokens:
            return OVER_LENGTH
        slow = [r for r in rows.values() if r["status"] == OK and r["system"] in SYSTEMS and SYSTEMS[r["system"]].capped
                and r["length"] < task.length
                and max(r.get("stages", {}).get(k, 0) for k in ("full_pass", "filter_pass")) > self.max_seconds]
        return OVER_TIME if slow else None

    def _result(self, task: Task, kept: tuple[str, int, list[tuple[int, int]]], prediction: str, prompt_tokens: int,
                seconds: float, peak_mib: float, stages: dict[str, float]) -> dict:
        """Row fields; ``kept`` is the context text the system read, its token count and its
        character ranges in the context (where the passage read is judged)."""
        return dict(prediction=prediction, correct=score(prediction, task), share=score_share(prediction, task),
                    kept_tokens=kept[1], kept_answers=score_share(kept[0], task),
                    kept_passage=passage_read(task, kept[2]), kept_file=file_read(task, kept[2]),
                    prompt_tokens=prompt_tokens,
                    time_s=round(seconds, 3), peak_mib=round(peak_mib, 1),
                    stages={k: round(v, 3) for k, v in stages.items()})

    def _kept(self, sample: Sample, positions: torch.Tensor) -> tuple[str, int, list[tuple[int, int]]]:
        return (sample.kept_text(positions, self.ilre.config.gap_marker), int(positions.numel()),
                sample.read_spans(positions))

    def _generate(self, prompt: torch.Tensor) -> str:
        text, _ = generate(self.ilre.answer_model, self.ilre.tokenizer, prompt, self.ilre.config.max_new_tokens)
        return text

    def _encoding(self, variant, task: Task, key: tuple):
        """The task's context (its files, if it has them) encoded by ``variant``: afresh, or (with
        ``index_dir``) once, saved as an index and read back for later tasks on the same context
        (kept in memory while they last)."""
        context = task.context if not task.files else Sources(task.context, [FileSpan(**f) for f in task.files])
        if self.index_dir is None:
            return variant.encode(context)
        name = hashlib.blake2b(json.dumps([task.context, key]).encode(), digest_size=8).hexdigest()
        if name in self._last.get("encodings", {}):
            return self._last["encodings"][name]
        path = self.index_dir / f"{name}.ilre"
        if path.is_file():
            encoded = variant.load_index(path)
        else:
            self.index_dir.mkdir(parents=True, exist_ok=True)
            log.info("encoding a context of %d characters once, into %s", len(task.context), path)
            encoded = variant.encode(context, progress=self.progress)
            encoded.save(path)
        self._last["encodings"] = {name: encoded}
        return encoded

    def _ilre(self, task: Task, sample: Sample, variants: list[System], row: Callable) -> Iterable[dict]:
        """The ILRe variants, answering from one streaming prefill per prefill setting."""
        encodings: dict[tuple, tuple] = {}
        for system in variants:
            variant = self.ilre.with_config(**system.ilre)  # same model, another configuration
            key = prefill_key(variant)
            if key not in encodings:
                with PeakMemory() as enc_mem:
                    t0 = time.perf_counter()
                    encoded = self._encoding(variant, task, key)
                    encodings[key] = (encoded, time.perf_counter() - t0, enc_mem)
            encoded, encode_s, enc_mem = encodings[key]
            with PeakMemory(base=enc_mem.base) as mem:
                t0 = time.perf_counter()
                result = variant.answer(encoded, task.question, task.answer_prefix)
                answer_s = time.perf_counter() - t0
            kept = self.ilre.config.gap_marker.join(span.text for span in result.spans)
            yield row(system, **self._result(
                task, (kept, result.recalled_tokens, [(s.start, s.end) for s in result.spans]), result.answer, result.prompt_tokens, encode_s + answer_s,
                max(enc_mem.peak, mem.peak) / 2**20 - enc_mem.base / 2**20, result.timings))

    def _full(self, task: Task, sample: Sample, tokenize: float, systems: list[System],
              row: Callable) -> Iterable[dict]:
        """Full context, SnapKV-style and LagKV, from one full-depth pass."""
        p = sample.prefix.numel()
        span = (p, p + len(sample.tokens))
        keep_cache = any(s.kind in ("full", "lagkv") for s in systems)
        with PeakMemory() as pass_mem:
            fp = full_pass(self.ilre.model, sample.full_prompt(), sample.suffix.numel(), span)
            if not keep_cache:
                fp.cache = None
        pass_peak = pass_mem.peak_mib
        for system in systems:  # the selecting ones first: the full answer's decoding grows the cache
            if system.kind in ("snapkv", "lagkv"):
                with PeakMemory() as mem:
                    t0 = time.perf_counter()
                    positions = (system.selector.select(fp.window_attention, self.budget) if system.kind == "snapkv"
                                 else system.selector.select(fp.cache, span, self.budget))
                    t1 = time.perf_counter()
                    prompt = sample.prompt(positions)
                    text = self._generate(prompt)
                    t2 = time.perf_counter()
                yield row(system, **self._result(
                    task, self._kept(sample, positions), text, prompt.numel(), tokenize + fp.seconds + (t2 - t0),
                    max(pass_peak, mem.peak_mib), {"tokenize": tokenize, "full_pass": fp.seconds,
                                                   "recall": t1 - t0, "answer": t2 - t1}))
        for system in systems:
            if system.kind == "full":
                with PeakMemory(base=pass_mem.base) as mem:
                    t0 = time.perf_counter()
                    text, _ = greedy_continue(self.ilre.answer_model, self.ilre.tokenizer, fp.cache, fp.last_logits,
                                              self.ilre.config.max_new_tokens)
                    decode = time.perf_counter() - t0
                prefill = fp.seconds - fp.probe_seconds  # the attention probe is SnapKV's work
                yield row(system, **self._result(
                    task, (task.context, len(sample.tokens), [(0, len(task.context))]), text, sample.full_prompt().numel(), tokenize + prefill + decode,
                    max(pass_peak, mem.peak_mib), {"tokenize": tokenize, "full_pass": prefill, "answer": decode}))
        fp.cache = None

    def _gemfilter(self, task: Task, sample: Sample, tokenize: float, system: System, row: Callable) -> dict:
        """GemFilter at ILRe's layer and budget: a full-attention pass up to the layer, top tokens, answer."""
        p = sample.prefix.numel()
        span = (p, p + len(sample.tokens))
        if (whole := whole_context(len(sample.tokens), self.budget)) is not None:  # then no filter pass at all
            return self._choose_and_answer(task, sample, tokenize, system, row, {"recall": lambda _: whole})
        return self._choose_and_answer(task, sample, tokenize, system, row, {
            "filter_pass": lambda _: system.selector.scores(self.ilre.model, sample.full_prompt(), span,
                                                            self.ilre.config.layer),
            "recall": lambda scores: system.selector.top(scores, self.budget)})

    def _select(self, task: Task, sample: Sample, tokenize: float, system: System, row: Callable) -> dict:
        """A system that chooses from the text alone (StreamingLLM, RAG), then answers."""
        return self._choose_and_answer(task, sample, tokenize, system, row,
                                       {"recall": lambda _: system.selector.select(sample, self.budget)})

    def _choose_and_answer(self, task: Task, sample: Sample, tokenize: float, system: System, row: Callable,
                           stages: dict[str, Callable[[Any], Any]]) -> dict:
        """Run ``stages`` in order, each timed and given the previous one's value (the last one's: the
        positions to read), then answer."""
        times = {"tokenize": tokenize}
        positions = None
        with PeakMemory() as mem:
            for name, stage in stages.items():
                t0 = time.perf_counter()
                positions = stage(positions)
                times[name] = time.perf_counter() - t0
            t0 = time.perf_counter()
            prompt = sample.prompt(positions)
            text = self._generate(prompt)
            times["answer"] = time.perf_counter() - t0
        return row(system, **self._result(task, self._kept(sample, positions), text, prompt.numel(),
                                          sum(times.values()), mem.peak_mib, times))

