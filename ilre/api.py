"""The functions ``ilre.encode``, ``ilre.load_index`` and ``ilre.answer``: one loaded model per
(model, device), shared by every call."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=2)
def _pipeline(model: str | None, device: str | None):
    from .pipeline import ILRe

    return ILRe.from_pretrained(model, device=device)


def encode(text: str, model: str | os.PathLike | None = None, device: str | None = None, progress: bool = False,
           **config: Any):
    """``text`` streamed once to the retrieval layer; ``config`` sets ILReConfig fields."""
    return _pipeline(None if model is None else str(model), device).with_config(**config).encode(text, progress)


def load_index(path: str | os.PathLike, model: str | os.PathLike | None = None, device: str | None = None,
               **config: Any):
    """An index saved by ``EncodedContext.save``, with the model and settings it was made with
    (``model`` defaults to the one recorded in the index); ``config`` sets recall options."""
    from .index import read_meta

    meta = read_meta(path)
    model = model or meta["model"].get("source")
    pipeline = _pipeline(None if model is None else str(model), device).with_config(**{**meta["settings"], **config})
    return pipeline.load_index(path)


def answer(context, question: str, answer_prefix: str = "", model: str | os.PathLike | None = None,
           device: str | None = None, **config: Any):
    """The answer to ``question`` about ``context``: a text, or an encoding from :func:`encode` or
    :func:`load_index` (then answered by the model that made it)."""
    from .pipeline import EncodedContext

    if isinstance(context, EncodedContext):
        pipeline = context.pipeline.with_config(**config) if config else context.pipeline
    else:
        pipeline = _pipeline(None if model is None else str(model), device).with_config(**config)
    return pipeline.answer(context, question, answer_prefix)
