"""What an operator watches: Prometheus metrics, a request id in every log line, JSON logs.

Each request gets an id, the client's ``X-Request-Id`` when it sends one, else a new one; it is
returned in the same header and carried (a context variable) into every log line written while
the request is served, in the threads that encode and answer for it too. ``/metrics`` serves the
counters and histograms below in Prometheus' text format, from a registry of the app's own (two
apps in one process never share counts).
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
import uuid

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: F401  (re-exported for the route)

REQUEST_ID = contextvars.ContextVar("request_id", default="-")
"""The id of the request being served ('-' outside one)."""
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """The service's metrics, in one registry."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("ilre_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.latency = Histogram("ilre_request_seconds", "HTTP request time by route", ["route"],
                                 buckets=STAGE_BUCKETS, registry=r)
        self.stage = Histogram("ilre_stage_seconds", "time of each stage: encode, recall (scoring and choice), answer",
                               ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self.cache = Counter("ilre_cache", "contexts asked for, found (hit) or to encode (miss)", ["result"], registry=r)
        self.encodings = Gauge("ilre_encodings", "contexts encoding or waiting to", ["state"], registry=r)
        self.answers_waiting = Gauge("ilre_answers_waiting", "answers waiting for or using the answer worker",
                                     registry=r)
        self.context_tokens = Counter("ilre_context_tokens", "tokens of the contexts encoded", registry=r)
        self.recalled_tokens = Counter("ilre_recalled_tokens", "context tokens recalled for answers", registry=r)
        self.generated_tokens = Counter("ilre_generated_tokens", "answer tokens generated", registry=r)
        self.rejected = Counter("ilre_rejected", "requests turned away by a limit", ["reason"], registry=r)
        self.upstream_errors = Counter("ilre_upstream_errors", "requests the answering engine failed", registry=r)

    def text(self) -> bytes:
        return generate_latest(self.registry)


def route_of(request) -> str:
    """The route's template (/v1/contexts/{context_id}), not the path: ids would make a series each."""
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def request_id(headers) -> str:
    """The client's X-Request-Id if it is a sane one, else a new id."""
    given = headers.get("x-request-id", "")
    if given and len(given) <= 128 and given.isprintable():
        return given
    return uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every record, as ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, request id, message (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname, "logger": record.name,
               "request_id": getattr(record, "request_id", "-"), "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_service_logging(level: str = "warning", json_lines: bool = False) -> None:
    """The service's logs on stderr at ``level``, each line with its request id (or as JSON)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if json_lines else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
