"""Saved context indexes: ``python -m ilre.index --context book.txt --out book.ilre`` reads a
context once; ``python -m ilre.answer --index book.ilre --query ...`` answers from it in seconds.

The file format is in :mod:`ilre.index.format`; the command line in ``__main__``.
"""

from .format import FORMAT, SUFFIX, IndexFileError, describe, read, read_meta, write

__all__ = ["FORMAT", "SUFFIX", "IndexFileError", "describe", "read", "read_meta", "write"]
