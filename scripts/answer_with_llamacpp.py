"""ILRe recalls, llama.cpp answers: the service with a real engine behind ``--answer-url``.

Starts llama.cpp's OpenAI-compatible server (``pip install "llama-cpp-python[server]"``, built
from source on the machine) on the embedded GGUF (SmolLM2-135M-Instruct, Q4_1), then
``python -m ilre.serve --answer-url`` pointing at it, both on free localhost ports, and asks the
bundled example's question, whole and streamed, through the openai client. Prints each answer,
whether it holds the expected one, and the time; figures go to <out>/answer_with_llamacpp.json.

    python scripts/answer_with_llamacpp.py --threads 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

from ilre import cli

EXAMPLE = Path(__file__).resolve().parents[1] / "ilre" / "examples" / "town_chronicle.txt"
QUESTION = "What is the combination of the old lighthouse safe?"
EXPECTED = "7342"


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser("python scripts/answer_with_llamacpp.py", __doc__)
    p.add_argument("--gguf", type=Path, default=None, help="the GGUF llama.cpp serves; default: the embedded model's")
    cli.add_results_option(p, "answer_with_llamacpp")
    cli.add_model_options(p)
    return p


def run(args: argparse.Namespace) -> int | None:
    import httpx
    import openai

    from evaluation.chat_clients import free_port, model_options, served, start_server, wait_until_up
    from ilre.loading import default_model_file

    if importlib.util.find_spec("llama_cpp") is None:
        raise ValueError('llama.cpp\'s server is not installed: pip install "llama-cpp-python[server]"')
    gguf = args.gguf or default_model_file()
    port = free_port()
    engine = start_server([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port),
                           "--n_ctx", "4096", "--n_threads", str(args.threads or os.cpu_count())])
    engine_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(engine_url, engine, "llama.cpp's server")
        engine_model = httpx.get(engine_url + "/models").json()["data"][0]["id"]
        options = [*model_options(args), "--answer-url", engine_url, "--answer-model", engine_model]
        doc = {"command": "python scripts/answer_with_llamacpp.py " + " ".join(sys.argv[1:]),
               "cpu": f"{os.cpu_count()} cores, {platform.machine()}", "gguf": gguf.name, "runs": []}
        with served(options) as url:
            client = openai.OpenAI(base_url=url, api_key="-", max_retries=0, timeout=3600)
            messages = [{"role": "user", "content": EXAMPLE.read_text()}, {"role": "user", "content": QUESTION}]
            for stream in (False, True, False):  # the last: a later turn, its encoding cached
                t0 = time.perf_counter()
                if stream:
                    chunks = list(client.chat.completions.create(model="ilre", messages=messages, stream=True))
                    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                    meta = next(c.model_extra["ilre"] for c in chunks if c.choices and c.model_extra.get("ilre"))
                else:
                    reply = client.chat.completions.create(model="ilre", messages=messages)
                    text, meta = reply.choices[0].message.content, reply.model_extra["ilre"]
                seconds = time.perf_counter() - t0
                row = {"stream": stream, "answer": text, "right": EXPECTED in text, "seconds": round(seconds, 2),
                       "cache": meta["cache"], "recalled_tokens": meta.get("recalled_tokens")}
                doc["runs"].append(row)
                print(f"{'streamed' if stream else 'whole':8s} {seconds:6.2f} s  cache {meta['cache']:4s}  "
                      f"right {row['right']}  {text!r}", flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "answer_with_llamacpp.json").write_text(json.dumps(doc, indent=2) + "\n")
    finally:
        engine.terminate()
        engine.wait(30)


if __name__ == "__main__":
    sys.exit(cli.main(build_parser(), run))
