"""Plain-text per-layer tables of recall, as the command line prints them."""

from __future__ import annotations

from typing import Sequence

from .measure import RecallTable

MODE_HEADERS = {"sentence": "sentence", "single": "kernel 1", "multi": "multi"}


def format_table(layers: Sequence[int], columns: dict[str, Sequence[float]],
                 marks: dict[int, str] | None = None) -> str:
    """One row per layer, one column per named recall series (shown in percent)."""
    marks = marks or {}
    widths = [max(6, len(name)) for name in columns]
    head = "layer  " + "  ".join(name.rjust(w) for name, w in zip(columns, widths))
    lines = [head, "-" * len(head)]
    for i, layer in enumerate(layers):
        cells = "  ".join(f"{100 * values[i]:.1f}".rjust(w) for values, w in zip(columns.values(), widths))
        mark = f"  {marks[layer]}" if layer in marks else ""
        lines.append(f"{layer:>5}  {cells}{mark}")
    return "\n".join(lines)


def length_table(table: RecallTable, length: int, multi_label: str = "multi") -> str:
    """Recall per layer at one context length, for every recall mode."""
    headers = {**MODE_HEADERS, "multi": multi_label}
    return format_table(table.layers, {headers[m]: table.by_length[m][length] for m in table.by_length})


def summary_table(table: RecallTable, selection_mode: str, chosen: int, best: int,
                  multi_label: str = "multi") -> str:
    """The selection mode per length, then every mode's mean; the chosen and best layers marked."""
    headers = {**MODE_HEADERS, "multi": multi_label}
    sel = headers[selection_mode]
    columns = {f"{sel} @{length}": v for length, v in table.by_length[selection_mode].items()}
    columns.update({f"{headers[m]} mean": v for m, v in table.mean.items()})
    marks = {best: "best"}
    marks[chosen] = "<- chosen" + (" (best)" if chosen == best else "")
    return format_table(table.layers, columns, marks)
