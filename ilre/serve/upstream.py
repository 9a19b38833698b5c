"""Answering through another OpenAI-compatible engine (vLLM, vllm-ascend, TGI, a llama.cpp server).

ILRe keeps what it is for, reading the long context once and choosing what the answer reads; the
conversation goes to the engine's ``/v1/chat/completions`` with the document replaced by what
was recalled (system messages, earlier turns, then instruction, excerpts and question), with the
request's sampling and stop strings. Only a failure to connect is retried (a bounded number of
times): the engine never saw that request, so each client request reaches the engine at most once
and a client's own retries are not multiplied; any other failure goes to the client as an
:class:`UpstreamError` (HTTP 502).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..answerer import GREEDY, Sampling


class UpstreamError(RuntimeError):
    """The answering engine failed or could not be reached; the message names it and the cause."""


@dataclass
class Upstream:
    url: str
    """Base URL of the engine's OpenAI API, e.g. http://gpu-box:8000/v1."""
    model: str
    """The model name the engine serves."""
    api_key: str | None = None
    timeout: float = 120.0
    """Seconds to wait for the engine to start answering (connecting: 5 s)."""
    retries: int = 2

    def __post_init__(self) -> None:
        import httpx

        self.url = self.url.rstrip("/")
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.client = httpx.AsyncClient(base_url=self.url, headers=headers,
                                        timeout=httpx.Timeout(self.timeout, connect=5.0))

    def _body(self, messages: list[dict[str, str]], max_tokens: int, sampling: Sampling, stream: bool) -> dict[str, Any]:
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": sampling.temperature, "top_p": sampling.top_p, "stream": stream}
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        return body

    async def _send(self, body: dict[str, Any]):
        """The engine's response, headers read, after bounded retries of connection errors and 5xx."""
        import httpx

        cause = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(0.5 * 2 ** (attempt - 1))
            try:
                response = await self.client.send(self.client.build_request("POST", "/chat/completions", json=body),
                                                  stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # not sent: safe to try again
                cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                continue
            except httpx.HTTPError as exc:
                raise UpstreamError(f"answering engine {self.url} failed: {type(exc).__name__}") from exc
            if response.status_code >= 400:
                text = (await response.aread()).decode("utf-8", "replace")[:300]
                await response.aclose()
                raise UpstreamError(f"answering engine {self.url} answered HTTP {response.status_code}: {text}")
            return response
        raise UpstreamError(f"answering engine {self.url} could not be reached after {self.retries + 1} attempts: "
                            f"{cause}")

    async def reachable(self) -> str:
        """'ok' when the engine answers its model list within 2 s, else why not (for /health)."""
        import httpx

        try:
            response = await self.client.get("/models", timeout=2.0)
        except httpx.HTTPError as exc:
            return f"unreachable: {type(exc).__name__}"
        return "ok" if response.status_code < 500 else f"unhealthy: HTTP {response.status_code}"

    async def complete(self, messages: list[dict[str, str]], max_tokens: int,
                       sampling: Sampling = GREEDY) -> tuple[str, dict[str, Any], str]:
        """(the answer, the engine's usage record, its finish_reason)."""
        response = await self._send(self._body(messages, max_tokens, sampling, stream=False))
        try:
            data = json.loads(await response.aread())
            choice = data["choices"][0]
            return choice["message"]["content"] or "", data.get("usage") or {}, choice.get("finish_reason") or "stop"
        except (ValueError, KeyError, IndexError) as exc:
            raise UpstreamError(f"answering engine {self.url} sent an answer that is not a chat completion") from exc
        finally:
            await response.aclose()

    async def stream(self, messages: list[dict[str, str]], max_tokens: int, sampling: Sampling = GREEDY,
                     ended: dict[str, str] | None = None) -> AsyncIterator[str]:
        """The answer's text, piece by piece as the engine streams it; ``ended`` gets its finish_reason."""
        import httpx

        response = await self._send(self._body(messages, max_tokens, sampling, stream=True))
        try:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                choices = json.loads(data).get("choices") or [{}]
                if choices[0].get("finish_reason") and ended is not None:
                    ended["finish_reason"] = choices[0]["finish_reason"]
                piece = (choices[0].get("delta") or {}).get("content")
                if piece:
                    yield piece
        except (httpx.HTTPError, ValueError) as exc:
            raise UpstreamError(f"answering engine {self.url} broke off its answer: {type(exc).__name__}") from exc
        finally:
            await response.aclose()
