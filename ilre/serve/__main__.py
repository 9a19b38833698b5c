"""Serve ILRe through OpenAI's chat API: a conversation about a document, whose first user message
(or the part of it before a "Question:" line) is the document, read once and remembered (in memory,
and in --index-dir across restarts); system prompts are instructions, and later turns are answered
in seconds with the earlier ones as history, here or by another OpenAI-compatible engine
(--answer-url). docs/serving.md gives the whole rule.

    python -m ilre.serve                                  # embedded model, 127.0.0.1:8000
    python -m ilre.serve --model path/to/model --device npu --index-dir indexes/ --cache-gb 8
    python -m ilre.serve --answer-url http://gpu-box:8000/v1 --answer-model Qwen2.5-72B-Instruct
    python -m ilre.serve --replicas 2 --index-dir /shared/indexes      # on Ray Serve (docs/scaling.md)
"""

from __future__ import annotations

import argparse
import json
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
                   help="environment variable holding the API keys clients must send as 'Authorization: Bearer "
                        "KEY', comma-separated; each key's contexts are its own, unseen by the other keys; unset "
                        "or empty: no key is asked for; default: ILRE_API_KEY")
    s.add_argument("--max-body-mb", type=float, default=64.0,
                   help="largest request body in MB (a bigger one gets HTTP 413); default: 64")
    s.add_argument("--index-dir", type=Path, default=None,
                   help="folder where encodings are saved as index files and found again after a restart; "
                        "default: none, memory only")
    s.add_argument("--cache-gb", type=float, default=8.0,
                   help="memory for encodings, in GB; the least recently used leave beyond it (they stay in "
                        "--index-dir); default: 8")
    s.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="warning",
                   help="what is logged on stderr, each line with its request's id; info logs every request; "
                        "default: warning")
    s.add_argument("--log-json", action="store_true", help="log one JSON object per line, for a log collector")
    s.add_argument("-v", "--verbose", action="store_true", help="the same as --log-level info")
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-waiting", type=cli.at_least(1), default=8,
                     help="answers in flight (running or waiting) beyond which a request gets HTTP 429 with "
                          "Retry-After; default: 8")
    lim.add_argument("--max-queued", type=cli.at_least(1), default=16,
                     help="new contexts waiting to be encoded beyond which another gets HTTP 503 with Retry-After; "
                          "default: 16")
    lim.add_argument("--request-timeout", type=float, default=600.0,
                     help="seconds an answer may take (recall included) before it is stopped with HTTP 504; "
                          "default: 600")
    lim.add_argument("--encode-timeout", type=float, default=3600.0,
                     help="seconds an encoding may take before it is stopped (its requests get HTTP 504); "
                          "default: 3600")
    lim.add_argument("--grace", type=float, default=30.0,
                     help="on SIGTERM or Ctrl-C, seconds given to the requests in flight to finish while new ones "
                          "get 503; default: 30")
    r = p.add_argument_group("replicas on Ray Serve (pip install 'ilre[ray]'; docs/scaling.md)")
    r.add_argument("--replicas", type=cli.at_least(1), default=None,
                   help="run the service as a Ray Serve deployment of this many replicas behind Ray Serve's proxy "
                        "on --host/--port; they share encodings through --index-dir (on storage every node "
                        "reaches), each document encoded once in the cluster; default: one process, no Ray")
    r.add_argument("--ray-address", default=None,
                   help="the Ray cluster to join (e.g. ray://head:10001 or auto); default: start a local one")
    r.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs Ray reserves for each replica; default: 1")
    r.add_argument("--ray-serve-options", type=json.loads, default=None, metavar="JSON",
                   help="more options of Ray Serve's deployment, as JSON, passed through as they are, e.g. "
                        "'{\"autoscaling_config\": {\"min_replicas\": 1, \"max_replicas\": 4}}'")
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
        from .app import Service, api_key_from_env, api_keys_from_env
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
    cache = EncodingCache(ilre, int(args.cache_gb * 1e9), args.index_dir, args.max_queued, args.encode_timeout)
    return Service(ilre, cache, upstream, api_keys_from_env(args.api_key_env), int(args.max_body_mb * 1e6),
                   args.max_waiting, args.request_timeout)


def serve_on_ray(args: argparse.Namespace) -> None:
    """The same app, built in each replica of a Ray Serve deployment, behind Ray Serve's proxy."""
    import signal

    try:
        import ray
        from ray import serve as ray_serve
    except ImportError:
        raise ValueError("--replicas runs on Ray Serve: pip install 'ilre[ray]'") from None
    if args.index_dir is None:
        raise ValueError("--replicas share their encodings through --index-dir: give a folder every replica reaches")
    from .app import create_app

    def build():  # runs in each replica
        from .observe import setup_service_logging

        setup_service_logging("info" if args.verbose else args.log_level, args.log_json)
        return create_app(make_service(args), args.grace)

    options = {"name": "ilre", "num_replicas": args.replicas, "ray_actor_options": {"num_cpus": args.replica_cpus},
               "graceful_shutdown_timeout_s": args.grace, **(args.ray_serve_options or {})}
    if "autoscaling_config" in options:
        options.pop("num_replicas")
    deployment = ray_serve.deployment(ray_serve.ingress(build)(), **options)
    ray.init(address=args.ray_address, log_to_driver=args.verbose or args.log_level in ("debug", "info"))
    signal.signal(signal.SIGTERM, lambda sig, frame: (_ for _ in ()).throw(KeyboardInterrupt))
    try:
        ray_serve.start(http_options={"host": args.host, "port": args.port})
        ray_serve.run(deployment.bind(), name="ilre", route_prefix="/", blocking=False)
        print(f"ILRe serving on Ray Serve: {args.replicas} replicas at http://{args.host}:{args.port}/v1",
              file=sys.stderr, flush=True)
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        ray_serve.shutdown()
        ray.shutdown()


def serve(args: argparse.Namespace) -> None:
    import signal
    import socket

    if args.replicas is not None:
        return serve_on_ray(args)

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
          + ("" if not service.api_keys else f" ({len(service.api_keys)} API keys from ${args.api_key_env})"),
          file=sys.stderr, flush=True)
    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:  # SIGTERM or Ctrl-C: drain, then stop
            service.draining = True
            super().handle_exit(sig, frame)

    config = uvicorn.Config(create_app(service, args.grace), log_config=None, timeout_graceful_shutdown=args.grace)
    signal.signal(signal.SIGTERM, lambda sig, frame: None)  # uvicorn raises it again once drained: exit 0 then
    Server(config).run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    from .observe import setup_service_logging

    args = build_parser().parse_args(argv)
    cli.setup_logging(args.verbose or args.log_level in ("debug", "info"))
    setup_service_logging("info" if args.verbose else args.log_level, args.log_json)
    return cli.run(lambda: serve(args), interrupted="stopped")


if __name__ == "__main__":
    sys.exit(main())
