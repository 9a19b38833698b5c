"""The systems an evaluation compares (each a column of the table), and the keys that say when a
stored answer still holds: a task's content, a system's settings."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .baselines import BM25Chunks, BM25ChunksBestLast, GemFilter, LagKVVotes, SnapKVStyle, StreamingLLM
from .tasks import Task

OK = "ok"
OVER_LENGTH = "skipped (over length cap)"
OVER_TIME = "skipped (over time cap)"


@dataclass(frozen=True)
class System:
    """One column of the table: a name, a label and how it chooses what to read."""

    name: str
    label: str
    kind: str  # "ilre", "full", "snapkv", "lagkv", "gemfilter" or "select"
    ilre: dict[str, Any] = field(default_factory=dict)
    """ILReConfig overrides of an ILRe variant."""
    selector: Any = None
    """StreamingLLM / BM25Chunks for kind 'select', SnapKVStyle for 'snapkv', LagKVVotes for 'lagkv',
    GemFilter for 'gemfilter'."""

    @property
    def capped(self) -> bool:
        """Needs a full-attention pass over the whole context, O(L²): skipped beyond the caps."""
        return self.kind in ("full", "snapkv", "lagkv", "gemfilter")

    def settings(self, ilre) -> dict[str, Any]:
        """What this system's answers depend on, besides the task and the code."""
        c = ilre.config
        if self.kind == "ilre":
            out = asdict(replace(c, **self.ilre))
        else:
            out = {"instruction": c.instruction, "max_new_tokens": c.max_new_tokens}
            if self.kind != "full":
                out.update(budget=c.budget, gap_marker=c.gap_marker, selector=repr(self.selector))
            if self.kind == "gemfilter":
                out.update(layer=c.layer)  # its filter layer is ILRe's retrieval layer
        return json.loads(json.dumps({"model": ilre.name, **out}))  # tuples become lists

    def fingerprint(self, ilre) -> str:
        text = json.dumps(self.settings(ilre), sort_keys=True)
        return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


SYSTEMS: dict[str, System] = {s.name: s for s in (
    System("full", "Full context", "full"),
    System("ilre", "ILRe (sentences)", "ilre", {"recall_unit": "sentence"}),
    System("ilre-mk", "ILRe (kernels 1,7,31)", "ilre", {"recall_unit": "token", "kernels": (1, 7, 31)}),
    System("ilre-k7", "ILRe (kernel 7)", "ilre", {"recall_unit": "token", "kernels": (7,)}),
    System("ilre-attn", "ILRe (sentences, attention alone, as in the paper)", "ilre",
           {"lexical_weight": 0.0, "hops": 0, "lexical_passage": 0, "passage": 0, "read_order": "text"}),
    System("ilre-words", "ILRe's sentence choice by words alone (BM25 of sentences with neighbours)", "ilre",
           {"lexical_weight": 1000.0}),
    System("ilre-nohops", "ILRe (sentences, no hops)", "ilre", {"hops": 0}),
    System("ilre-text", "ILRe (passages read in text order: the default before best_last)", "ilre",
           {"read_order": "text"}),
    System("ilre-p0", "ILRe (lone sentences, no neighbours: the default before passages)", "ilre", {"passage": 0}),
    System("ilre-nolp", "ILRe (no passage read first by its words)", "ilre", {"lexical_passage": 0}),
    System("ilre-w2", "ILRe (words weighted 2 against attention)", "ilre", {"lexical_weight": 2.0}),
    System("ilre-nonum", "ILRe (a question's numbers not singled out)", "ilre", {"question_numbers": False}),
    System("ilre-nocut", "ILRe (sentences, no cut)", "ilre", {"unit_cut": 0.0}),
    System("ilre-q", "ILRe (sentences, question tokens)", "ilre", {"query_tokens": "question"}),
    System("ilre-exact", "ILRe (sentences, exact prefill)", "ilre", {"prefill_precision": "model"}),
    System("ilre-int8", "ILRe (sentences, int8 prefill)", "ilre", {"prefill_precision": "int8"}),
    System("ilre-a8", "ILRe (sentences, int8 answer steps)", "ilre", {"answer_precision": "int8"}),
    System("ilre-lagmem", "ILRe (sentences, LagKV memory 256)", "ilre", {"lag_memory": 256}),
    System("snapkv", "SnapKV-style", "snapkv", selector=SnapKVStyle(kernel=7, aggregate="votes")),
    System("snapkv-mean", "SnapKV-style (mean)", "snapkv", selector=SnapKVStyle(kernel=7, aggregate="mean")),
    System("snapkv-k31", "SnapKV-style (kernel 31)", "snapkv", selector=SnapKVStyle(kernel=31, aggregate="votes")),
    System("lagkv", "LagKV", "lagkv", selector=LagKVVotes(lag=64, sink=4)),
    System("streaming", "StreamingLLM", "select", selector=StreamingLLM(sink=4)),
    System("rag", "RAG (BM25)", "select", selector=BM25Chunks(chunk_tokens=64)),
    System("rag-bl", "RAG (BM25), the best chunk read last", "select",
           selector=BM25ChunksBestLast(chunk_tokens=64)),
    System("gemfilter", "GemFilter (layer l_R, last token)", "gemfilter", selector=GemFilter()),
)}
DEFAULT_SYSTEMS = ("full", "ilre", "ilre-mk", "ilre-k7", "snapkv", "streaming", "rag")


def prefill_key(ilre) -> tuple:
    """The settings a streaming prefill depends on, as run: variants that share them share one prefill."""
    return tuple(sorted(ilre.encoding.items()))  # 'auto' precision and chunk size resolved


def task_key(task: Task) -> str:
    """Identifies a task by name, length, seed and content (a changed generator makes a new key)."""
    digest = hashlib.blake2b(json.dumps([task.context, task.question, task.answer_prefix, task.answers])
                             .encode(), digest_size=4).hexdigest()
    return f"{task.task}|{task.length}|{task.seed}|{digest}"
