"""ILRe's parameters, one small dataclass per component, with the defaults chosen by measurement
(docs/parameters.md says how).

Each field is written once: its default, its range (``setting``) and its docstring, which is also
its ``--help`` text (ilre/cli.py reads it). A component takes its own part: the streaming
prefill ``PrefillConfig``, the scorer ``ScoringConfig`` (``QueryScorer`` is one), sentence recall
``SentenceRecallConfig`` and token recall ``PoolingRecallConfig`` (the recallers are ones), the
answer ``AnswerConfig``. ``ILReConfig`` is all of them together, plus what the pipeline itself
decides (the layer, the budget, the recall unit). Every part checks its own fields when made.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

LAG = 64
"""LagKV's partition size (ilre/lagkv.py): a LagKV memory needs a window at least this long."""


def setting(default: Any, low: float | None = None, choices: tuple[str, ...] | None = None,
            below: float | None = None) -> Any:
    """A field with its range: at least ``low``, below ``below``, or one of ``choices``
    (None, where a field's type allows it, is always allowed)."""
    return field(default=default, metadata={"low": low, "choices": choices, "below": below})


def check_fields(config: Any) -> None:
    """Raise ValueError naming the first field of ``config`` out of its range."""
    for f in fields(config):
        value, meta = getattr(config, f.name), f.metadata
        if value is None or not meta:
            continue
        if meta["choices"] and value not in meta["choices"]:
            raise ValueError(f"{f.name} must be one of {', '.join(meta['choices'])}, not {value!r}")
        if meta["low"] is not None and value < meta["low"]:
            raise ValueError(f"{f.name} must be at least {meta['low']}, got {value}")
        if meta["below"] is not None and value >= meta["below"]:
            raise ValueError(f"{f.name} must be below {meta['below']}, got {value}")


