"""Serve ILRe through OpenAI's chat API: a conversation about a document, whose first user message
(or the part of it before a "Question:" line) is the document, read once and remembered (in memory,
and in --index-dir across restarts); system prompts are instructions, and later turns are answered
in seconds with the earlier ones as history, here or by another OpenAI-compatible engine
(--answer-url). docs/serving.md gives the whole rule.

    python -m ilre.serve                                  # embedded model, 127.0.0.1:8000
    python -m ilre.serve --model path/to/model --device npu --index-dir indexes/ --cache-gb 8
    python -m ilre.serve --answer-url http://gpu-box:8000/v1 --answer-model Qwen2.5-72B-Instruct
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .. import cli

log = logging.getLogger("ilre.serve")


SERVICE_MAX_TOKENS = 1024
"""A chat client sends no max_tokens by default: an ordinary answer ends long before this."""


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python -m ilre.serve", __doc__)
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 opens the service to the network; default: 127.0.0.1")
    s.add_argument("--port", type=cli.at_least(0), default=8000, help="port; 0 picks a free one; default: 8000")
    s.add_argument("--api-key-env", default="ILRE_API_KEY",
                   help="environment variable holding the API key clients must send as 'Authorization: Bearer "
                        "KEY'; unset or empty: no key is asked for; default: ILRE_API_KEY")
    s.add_argument("--max-body-mb", type=float, default=64.0,
                   help="largest request body in MB (a bigger one gets HTTP 413); default: 64")
    s.add_argument("--index-dir", type=Path, default=None,
                   help="folder where encodings are saved as index files and found again after a restart; "
                        "default: none, memory only")
    s.add_argument("--cache-gb", type=float, default=8.0,
                   help="memory for encodings, in GB; the least recently used leave beyond it (they stay in "
                        "--index-dir); default: 8")
    s.add_argument("-v", "--verbose", action="store_true", help="log each request and encoding")
    u = p.add_argument_group("answering through another engine")
    u.add_argument("--answer-url", default=None,
                   help="base URL of an OpenAI-compatible engine (vLLM, vllm-ascend, TGI, llama.cpp server), e.g. "
                        "http://gpu-box:8000/v1: it answers from the recalled excerpts; default: answer here")
    u.add_argument("--answer-model", default=None, help="the model name that engine serves (needed with --answer-url)")
    u.add_argument("--answer-key-env", default="ILRE_ANSWER_API_KEY",
                   help="environment variable holding that engine's API key, if it wants one; "
                        "default: ILRE_ANSWER_API_KEY")
    u.add_argument("--answer-timeout", type=float, default=120.0,
                   help="seconds to wait for that engine to start answering; default: 120")
    cli.add_pipeline_options(p, max_new_tokens=SERVICE_MAX_TOKENS)
    return p


def make_service(args: argparse.Namespace):
    """The pipeline, its cache and (with --answer-url) the upstream engine, from the arguments."""
    try:
        from .app import Service, api_key_from_env
    except ImportError as exc:
        raise ValueError(f"the service needs {exc.name}: pip install 'ilre[serve]'") from None
    from .cache import EncodingCache
    from .upstream import Upstream

    if (args.answer_url is None) != (args.answer_model is None):
        raise ValueError("--answer-url and --answer-model go together")
    ilre = cli.load_pipeline(args, cli.config_from(args))
    upstream = None
    if args.answer_url is not None:
        upstream = Upstream(args.answer_url, args.answer_model, api_key_from_env(args.answer_key_env),
                            args.answer_timeout)
    cache = EncodingCache(ilre, int(args.cache_gb * 1e9), args.index_dir)
    return Service(ilre, cache, upstream, api_key_from_env(args.api_key_env), int(args.max_body_mb * 1e6))


def serve(args: argparse.Namespace) -> None:
    import socket

    import uvicorn

    from .app import create_app

    service = make_service(args)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        raise ValueError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}; choose another --port") from None
    where = f"http://{args.host}:{sock.getsockname()[1]}/v1"
    print(f"ILRe serving {service.pipeline.name} at {where}"
          + (f", answers by {args.answer_model} at {args.answer_url}" if service.upstream else "")
          + ("" if service.api_key is None else f" (API key from ${args.api_key_env})"), file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(create_app(service), log_level="info" if args.verbose else "warning")).run(
        sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    return cli.main(build_parser(), serve, argv, interrupted="stopped")


if __name__ == "__main__":
    sys.exit(main())
