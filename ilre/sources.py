"""A context made of many files: a folder, a code base, a set of manuals, read as one text.

The files are found recursively and joined in a stable order (sorted paths), each after a header
line that names it, the way ``head`` shows several files, so that the model knows where it is::

    ==> email/parser.py <==
    ...the file...

    ==> email/utils.py <==

A single file (or standard input) is its own text, without a header: asking about one file is
exactly what it always was. Each file's place in the joined text is a :class:`FileSpan`, which
is what a recalled span's file and lines are computed from, and what a saved index records
(with each file's checksum) so that ``ilre.index --update`` re-encodes only what changed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pathspec

from .inputs import MAX_TEXT_BYTES, check_file, read_text

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 1 * 2**20
"""Files larger than this in a folder are skipped (generated code, data, minified bundles):
``--max-file-size`` changes it."""
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules"})
"""Folders never read, besides hidden ones (``.git``, ``.venv``, ...)."""
PROSE_SUFFIXES = frozenset({"", ".txt", ".md", ".markdown", ".rst", ".adoc", ".org", ".tex", ".text"})
"""Files whose recall units are sentences; every other text file is read as code (lines and blocks)."""
HEADER = "==> {path} <==\n"


@dataclass(frozen=True)
class FileSpan:
    """Where one file lies in the joined text: its header line from ``header``, its text in
    [``start``, ``end``)."""

    path: str | None
    """Relative to the folder given, '/'-separated (None: a text given as a string)."""
    header: int
    start: int
    end: int
    sha256: str = ""
    kind: str = "prose"
    """'prose' (sentence units) or 'code' (line and block units), from the file's suffix."""

    def to_dict(self) -> dict:
        return asdict(self)


def kind_of(path: str | None) -> str:
    return "prose" if path is None or Path(path).suffix.lower() in PROSE_SUFFIXES else "code"


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class Sources:
    """The joined text of a context's files, each one's place in it, and what was skipped."""

    text: str
    files: list[FileSpan]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of each file found and not read: binary, not UTF-8, too large, empty."""
    read_with: dict = field(default_factory=dict)
    """The filters a folder was read with (include, exclude, max_file_bytes): an index records
    them, and ``--update`` reads the folder with them again."""

    @classmethod
    def single(cls, text: str, path: str | None = None) -> "Sources":
        """One text, no header: the plain context."""
        return cls(text, [FileSpan(path, 0, 0, len(text), checksum(text), kind_of(path))])

    @classmethod
    def join(cls, files: Iterable[tuple[str, str]], skipped: list[tuple[str, str]] | None = None) -> "Sources":
        """(path, text) pairs joined in the order given, each after its header, a blank line between."""
        parts, spans, at = [], [], 0
        for path, text in files:
            header = HEADER.format(path=path)
            body = text if text.endswith("\n") else text + "\n"
            spans.append(FileSpan(path, at, at + len(header), at + len(header) + len(text), checksum(text), kind_of(path)))
            parts += [header, body, "\n"]
            at += len(header) + len(body) + 1
        return cls("".join(parts), spans, skipped or [])

    def __len__(self) -> int:
        return len(self.files)

    def file_text(self, span: FileSpan) -> str:
        return self.text[span.start:span.end]


class _Ignored:
    """The .gitignore rules of the folders above a path (each matched relative to its own folder)."""

    def __init__(self):
        self.rules: list[tuple[Path, pathspec.PathSpec]] = []

    def enter(self, folder: Path) -> None:
        ignore = folder / ".gitignore"
        if ignore.is_file():
            with open(ignore, encoding="utf-8", errors="replace") as f:
                self.rules.append((folder, pathspec.GitIgnoreSpec.from_lines(f)))

    def __call__(self, path: Path, is_dir: bool) -> bool:
        for folder, spec in self.rules:
            if folder in path.parents:
                relative = path.relative_to(folder).as_posix() + ("/" if is_dir else "")
                if spec.match_file(relative):
                    return True
        return False


def _walk(root: Path) -> Iterable[Path]:
    """The files under ``root`` in sorted order: hidden entries, SKIPPED_DIRS and what a
    .gitignore on the way names left out."""
    ignored = _Ignored()

    def visit(folder: Path) -> Iterable[Path]:
        ignored.enter(folder)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            log.info("skipped folder %s: %s", folder, exc.strerror)
            return
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in SKIPPED_DIRS and not ignored(path, True):
                    yield from visit(path)
            elif entry.is_file() and not ignored(path, False):
                yield path

    yield from visit(root)


def _read_file(path: Path, max_bytes: int) -> tuple[str | None, str]:
    """(text, '') or (None, why it is skipped)."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            return None, f"larger than {max_bytes / 2**20:g} MiB"
        data = path.read_bytes()
    except OSError as exc:
        return None, f"unreadable ({exc.strerror})"
    if b"\x00" in data[:8192]:
        return None, "binary"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, "not UTF-8"
    if not text.strip():
        return None, "empty"
    return text, ""


