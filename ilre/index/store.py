"""An encoded context to and from an index file (the file itself: ``format.py``).

What is saved: the keys of l_R, the lower layers' windows, the token ids, offsets and sentence
starts, the text, and the words of the sentences (so that a load need not find them again); and,
in the metadata, the model's identity, the encoding settings, the text's checksum and, for a
folder, each file's place and checksum (what ``ilre.index --update`` compares).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import torch

from ..encoded import EncodedContext
from ..key_cache import KeyCache
from ..lexical import LexicalIndex
from ..prefiller import LayerWindow, StreamState
from ..prompt import ContextTokens
from ..sources import FileSpan
from ..units import SPLIT_RULE, TextUnits
from ..version import __version__
from .format import IndexFileError, read, read_meta, write


def save(encoded: EncodedContext, path: str | Path, identity: dict[str, Any], units: TextUnits | None,
         lexical_context: int) -> Path:
    """Write ``encoded`` (prefilled) to ``path``; ``units``: its sentences, whose words are saved
    read with ``lexical_context`` neighbours (None: token recall, no words)."""
    state, tokens = encoded.state, encoded.tokens
    text = tokens.text.encode("utf-8")
    small = len(tokens.text) < 2**31 and int(tokens.ids.max()) < 2**31
    index_dtype = torch.int32 if small else torch.int64  # token ids and offsets: half the bytes
    tensors = {"keys": state.key_cache.keys[:, :state.key_cache.filled], "prefix_ids": encoded.prefix_ids,
               "ids": tokens.ids.to(index_dtype), "offsets": tokens.offsets.to(index_dtype),
               "unit_starts": tokens.unit_starts().to(index_dtype),
               "text": torch.frombuffer(bytearray(text), dtype=torch.uint8)}
    for i, w in enumerate(state.windows):
        tensors[f"window.{i}.keys"], tensors[f"window.{i}.values"] = w.keys, w.values
    meta = {"ilre_version": __version__, "model": identity, "settings": encoded.settings,
            "split_rule": SPLIT_RULE,
            "context": {"sha256": hashlib.sha256(text).hexdigest(), "tokens": len(tokens), "characters": len(tokens.text)}}
    if tokens.files is not None:
        meta["files"] = [f.to_dict() for f in tokens.files]
    if tokens.read_with:
        meta["read_with"] = tokens.read_with
    if units is not None:
        words = encoded.lexical(units, lexical_context)
        vocab = bytearray("\n".join(words.vocab).encode()) or bytearray(1)
        tensors.update({"words.ids": torch.from_numpy(words.word_ids), "words.bounds": torch.from_numpy(words.bounds),
                        "words.vocab": torch.frombuffer(vocab, dtype=torch.uint8)})
        meta["words"] = {"units": list(units.key)}
    return write(path, tensors, meta)


def check_model(path: str | Path, meta: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse an index made by another model than ``identity``'s."""
    theirs = meta.get("model", {})
    if theirs.get("fingerprint") != identity["fingerprint"]:
        raise IndexFileError(
            f"index {path} was made with another model ({theirs.get('name')}, fingerprint {theirs.get('fingerprint')}), "
            f"not {identity['name']} ({identity['fingerprint']}): pass that model with --model, or make the index "
            "again with this one")


def load(path: str | Path, layer: int, device: torch.device, key_device: torch.device, lexical_context: int,
         verify: bool = True) -> EncodedContext:
    """The encoded context of an index file (checked against its model and settings by the caller),
    with the windows of layers below ``layer`` on ``device`` and the keys on ``key_device``."""
    t0 = time.perf_counter()
    tensors, meta = read(path, verify)
    text = bytes(tensors["text"].numpy()).decode("utf-8")
    files = [FileSpan(**f) for f in meta["files"]] if "files" in meta else None
    current = meta.get("split_rule", 1) == SPLIT_RULE  # else its units are found again, and their words
    tokens = ContextTokens(text, tensors["ids"].long(), tensors["offsets"].long(),
                           tensors["unit_starts"].long() if current else None, files, meta.get("read_with"))
    windows = [LayerWindow(tensors[f"window.{i}.keys"].to(device), tensors[f"window.{i}.values"].to(device))
               for i in range(layer)]
    keys = tensors["keys"].to(key_device)
    state = StreamState(windows, KeyCache(keys, layer, keys.shape[1]), keys.shape[1])
    encoded = EncodedContext(tokens, tensors["prefix_ids"], state, {"load": time.perf_counter() - t0}, None,
                             meta["settings"])
    if current and "words" in meta and "words.ids" in tensors:
        vocab = bytes(tensors["words.vocab"].numpy()).decode("utf-8")
        encoded.words[tuple(meta["words"]["units"])] = LexicalIndex(
            vocab.split("\n") if tensors["words.ids"].numel() else [], tensors["words.ids"].numpy(),
            tensors["words.bounds"].numpy(), lexical_context)
    return encoded


__all__ = ["save", "load", "check_model", "read_meta"]
