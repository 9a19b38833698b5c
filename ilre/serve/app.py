"""The HTTP API: OpenAI's chat completions, plus contexts that are encoded once and remembered.

    POST   /v1/chat/completions   a conversation about a document (ilre/serve/conversation.py says
                                  where the document ends and the conversation begins), or about a
                                  context that "context_id" names; streamed or whole
    POST   /v1/contexts           {"text": ...} or {"files": [{"path": ..., "text": ...}, ...]} -> {"id": ...},
                                  encoded in the background; a context of files is one text with a
                                  header per file, and every span names its file and lines
    GET    /v1/contexts/{id}      status and progress
    DELETE /v1/contexts/{id}
    GET    /v1/models, GET /health

Responses carry OpenAI's fields; ``usage.prompt_tokens`` counts the tokens the answer read, and
an ``ilre`` object gives the recalled spans, the layer, the context's tokens, whether its
encoding came from the cache, and the stage timings. ``temperature``, ``top_p``, ``seed`` and
``stop`` are honoured; what cannot be served (``n`` > 1, ``tools``, a ``response_format`` other
than text, ``logprobs``, penalties) is refused with 400 naming the field, as vLLM does; every
error has OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import os
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..answerer import AnswerStream, Cancelled, Sampling, eos_ids, finish_reason, generate
from ..result import spans_of
from ..sources import Sources
from .cache import Busy, EncodingCache
from .claims import owner
from .observe import CONTENT_TYPE_LATEST, REQUEST_ID, Metrics, request_id, route_of
from .conversation import Conversation, Turn, read_conversation
from .upstream import Upstream, UpstreamError
from .workers import ThreadPerCall

if TYPE_CHECKING:
    from ..pipeline import ILRe

log = logging.getLogger(__name__)
MODEL_ID = "ilre"


class TextPart(BaseModel):
    type: Literal["text"] = "text"
    text: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None


class ChatRequest(BaseModel):
    model: str = MODEL_ID
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream_options: dict[str, Any] | None = None
    context_id: str | None = None
    """ILRe's extension: a context posted to /v1/contexts, in place of a document in the messages."""
    # What cannot be served: refused by ``unsupported``, not dropped.
    n: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    logit_bias: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def unsupported(self) -> str | None:
        """The first field asked for that this service cannot serve, with why; None if none."""
        if (self.n or 1) != 1:
            return "n: one answer per request (n = 1)"
        for name in ("tools", "functions"):
            if getattr(self, name):
                return f"{name}: no tool calls here"
        for name in ("tool_choice", "function_call"):
            if getattr(self, name) not in (None, "none", "auto"):
                return f"{name}: no tool calls here"
        if self.response_format and self.response_format.get("type", "text") != "text":
            return "response_format: only text answers"
        if self.logprobs or self.top_logprobs:
            return "logprobs: not reported"
        if self.logit_bias:
            return "logit_bias: not supported"
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                return f"{name}: not supported (0 only)"
        return None

    def sampling(self) -> Sampling:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return Sampling(self.temperature or 0.0, self.top_p or 1.0, self.seed, tuple(s for s in stop if s))

    def conversation(self) -> Conversation:
        turns = [Turn(m.role, [p.text for p in m.content] if isinstance(m.content, list) else [m.content or ""])
                 for m in self.messages]
        return read_conversation(turns, self.context_id is not None)


class ContextFile(BaseModel):
    path: str = Field(min_length=1)
    text: str


class ContextRequest(BaseModel):
    text: str | None = Field(None, min_length=1)
    files: list[ContextFile] | None = Field(None, min_length=1)

    def context(self) -> "str | Sources":
        """The text, or the files joined as ``ilre.sources`` joins a folder's (in the order given)."""
        if (self.text is None) == (self.files is None):
            raise ValueError("give the context as either text or files, not both or neither")
        if self.text is not None:
            return self.text
        paths = [f.path for f in self.files]
        if len(set(paths)) < len(paths):
            raise ValueError(f"files: the path {next(p for p in paths if paths.count(p) > 1)!r} is given twice")
        return Sources.join((f.path, f.text) for f in self.files)