def read_sources(paths: Sequence[Path], include: Sequence[str] = (), exclude: Sequence[str] = (),
                 max_file_bytes: int = MAX_FILE_BYTES) -> Sources:
    """The context of ``paths``: one file (or '-', standard input) as it is; several files or
    folders joined (see the module's docstring). ``include``/``exclude``: .gitignore-style
    patterns of the paths inside a folder (``*.py``, ``docs/``, ``tests/**``)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no context given: pass a file or a folder")
    if len(paths) == 1 and (str(paths[0]) == "-" or not paths[0].is_dir()):
        return Sources.single(read_text(paths[0]), None if str(paths[0]) == "-" else paths[0].name)
    wanted = pathspec.GitIgnoreSpec.from_lines(include) if include else None
    unwanted = pathspec.GitIgnoreSpec.from_lines(exclude)
    found, skipped, total = [], [], 0
    for given in paths:
        if not given.is_dir():
            check_file(given, "context file")
            candidates = [(given, given.name)]
        else:
            prefix = f"{given.resolve().name}/" if len(paths) > 1 else ""
            candidates = [(p, prefix + p.relative_to(given).as_posix()) for p in _walk(given)]
        for path, name in candidates:
            inner = name.split("/", 1)[-1] if len(paths) > 1 and given.is_dir() else name
            if (wanted is not None and not wanted.match_file(inner)) or unwanted.match_file(inner):
                continue
            text, why = _read_file(path, max_file_bytes)
            if text is None:
                skipped.append((name, why))
                log.info("skipped %s: %s", name, why)
                continue
            total += len(text)
            if total > MAX_TEXT_BYTES:
                raise ValueError(f"the files given hold more than {MAX_TEXT_BYTES // 2**20} MiB of text: narrow them "
                                 "with --include/--exclude, or index the folders one by one")
            found.append((name, text))
    if not found:
        reasons = f" ({len(skipped)} skipped: binary, empty or too large; --verbose lists them)" if skipped else ""
        raise ValueError(f"no text file found in {', '.join(map(str, paths))}{reasons}: check the paths and "
                         "--include/--exclude")
    sources = Sources.join(found, skipped)
    sources.read_with = {"include": list(include), "exclude": list(exclude), "max_file_bytes": max_file_bytes}
    return sources


def summary(sources: Sources) -> str:
    """One line: how many files were read and skipped, and why."""
    reasons: dict[str, int] = {}
    for _, why in sources.skipped:
        reasons[why] = reasons.get(why, 0) + 1
    line = f"read {len(sources)} file{'s' if len(sources) != 1 else ''} ({len(sources.text) / 1024:.0f} KiB)"
    if sources.skipped:
        line += (f"; skipped {len(sources.skipped)} (" + ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
                 + "; --verbose lists them)")
    return line
