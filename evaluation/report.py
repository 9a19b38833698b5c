"""The results table (markdown) and plot (PNG) from the prediction rows of a results folder."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Any, Iterable

from ilre.cli import length_label
from .systems import OK, System


def _group(rows: Iterable[dict], *fields: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        out[tuple(r[f] for f in fields)].append(r)
    return out


def _cell(rows: list[dict], value, fmt: str) -> str:
    """A table cell: ``value`` of the computed rows, else why there are none."""
    ok = [r for r in rows if r["status"] == OK]
    if ok:
        return fmt.format(value(ok))
    if not rows:
        return "–"
    if any(r["status"].startswith("skipped") for r in rows):
        return rows[0]["status"] if len({r["status"] for r in rows}) == 1 else "skipped (over cap)"
    return "error"


def accuracy(rows: list[dict]) -> float:
    return 100.0 * mean(r["correct"] for r in rows)


def ruler_score(rows: list[dict]) -> float:
    """RULER's string_match_all: the share of the expected strings in the answer, averaged."""
    return 100.0 * mean(r["share"] for r in rows)


def kept(rows: list[dict]) -> float:
    return 100.0 * mean(r["kept_answers"] for r in rows)


def passage(rows: list[dict]) -> float:
    """Share of the answering passages read, judged by their location (rows without one are left out)."""
    judged = [r["kept_passage"] for r in rows if r.get("kept_passage") is not None]
    return 100.0 * mean(judged) if judged else float("nan")


def file_found(rows: list[dict]) -> float:
    """Share of the questions whose answering file was among what was read (contexts of files only)."""
    judged = [r["kept_file"] for r in rows if r.get("kept_file") is not None]
    return 100.0 * mean(judged) if judged else float("nan")


def seconds(rows: list[dict]) -> float:
    return mean(r["time_s"] for r in rows)


def memory(rows: list[dict]) -> float:
    return max(r["peak_mib"] for r in rows)


def _table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def markdown(rows: list[dict], systems: list[System], meta: dict[str, Any]) -> str:
    """Accuracy, answers kept, time and memory per system and length; accuracy per task."""
    lengths = sorted({r["length"] for r in rows})
    by_cell = _group(rows, "system", "length")
    per_length = {n: len({r["key"] for r in rows if r["length"] == n}) for n in lengths}
    header = ["system"] + [f"{length_label(n)} (n={per_length[n]})" for n in lengths]

    def summary(value, fmt: str) -> list[str]:
        return _table(header, [[s.label] + [_cell(by_cell.get((s.name, n), []), value, fmt) for n in lengths]
                               for s in systems])

    out = [f"# {meta.get('title', 'ILRe evaluation')}", ""]
    if meta.get("command"):
        out += [f"Made by `{meta['command']}`.", ""]
    facts = [f"{k}: {v}" for k, v in meta.items() if k not in ("title", "command")]
    if facts:
        out += ["; ".join(facts) + ".", ""]
    sections = (
        ("Accuracy (%)", accuracy, "{:.0f}", "All expected strings found in the answer (case-insensitive), mean over "
         "the tasks run at each length; n = tasks per length."),
        ("Score (%, RULER's metric)", ruler_score, "{:.1f}", "Share of the expected strings found in the answer, "
         "averaged over the tasks (RULER's string_match_all; equal to accuracy where a task expects one string)."),
        ("Answers in what the system read (%)", kept, "{:.0f}", "Share of the expected strings present in the "
         "context tokens the system kept: a miss here is a retrieval miss, a miss above but not here is a reading miss."),
        ("Answering passage read (%)", passage, "{:.0f}", "Share of the planted or answering passages that lie "
         "inside what the system read, judged by where they are in the context, not by the answer string."),
        ("Time to answer (s, mean per task)", seconds, "{:.1f}",
         "Wall clock from the context text to the answer, shared stages charged in full."),
        ("Peak memory (MiB, max over tasks)", memory, "{:.0f}", "Resident memory above what the process held before "
         "the system started (the loaded model is not counted), sampled every 5 ms."),
    )
    for title, value, fmt, explanation in sections:
        out += [f"## {title}", "", explanation, ""] + summary(value, fmt) + [""]

    by_task = _group(rows, "system", "task", "length")
    pairs = sorted({(r["task"], r["length"]) for r in rows}, key=lambda p: (p[1], p[0]))
    by_task_sections = [("Score by task (%, RULER's metric)", ruler_score, "{:.1f}"),
                        ("Answers in what the system read, by task (%)", kept, "{:.0f}"),
                        ("Answering passage read, by task (%)", passage, "{:.0f}")]
    if any(r.get("kept_file") is not None for r in rows):
        by_task_sections.append(("Answering file among what was read, by task (%)", file_found, "{:.0f}"))
    for title, value, fmt in by_task_sections:
        body = []
        for task, n in pairs:
            count = len({r["key"] for r in rows if r["task"] == task and r["length"] == n})
            body.append([task, length_label(n), str(count)]
                        + [_cell(by_task.get((s.name, task, n), []), value, fmt) for s in systems])
        out += [f"## {title}", ""] + _table(["task", "length", "n"] + [s.label for s in systems], body) + [""]
    return "\n".join(out)


def plot(rows: list[dict], systems: list[System], path: Path, title: str = "") -> None:
    """Accuracy, answers kept and time to answer against context length, one line per system.

    Systems are nudged sideways a little so that equal values stay visible.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({r["length"] for r in rows})
    per_length = {n: len({r["key"] for r in rows if r["length"] == n}) for n in lengths}
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    panels = ((accuracy, "accuracy (%)"), (kept, "answers in what the system read (%)"),
              (seconds, "time to answer (s, mean)"))
    markers = "osD^vP*X"
    by_cell = _group(rows, "system", "length")
    for i, s in enumerate(systems):
        points = [(n, [r for r in by_cell.get((s.name, n), []) if r["status"] == OK]) for n in lengths]
        points = [(n, ok) for n, ok in points if ok]
        if not points:
            continue
        nudge = 2 ** (0.06 * (i - (len(systems) - 1) / 2))
        xs = [n * nudge for n, _ in points]
        style = dict(marker=markers[i % len(markers)], linestyle="-" if s.kind == "ilre" else "--", label=s.label)
        for ax, (value, _) in zip(axes, panels):
            ax.plot(xs, [value(ok) for _, ok in points], **style)
    for ax, (_, label) in zip(axes, panels):
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [f"{length_label(n)}\nn={per_length[n]}" for n in lengths])
        ax.minorticks_off()
        ax.set_xlabel("context length (tokens); n = tasks")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax in axes[:2]:
        ax.set_ylim(-3, 103)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title + " (the task mix differs between lengths: compare systems at one length)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