@dataclass
class Service:
    """What the API needs: the pipeline, its cache of encodings, where answers are made, and the
    limits and metrics an operator sets and watches."""

    pipeline: "ILRe"
    cache: EncodingCache
    upstream: Upstream | None = None
    api_keys: tuple[str, ...] = ()
    """Keys clients send as 'Authorization: Bearer KEY' (none: no key asked); each key's contexts are
    its own (a salt of the key in their ids), invisible to the others."""
    max_body_bytes: int = 64 * 2**20
    max_waiting: int = 8
    """Answers in flight (running or waiting for the worker) beyond which a request gets 429."""
    answer_timeout: float = 600.0
    """Seconds an answer may take, recall included, before it is stopped (HTTP 504)."""
    metrics: Metrics = field(default_factory=Metrics)
    workers: ThreadPerCall = field(default_factory=lambda: ThreadPerCall(1, thread_name_prefix="ilre-answer"))
    """Where recall and answers run: one at a time, so each uses every core (the encoder has its own
    thread, so a long encoding does not hold up questions about cached documents), each on a fresh
    thread (``workers.py``)."""
    draining: bool = False
    """Set on shutdown: /health says so and new requests get 503 while the ones in flight finish."""
    waiting: int = 0

    def __post_init__(self) -> None:
        self.cache.metrics = self.metrics
        self.metrics.answers_waiting.set_function(lambda: self.waiting)
        for state in ("queued", "encoding"):
            self.metrics.encodings.labels(state).set_function(lambda s=state: self.cache.count(s))

    async def run(self, work, *args):
        """``work(*args)`` on the answer worker, in this request's context (its id in the logs)."""
        return await asyncio.get_running_loop().run_in_executor(self.workers, functools.partial(work, *args))

    def tenant(self, request: Request) -> str:
        """The salt of the request's API key in its contexts' ids ('' when no key is asked)."""
        if not self.api_keys:
            return ""
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        return hashlib.sha256(f"ilre-tenant:{key}".encode()).hexdigest()[:16]


def _error(status: int, message: str, kind: str = "invalid_request_error", headers=None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status,
                        headers=headers)


RETRY_AFTER = {"answers": "2", "encodings": "30", "draining": "5"}
"""Seconds a client is asked to wait (Retry-After) when a limit turns it away, by limit."""


