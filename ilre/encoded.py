"""A context encoded once: its tokens and what the streaming prefill left of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .lexical import LexicalIndex
from .prefiller import StreamState
from .prompt import ContextTokens
from .units import TextUnits


@dataclass
class EncodedContext:
    """A context streamed once to the retrieval layer; it can answer many queries, now or, saved
    as an index (:meth:`save`, :func:`ilre.load_index`), later."""

    tokens: ContextTokens
    prefix_ids: torch.Tensor
    state: StreamState | None
    """None until a budget smaller than the context asks for recall."""
    timings: dict[str, float]
    pipeline: Any = field(default=None, repr=False)
    """The ``ILRe`` that encoded it (or loaded it), which answers from it and saves it."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The settings that shaped ``state`` (``ILRe.encoding``); a pipeline with others refuses it."""
    words: dict[tuple[int, int], LexicalIndex] = field(default_factory=dict, repr=False)
    """The words of each unit split asked about (by ``TextUnits.key``); a saved index brings its own."""

    def lexical(self, units: TextUnits, context: int) -> LexicalIndex:
        """The BM25 index of these units (made on first use, then kept: many questions share it)."""
        if units.key not in self.words:
            offsets, text = self.tokens.offsets, self.tokens.text
            texts = [text[int(offsets[a, 0]):int(offsets[b - 1, 1])]
                     for a, b in zip(units.starts.tolist(), units.ends.tolist())]
            self.words[units.key] = LexicalIndex.of(texts, context)
        index = self.words[units.key]
        return index if index.context == context else index.with_context(context)

    def save(self, path: str | Path) -> Path:
        """Write this encoding to ``path`` as an index file (atomically; see ilre/index/store.py)."""
        return self.pipeline.save(self, path)


def check_settings(ours: dict[str, Any], theirs: dict[str, Any], origin: str = "this encoding") -> None:
    """Refuse an encoding made under other settings than ``ours``: answering from it would be
    silently wrong."""
    wrong = [f"{k} {theirs[k]!r} (here {ours[k]!r})" for k in ours if k in theirs and theirs[k] != ours[k]]
    if wrong:
        raise ValueError(f"{origin} was made with other settings: {', '.join(wrong)}; encode the context again "
                         "with these settings, or use the encoding's")
