"""The chat clients people point at an OpenAI-compatible service, each as a function that sends a
conversation and returns the answer's text (whole or streamed), and the service started as its
own process: what the client tests and ``scripts/bench_conversation.py`` share."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

Turn = Callable[[list[tuple[str, str]]], str]
"""Sends the (role, text) messages of a conversation; returns the answer's text."""


def openai_sdk(url: str, stream: bool) -> Turn:
    import openai

    client = openai.OpenAI(base_url=url, api_key="-", max_retries=0, timeout=3600)

    def turn(history: list[tuple[str, str]]) -> str:
        messages = [{"role": role, "content": text} for role, text in history]
        if not stream:
            return client.chat.completions.create(model="ilre", messages=messages).choices[0].message.content
        chunks = client.chat.completions.create(model="ilre", messages=messages, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return turn


def langchain(url: str, stream: bool) -> Turn:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=url, api_key="-", model="ilre", max_retries=0, timeout=3600)
    kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}

    def turn(history: list[tuple[str, str]]) -> str:
        messages = [kinds[role](content=text) for role, text in history]
        if not stream:
            return llm.invoke(messages).content
        return "".join(chunk.content for chunk in llm.stream(messages))
    return turn


def llamaindex(url: str, stream: bool) -> Turn:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai_like import OpenAILike

    # LlamaIndex samples at temperature 0.1 by default; 0 asks for the greedy answer.
    llm = OpenAILike(model="ilre", api_base=url, api_key="-", is_chat_model=True, context_window=8192,
                     temperature=0.0, max_retries=0, timeout=3600)

    def turn(history: list[tuple[str, str]]) -> str:
        messages = [ChatMessage(role=role, content=text) for role, text in history]
        if not stream:
            return llm.chat(messages).message.content
        last = None
        for last in llm.stream_chat(messages):
            pass
        return last.message.content if last is not None else ""
    return turn


CLIENTS: dict[str, Callable[[str, bool], Turn]] = {"openai": openai_sdk, "langchain": langchain,
                                                   "llamaindex": llamaindex}


def model_options(args) -> list[str]:
    """The service's command-line options for a script's --model, --device, --dtype and --threads."""
    given = (("model", args.model), ("device", args.device), ("dtype", args.dtype), ("threads", args.threads))
    return [part for name, value in given if value is not None for part in (f"--{name}", str(value))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: list[str]) -> subprocess.Popen:
    """``command`` as its own process, its output to a temporary file (``process.log``): a pipe
    nobody reads fills up and stops a talkative server (llama.cpp logs every graph it builds)."""
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    process.log = log
    return process


def wait_until_up(url: str, process: subprocess.Popen, what: str, timeout: float = 300.0) -> None:
    """Return once ``url``/models answers; ValueError with the server's last words if ``process``
    (from :func:`start_server`) ends first or ``timeout`` passes."""
    import httpx

    deadline = time.time() + timeout
    while True:
        try:
            httpx.get(url + "/models", timeout=5).raise_for_status()
            return
        except httpx.HTTPError:
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                process.log.seek(0)
                raise ValueError(f"{what} did not start: {process.log.read()[-2000:]}") from None
            time.sleep(0.5)


@contextlib.contextmanager
def served_process(options: list[str], start_timeout: float = 300.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m ilre.serve`` with ``options`` on a free localhost port, as its own process;
    yields its API's base URL and the process once it answers, and stops it after."""
    port = free_port()
    server = start_server([sys.executable, "-m", "ilre.serve", "--port", str(port), *options])
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(url, server, "the server", start_timeout)
        yield url, server
    finally:
        server.terminate()
        server.wait(30)


@contextlib.contextmanager
def served(options: list[str], start_timeout: float = 300.0) -> Iterator[str]:
    """As :func:`served_process`, yielding the URL only."""
    with served_process(options, start_timeout) as (url, _):
        yield url
