"""The service (ilre/serve): a real server on a free localhost port, called with the openai client."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from ilre.serve.__main__ import build_parser, make_service  # noqa: E402
from ilre.serve.app import create_app  # noqa: E402

TEXT = " ".join(f"Line {i} says the weather was mild." for i in range(50)) + " The vault code is 4417. " + \
    " ".join(f"Note {i}: nothing happened." for i in range(50))
QUESTION = "What is the vault code?"


class Running:
    """A uvicorn server in a thread, on a free port of 127.0.0.1."""

    def __init__(self, app):
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started and time.time() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def start(model_dir, *options: str, env: dict | None = None, monkeypatch=None):
    if env:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
    args = build_parser().parse_args(["--model", str(model_dir), "--device", "cpu", "--threads", "1", "--budget", "48",
                                      "--max-new-tokens", "6", "--window", "32", *options])
    service = make_service(args)
    return Running(create_app(service)), service


@pytest.fixture(scope="module")
def served(tiny_model_dir):
    running, service = start(tiny_model_dir)
    yield running, service
    running.close()


def client(running, key: str = "-") -> "openai.OpenAI":
    return openai.OpenAI(base_url=running.url + "/v1", api_key=key, max_retries=0, timeout=60)


def ask(running, text: str = TEXT, question: str = QUESTION, **kw):
    return client(running).chat.completions.create(
        model="ilre", messages=[{"role": "user", "content": text}, {"role": "user", "content": question}], **kw)


def test_answers_equal_the_pipeline_streamed_or_whole(served):
    running, service = served
    expected = service.pipeline.answer(TEXT, QUESTION)
    whole = ask(running)
    assert whole.choices[0].message.content == expected.answer
    assert whole.usage.prompt_tokens == expected.prompt_tokens
    assert whole.usage.completion_tokens == len(expected.answer_tokens)
    extra = whole.model_extra["ilre"]
    assert extra["layer"] == expected.layer and extra["context_tokens"] == expected.context_tokens
    assert [(s["start"], s["end"]) for s in extra["spans"]] == [(s.start, s.end) for s in expected.spans]
    pieces = [c.choices[0].delta.content or "" for c in ask(running, stream=True) if c.choices]
    assert "".join(pieces) == expected.answer


def test_a_document_is_encoded_once(served):
    running, service = served
    text = TEXT.replace("4417", "9090")
    before = service.cache.encodings
    with ThreadPoolExecutor(2) as pool:  # two requests about one new document at once
        first = list(pool.map(lambda _: ask(running, text), range(2)))
    assert service.cache.encodings == before + 1
    assert sorted(r.model_extra["ilre"]["cache"] for r in first) == ["hit", "miss"]
    again = ask(running, text)
    assert again.model_extra["ilre"]["cache"] == "hit" and service.cache.encodings == before + 1
    assert again.choices[0].message.content == first[0].choices[0].message.content


def test_contexts_are_posted_polled_used_and_deleted(served):
    running, _ = served
    with httpx.Client(base_url=running.url) as http:
        posted = http.post("/v1/contexts", json={"text": TEXT + " Epilogue."})
        assert posted.status_code == 202
        cid = posted.json()["id"]
        for _ in range(200):
            status = http.get(f"/v1/contexts/{cid}").json()
            if status["status"] == "ready":
                break
            time.sleep(0.05)
        assert status["status"] == "ready" and status["progress"] == 1.0 and status["tokens"] > 0
        reply = client(running).chat.completions.create(model="ilre", messages=[{"role": "user", "content": QUESTION}],
                                                        extra_body={"context_id": cid})
        assert reply.model_extra["ilre"]["context_id"] == cid and reply.model_extra["ilre"]["cache"] == "hit"
        assert http.delete(f"/v1/contexts/{cid}").status_code == 200
        _openai_error(http.get(f"/v1/contexts/{cid}"), 404)
        assert http.get("/health").json()["status"] == "ok"
        assert http.get("/v1/models").json()["data"][0]["id"] == "ilre"


def test_a_context_of_files_names_each_span_s_file_and_lines(served):
    running, _ = served
    files = [{"path": "notes/monday.txt", "text": "Nothing happened on Monday.\n" * 30},
             {"path": "src/vault.py", "text": "import os\n\n\ndef vault_code():\n    return 4417\n"}]
    with httpx.Client(base_url=running.url) as http:
        cid = http.post("/v1/contexts", json={"files": files}).json()["id"]
        for _ in range(200):
            if http.get(f"/v1/contexts/{cid}").json()["status"] == "ready":
                break
            time.sleep(0.05)
        reply = client(running).chat.completions.create(model="ilre", messages=[{"role": "user", "content": QUESTION}],
                                                        extra_body={"context_id": cid})
        spans = reply.model_extra["ilre"]["spans"]
        assert spans and {s["file"] for s in spans} <= {"notes/monday.txt", "src/vault.py"}
        for s in spans:  # the lines and offsets say where the span lies in its own file
            text = next(f["text"] for f in files if f["path"] == s["file"])
            assert text[s["file_start"]:s["file_end"]] in s["text"]
            assert s["line_start"] == text.count("\n", 0, s["file_start"]) + 1 <= s["line_end"]
        both = http.post("/v1/contexts", json={"text": "a", "files": files})
        assert "either text or files" in _openai_error(both, 400)
        twice = http.post("/v1/contexts", json={"files": files + files[:1]})
        assert "given twice" in _openai_error(twice, 400)


def test_bad_requests_get_400_and_413(tiny_model_dir):
    running, _ = start(tiny_model_dir, "--max-body-mb", "0.01")
    try:
        with httpx.Client(base_url=running.url) as http:
            bad = http.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
            assert "malformed" in _openai_error(bad, 400)
            no_messages = http.post("/v1/chat/completions", json={"model": "ilre", "messages": []})
            _openai_error(no_messages, 400)
            big = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 20_000}]})
            _openai_error(big, 413)
            chunked = http.post("/v1/chat/completions", headers={"content-type": "application/json"},
                                content=(b"x" * 4096 for _ in range(8)))  # no Content-Length: sent in chunks
            assert "at least" in _openai_error(chunked, 413)
            small = http.post("/v1/chat/completions", headers={"content-type": "application/json"},
                              content=iter([b'{"messages": [', b'{"role": "user", "content": "hi"}]}']))
            assert small.status_code == 200, small.text
            unknown = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}],
                                                              "context_id": "ctx-nope"})
            _openai_error(unknown, 404)
    finally:
        running.close()


def test_an_api_key_is_asked_for_when_set(tiny_model_dir, monkeypatch):
    running, _ = start(tiny_model_dir, env={"ILRE_API_KEY": "sesame"}, monkeypatch=monkeypatch)
    try:
        with pytest.raises(openai.AuthenticationError):
            ask(running)
        reply = client(running, "sesame").chat.completions.create(
            model="ilre", messages=[{"role": "user", "content": TEXT}, {"role": "user", "content": QUESTION}])
        assert reply.choices[0].message.content is not None
        with httpx.Client(base_url=running.url) as http:  # the health check stays open
            assert http.get("/health").status_code == 200
            _openai_error(http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "q"}]}), 401)
    finally:
        running.close()


def test_answers_through_another_engine(served, tiny_model_dir):
    upstream, _ = served
    running, service = start(tiny_model_dir, "--answer-url", upstream.url + "/v1", "--answer-model", "ilre")
    try:
        reply = ask(running)
        spans = reply.model_extra["ilre"]["spans"]
        ilre = service.pipeline
        prompt = ilre.template.user_text(ilre.config.gap_marker.join(s["text"] for s in spans), QUESTION)
        direct = client(upstream).chat.completions.create(model="ilre", messages=[{"role": "user", "content": prompt}])
        assert reply.choices[0].message.content == direct.choices[0].message.content
        streamed = "".join(c.choices[0].delta.content or "" for c in ask(running, stream=True) if c.choices)
        assert streamed == direct.choices[0].message.content
        # A conversation reaches the engine as one: instructions, earlier turns, then the recalled prompt.
        talk = [SYSTEM, {"role": "user", "content": TEXT}, {"role": "user", "content": "Hello?"},
                {"role": "assistant", "content": "Hi."}, {"role": "user", "content": QUESTION}]
        reply = client(running).chat.completions.create(model="ilre", messages=talk, max_tokens=3, stop=["zz"])
        sent = [SYSTEM, *talk[2:4], {"role": "user", "content": prompt}]
        direct = client(upstream).chat.completions.create(model="ilre", messages=sent, max_tokens=3, stop=["zz"])
        assert reply.choices[0].message.content == direct.choices[0].message.content
        assert reply.choices[0].finish_reason == direct.choices[0].finish_reason
    finally:
        running.close()


def test_an_unreachable_engine_gives_502(tiny_model_dir):
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    running, _ = start(tiny_model_dir, "--answer-url", f"http://127.0.0.1:{port}/v1", "--answer-model", "m")
    try:
        with pytest.raises(openai.APIStatusError) as exc:
            ask(running)
        assert exc.value.status_code == 502 and f"127.0.0.1:{port}" in str(exc.value)
    finally:
        running.close()


def _openai_error(response: "httpx.Response", status: int) -> str:
    """The error's message, after checking the response is OpenAI's error shape with ``status``."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"} and isinstance(error["message"], str)
    return error["message"]


