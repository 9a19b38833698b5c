"""Who encodes a document when several processes share one index folder (replicas of the service,
on one machine or many over shared storage).

A process about to encode a context creates ``<id>.ilre.claim`` beside where its index will be,
atomically (``O_EXCL``): the one that creates it encodes, saves the index, and removes the claim;
the others wait for the index file and load it. The claimant writes its progress into the claim as
it goes, so every process reports the same status for the context. A claim not refreshed for
``STALE_S`` seconds, or held by a process of this machine that no longer runs, is taken over.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

STALE_S = 60.0
"""A claim whose progress is older than this is an encoder's that died: another process takes over."""
REFRESH_S = 1.0
"""How often the claimant writes its progress (each chunk of the prefill reports it)."""


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def abandoned(record: dict) -> bool:
    """Whether a claim's holder is gone: silent for ``STALE_S``, or a process of this machine that
    no longer runs."""
    if time.time() - record.get("updated", 0) > STALE_S:
        return True
    host, _, pid = str(record.get("owner", "")).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


@dataclass
class Claim:
    """The claim on encoding one context, at ``path``."""

    path: Path
    _written: float = field(default=0.0, repr=False)

    def acquire(self) -> bool:
        """True when this process now holds the claim (it was free, or its holder had died)."""
        held = self.read()
        if held is not None and abandoned(held):
            stale = self.path.with_name(f"{self.path.name}.{os.getpid()}.stale")
            try:
                os.replace(self.path, stale)  # one process wins the stale claim's removal
                stale.unlink(missing_ok=True)
            except OSError:
                pass
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(self._record(0, 0), f)
        self._written = time.monotonic()
        return True

    def progress(self, done: int, total: int) -> None:
        """Write the encoding's progress into the claim (at most every ``REFRESH_S``)."""
        if time.monotonic() - self._written < REFRESH_S:
            return
        self._written = time.monotonic()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self._record(done, total)))
        os.replace(tmp, self.path)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)

    def read(self) -> dict | None:
        """The claim's record (owner, progress, when written), or None when there is no claim."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):  # being replaced right now: it is held
            return {"owner": "?", "done": 0, "tokens": 0, "updated": time.time()}

    @staticmethod
    def _record(done: int, total: int) -> dict:
        return {"owner": owner(), "done": done, "tokens": total, "updated": time.time()}
