"""The service as an operator runs it: metrics, request ids, limits, tenancy, damaged and partial
index files, health, and a clean shutdown on SIGTERM. Real servers on localhost ports."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
httpx = pytest.importorskip("httpx")

from test_serve import QUESTION, TEXT, _openai_error, ask, client, start  # noqa: E402

from ilre.serve.observe import RequestIdFilter  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def chat(http, text=TEXT, key=None, **extra):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return http.post("/v1/chat/completions", headers={**headers, **extra.pop("headers", {})},
                     json={"model": "ilre", "messages": [{"role": "user", "content": text},
                                                         {"role": "user", "content": QUESTION}], **extra})


def wait_ready(http, cid, key=None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for _ in range(400):
        status = http.get(f"/v1/contexts/{cid}", headers=headers).json()
        if status.get("status") in ("ready", "failed"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"context {cid} not ready")


def hold(pool) -> threading.Event:
    """Keep a one-thread pool busy until the returned event is set (a long answer or encoding)."""
    release = threading.Event()
    pool.submit(release.wait, 30)
    return release


def test_metrics_count_requests_stages_and_cache(tiny_model_dir):
    running, _ = start(tiny_model_dir)
    try:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            assert chat(http).status_code == 200 and chat(http).status_code == 200
            _openai_error(http.get("/v1/contexts/ctx-nope"), 404)
            text = http.get("/metrics").text
        assert 'ilre_requests_total{route="/v1/chat/completions",status="200"} 2.0' in text
        assert 'ilre_requests_total{route="/v1/contexts/{context_id}",status="404"} 1.0' in text
        assert 'ilre_cache_total{result="miss"} 1.0' in text and 'ilre_cache_total{result="hit"} 1.0' in text
        for stage in ("encode", "recall", "answer"):
            assert f'ilre_stage_seconds_count{{stage="{stage}"}}' in text
        assert "ilre_generated_tokens_total" in text and "ilre_context_tokens_total" in text
        assert 'ilre_encodings{state="queued"} 0.0' in text
    finally:
        running.close()


def test_a_request_id_is_returned_and_in_every_log_line_of_it(tiny_model_dir):
    running, _ = start(tiny_model_dir)
    seen: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = seen.append
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("ilre")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            reply = chat(http, TEXT + " Coda.", headers={"X-Request-Id": "req-abc-123"})
            assert reply.headers["x-request-id"] == "req-abc-123"
            made = chat(http).headers["x-request-id"]
            assert len(made) == 32 and made != "req-abc-123"
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        running.close()
    ours = [r for r in seen if r.request_id == "req-abc-123"]
    assert any(r.name == "ilre.serve.cache" for r in ours)  # the encoder thread's line carries it too
    assert any(r.name == "ilre.serve.app" and "/v1/chat/completions -> 200" in r.getMessage() for r in ours)


def test_limits_turn_requests_away_with_retry_after(tiny_model_dir):
    running, service = start(tiny_model_dir, "--max-waiting", "1", "--max-queued", "1", "--request-timeout", "1")
    try:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            chat(http)  # the document encoded: later requests only wait for the answer worker
            release = hold(service.workers)
            slow = threading.Thread(target=lambda: chat(http))
            slow.start()
            for _ in range(100):
                if service.waiting:
                    break
                time.sleep(0.02)
            busy = chat(http)
            assert "answers are in flight" in _openai_error(busy, 429) and busy.headers["retry-after"] == "2"
            slow.join(10)  # it gave up after --request-timeout
            release.set()
            release = hold(service.cache.encoder)
            assert http.post("/v1/contexts", json={"text": "first new document"}).status_code == 202
            full = http.post("/v1/contexts", json={"text": "second new document"})
            assert "wait to be encoded" in _openai_error(full, 503) and full.headers["retry-after"] == "30"
            release.set()
            assert chat(http).status_code == 200
            assert 'ilre_rejected_total{reason="answers"} 1.0' in http.get("/metrics").text
    finally:
        running.close()


def test_an_answer_over_the_time_limit_gets_504(tiny_model_dir):
    running, service = start(tiny_model_dir, "--request-timeout", "0.5")
    try:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            chat(http)
            release = hold(service.workers)
            late = chat(http)
            release.set()
            assert "longer than 0.5 s" in _openai_error(late, 504)
            assert service.waiting == 0
            assert chat(http).status_code == 200
    finally:
        running.close()


def test_contexts_belong_to_the_key_that_posted_them(tiny_model_dir, monkeypatch):
    running, _ = start(tiny_model_dir, env={"ILRE_API_KEY": "alice, bob"}, monkeypatch=monkeypatch)
    try:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            alice, bob = {"Authorization": "Bearer alice"}, {"Authorization": "Bearer bob"}
            cid = http.post("/v1/contexts", json={"text": TEXT}, headers=alice).json()["id"]
            assert wait_ready(http, cid, "alice")["status"] == "ready"
            _openai_error(http.get(f"/v1/contexts/{cid}", headers=bob), 404)
            _openai_error(http.delete(f"/v1/contexts/{cid}", headers=bob), 404)
            asked = http.post("/v1/chat/completions", headers=bob, json={
                "messages": [{"role": "user", "content": QUESTION}], "context_id": cid})
            _openai_error(asked, 404)
            # the same document sent by bob is bob's own: encoded for him, a miss, another id
            reply = chat(http, key="bob").json()["ilre"]
            assert reply["cache"] == "miss" and reply["context_id"] != cid
            assert chat(http, key="alice").json()["ilre"]["context_id"] == cid
            assert http.get(f"/v1/contexts/{cid}", headers=alice).status_code == 200
    finally:
        running.close()


def test_a_damaged_index_is_moved_aside_and_encoded_again_and_partials_are_removed(tiny_model_dir, tmp_path):
    index_dir = tmp_path / "indexes"
    running, service = start(tiny_model_dir, "--index-dir", str(index_dir))
    try:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            first = chat(http).json()
    finally:
        running.close()
    (saved,) = index_dir.glob("*.ilre")
    saved.write_bytes(saved.read_bytes()[:1000])  # truncated, as a full disk would leave it
    (index_dir / f".{saved.name}.999.partial").write_bytes(b"half an index")  # a save killed midway
    running, service = start(tiny_model_dir, "--index-dir", str(index_dir))
    try:
        assert not list(index_dir.glob("*.partial"))
        with httpx.Client(base_url=running.url, timeout=60) as http:
            again = chat(http)
            assert again.status_code == 200, again.text
            assert again.json()["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]
        assert service.cache.encodings == 1 and (index_dir / (saved.name + ".damaged")).is_file()
        assert saved.is_file()  # saved anew
    finally:
        running.close()


def test_health_says_degraded_when_the_answering_engine_is_down(tiny_model_dir):
    running, _ = start(tiny_model_dir, "--answer-url", "http://127.0.0.1:9/v1", "--answer-model", "m")
    try:
        with httpx.Client(base_url=running.url, timeout=60) as http:
            health = http.get("/health")
            assert health.status_code == 503 and health.json()["status"] == "degraded"
            assert health.json()["upstream"].startswith("unreachable")
            failed = chat(http)
            assert "could not be reached" in _openai_error(failed, 502)
            assert "ilre_upstream_errors_total 1.0" in http.get("/metrics").text
    finally:
        running.close()


def serve_process(model_dir, log_path: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """A real `python -m ilre.serve` process on a free port, its log in ``log_path``, once it answers."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log_path, "a") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "ilre.serve", "--model", str(model_dir), "--port", str(port),
                                 "--device", "cpu", "--threads", "1", "--window", "32", "--budget", "48",
                                 "--log-level", "info", *options], cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, url