SYSTEM = {"role": "system", "content": "You answer questions about the document briefly."}


def _turns(served_running, first: list[dict], follow_ups: list[str], **kw) -> list:
    """A conversation: ``first`` messages, then each follow-up after the previous answer."""
    messages, replies = [SYSTEM, *first], []
    for question in [None, *follow_ups]:
        if question is not None:
            messages += [{"role": "assistant", "content": replies[-1].choices[0].message.content},
                         {"role": "user", "content": question}]
        replies.append(client(served_running).chat.completions.create(model="ilre", messages=messages, **kw))
    return replies


def test_a_conversation_encodes_its_document_once_and_reads_its_history(served):
    running, service = served
    text = TEXT.replace("4417", "5151")
    before = service.cache.encodings
    replies = _turns(running, [{"role": "user", "content": text}, {"role": "user", "content": QUESTION}],
                     ["Is that the code of the vault?", "Say it again."])
    assert service.cache.encodings == before + 1
    assert [r.model_extra["ilre"]["cache"] for r in replies] == ["miss", "hit", "hit"]
    # The third turn reads the system prompt and the earlier turns as chat turns before its own, recall does not.
    ilre = service.pipeline
    first, second = replies[0].choices[0].message.content, replies[1].choices[0].message.content
    history = [SYSTEM, {"role": "user", "content": QUESTION}, {"role": "assistant", "content": first},
               {"role": "user", "content": "Is that the code of the vault?"}, {"role": "assistant", "content": second}]
    expected = ilre.answer(ilre.encode(text), "Say it again.", history=history)
    assert replies[2].choices[0].message.content == expected.answer
    assert replies[2].usage.prompt_tokens == expected.prompt_tokens


