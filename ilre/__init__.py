"""ILRe: Intermediate Layer Retrieval for contexts longer than a model reads at full depth.

The heavy imports (torch, transformers) happen when ``ILRe`` or ``ILReConfig`` is first used,
so ``python -m ilre.answer --help`` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["ILRe", "ILReConfig", "AnswerResult", "EncodedContext"]


def __getattr__(name: str):
    if name == "ILReConfig":
        from .config import ILReConfig

        return ILReConfig
    if name in ("ILRe", "AnswerResult", "EncodedContext"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'ilre' has no attribute {name!r}")