def wait_for_line(log_path: Path, text: str) -> None:
    for _ in range(600):
        if text in log_path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never logged")


LONG_DOCUMENT = TEXT * 60  # a second or two of encoding for the tiny model


def test_killed_while_encoding_the_next_start_encodes_again_and_leaves_nothing_partial(tiny_model_dir, tmp_path):
    index_dir, log_path = tmp_path / "indexes", tmp_path / "serve.log"
    proc, url = serve_process(tiny_model_dir, log_path, "--index-dir", str(index_dir))

    def ask() -> None:
        try:
            with httpx.Client(base_url=url, timeout=60) as http:
                chat(http, LONG_DOCUMENT)
        except httpx.TransportError:
            pass  # the server is killed under this request: the client sees the connection drop

    try:
        threading.Thread(target=ask, daemon=True).start()
        wait_for_line(log_path, "encoding ctx-")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    proc, url = serve_process(tiny_model_dir, log_path, "--index-dir", str(index_dir))
    try:
        assert not list(index_dir.glob("*.partial"))
        with httpx.Client(base_url=url, timeout=60) as http:
            reply = chat(http, LONG_DOCUMENT)
            assert reply.status_code == 200 and reply.json()["ilre"]["cache"] == "miss"
            assert chat(http, LONG_DOCUMENT).json()["ilre"]["cache"] == "hit"
        assert len(list(index_dir.glob("*.ilre"))) == 1
    finally:
        proc.terminate()
        proc.wait(20)


def test_sigterm_drains_the_requests_in_flight_and_exits_0(tiny_model_dir, tmp_path):
    """A real `python -m ilre.serve` process: a request whose long document is still encoding when
    SIGTERM comes is answered, and the process then exits 0 within 10 s."""
    log_path = tmp_path / "serve.log"
    proc, url = serve_process(tiny_model_dir, log_path, "--max-new-tokens", "200", "--grace", "20")
    try:
        answered: list = []
        long_document = LONG_DOCUMENT

        def ask_long():
            with httpx.Client(base_url=url, timeout=60) as http:
                answered.append((chat(http, long_document), time.monotonic()))

        asking = threading.Thread(target=ask_long)
        asking.start()
        wait_for_line(log_path, "encoding ctx-")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        asking.join(20)
        assert proc.wait(15) == 0 and time.monotonic() - t0 < 10
        ((reply, at),) = answered
        assert reply.status_code == 200 and at > t0, "the request in flight was not answered after SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in log_path.read_text()
