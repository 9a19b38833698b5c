"""The profile's picture: recall against layer (per context length and per recall mode) and
recall against key length at the chosen layer (the paper's single- vs multi-kernel figure)."""

from __future__ import annotations

import logging
from pathlib import Path

from .measure import RecallTable

log = logging.getLogger(__name__)

MODE_NAMES = {"sentence": "sentence units", "single": "single kernel (1)", "multi": "multi-kernel"}


def plot_recall(table: RecallTable, chosen: int, selection_mode: str, path: Path, title: str = "",
                kernels: tuple[int, ...] = ()) -> Path | None:
    """Write a PNG to ``path``; returns it, or None when matplotlib is missing (the plot is optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        log.warning("matplotlib is not installed (pip install matplotlib): no plot written")
        return None
    names = dict(MODE_NAMES)
    if kernels:
        names["multi"] = f"multi-kernel ({','.join(map(str, kernels))})"
    layers = table.layers
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1.2, 1.2, 0.8]})

    ax = axes[0]
    for length, recall in table.by_length[selection_mode].items():
        ax.plot(layers, [100 * r for r in recall], marker="o", ms=3, label=f"{length:,} tokens")
    ax.set_title(f"{names[selection_mode]} recall by context length")

    ax = axes[1]
    for mode, recall in table.mean.items():
        ax.plot(layers, [100 * r for r in recall], marker="o", ms=3, label=names[mode],
                lw=2.2 if mode == selection_mode else 1.2)
    ax.set_title(f"recall by recall mode ({table.samples} samples)")

    for ax in axes[:2]:
        ax.axvline(chosen, color="grey", ls="--", lw=1)
        ax.text(chosen, 101, f" layer {chosen}", color="grey", va="bottom", fontsize=8)
        ax.set_xlabel("decoder layer (0-based); prefill cost grows with it")
        ax.set_ylabel("needle tokens recalled (%)")
        ax.set_ylim(-3, 108)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")

    ax = axes[2]
    i = layers.index(chosen)
    digits = sorted(table.by_digits[selection_mode])
    width = 0.8 / len(table.by_digits)
    for j, (mode, by_digits) in enumerate(table.by_digits.items()):
        xs = [k + (j - (len(table.by_digits) - 1) / 2) * width for k in range(len(digits))]
        ax.bar(xs, [100 * by_digits[d][i] for d in digits], width, label=names[mode])
    ax.set_xticks(range(len(digits)), [f"{d} digits" for d in digits])
    ax.set_ylim(0, 130)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("needle tokens recalled (%)")
    ax.set_title(f"recall by key length at layer {chosen}")
    ax.legend(fontsize=8, loc="upper center", ncol=2)
    ax.grid(alpha=0.3, axis="y")

    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
