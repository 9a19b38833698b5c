"""Replicas that share an index folder encode each document once between them: two services in
one process (what two machines over shared storage do), then two replicas of `python -m ilre.serve
--replicas 2` on a local Ray cluster."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from test_serve import QUESTION, TEXT, start  # noqa: E402

DOCUMENT = TEXT * 20


def ask(http, text=DOCUMENT):
    reply = http.post("/v1/chat/completions", json={
        "model": "ilre", "messages": [{"role": "user", "content": text}, {"role": "user", "content": QUESTION}]})
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_two_services_on_one_index_folder_encode_a_document_once(tiny_model_dir, tmp_path):
    index_dir = str(tmp_path / "shared")
    (a, service_a), (b, service_b) = (start(tiny_model_dir, "--index-dir", index_dir) for _ in range(2))
    try:
        with httpx.Client(base_url=a.url, timeout=60) as http_a, httpx.Client(base_url=b.url, timeout=60) as http_b:
            cid = http_a.post("/v1/contexts", json={"text": DOCUMENT}).json()["id"]
            seen_by_b = http_b.get(f"/v1/contexts/{cid}").json()  # the same context, whatever its state
            assert seen_by_b["id"] == cid and seen_by_b["status"] in ("queued", "encoding", "ready")
            for _ in range(400):
                if http_b.get(f"/v1/contexts/{cid}").json()["status"] == "ready":
                    break
                time.sleep(0.05)
            replies = [ask(http) for http in (http_a, http_b) * 3]
        assert all(r["ilre"]["cache"] == "hit" and r["ilre"]["context_id"] == cid for r in replies)
        assert len({r["choices"][0]["message"]["content"] for r in replies}) == 1
        assert service_a.cache.encodings + service_b.cache.encodings == 1
        assert len(list((tmp_path / "shared").glob("*.ilre"))) == 1
        assert not list((tmp_path / "shared").glob("*.claim"))
    finally:
        a.close()
        b.close()


def test_a_document_sent_to_both_at_once_is_encoded_once(tiny_model_dir, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    index_dir = str(tmp_path / "shared")
    (a, service_a), (b, service_b) = (start(tiny_model_dir, "--index-dir", index_dir) for _ in range(2))
    try:
        with ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(lambda url: ask(httpx.Client(base_url=url, timeout=60)), (a.url, b.url)))
        assert service_a.cache.encodings + service_b.cache.encodings == 1
        assert replies[0]["choices"][0]["message"]["content"] == replies[1]["choices"][0]["message"]["content"]
    finally:
        a.close()
        b.close()

