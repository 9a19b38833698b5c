"""ILRe's parameters, with the defaults chosen by measurement (docs/parameters.md says how)."""

from __future__ import annotations

from dataclasses import dataclass

PREFILL_PRECISIONS = ("auto", "model", "int8")
"""Values of ``ILReConfig.prefill_precision`` (ilre/quantize.py says what each means)."""
RECALL_UNITS = ("sentence", "token")
"""Values of ``ILReConfig.recall_unit``."""
QUERY_TOKENS = ("question", "suffix")
"""Values of ``ILReConfig.query_tokens``."""
KEY_DTYPES = ("float16", "bfloat16", "float32")
"""Values of ``ILReConfig.key_dtype``."""
KEY_MEMORIES = ("auto", "device", "host")
"""Values of ``ILReConfig.key_memory``."""
POOLINGS = ("max", "avg")
"""Values of ``ILReConfig.pooling``."""
POSITION_SCHEMES = ("relative", "absolute")
"""Values of ``ILReConfig.positions`` (ilre/scorer.py says what each means)."""

CHOICES = {"recall_unit": RECALL_UNITS, "query_tokens": QUERY_TOKENS, "pooling": POOLINGS,
           "positions": POSITION_SCHEMES, "prefill_precision": PREFILL_PRECISIONS,
           "key_dtype": KEY_DTYPES, "key_memory": KEY_MEMORIES}
"""The fields that take one of a few names, and those names."""
MINIMUMS = {"layer": 0, "budget": 1, "lexical_weight": 0, "lexical_context": 0, "hops": 0, "max_unit_tokens": 1, "sink": 0, "window": 0, "lag_memory": 0, "chunk_size": 1,
            "distance": 0, "score_block": 1, "max_new_tokens": 1}
"""The smallest value of each integer field (None, where a field allows it, is always allowed)."""

ENCODING = ("layer", "sink", "window", "lag_memory", "chunk_size", "prefill_precision", "key_dtype", "instruction")
"""The fields that shape an encoding (and a saved index); the others shape only recall and the answer."""

DEFAULT_INSTRUCTION = (
    "Below are excerpts of a long document, in their original order. "
    "Answer the question using them; answer briefly."
)


@dataclass
class ILReConfig:
    """Every knob of the pipeline. The command lines build their options from these fields and
    docstrings (ilre/cli.py), so each docstring is also that option's --help text."""

    layer: int | None = None
    """0-based retrieval layer l_R; by default the model's profile's (python -m layer_probe), else
    the layer at 60% of the depth."""
    budget: int = 256
    """Context tokens the answer reads; a budget covering the context reads all of it, as the plain model."""
    recall_unit: str = "sentence"
    """'sentence': whole sentences/lines, each scored by every query token's best match in it;
    'token': the paper's multi-kernel pooling of per-token scores."""
    query_tokens: str = "suffix"
    """Query tokens whose attention scores the context: 'question' (the question's own tokens) or
    'suffix' (also the chat template's end and the answer prefix)."""
    unit_cut: float = 0.2
    """Sentence recall stops at the first sentence scoring below this share of the best one's score,
    so a clear answer comes with few look-alikes (0 to 1; 0 takes sentences while the budget lasts);
    with lexical_weight, a sentence must also reach this share in its attention or its own words."""
    lexical_weight: float = 1.0
    """Weight of each sentence's BM25 match with the question (the sentence read with its
    neighbours) added to its attention score, each scaled to its best; 0: attention alone, as in
    the paper. Sentence recall only (docs/parameters.md)."""
    lexical_context: int = 1
    """Neighbouring sentences on each side read with a sentence when its words are matched."""
    hops: int = 4
    """Rounds of follow-up recall while the budget lasts: each adds the sentences that share a rare
    word (a name in at most 3 sentences) with the last round's, not with the question, so that a
    chain such as 'A = 5', 'B = A' is followed; 0: none. Sentence recall only."""
    kernels: tuple[int, ...] = (1, 7, 31)
    """Pooling kernel sizes (odd) of token recall, comma-separated; each gets a share of the budget."""
    shares: tuple[float, ...] | None = None
    """Budget share per pooling kernel, comma-separated; by default the kernels share it equally."""
    pooling: str = "max"
    """Pooling of the token scores: 'max' or 'avg'."""
    max_unit_tokens: int = 128
    """Longer sentences/lines are cut into pieces of this many tokens."""
    sink: int = 4
    """First tokens every lower layer always attends to (attention sinks)."""
    window: int = 256
    """Recent tokens each lower layer keeps in its sliding window."""
    lag_memory: int = 0
    """Tokens each lower layer keeps, besides the sink and the window, from the history that leaves
    the window, chosen by LagKV as the authors' LRSA does (docs/parameters.md); 0: none."""
    chunk_size: int | None = None
    """Tokens per streaming-prefill step; by default 128 for the int8 prefill and 512 in the model's
    precision (the fastest measured on CPU for each, docs/performance.md)."""
    prefill_precision: str = "auto"
    """Linear maps of the prefill and query pass to l_R: 'model' (the model's own weights, exact),
    'int8' (dynamic int8 copies, CPU only, ~3x faster), 'auto' (int8 on CPU with float32 weights,
    else 'model'). The answer always runs in the model's own precision."""
    key_dtype: str = "float16"
    """Precision in which the keys of l_R are kept for the whole context (in memory and in a saved
    index); they are scored in float32. float16 halves their memory with the same recall
    (docs/parameters.md)."""
    key_memory: str = "auto"
    """Where the keys of l_R are kept on an accelerator: 'device', 'host' (the computer's own memory,
    moved to the device block by block when scored), or 'auto' (the device when everything fits
    there, else host). The CPU keeps them in memory in any case; results are the same."""
    positions: str = "relative"
    """Query-key positions when scoring: 'relative' (one short fixed distance) or 'absolute' (the
    original ones)."""
    distance: int = 256
    """The fixed query-key distance of the 'relative' positions."""
    score_block: int = 32768
    """Keys scored per block (bounds the scorer's memory)."""
    instruction: str = DEFAULT_INSTRUCTION
    """Text put before the context in the user turn; part of the prompt with or without recall."""
    gap_marker: str = " ... "
    """Text put between recalled spans that are not adjacent in the original."""
    max_new_tokens: int = 48
    """Answer length cap (greedy decoding)."""

    def chunk_for(self, precision: str) -> int:
        """The chunk size for a prefill in ``precision`` ('int8' or 'model')."""
        return self.chunk_size or (128 if precision == "int8" else 512)

    def validate(self) -> None:
        """Raise ValueError naming the first field out of its range; the components check the rest."""
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        for name, low in MINIMUMS.items():
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"{name} must be at least {low}, got {value}")
        # The recallers and scorer check their own arguments; build them once to fail early.
        from .recaller import PoolingRecaller, UnitRecaller

        PoolingRecaller(self.kernels, self.shares, self.pooling)
        UnitRecaller(self.max_unit_tokens, self.unit_cut)
        self.scorer()

    def recaller(self):
        """The recaller of ``recall_unit``, with this configuration's parameters."""
        from .recaller import PoolingRecaller, UnitRecaller

        if self.recall_unit == "sentence":
            return UnitRecaller(self.max_unit_tokens, self.unit_cut)
        return PoolingRecaller(self.kernels, self.shares, self.pooling)

    def scorer(self):
        from .scorer import QueryScorer

        return QueryScorer(self.positions, self.distance, self.score_block)
