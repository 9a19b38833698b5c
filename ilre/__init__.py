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

from .api import answer, encode, load_index  # light: torch loads on first call
from .version import __version__

__all__ = ["ILRe", "ILReConfig", "AnswerResult", "EncodedContext", "encode", "load_index", "answer", "__version__"]

def __getattr__(name: str):
    """The classes, imported on first use: torch and transformers load only then."""
    if name == "ILRe":
        from .pipeline import ILRe as found
    elif name == "EncodedContext":
        from .encoded import EncodedContext as found
    elif name == "AnswerResult":
        from .result import AnswerResult as found
    elif name == "ILReConfig":
        from .config import ILReConfig as found
    else:
        raise AttributeError(f"module 'ilre' has no attribute {name!r}")
    return found
