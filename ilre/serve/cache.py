"""The service's encodings: in memory under a byte bound, saved as index files, encoded once.

An encoding is keyed by the model's fingerprint, the encoding settings and the context's sha256,
so the same document sent again (a chat client sends it with every turn) finds its encoding,
and a restart finds it in ``index_dir``. Two requests about one new document share one encoding:
the second waits for the first's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..sources import Sources

log = logging.getLogger(__name__)


def encoding_bytes(encoded) -> int:
    """Memory an encoding holds: the keys of l_R, the windows, the tokens and the text."""
    state = encoded.state
    total = len(encoded.tokens.text) + encoded.tokens.ids.numel() * 8 + encoded.tokens.offsets.numel() * 8
    if state is not None:
        total += state.key_cache.nbytes
        total += sum(w.keys.numel() * w.keys.element_size() * 2 for w in state.windows)
    return total


@dataclass
class Entry:
    """One context: its encoding once done, or the work that makes it."""

    id: str
    tokens: int = 0
    done: int = 0
    status: str = "queued"
    """'queued', 'encoding', 'ready' or 'failed'."""
    error: str | None = None
    future: Future = field(default_factory=Future)
    created: float = field(default_factory=time.time)

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "object": "context", "status": self.status, "tokens": self.tokens,
                "progress": round(self.done / self.tokens, 4) if self.tokens else 0.0, "error": self.error,
                "created": int(self.created)}


class EncodingCache:
    """Encodings by context id, least recently used first out beyond ``max_bytes``."""

    def __init__(self, pipeline, max_bytes: int, index_dir: Path | None = None):
        self.pipeline = pipeline
        self.max_bytes = max_bytes
        self.index_dir = index_dir
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.bytes: dict[str, int] = {}
        self.lock = threading.Lock()
        self.encoder = ThreadPoolExecutor(1, thread_name_prefix="ilre-encode")  # one long pass at a time
        self.encodings = 0
        """How many contexts this process streamed itself (not found in memory or on disk)."""
        if index_dir is not None:
            index_dir.mkdir(parents=True, exist_ok=True)

    def key(self, text: str) -> str:
        """The context id of ``text`` under this model and these encoding settings."""
        h = hashlib.sha256()
        h.update(json.dumps([self.pipeline.identity["fingerprint"], self.pipeline.encoding], sort_keys=True).encode())
        h.update(text.encode("utf-8"))
        return "ctx-" + h.hexdigest()[:32]

    def submit(self, context: "str | Sources") -> tuple[Entry, bool]:
        """(the entry of ``context``, a text or files, whether it was known already); a new one
        starts encoding."""
        key = self.key(context if isinstance(context, str) else context.text)
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key], True
            entry = self.entries[key] = Entry(key)
        if self._load(entry):
            return entry, True
        self.encoder.submit(self._run, entry, lambda: self._encode(entry, context))
        return entry, False

    def get(self, key: str) -> Entry | None:
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
                return entry
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        with self.lock:  # saved by an earlier run of the service: load it once, however many ask
            if key in self.entries:
                return self.entries[key]
            entry = self.entries[key] = Entry(key)
        self._load(entry)
        return entry

    def delete(self, key: str) -> bool:
        with self.lock:
            entry = self.entries.pop(key, None)
            self.bytes.pop(key, None)
        path = self._path(key)
        found = entry is not None or (path is not None and path.is_file())
        if path is not None:
            path.unlink(missing_ok=True)
        return found

    # -- work, on the encoder thread ------------------------------------------------------------

    def _path(self, key: str) -> Path | None:
        return None if self.index_dir is None else self.index_dir / f"{key}.ilre"

    def _load(self, entry: Entry) -> bool:
        """Start loading ``entry`` from its index file in ``index_dir``; False when there is none."""
        path = self._path(entry.id)
        if path is None or not path.is_file():
            return False
        self.encoder.submit(self._run, entry, lambda: self.pipeline.load_index(path))
        return True

    def _encode(self, entry: Entry, context: "str | Sources"):
        def progress(done: int, total: int) -> None:
            entry.done, entry.tokens = done, total

        encoded = self.pipeline.encode(context, progress=progress)
        self.encodings += 1
        if self.index_dir is not None:
            encoded.save(self._path(entry.id))
        return encoded

    def _run(self, entry: Entry, work) -> None:
        entry.status = "encoding"
        try:
            encoded = work()
        except Exception as exc:  # reported to every request waiting for it
            log.warning("encoding %s failed: %s", entry.id, exc)
            entry.status, entry.error = "failed", str(exc).splitlines()[0][:300]
            with self.lock:
                self.entries.pop(entry.id, None)
            entry.future.set_exception(exc)
            return
        entry.tokens = entry.done = len(encoded.tokens)
        entry.status = "ready"
        with self.lock:
            self.bytes[entry.id] = encoding_bytes(encoded)
            self._evict(keep=entry.id)
        entry.future.set_result(encoded)

    def _evict(self, keep: str) -> None:
        """Drop least recently used encodings (they stay on disk with an index_dir) beyond the bound."""
        for key in list(self.entries):
            if sum(self.bytes.values()) <= self.max_bytes:
                break
            if key != keep and key in self.bytes:
                self.entries.pop(key)
                self.bytes.pop(key)
                log.info("evicted %s from memory", key)