class BodyLimit:
    """413 for a request body over ``limit`` bytes however it comes: judged by its Content-Length
    before it is read, and counted as it arrives when it is sent in chunks without one."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        size = dict(scope["headers"]).get(b"content-length", b"")
        if size.isdigit() and int(size) > self.limit:
            return await self._refuse(int(size), scope, receive, send)
        seen, over = 0, False

        async def counted():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # the app sees a client that left, and its reply is dropped
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def unless_over(message):
            if not over:
                await send(message)

        try:
            await self.app(scope, counted, unless_over)
        except Exception:
            if not over:
                raise
        if over:
            await self._refuse(seen, scope, receive, send, "at least ")

    async def _refuse(self, size: int, scope, receive, send, prefix: str = "") -> None:
        await _error(413, f"request body of {prefix}{size} bytes is over the limit of {self.limit}")(scope, receive, send)


def create_app(service: Service, grace: float = 30.0) -> FastAPI:
    """The API of ``service``; on shutdown it drains: new requests get 503 while the ones in flight
    finish, for at most ``grace`` seconds."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        log.info("serving %s", service.pipeline.name)
        yield
        service.draining = True
        deadline = time.monotonic() + grace
        while (service.waiting or service.cache.count("encoding")) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        service.workers.shutdown(wait=False, cancel_futures=True)
        service.cache.close()
        if service.upstream is not None:
            await service.upstream.client.aclose()
        log.info("stopped")

    app = FastAPI(title="ILRe", version=__import__("ilre").__version__, lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=service.max_body_bytes)
    ilre = service.pipeline

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"malformed request: {where or 'body'}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        """Every error in OpenAI's shape: ours, and FastAPI's own (an unknown route, a wrong method)."""
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}: see /docs for the API"
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}"
        kind = {502: "upstream_error", 401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error",
                503: "overloaded_error", 504: "timeout_error"}.get(exc.status_code, "invalid_request_error")
        return _error(exc.status_code, detail, kind, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return _error(500, f"internal error: {type(exc).__name__}: {str(exc)[:300]}", "server_error")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """/v1 wants an API key when keys are set, and takes no new work while draining."""
        if request.url.path.startswith("/v1"):
            if service.api_keys and request.headers.get("authorization", "").removeprefix("Bearer ") not in service.api_keys:
                return _error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                              "authentication_error")
            if service.draining:
                service.metrics.rejected.labels("draining").inc()
                return _error(503, "the service is shutting down: retry on another replica or later",
                              "overloaded_error", {"Retry-After": RETRY_AFTER["draining"]})
        return await call_next(request)

    @app.middleware("http")
    async def observe(request: Request, call_next):
        """A request id (the client's X-Request-Id, or a new one) in every log line and the response;
        the request counted by route and status, and timed."""
        rid = request_id(request.headers)
        token = REQUEST_ID.set(rid)
        t0, status = time.perf_counter(), 500
        try:
            response = await call_next(request)
            status = response.status_code
        finally:
            route = route_of(request)
            service.metrics.requests.labels(route, str(status)).inc()
            service.metrics.latency.labels(route).observe(time.perf_counter() - t0)
            log.info("%s %s -> %d in %.3f s", request.method, request.url.path, status, time.perf_counter() - t0)
            REQUEST_ID.reset(token)
        response.headers["X-Request-Id"] = rid
        return response

    @app.get("/", include_in_schema=False)
    async def page():
        """One page to try the service: a document read, a question asked, what was read highlighted."""
        from importlib.resources import files

        return HTMLResponse(files("ilre.serve").joinpath("static/index.html").read_text(encoding="utf-8"))

    @app.get("/metrics", include_in_schema=False)
    async def metrics():
        return Response(service.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    async def health():
        """200 'ok' when requests can be served; 503 'draining' on shutdown, 'degraded' when the
        answering engine (--answer-url) cannot be reached."""
        body = {"status": "ok", "model": ilre.name, "replica": owner(), "contexts": len(service.cache.entries),
                "encoding": service.cache.count("encoding"), "queued": service.cache.count("queued"),
                "answers_waiting": service.waiting}
        if service.upstream is not None:
            body["upstream"] = await service.upstream.reachable()
            if body["upstream"] != "ok":
                body["status"] = "degraded"
        if service.draining:
            body["status"] = "draining"
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "ilre",
                                            "root": ilre.name}]}

    def submit(context, tenant: str):
        """The entry of a context (encoding it when new), or 503 when too many wait to be encoded."""
        try:
            entry, hit = service.cache.submit(context, tenant)
        except Busy as exc:
            service.metrics.rejected.labels("encodings").inc()
            raise HTTPException(503, str(exc), headers={"Retry-After": RETRY_AFTER["encodings"]})
        service.metrics.cache.labels("hit" if hit else "miss").inc()
        return entry, hit

    @app.post("/v1/contexts", status_code=202)
    async def post_context(body: ContextRequest, request: Request):
        try:
            context = body.context()
        except ValueError as exc:
            raise HTTPException(400, str(exc))
        entry, _ = submit(context, service.tenant(request))
        return entry.info()

    @app.get("/v1/contexts/{context_id}")
    async def get_context(context_id: str, request: Request):
        entry = service.cache.get(context_id, service.tenant(request))
        if entry is None:
            raise HTTPException(404, f"no context {context_id}")
        return entry.info()

    @app.delete("/v1/contexts/{context_id}")
    async def delete_context(context_id: str, request: Request):
        if not service.cache.delete(context_id, service.tenant(request)):
            raise HTTPException(404, f"no context {context_id}")
        return {"id": context_id, "object": "context.deleted", "deleted": True}

    @app.post("/v1/chat/completions", responses={200: {"content": {"text/event-stream": {}}, "description":
                                                       "the completion; with stream, its chunks as server-sent events"}})
    async def chat(body: ChatRequest, request: Request):
        if body.model not in (MODEL_ID, ilre.name):
            raise HTTPException(404, f"the model {body.model!r} does not exist here: use {MODEL_ID!r} (GET /v1/models)")
        if (refused := body.unsupported()) is not None:
            raise HTTPException(400, f"unsupported field {refused}")
        try:
            talk, sampling = body.conversation(), body.sampling()
        except ValueError as exc:
            raise HTTPException(400, str(exc))
        if service.waiting >= service.max_waiting:
            service.metrics.rejected.labels("answers").inc()
            raise HTTPException(429, f"{service.waiting} answers are in flight, the most this service takes: retry "
                                "shortly", headers={"Retry-After": RETRY_AFTER["answers"]})
        entry, hit, encoded = None, False, None
        if body.context_id is not None:
            entry, hit = service.cache.get(body.context_id, service.tenant(request)), True
            if entry is None:
                raise HTTPException(404, f"no context {body.context_id}: post it to /v1/contexts first")
        elif talk.document.strip():
            entry, hit = submit(talk.document, service.tenant(request))
        t0 = time.perf_counter()
        if entry is not None:  # else a plain chat turn, without a document
            try:
                encoded = await asyncio.wrap_future(entry.future)
            except TimeoutError as exc:
                raise HTTPException(504, str(exc))
            except Exception as exc:
                raise HTTPException(400, f"the context could not be encoded: {str(exc).splitlines()[0][:300]}")
        cap = ilre.config.max_new_tokens  # the service's default answer length is also its cap
        max_tokens = min(body.max_completion_tokens or body.max_tokens or cap, cap)
        answer = Answer(service, encoded, talk, max_tokens, sampling, entry and entry.id, hit, time.perf_counter() - t0)
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            return StreamingResponse(answer.events(request, include_usage), media_type="text/event-stream")
        return await answer.whole(request)

    return app


class Answer:
    """One chat completion: recall from the encoding, then the answer, here or by the upstream engine."""

    def __init__(self, service: Service, encoded, talk: Conversation, max_tokens: int, sampling: Sampling,
                 context_id: str, hit: bool, wait: float):
        self.service, self.encoded, self.talk, self.max_tokens = service, encoded, talk, max_tokens
        self.question, self.sampling = talk.question, sampling
        tokenizer = service.pipeline.tokenizer
        self.history = talk.messages(lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]))
        self.finish = "stop"
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.meta = {"context_id": context_id, "cache": "hit" if hit else "miss", "wait_s": round(wait, 3)}

    # -- the two ways of answering --------------------------------------------------------------

    def _local(self, on_text, cancelled: threading.Event):
        """The pipeline's own answer (blocking: run in a worker thread); ``cancelled`` stops it."""
        ilre = self.service.pipeline.with_config(max_new_tokens=self.max_tokens)
        streamer = AnswerStream(ilre.tokenizer, on_text or (lambda piece: None), cancelled, self.sampling)
        if self.encoded is None:
            prompt = ilre.template.chat_ids(self.question, self.history)
            text, new = generate(ilre.answer_model, ilre.tokenizer, prompt, self.max_tokens, streamer, self.sampling)
            ids, prompt_tokens = new.tolist(), prompt.numel()
        else:
            result = ilre.answer(self.encoded, self.question, streamer=streamer, history=self.history,
                                 sampling=self.sampling)
            self._describe(result.spans, result.layer, result.context_tokens, result.recalled_tokens, result.timings)
            text, ids, prompt_tokens = result.answer, result.answer_tokens, result.prompt_tokens
        self.finish = finish_reason(ids, self.max_tokens, eos_ids(ilre.model, ilre.tokenizer))
        self.service.metrics.generated_tokens.inc(len(ids))
        return text, {"prompt_tokens": prompt_tokens, "completion_tokens": len(ids)}

    def _recalled_messages(self) -> list[dict[str, str]]:
        """The conversation for the upstream engine: what the local answer reads too (the
        instructions and the history within its budget), and a last user turn of instruction,
        recalled excerpts and question."""
        ilre = self.service.pipeline
        messages = list(self.history)
        if self.encoded is None:
            return messages + [{"role": "user", "content": self.question}]
        positions, timings, token_scores = ilre.recall(self.encoded, self.question, with_scores=True)
        spans = spans_of(self.encoded.tokens, positions, token_scores)
        self._describe(spans, ilre.config.layer, len(self.encoded.tokens), int(positions.numel()),
                       {**self.encoded.timings, **timings})
        excerpts = ilre.config.gap_marker.join(s.text for s in spans)
        return messages + [{"role": "user", "content": ilre.template.user_text(excerpts, self.question)}]

    def _describe(self, spans, layer, context_tokens, recalled, timings) -> None:
        self.meta.update(layer=layer, context_tokens=context_tokens, recalled_tokens=recalled,
                         spans=[asdict(s) for s in spans],
                         timings={k: round(v, 4) for k, v in timings.items()})
        metrics = self.service.metrics
        metrics.recalled_tokens.inc(recalled)
        metrics.stage.labels("recall").observe(timings.get("score", 0.0) + timings.get("recall", 0.0))
        if "answer" in timings:
            metrics.stage.labels("answer").observe(timings["answer"])

    # -- the two shapes of response ----------------------------------------------------------------

    def _usage(self, usage: dict) -> dict:
        prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def _produce(self, on_text, cancelled: threading.Event):
        """(text, usage) of the answer, here or upstream; ``on_text`` gets each piece as it comes."""
        upstream = self.service.upstream
        if upstream is None:
            return await self.service.run(self._local, on_text, cancelled)
        messages = await self.service.run(self._recalled_messages)
        if on_text is None:
            text, usage, self.finish = await upstream.complete(messages, self.max_tokens, self.sampling)
            return text, usage
        ended: dict[str, str] = {}
        async for piece in upstream.stream(messages, self.max_tokens, self.sampling, ended):
            on_text(piece)
        self.finish = ended.get("finish_reason") or "stop"
        return None, {"prompt_tokens": self.meta.get("recalled_tokens", 0)}

    def _failed(self, exc: Exception) -> HTTPException:
        if isinstance(exc, UpstreamError):
            self.service.metrics.upstream_errors.inc()
            return HTTPException(502, str(exc))
        return HTTPException(504, f"the answer took longer than {self.service.answer_timeout:g} s and was stopped")

    async def whole(self, request: Request) -> dict:
        """The answer as one response; stopped when the client leaves or the time limit passes."""
        cancelled = threading.Event()
        self.service.waiting += 1
        task = asyncio.create_task(self._produce(None, cancelled))
        deadline = time.monotonic() + self.service.answer_timeout
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)
                if not task.done() and (time.monotonic() > deadline or await request.is_disconnected()):
                    cancelled.set()
                    task.cancel()
                    raise TimeoutError
            text, usage = task.result()
        except (UpstreamError, TimeoutError, Cancelled) as exc:
            raise self._failed(exc if not isinstance(exc, Cancelled) else TimeoutError())
        finally:
            self.service.waiting -= 1
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": MODEL_ID,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": self.finish}],
                "usage": self._usage(usage), "ilre": self.meta}

    def _chunk(self, delta: dict, finish: str | None = None, **extra) -> str:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": MODEL_ID,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    async def events(self, request: Request, include_usage: bool):
        """Server-sent events: the role, the text as it comes, the finish with the ilre record;
        stopped when the client leaves (the engine's stream with it) or the time limit passes."""
        yield self._chunk({"role": "assistant", "content": ""})
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        cancelled = threading.Event()
        usage: dict = {}

        async def produce() -> None:
            nonlocal usage
            try:
                _, usage = await self._produce(lambda piece: loop.call_soon_threadsafe(queue.put_nowait, piece),
                                               cancelled)
                await queue.put(None)
            except Cancelled:
                await queue.put(None)
            except Exception as exc:  # reported in the stream: the status line was sent already
                if isinstance(exc, UpstreamError):
                    self.service.metrics.upstream_errors.inc()
                await queue.put(exc)

        self.service.waiting += 1
        task = asyncio.create_task(produce())  # kept referenced until it ends
        deadline = time.monotonic() + self.service.answer_timeout
        try:
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    if time.monotonic() > deadline:
                        item = self._failed(TimeoutError())
                        yield f"data: {json.dumps({'error': {'message': item.detail, 'type': 'timeout_error'}})}\n\n"
                        return
                    if await request.is_disconnected():
                        return
                    continue
                if item is None:
                    break
                if isinstance(item, Exception):
                    kind = "upstream_error" if isinstance(item, UpstreamError) else "server_error"
                    yield f"data: {json.dumps({'error': {'message': str(item)[:500], 'type': kind}})}\n\n"
                    return
                yield self._chunk({"content": item})
            yield self._chunk({}, self.finish, ilre=self.meta)
            if include_usage:
                last = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": MODEL_ID,
                        "choices": [], "usage": self._usage(usage)}
                yield f"data: {json.dumps(last)}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            cancelled.set()  # a client that went away stops the decoding, and the engine's stream
            task.cancel()
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self.service.waiting -= 1


def api_key_from_env(name: str) -> str | None:
    """The API key in environment variable ``name``, if set and not empty."""
    return os.environ.get(name) or None


def api_keys_from_env(name: str) -> tuple[str, ...]:
    """The API keys in environment variable ``name``, comma-separated (none when unset or empty)."""
    return tuple(k.strip() for k in os.environ.get(name, "").split(",") if k.strip())
