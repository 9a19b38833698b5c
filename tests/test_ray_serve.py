"""`python -m ilre.serve --replicas 2` on a local Ray cluster (the ray extra)."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from test_replicas import DOCUMENT, ask  # noqa: E402


def test_two_ray_serve_replicas_share_one_encoding(tiny_model_dir, tmp_path):
    """`python -m ilre.serve --replicas 2` on a local Ray cluster: a document posted once is encoded
    once (one index file), and questions spread over both replicas are all cache hits."""
    pytest.importorskip("ray.serve")
    import signal
    import subprocess
    import sys

    from test_serve_ops import ROOT

    from evaluation.chat_clients import free_port

    port, index_dir = free_port(), tmp_path / "shared"
    log = open(tmp_path / "ray.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "ilre.serve", "--replicas", "2", "--replica-cpus", "0.5",
                             "--index-dir", str(index_dir), "--model", str(tiny_model_dir), "--port", str(port),
                             "--device", "cpu", "--threads", "1", "--window", "32", "--budget", "48"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=120) as http:
            replicas = set()
            for _ in range(1800):  # Ray and two replicas start: up to 3 minutes on 2 cores
                try:
                    health = http.get("/health")
                    if health.status_code == 200:
                        replicas.add(health.json()["replica"])
                        if len(replicas) == 2:
                            break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, (tmp_path / "ray.log").read_text()[-3000:]
                time.sleep(0.1)
            assert len(replicas) == 2, "both replicas answer behind Ray Serve's proxy"
            cid = http.post("/v1/contexts", json={"text": DOCUMENT}).json()["id"]
            for _ in range(600):
                if http.get(f"/v1/contexts/{cid}").json()["status"] == "ready":
                    break
                time.sleep(0.1)
            replies = [ask(http) for _ in range(6)]
            answered_by = {http.get("/health").json()["replica"] for _ in range(10)}
        assert all(r["ilre"]["cache"] == "hit" and r["ilre"]["context_id"] == cid for r in replies)
        assert len(list(index_dir.glob("*.ilre"))) == 1 and len(answered_by) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            import os

            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
