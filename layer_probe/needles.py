"""The probe's needle tasks: which passkeys to plant, where, and which context tokens hold them.

The tasks are generated offline from a seed, so a profile can be reproduced exactly. They vary
what the paper varies: the key length (a short 5-digit passkey up to a long 64-digit one, where
single-kernel pooling fails), the depth of the needle, the haystack (repeated noise sentences or
varied prose) and the context length, including lengths beyond the model's trained window.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from evaluation.generators import passkey
from evaluation.tasks import Task, TokenLen

if TYPE_CHECKING:  # torch is imported when a mask is made, so the command line's --help stays fast
    import torch

    from ilre.prompt import ContextTokens

HAYSTACKS = ("noise", "prose")
# A needle ends in punctuation that carries no fact; it is not counted as a needle token.
_TRAILING = ".!?;:, \n"


@dataclass(frozen=True)
class NeedleSpec:
    """One probe sample: a passkey of ``digits`` digits at ``depth`` in a ``length``-token context."""

    length: int
    index: int
    seed: int
    digits: int
    haystack: str
    depth: float

    def to_dict(self) -> dict:
        return asdict(self)


def plan(lengths: list[int], samples: int, seed: int, key_digits: tuple[int, ...] = (5, 64),
         haystacks: tuple[str, ...] = HAYSTACKS) -> list[NeedleSpec]:
    """``samples`` needles per length, mixing key lengths and haystacks evenly.

    Key lengths cycle fastest, haystacks next. Depths are strata spread evenly over the context,
    shuffled per length so that no key length is always at the same depth.
    """
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if not key_digits or any(not 5 <= d <= 64 for d in key_digits):
        raise ValueError(f"key lengths must be between 5 and 64 digits, got {list(key_digits)}")
    unknown = [h for h in haystacks if h not in HAYSTACKS]
    if not haystacks or unknown:
        raise ValueError(f"unknown haystack {unknown[0] if unknown else ''!r}: use {', '.join(HAYSTACKS)}")
    specs = []
    for length in lengths:
        depths = [(j + 0.5) / samples for j in range(samples)]
        random.Random(f"{seed}/{length}/depths").shuffle(depths)
        for i in range(samples):
            specs.append(NeedleSpec(
                length=length,
                index=i,
                seed=random.Random(f"{seed}/{length}/{i}").getrandbits(31),
                digits=key_digits[i % len(key_digits)],
                haystack=haystacks[(i // len(key_digits)) % len(haystacks)],
                depth=round(depths[i], 4),
            ))
    return specs


def make_task(spec: NeedleSpec, count: TokenLen) -> Task:
    """The passkey task of ``spec``; its wording is drawn from the sample's seed too."""
    return passkey(count, spec.length, spec.seed, depth=spec.depth, digits=spec.digits,
                   haystack=spec.haystack, phrasing_seed=spec.seed)


def needle_mask(tokens: ContextTokens, needles: list[str]) -> torch.Tensor:
    """Bool [L]: the context tokens whose characters overlap a needle (trailing punctuation excluded)."""
    import torch

    mask = torch.zeros(len(tokens), dtype=torch.bool)
    starts, ends = tokens.offsets[:, 0], tokens.offsets[:, 1]
    for needle in needles:
        at = tokens.text.find(needle)
        if at < 0:
            raise ValueError(f"needle {needle[:40]!r} is not in the context")
        end = at + len(needle.rstrip(_TRAILING))
        mask |= (starts < end) & (ends > at)
    if not mask.any():
        raise ValueError("no context token overlaps the needles")
    return mask
