"""ILRe: Intermediate Layer Retrieval for contexts longer than a model reads at full depth.

    >>> import ilre
    >>> enc = ilre.encode(open("book.txt").read())        # the long pass, once
    >>> enc.save("book.ilre")                              # optional: keep it for later sessions
    >>> ilre.answer(enc, "Who inherits the lighthouse?").answer
    >>> ilre.answer(ilre.load_index("book.ilre"), "Where is the key?").answer

These functions share one loaded model per (model, device); ``ILRe.from_pretrained`` gives the
object itself. The heavy imports (torch, transformers) happen on first use, so
``python -m ilre.answer --help`` stays fast.
"""

from __future__ import annotations

from .version import __version__  # noqa: F401
__all__ = ["ILRe", "ILReConfig", "AnswerResult", "EncodedContext", "encode", "load_index", "answer"]

from .api import answer, encode, load_index  # noqa: E402  (light: torch loads on first call)


def __getattr__(name: str):
    if name == "ILReConfig":
        from .config import ILReConfig

        return ILReConfig
    if name == "ILRe":
        from .pipeline import ILRe

        return ILRe
    if name == "EncodedContext":
        from .encoded import EncodedContext

        return EncodedContext
    if name == "AnswerResult":
        from .result import AnswerResult

        return AnswerResult
    raise AttributeError(f"module 'ilre' has no attribute {name!r}")
