"""ILRe's parameters, with the defaults chosen by measurement (docs/parameters.md says how)."""

from __future__ import annotations

from dataclasses import dataclass

PREFILL_PRECISIONS = ("auto", "model", "int8")
"""Values of ``ILReConfig.prefill_precision`` (ilre/quantize.py says what each means)."""
RECALL_UNITS = ("sentence", "token")
"""Values of ``ILReConfig.recall_unit``."""
QUERY_TOKENS = ("question", "suffix")
"""Values of ``ILReConfig.query_tokens``."""

DEFAULT_INSTRUCTION = (
    "Below are excerpts of a long document, in their original order. "
    "Answer the question using them; answer briefly."
)


@dataclass
class ILReConfig:
    """Every knob of the pipeline. ``None`` for ``layer`` means: take it from the model's profile."""

    layer: int | None = None
    """0-based retrieval layer l_R. None: the model's profile, else ~60% of the depth."""
    budget: int = 256
    """Context tokens the answer reads. Covering the context gives the plain full-context prompt."""
    recall_unit: str = "sentence"
    """'sentence': whole sentences/lines, each scored by every query token's best match in it;
    'token': the paper's multi-kernel pooling of per-token scores."""
    query_tokens: str = "suffix"
    """Query tokens whose attention scores the context: 'question' (the question's own tokens) or
    'suffix' (also the chat template's end and the answer prefix)."""
    unit_cut: float = 0.2
    """recall_unit='sentence' stops at the first unit scoring below this share of the best one's
    score, so a clear answer comes with few look-alikes (0: take units while the budget lasts)."""
    kernels: tuple[int, ...] = (1, 7, 31)
    """Pooling kernel sizes (odd) for recall_unit='token'; each gets a share of the budget."""
    shares: tuple[float, ...] | None = None
    """Budget share per kernel; None splits it equally."""
    pooling: str = "max"
    """'max' or 'avg' pooling of the scores."""
    max_unit_tokens: int = 128
    """Longer sentences/lines are cut into pieces of this many tokens."""
    sink: int = 4
    """First tokens every lower layer always attends to (attention sinks)."""
    window: int = 256
    """Recent tokens each lower layer keeps in its sliding window."""
    chunk_size: int | None = None
    """Tokens per streaming-prefill step. None: 128 for the int8 prefill, 512 in the model's
    precision (the fastest measured on CPU for each, docs/performance.md)."""
    prefill_precision: str = "auto"
    """Linear maps of the prefill and query pass to l_R: 'model' (the model's own weights, exact),
    'int8' (dynamic int8 copies, CPU only), 'auto' (int8 on CPU with fp32 weights, else 'model').
    The answer always runs in the model's own precision."""
    positions: str = "relative"
    """Query-key positions for scoring: 'relative' (fixed short distance) or 'absolute'."""
    distance: int = 256
    """The fixed query-key distance of positions='relative'."""
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
        if self.budget < 1:
            raise ValueError(f"budget must be at least 1 token, got {self.budget}")
        if self.recall_unit not in RECALL_UNITS:
            raise ValueError(f"recall_unit must be 'sentence' or 'token', not {self.recall_unit!r}")
        if self.query_tokens not in QUERY_TOKENS:
            raise ValueError(f"query_tokens must be 'question' or 'suffix', not {self.query_tokens!r}")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.sink < 0 or self.window < 0 or (self.chunk_size is not None and self.chunk_size < 1):
            raise ValueError("sink and window must be >= 0 and chunk_size >= 1")
        if self.prefill_precision not in PREFILL_PRECISIONS:
            raise ValueError(f"prefill_precision must be one of {', '.join(PREFILL_PRECISIONS)}, "
                             f"not {self.prefill_precision!r}")
        if self.score_block < 1:
            raise ValueError("score_block must be >= 1")
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