class Checked:
    """Checks every field when the dataclass is made (and when ``dataclasses.replace`` remakes it)."""

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass
class PrefillConfig(Checked):
    """The streaming prefill: what the lower layers keep, and how the keys of l_R are kept.
    With ``ILReConfig.layer``, these shape an encoding and a saved index."""

    sink: int = setting(4, low=0)
    """First tokens every lower layer always attends to (attention sinks)."""
    window: int = setting(256, low=0)
    """Recent tokens each lower layer keeps in its sliding window."""
    lag_memory: int = setting(0, low=0)
    """Tokens each lower layer keeps, besides the sink and the window, from the history that leaves
    the window, chosen by LagKV as the authors' LRSA does (docs/parameters.md); 0: none."""
    chunk_size: int | None = setting(None, low=1)
    """Tokens per streaming-prefill step; by default 128 for the int8 prefill and 512 in the model's
    precision (the fastest measured on CPU for each, docs/performance.md)."""
    prefill_precision: str = setting("auto", choices=("auto", "model", "int8"))
    """Linear maps of the prefill and query pass to l_R: 'model' (the model's own weights, exact),
    'int8' (dynamic int8 copies, CPU only, ~3x faster), 'auto' (int8 on CPU with float32 weights,
    else 'model'). The answer's precision is ``answer_precision``'s."""
    key_dtype: str = setting("float16", choices=("float16", "bfloat16", "float32"))
    """Precision in which the keys of l_R are kept for the whole context (in memory and in a saved
    index); they are scored in float32. float16 halves their memory with the same recall
    (docs/parameters.md)."""
    key_memory: str = setting("auto", choices=("auto", "device", "host"))
    """Where the keys of l_R are kept on an accelerator: 'device', 'host' (the computer's own memory,
    moved to the device block by block when scored), or 'auto' (the device when everything fits
    there, else host). The CPU keeps them in memory in any case; results are the same."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lag_memory and self.window < LAG:
            raise ValueError(f"a LagKV memory (lag_memory) needs a window of at least {LAG} tokens (its lag), "
                             f"got window {self.window}")

    def chunk_for(self, precision: str) -> int:
        """The chunk size for a prefill in ``precision`` ('int8' or 'model')."""
        return self.chunk_size or default_chunk(precision)


def default_chunk(precision: str) -> int:
    """The default chunk of a prefill in ``precision`` ('int8' or 'model'), measured on CPU."""
    return 128 if precision == "int8" else 512


@dataclass
class ScoringConfig(Checked):
    """How the query's attention at l_R scores the context's keys (``QueryScorer``)."""

    positions: str = setting("relative", choices=("relative", "absolute"))
    """Query-key positions when scoring: 'relative' (one short fixed distance) or 'absolute' (the
    original ones)."""
    distance: int = setting(256, low=0)
    """The fixed query-key distance of the 'relative' positions."""
    block_size: int = setting(4096, low=1)
    """Keys scored per block: bounds the scorer's memory; on a CPU, one block's logits staying in
    the cache makes 4096 faster than 8192 and 32768 (docs/performance.md)."""
    query_tokens: str = setting("suffix", choices=("question", "suffix"))
    """Query tokens whose attention scores the context: 'question' (the question's own tokens) or
    'suffix' (also the chat template's end and the answer prefix)."""


@dataclass
class SentenceRecallConfig(Checked):
    """Sentence recall (``UnitRecaller``): whole sentences or lines, by attention and words."""

    max_unit_tokens: int = setting(128, low=1)
    """Longer sentences/lines are cut into pieces of this many tokens."""
    unit_cut: float = setting(0.2, low=0, below=1)
    """Sentence recall stops at the first sentence scoring below this share of the best one's score,
    so a clear answer comes with few look-alikes (0 to 1; 0 takes sentences while the budget lasts);
    with lexical_weight, a sentence must also reach this share in its attention or its own words."""
    lexical_weight: float = setting(1.0, low=0)
    """Weight of each sentence's BM25 match with the question (the sentence read with its
    neighbours) added to its attention score, each scaled to its best; 0: attention alone, as in
    the paper. Sentence recall only (docs/parameters.md)."""
    lexical_context: int = setting(1, low=0)
    """Neighbouring sentences on each side read with a sentence when its words are matched."""
    hops: int = setting(4, low=0)
    """Rounds of follow-up recall while the budget lasts: each adds the sentences that share a rare
    word (a name in at most 3 sentences) with the last round's, not with the question, so that a
    chain such as 'A = 5', 'B = A' is followed, but not to another line of a taken line's list
    (another key's line, sharing a part of its name); 0: none. Sentence recall only."""
    lexical_passage: int = setting(64, low=0)
    """Tokens of consecutive whole sentences read first, as one passage: the one whose words match
    the question best by BM25, as retrieval-augmented generation reads; attention and words choose
    the rest of the budget. 0: none. Sentence recall only (docs/parameters.md)."""
    question_numbers: bool = setting(True)
    """A question's numbers (its words with a digit that the context holds) name what it asks about:
    the passage read first is the best by BM25 among those holding the most of them, and sentences
    that repeat half the question's other words without them (the same question asked of another
    value, such as a worked example) are not read. Sentence recall only (docs/parameters.md)."""
    passage: int = setting(1, low=0)
    """Sentences on each side taken right after each sentence chosen, while they fit: the reader
    gets passages rather than lone sentences (an answer often sits beside the sentence that matches
    the question); not beside the lines of a list (several chosen sentences of one form, such as
    needles of several keys), whose neighbours would crowd out its other lines; 0: lone sentences.
    Sentence recall only (docs/parameters.md)."""
    read_order: str = setting("best_last", choices=("best_last", "text"))
    """The order in which the answer reads the passages recalled: 'best_last' (those chosen for the
    question from the least relevant to the most, so that the best sits next to the question, then
    what the hops followed from them, in text order) or 'text' (the context's order). A small reader
    answers from what it read last (docs/parameters.md). Sentence recall only."""


@dataclass
class PoolingRecallConfig(Checked):
    """Token recall (``PoolingRecaller``): the paper's multi-kernel pooling of token scores."""

    kernels: tuple[int, ...] = (1, 7, 31)
    """Pooling kernel sizes (odd) of token recall, comma-separated; each gets a share of the budget."""
    shares: tuple[float, ...] | None = None
    """Budget share per pooling kernel, comma-separated; by default the kernels share it equally."""
    pooling: str = setting("max", choices=("max", "avg"))
    """Pooling of the token scores: 'max' or 'avg'."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.kernels or any(k < 1 or k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernels must be odd positive sizes, got {self.kernels}")
        if self.shares is not None and (len(self.shares) != len(self.kernels) or min(self.shares) < 0
                                        or sum(self.shares) <= 0):
            raise ValueError("shares must be non-negative, one per kernel, not all zero")


DEFAULT_INSTRUCTION = (
    "Below are excerpts of a long document. "
    "Answer the question using them; answer briefly."
)


@dataclass
class AnswerConfig(Checked):
    """The prompt around what was recalled, and the answer's length."""

    instruction: str = DEFAULT_INSTRUCTION
    """Text put before the context in the user turn; part of the prompt with or without recall."""
    gap_marker: str = " ... "
    """Text put between recalled spans that are not adjacent in the original."""
    max_new_tokens: int = setting(48, low=1)
    """Answer length cap; in the service, the length of an answer whose request gives no max_tokens,
    and the most a request may ask (docs/serving.md)."""
    answer_precision: str = setting("model", choices=("model", "int8"))
    """Linear maps of the answer's token-by-token steps: 'model' (the model's own weights) or 'int8'
    (per-channel int8 weights and bfloat16 inputs, CPU only; the prompt is still read in the model's
    precision). docs/performance.md gives its speed and its answers measured against 'model'."""


@dataclass
class ILReConfig(AnswerConfig, PoolingRecallConfig, SentenceRecallConfig, ScoringConfig, PrefillConfig):
    """Every knob of the pipeline: each component's part, plus what the pipeline decides. The
    command lines build their options from these fields and docstrings (ilre/cli.py), so each
    docstring is also that option's --help text."""

    layer: int | None = setting(None, low=0)
    """0-based retrieval layer l_R; by default the model's profile's (python -m layer_probe), else
    the layer at 60% of the depth."""
    budget: int = setting(256, low=1)
    """Context tokens the answer reads; a budget covering the context reads all of it, as the plain model."""
    recall_unit: str = setting("sentence", choices=("sentence", "token"))
    """'sentence': whole sentences/lines, each scored by every query token's best match in it;
    'token': the paper's multi-kernel pooling of per-token scores."""

    def encoding(self, precision: str) -> dict[str, Any]:
        """The settings that shape an encoding, as a prefill in ``precision`` ('int8' or 'model') runs
        them: an index made under other ones is refused."""
        run = {"chunk_size": self.chunk_for(precision), "prefill_precision": precision}
        return {name: run.get(name, getattr(self, name)) for name in ENCODING}

    def part(self, kind: type) -> Any:
        """This configuration's fields of one component's config class (one of ``PARTS``)."""
        return kind(**{f.name: getattr(self, f.name) for f in fields(kind)})

    def validate(self) -> None:
        """Check every field again (the fields are checked when the configuration is made; this is
        for one changed in place)."""
        self.__post_init__()


PARTS = (PrefillConfig, ScoringConfig, SentenceRecallConfig, PoolingRecallConfig, AnswerConfig)
"""The components' configs that ``ILReConfig`` is made of."""
ENCODING = ("layer", *(f.name for f in fields(PrefillConfig) if f.name != "key_memory"), "instruction")
"""The fields that shape an encoding (and a saved index); the others shape only recall and the answer."""
