"""Saved context indexes: the long pass once, written to one file; every later question reads it.

An index is one safetensors file (memory-mapped on load, nothing executed):

* ``keys``: the pre-RoPE keys of the retrieval layer for prefix + context, ``[Hkv, P + L, D]``;
* ``window.<i>.keys`` / ``window.<i>.values``: layer i's sink + window at the end of the context
  (the query's pass through the lower layers reads them);
* ``prefix_ids``, ``ids``, ``offsets``, ``unit_starts``: the prefix and context tokens, each
  token's character span and the first token of each sentence or line;
* ``text``: the context itself, UTF-8 (recalled spans are shown from it).

Its header holds one JSON document under ``"ilre"``: the format version, the project's version,
the model's identity (name and a fingerprint of its config, tokenizer and weights), every
setting that shaped the encoding, the context's sha256 and token count, the creation time, and a
CRC-32 of every tensor's bytes, which a load checks.
"""

from __future__ import annotations

import datetime
import json
import os
import zlib
from pathlib import Path
from typing import Any

import torch

from ..inputs import check_file

FORMAT = 1
"""The file format this code writes and reads; a newer one is refused with a message."""
SUFFIX = ".ilre"


class IndexFileError(ValueError):
    """A file that is not a usable index for this model and these settings; the message says why."""


def _checksum(tensors: dict[str, torch.Tensor]) -> str:
    crc = 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        crc = zlib.crc32(memoryview(t.view(torch.uint8).reshape(-1).numpy()) if t.numel() else b"", crc)
    return f"{crc:08x}"


def write(path: str | os.PathLike, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write an index atomically: a temporary file beside ``path``, renamed when complete, so an
    interrupted or failed write never leaves a file that looks like an index."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {**meta, "format": FORMAT, "checksum": _checksum(tensors),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        save_file(tensors, str(tmp), metadata={"ilre": json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The index's header, checked to be one this code can read; the tensors are not touched."""
    from safetensors import safe_open

    path = Path(path)
    check_file(path, "index", f"make it with python -m ilre.index --context FILE --out {path}", IndexFileError)
    try:
        with safe_open(str(path), framework="pt") as f:
            header = (f.metadata() or {}).get("ilre")
    except Exception as exc:  # safetensors raises its own error types for a damaged header
        raise IndexFileError(f"{path} is not an ILRe index, or it is damaged ({str(exc).splitlines()[0][:120]}): "
                             "make it again with python -m ilre.index") from None
    if header is None:
        raise IndexFileError(f"{path} is a safetensors file but not an ILRe index")
    meta = json.loads(header)
    if meta.get("format", 0) > FORMAT:
        raise IndexFileError(f"{path} has index format {meta['format']}, newer than this ILRe reads ({FORMAT}): "
                             "upgrade ILRe, or make the index again with this version")
    return meta


def read(path: str | os.PathLike, verify: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The index's tensors (memory-mapped, not copied) and header; ``verify`` checks the CRC."""
    from safetensors import safe_open

    meta = read_meta(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:
        raise IndexFileError(f"index {path} is damaged ({str(exc).splitlines()[0][:120]}): make it again") from None
    if verify and _checksum(tensors) != meta.get("checksum"):
        raise IndexFileError(f"index {path} is damaged (its checksum does not match): make it again")
    return tensors, meta


def describe(path: str | os.PathLike) -> str:
    """What ``python -m ilre.index --info`` prints: model, settings, tokens, size, creation, format."""
    path = Path(path)
    meta = read_meta(path)
    model, context = meta.get("model", {}), meta.get("context", {})
    lines = [f"index      {path}",
             f"format     {meta.get('format')} (ilre {meta.get('ilre_version')})",
             f"created    {meta.get('created')}",
             f"model      {model.get('name')} (fingerprint {model.get('fingerprint')}, {model.get('dtype')})",
             f"context    {context.get('tokens')} tokens, {context.get('characters')} characters, "
             f"sha256 {str(context.get('sha256'))[:16]}...",
             f"size       {path.stat().st_size / 2**20:.1f} MiB",
             "settings   " + ", ".join(f"{k}={v!r}" for k, v in meta.get("settings", {}).items())]
    if meta.get("files"):
        read_with = meta.get("read_with") or {}
        filters = ", ".join(f"{k} {v}" for k, v in read_with.items() if v and k != "max_file_bytes")
        lines.append(f"files      {len(meta['files'])}" + (f" ({filters})" if filters else ""))
    return "\n".join(lines)
