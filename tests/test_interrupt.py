"""Ctrl-C during a long prefill: out within a second, exit code 130, a clean message, no file left."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")


def _interrupt(command: list[str], after: float = 1.0) -> tuple[int, str, float]:
    """Start ``command``, wait for its progress bar (the prefill is under way: a slow or busy machine
    may take many seconds to import torch and load the model), then Ctrl-C it ``after`` seconds on."""
    # Ctrl-C as a shell delivers it: the command starts with SIGINT's default disposition, whatever
    # an earlier test left in this process (a process started with SIGINT ignored never sees it).
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read1(4096), b"")))
    reader.start()
    deadline = time.monotonic() + 120
    while b"%|" not in b"".join(err) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(after)
    assert proc.poll() is None, b"".join(err).decode()
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    seconds = time.perf_counter() - t0
    reader.join(timeout=30)
    proc.stdout.close()
    return proc.returncode, b"".join(err).decode(errors="replace"), seconds


@pytest.fixture(scope="module")
def long_text(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "long.txt"
    path.write_text("The weather was mild and nothing happened. " * 20_000)  # ~860K tokens of the tiny model
    return path


@pytest.mark.parametrize("command", ["answer", "index"])
def test_ctrl_c_stops_at_once_and_leaves_nothing(command, long_text, tiny_model_dir, tmp_path):
    out = tmp_path / "long.ilre"
    argv = {"answer": ["-m", "ilre.answer", "--query", "What happened?"],
            "index": ["-m", "ilre.index", "--out", str(out)]}[command]
    code, err, seconds = _interrupt([sys.executable, *argv, "--context", str(long_text), "--model",
                                     str(tiny_model_dir), "--threads", "1"])  # its progress bar: see _interrupt
    assert code == 130 and "Traceback" not in err and "interrupted" in err
    assert seconds < 5.0  # about a second of work, plus the interpreter's exit (a busy CI machine is slower)
    assert list(tmp_path.iterdir()) == []