@pytest.mark.parametrize("shape", ["question line", "llamaindex template", "content parts"])
def test_a_document_and_its_question_in_one_message(served, shape):
    running, service = served
    text = TEXT.replace("4417", "7373")
    content = {"question line": f"{text}\n\nQuestion: {QUESTION}",
               "llamaindex template": ("Context information is below.\n---------------------\n"
                                       f"{text}\n---------------------\nGiven the context information and not "
                                       f"prior knowledge, answer the query.\nQuery: {QUESTION}\nAnswer: "),
               "content parts": [{"type": "text", "text": text}, {"type": "text", "text": QUESTION}]}[shape]
    reply = client(running).chat.completions.create(model="ilre", messages=[{"role": "user", "content": content}])
    expected = service.pipeline.answer(text, QUESTION)
    assert reply.choices[0].message.content == expected.answer
    assert reply.model_extra["ilre"]["context_tokens"] == expected.context_tokens


def test_openai_fields_are_honoured_or_refused_by_name(served):
    running, _ = served
    whole = ask(running, max_tokens=3)
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 3
    chunks = [c for c in ask(running, max_tokens=3, stream=True) if c.choices]
    assert chunks[-1].choices[0].finish_reason == "length"
    free = ask(running, max_tokens=6).choices[0].message.content
    assert len(free) > 3
    stop = free[2:4]
    cut = ask(running, max_tokens=6, stop=[stop])
    assert stop not in cut.choices[0].message.content and free.startswith(cut.choices[0].message.content)
    assert cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in ask(running, max_tokens=6, stop=stop, stream=True)
                       if c.choices)
    assert streamed == cut.choices[0].message.content
    sampled = [ask(running, temperature=1.5, seed=s).choices[0].message.content for s in (1, 1, 2, 3, 4)]
    assert sampled[0] == sampled[1] and len(set(sampled)) > 1
    with httpx.Client(base_url=running.url) as http:
        def post(**fields):
            return http.post("/v1/chat/completions",
                             json={"model": "ilre", "messages": [{"role": "user", "content": QUESTION}], **fields})

        for field, value in [("n", 2), ("tools", [{"type": "function", "function": {"name": "f"}}]),
                             ("response_format", {"type": "json_object"}), ("logprobs", True),
                             ("presence_penalty", 0.5)]:
            assert field in _openai_error(post(**{field: value}), 400)
        assert "gpt-4o" in _openai_error(post(model="gpt-4o"), 404)
        assert post(model=_model_name(running)).status_code == 200  # the model's own name is known too
        assert "/v2/nothing" in _openai_error(http.get("/v2/nothing"), 404)
        _openai_error(http.get("/v1/chat/completions"), 405)
        _openai_error(post(messages=[{"role": "system", "content": "only instructions"}]), 400)


def _model_name(running) -> str:
    return httpx.get(running.url + "/v1/models").json()["data"][0]["root"]


@pytest.mark.slow
def test_the_embedded_model_answers_a_passkey_through_the_service():
    from evaluation.generators import passkey
    from evaluation.tasks import tokenizer_len_for
    from ilre.loading import default_model_file

    try:
        default_model_file()
    except ValueError:
        pytest.skip("the embedded model is not installed")
    args = build_parser().parse_args(["--device", "cpu"])
    service = make_service(args)
    task = passkey(tokenizer_len_for(service.pipeline.tokenizer), 8000, seed=77, depth=0.3)
    running = Running(create_app(service))
    try:
        first = ask(running, task.context, task.question)
        second = ask(running, task.context, "What is the pass key? Answer with the number.")
        assert task.answers[0] in first.choices[0].message.content
        assert first.model_extra["ilre"]["cache"] == "miss" and second.model_extra["ilre"]["cache"] == "hit"
        assert second.model_extra["ilre"]["timings"].get("prefill", 0) == first.model_extra["ilre"]["timings"]["prefill"]
        assert first.usage.prompt_tokens < 400 < first.model_extra["ilre"]["context_tokens"]
    finally:
        running.close()
