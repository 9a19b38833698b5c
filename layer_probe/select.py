"""The selection rule: which layer a recall-per-layer table picks.

Default (the paper's rule): the highest recall, ties to the shallowest layer. The prefill cost
grows with the layer index, so a shallower layer is faster; ``within:POINTS`` trades recall for
speed by taking the shallowest layer whose recall is within POINTS percentage points of the best.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

# Means of the same fractions can differ in the last bits; such layers count as tied.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Preference:
    """How much recall (in percentage points below the best) may be given up for a shallower layer."""

    points: float = 0.0

    @classmethod
    def parse(cls, text: str) -> "Preference":
        """'best' or 'within:POINTS' (e.g. 'within:1'); anything else is a ValueError."""
        rule = text.strip().lower()
        if rule == "best":
            return cls(0.0)
        name, _, value = rule.partition(":")
        try:
            points = float(value)
        except ValueError:
            points = -1.0
        if name != "within" or not 0 <= points <= 100:
            raise ValueError(f"unknown --prefer rule {text!r}: use 'best' or 'within:POINTS' "
                             "with 0 <= POINTS <= 100, e.g. within:1")
        return cls(points)

    @property
    def name(self) -> str:
        return "best" if self.points == 0 else f"within:{self.points:g}"

    def describe(self, measure: str) -> str:
        """The rule in words, as stated in the profile."""
        if self.points == 0:
            return f"highest {measure}; ties go to the shallowest layer"
        return (f"shallowest layer whose {measure} is within {self.points:g} percentage point"
                f"{'' if self.points == 1 else 's'} of the highest")


def select_layer(layers: Sequence[int], recall: Sequence[float], prefer: Preference = Preference()) -> int:
    """The chosen layer: the shallowest whose recall is at least best - prefer.points / 100."""
    if len(layers) != len(recall) or not layers:
        raise ValueError("need one recall value per layer, and at least one layer")
    floor = max(recall) - prefer.points / 100 - TOLERANCE
    return min(layer for layer, r in zip(layers, recall) if r >= floor)
