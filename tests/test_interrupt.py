"""Ctrl-C during a long prefill: out within a second, exit code 130, a clean message, no file left."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGINT")


def _interrupt(command: list[str], after: float = 4.0) -> tuple[int, str, float]:
    # Ctrl-C as a shell delivers it: the command starts with SIGINT's default disposition, whatever
    # an earlier test left in this process (a process started with SIGINT ignored never sees it).
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(after)  # the model is loaded and the prefill under way
    assert proc.poll() is None, proc.communicate()
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err, time.perf_counter() - t0


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
                                     str(tiny_model_dir), "--no-progress", "--threads", "1"])
    assert code == 130 and "Traceback" not in err and "interrupted" in err
    assert seconds < 5.0  # about a second of work, plus the interpreter's exit (a busy CI machine is slower)
    assert list(tmp_path.iterdir()) == []
