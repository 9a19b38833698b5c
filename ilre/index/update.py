"""Bring a folder's index up to date: encode only the files that changed.

A saved index of a folder records each file's path, place and checksum. Against the folder as it
is now, a file whose checksum differs, or that is gone, is cut out of the index (its tokens, its
keys, its text); a file that changed or is new is appended at the end, its keys made by going on
with the stream from the index's saved windows. The keys of the files kept are not touched: they
were made with the text that stood before them at the time, which a fresh encoding would read a
little differently only within the ``window`` tokens after a cut. Where most of the index would
be cut, or the encoding keeps a LagKV memory (not saved, so a stream cannot go on), the folder is
encoded again from the start.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch

from ..encoded import EncodedContext
from ..key_cache import KeyCache
from ..prefiller import StreamState
from ..prompt import ContextTokens, tokenize_context
from ..sources import FileSpan, Sources

log = logging.getLogger(__name__)

REBUILD_SHARE = 0.5
"""Encode the folder again from the start when more than this share of the index's tokens would be cut."""


@dataclass
class Change:
    """What an update did."""

    changed: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    tokens_encoded: int = 0
    rebuilt: bool = False

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.removed)

    def __str__(self) -> str:
        if not self:
            return "up to date"
        how = "encoded again from the start" if self.rebuilt else f"{self.tokens_encoded} tokens encoded"
        return (f"{len(self.changed)} changed, {len(self.added)} added, {len(self.removed)} removed; {how}")


def compare(old: list[FileSpan], sources: Sources) -> tuple[Change, list[FileSpan], list[int]]:
    """(what changed, the old files to cut, the new files to append as indices into ``sources.files``)."""
    before = {f.path: f for f in old}
    now = {f.path: f for f in sources.files}
    change = Change(changed=[p for p in now if p in before and before[p].sha256 != now[p].sha256],
                    added=[p for p in now if p not in before],
                    removed=[p for p in before if p not in now])
    cut = [f for f in old if f.path in change.removed or f.path in change.changed]
    append = [i for i, f in enumerate(sources.files) if f.path in change.added or f.path in change.changed]
    return change, cut, append


def update(pipeline, encoded: EncodedContext, sources: Sources, progress=False) -> tuple[EncodedContext, Change]:
    """``encoded`` (a folder's index, loaded) brought up to ``sources`` (the folder read now), and what changed."""
    t0 = time.perf_counter()
    tokens = encoded.tokens
    if tokens.files is None or any(f.path is None for f in tokens.files):
        raise ValueError("this index was made of one text, not of files: make it again with --context FOLDER")
    change, cut, append = compare(tokens.files, sources)
    if not change:
        return encoded, change
    regions = _regions(tokens, cut)
    keep = torch.ones(len(tokens), dtype=torch.bool)
    for a, b in regions:
        keep &= ~((tokens.offsets[:, 0] >= a) & (tokens.offsets[:, 0] < b))
    if pipeline.config.lag_memory or (~keep).sum() > REBUILD_SHARE * len(tokens) or encoded.state is None:
        fresh = pipeline.encode(sources, progress)
        change.rebuilt, change.tokens_encoded = True, len(fresh.tokens)
        return fresh, change

    kept = _cut(tokens, regions, keep)
    added = Sources.join([(sources.files[i].path, sources.file_text(sources.files[i])) for i in append])
    new = tokenize_context(pipeline.tokenizer, added.text)
    at = len(kept.text)
    state = encoded.state
    n_prefix = encoded.prefix_ids.numel()
    kept_keys = state.key_cache.keys[:, torch.cat((torch.arange(n_prefix), n_prefix + keep.nonzero().view(-1)))]
    kept_state = StreamState(state.windows, KeyCache(kept_keys, state.key_cache.layer, kept_keys.shape[1]), state.seen)
    state = pipeline.prefiller(progress, kept_keys.device).prefill(new.ids, after=kept_state)
    files = kept.files + [FileSpan(f.path, f.header + at, f.start + at, f.end + at, f.sha256, f.kind) for f in added.files]
    joined = ContextTokens(kept.text + added.text, torch.cat((kept.ids, new.ids)),
                           torch.cat((kept.offsets, new.offsets + at)), None, files, sources.read_with or None)
    change.tokens_encoded = len(new)
    log.info("index updated: %s", change)
    return EncodedContext(joined, encoded.prefix_ids, state, {"update": time.perf_counter() - t0}, pipeline,
                          encoded.settings), change


def _regions(tokens: ContextTokens, cut: list[FileSpan]) -> list[tuple[int, int]]:
    """The character ranges of the files to cut: each from its header to the next file's header."""
    headers = sorted(f.header for f in tokens.files) + [len(tokens.text)]
    following = {a: b for a, b in zip(headers, headers[1:])}
    return sorted((f.header, following[f.header]) for f in cut)


def _cut(tokens: ContextTokens, regions: list[tuple[int, int]], keep: torch.Tensor) -> ContextTokens:
    """``tokens`` without the character ``regions`` (and the tokens that start in them, not ``keep``)."""
    text, files, gone, at = [], [], 0, 0
    cut_files = {a for a, _ in regions}
    for a, b in regions:
        text.append(tokens.text[at:a])
        at = b
    text.append(tokens.text[at:])
    starts = torch.tensor([a for a, _ in regions])
    removed_before = torch.cumsum(torch.tensor([0] + [b - a for a, b in regions]), 0)
    for f in tokens.files:
        if f.header in cut_files:
            continue
        gone = int(removed_before[torch.searchsorted(starts, torch.tensor(f.header), right=True)])
        files.append(FileSpan(f.path, f.header - gone, f.start - gone, f.end - gone, f.sha256, f.kind))
    offsets = tokens.offsets[keep]
    shift = removed_before[torch.searchsorted(starts, offsets[:, 0].contiguous(), right=True)]
    return ContextTokens("".join(text), tokens.ids[keep], offsets - shift[:, None], None, files)
