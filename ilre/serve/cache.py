"""The service's encodings: in memory under a byte bound, saved as index files, encoded once.

An encoding is keyed by its owner (a salt of the API key it was posted with), the model's
fingerprint, the encoding settings and the context's sha256, so the same document sent again (a
chat client sends it with every turn) finds its encoding, and a restart finds it in ``index_dir``;
another API key never does. Two requests about one new document share one encoding: the second
waits for the first's. Encodings run one at a time on their own thread, loads of saved indexes on
another (a load never waits behind a long encoding), each call on a fresh thread (``workers.py``);
at most ``max_queued`` wait to be encoded. A saved index that cannot be read is moved aside and its
document encoded again; temporary files that a killed process left in ``index_dir`` are removed at
start. Processes that share ``index_dir`` (replicas) encode each document once between them: one
claims it (``claims.py``), the others wait for its index file, reporting the claimant's progress
meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import claims
from .claims import Claim
from .workers import ThreadPerCall

if TYPE_CHECKING:
    from ..sources import Sources

log = logging.getLogger(__name__)
HANDED_OVER = object()
"""What a load returns when its index was damaged and the entry went to the encoder instead."""


class Busy(RuntimeError):
    """Too many contexts wait to be encoded: the request is turned away (HTTP 503)."""


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

    def __init__(self, pipeline, max_bytes: int, index_dir: Path | None = None, max_queued: int = 16,
                 encode_timeout: float = 3600.0):
        self.pipeline = pipeline
        self.max_bytes = max_bytes
        self.index_dir = index_dir
        self.max_queued = max_queued
        """Contexts waiting to be encoded beyond which a new one is refused (``Busy``)."""
        self.encode_timeout = encode_timeout
        """Seconds an encoding may take before it is stopped and reported failed."""
        self.metrics = None
        """The service's ``observe.Metrics``, when it has them."""
        self.entries: OrderedDict[str, Entry] = OrderedDict()
        self.bytes: dict[str, int] = {}
        self.lock = threading.Lock()
        self.encoder = ThreadPerCall(1, thread_name_prefix="ilre-encode")  # one long pass at a time
        self.loader = ThreadPerCall(1, thread_name_prefix="ilre-load")  # never behind an encoding
        self.waiter = ThreadPerCall(8, thread_name_prefix="ilre-wait")  # for another process's encoding (then loads it)
        self.stopping = threading.Event()
        self.encodings = 0
        """How many contexts this process streamed itself (not found in memory or on disk)."""
        if index_dir is not None:
            index_dir.mkdir(parents=True, exist_ok=True)
            for stale in index_dir.glob(".*.partial"):  # left by a process killed while it saved
                log.warning("removing %s, left by an interrupted save", stale.name)
                stale.unlink(missing_ok=True)

    def key(self, text: str, tenant: str = "") -> str:
        """The context id of ``text`` for ``tenant`` under this model and these encoding settings."""
        h = hashlib.sha256()
        h.update(json.dumps([tenant, self.pipeline.identity["fingerprint"], self.pipeline.encoding],
                            sort_keys=True).encode())
        h.update(text.encode("utf-8"))
        return "ctx-" + (tenant[:8] + "-" if tenant else "") + h.hexdigest()[:32]

    @staticmethod
    def owned(key: str, tenant: str) -> bool:
        """Whether the context id ``key`` belongs to ``tenant`` (the salt is part of the id)."""
        return key.startswith("ctx-" + (tenant[:8] + "-" if tenant else "")) and (bool(tenant) or key.count("-") == 1)

    def count(self, status: str) -> int:
        """How many entries are in ``status`` ('queued', 'encoding', ...)."""
        with self.lock:
            return sum(e.status == status for e in self.entries.values())

    def submit(self, context: "str | Sources", tenant: str = "") -> tuple[Entry, bool]:
        """(the entry of ``context``, a text or files, whether it was known already); a new one
        starts encoding, unless ``max_queued`` wait already (``Busy``)."""
        key = self.key(context if isinstance(context, str) else context.text, tenant)
        with self.lock:
            if key in self.entries:
                self.entries.move_to_end(key)
                return self.entries[key], True
            if self._path(key) is None or not self._path(key).is_file():
                queued = sum(e.status == "queued" for e in self.entries.values())
                if queued >= self.max_queued:
                    raise Busy(f"{queued} contexts wait to be encoded, the most this service queues: retry later")
            entry = self.entries[key] = Entry(key)
        if self._load(entry, context):
            return entry, True
        claim = self._claim(key)
        if claim is not None and not claim.acquire():  # another process encodes it: wait for its index
            self._start(self.waiter, entry, lambda: self._wait(entry, claim, context))
            return entry, True
        self._start(self.encoder, entry, lambda: self._encode(entry, context, claim))
        return entry, False

    def get(self, key: str, tenant: str = "") -> Entry | None:
        if not self.owned(key, tenant):
            return None
        with self.lock:
            entry = self.entries.get(key)
            if entry is not None:
                self.entries.move_to_end(key)
                return entry
        path, claim = self._path(key), self._claim(key)
        claimed = claim is not None and claim.read() is not None
        if path is None or not (path.is_file() or claimed):
            return None
        with self.lock:  # saved by an earlier run or another replica: load it once, however many ask
            if key in self.entries:
                return self.entries[key]
            entry = self.entries[key] = Entry(key)
        if not self._load(entry):
            self._start(self.waiter, entry, lambda: self._wait(entry, claim, None))
        return entry

    def delete(self, key: str, tenant: str = "") -> bool:
        if not self.owned(key, tenant):
            return False
        with self.lock:
            entry = self.entries.pop(key, None)
            self.bytes.pop(key, None)
        path = self._path(key)
        found = entry is not None or (path is not None and path.is_file())
        if path is not None:
            path.unlink(missing_ok=True)
        return found

    def close(self) -> None:
        """Stop: running encodings end at their next chunk, queued ones never start."""
        self.stopping.set()
        for pool in (self.encoder, self.loader, self.waiter):
            pool.shutdown(wait=False, cancel_futures=True)

    # -- work, on the encoder thread ------------------------------------------------------------

    def _path(self, key: str) -> Path | None:
        return None if self.index_dir is None else self.index_dir / f"{key}.ilre"

    def _claim(self, key: str) -> Claim | None:
        return None if self.index_dir is None else Claim(self.index_dir / f"{key}.ilre.claim")

    def _wait(self, entry: Entry, claim: Claim, context: "str | Sources | None"):
        """The index another process is encoding, loaded once it is saved (its progress reported
        meanwhile); should that process fail or die, this one encodes it (when it has the text)."""
        path = self._path(entry.id)
        while not self.stopping.is_set():
            if path.is_file():
                return self._read(entry, path, context)
            held = claim.read()
            if held is not None:
                entry.done, entry.tokens = held.get("done", 0), held.get("tokens", 0)
            elif path.is_file():
                continue
            if (held is None or claims.abandoned(held)) and context is not None and claim.acquire():
                entry.status = "queued"
                self._start(self.encoder, entry, lambda: self._encode(entry, context, claim))
                return HANDED_OVER
            if held is None:
                raise ValueError("the process that encoded this context stopped before saving it: send it again")
            time.sleep(0.2)
        raise RuntimeError("the service is shutting down")

    def _start(self, pool: ThreadPerCall, entry: Entry, work) -> None:
        """Run ``work`` for ``entry`` on ``pool``, in the submitting request's context (its id in the logs)."""
        pool.submit(self._run, entry, work)

    def _load(self, entry: Entry, context: "str | Sources | None" = None) -> bool:
        """Start loading ``entry`` from its index file in ``index_dir``; False when there is none.
        ``context``: its text, encoded again should the file be damaged."""
        path = self._path(entry.id)
        if path is None or not path.is_file():
            return False
        self._start(self.loader, entry, lambda: self._read(entry, path, context))
        return True

    def _read(self, entry: Entry, path: Path, context: "str | Sources | None"):
        """The saved index. One that cannot be read is moved aside (``.damaged``), and its context
        encoded again when the request brought it; else the requests waiting get the error, and
        the next one that brings the document has it encoded."""
        from ..index import IndexFileError

        try:
            return self.pipeline.load_index(path)
        except (IndexFileError, ValueError, OSError) as exc:
            aside = path.with_name(path.name + ".damaged")
            path.replace(aside)
            log.warning("index %s could not be read (%s): moved to %s", path.name, exc, aside.name)
            if context is None:
                raise
        entry.status = "queued"
        self._start(self.encoder, entry, lambda: self._encode(entry, context))
        return HANDED_OVER

    def _encode(self, entry: Entry, context: "str | Sources", claim: Claim | None = None):
        try:
            return self._encode_claimed(entry, context, claim)
        finally:
            if claim is not None:  # after the save: the others find the index file
                claim.release()

    def _encode_claimed(self, entry: Entry, context: "str | Sources", claim: Claim | None):
        started = time.monotonic()

        def progress(done: int, total: int) -> None:
            entry.done, entry.tokens = done, total
            if claim is not None:
                claim.progress(done, total)
            if self.stopping.is_set():
                raise RuntimeError("the service is shutting down")
            if time.monotonic() - started > self.encode_timeout:
                raise TimeoutError(f"encoding the context took longer than {self.encode_timeout:g} s and was stopped")

        log.info("encoding %s", entry.id)
        encoded = self.pipeline.encode(context, progress=progress)
        self.encodings += 1
        if self.metrics is not None:
            self.metrics.stage.labels("encode").observe(time.monotonic() - started)
            self.metrics.context_tokens.inc(len(encoded.tokens))
        if self.index_dir is not None:
            encoded.save(self._path(entry.id))
        return encoded

    def _run(self, entry: Entry, work) -> None:
        entry.status = "encoding"
        try:
            encoded = work()
            if encoded is HANDED_OVER:
                return
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
