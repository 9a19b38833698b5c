"""The functions ``ilre.encode``, ``ilre.load_index`` and ``ilre.answer``: one loaded model per
(model, device), shared by every call."""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

Context = str | os.PathLike | Sequence[os.PathLike]
"""A context: a text (str), or a file or folder (a path), or several of them (a list of paths)."""


@lru_cache(maxsize=2)
def _pipeline(model: str | None, device: str | None):
    from .pipeline import ILRe

    return ILRe.from_pretrained(model, device=device)


def _sources(context: Context, include: Sequence[str], exclude: Sequence[str]):
    """A text as it is; paths read as ``ilre.sources.read_sources`` reads them (a folder's text
    files, each under a header, every span then naming its file and lines)."""
    from .sources import Sources, read_sources

    if isinstance(context, (str, Sources)):
        return context
    return read_sources([context] if isinstance(context, os.PathLike) else list(context), include, exclude)


def encode(context: Context, model: str | os.PathLike | None = None, device: str | None = None,
           progress: bool = False, include: Sequence[str] = (), exclude: Sequence[str] = (), **config: Any):
    """``context`` streamed once to the retrieval layer; ``include``/``exclude``: .gitignore-style
    patterns of a folder's files; ``config`` sets ILReConfig fields."""
    pipeline = _pipeline(None if model is None else str(model), device).with_config(**config)
    return pipeline.encode(_sources(context, include, exclude), progress)


def load_index(path: str | os.PathLike, model: str | os.PathLike | None = None, device: str | None = None,
               **config: Any):
    """An index saved by ``EncodedContext.save``, with the model and settings it was made with
    (``model`` defaults to the one recorded in the index); ``config`` sets recall options."""
    from .index import read_meta

    meta = read_meta(path)
    model = model or meta["model"].get("source")
    pipeline = _pipeline(None if model is None else str(model), device).with_config(**{**meta["settings"], **config})
    return pipeline.load_index(path)


def answer(context: "Context | EncodedContext", question: str, answer_prefix: str = "",
           model: str | os.PathLike | None = None, device: str | None = None, **config: Any):
    """The answer to ``question`` about ``context``: a text, a path (file or folder) or a list of
    them, or an encoding from :func:`encode` or :func:`load_index` (then answered by the model that
    made it)."""
    from .pipeline import EncodedContext

    if isinstance(context, EncodedContext):
        pipeline = context.pipeline.with_config(**config) if config else context.pipeline
    else:
        pipeline = _pipeline(None if model is None else str(model), device).with_config(**config)
        context = _sources(context, (), ())
    return pipeline.answer(context, question, answer_prefix)
