"""Copies of a model for the answer's token-by-token steps, with their linear maps computed another way.

A decoding step multiplies one row (the new token) by every weight matrix of the model, so its time
is the time to read the weights. On a CPU, torch's float32 product of a single row runs on one core
whatever the thread count (measured with torch 2.13's MKL on AMD EPYC: 16 GB/s of weights read,
where the memory gives more than 70), so a step takes about twice as long as the memory needs.
``SplitLinear`` cuts each large weight into as many blocks of rows as torch has threads and multiplies
them as one batched product, which torch spreads over its threads: the same float32 products and
sums, each output computed whole by one thread. ``scripts/bench_decoding.py`` measures both side by
side; docs/performance.md gives the figures.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)

SPLIT_MIN_WEIGHTS = 1 << 16
"""Weights of fewer elements (256 KiB in float32) are multiplied whole. Measured with the weights read
from memory, as in a real step (the shape table of ``scripts/bench_decoding.py``, docs/performance.md):
split in two on two threads, a 64x64 product took twice as long (0.51x), 256x256 ran 1.47x faster,
SmolLM2-135M's 1536x576 and its 49152-row output head 2.39x and 2.72x."""


def linear_copy(model: nn.Module, make: Callable[[nn.Linear], nn.Module | None]) -> nn.Module:
    """A copy of ``model`` in which each ``nn.Linear`` is ``make(linear)`` (or left, where that is None);
    parameters and buffers are shared with ``model``, which is left untouched."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    out = copy.deepcopy(model, shared)
    for module in list(out.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and (new := make(child)) is not None:
                setattr(module, name, new)
    return out


class SplitLinear(nn.Module):
    """``linear`` (one that ``splits``) whose one-row products are spread over torch's threads (see
    the module's docstring); products of more rows are the plain ``nn.functional.linear``."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight, self.bias = linear.weight, linear.bias  # shared with the model, not copied

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows, (n, k) = x.numel() // x.shape[-1], self.weight.shape
        parts = torch.get_num_threads()
        if rows != 1 or parts < 2 or n % parts:
            return nn.functional.linear(x, self.weight, self.bias)
        # the row as a column of stride k, not 1: torch's batched product takes a kernel four times
        # faster for it (on torch 2.13 with MKL, measured in scripts/bench_decoding.py)
        column = x.reshape(1, k).t().unsqueeze(0).expand(parts, k, 1)
        y = torch.bmm(self.weight.view(parts, n // parts, k), column).view(n)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], n)


def splits(linear: nn.Linear) -> bool:
    """Whether ``SplitLinear`` pays for this map: float32 weights on the CPU, at least
    ``SPLIT_MIN_WEIGHTS`` of them, stored in order (so that their rows split into blocks as views)."""
    w = linear.weight
    return (w.device.type == "cpu" and w.dtype == torch.float32 and w.numel() >= SPLIT_MIN_WEIGHTS
            and w.is_contiguous())


CHECK_BYTES = 256 * 2**20
"""``split_pays`` times a step's products over this many bytes of weights (or all of them, when
fewer): more than a CPU's cache holds, so that they are read from memory, as in a real step."""


def split_pays(linears: list[nn.Linear], rounds: int = 3) -> bool:
    """Whether one row's products through ``linears`` (their first ``CHECK_BYTES``) take less time split
    than whole, measured here: the gain depends on the CPU and on torch's kernels for it."""
    if torch.get_num_threads() < 2:
        return False
    chosen, size = [], 0
    for linear in linears:
        if size >= CHECK_BYTES:
            break
        chosen.append(linear)
        size += linear.weight.numel() * linear.weight.element_size()
    ways = {"whole": chosen, "split": [SplitLinear(linear) for linear in chosen]}
    best = dict.fromkeys(ways, float("inf"))
    with torch.inference_mode():
        rows = {linear.in_features: torch.randn(1, linear.in_features) for linear in chosen}
        for _ in range(rounds):
            for name, maps in ways.items():
                t0 = time.perf_counter()
                for m, linear in zip(maps, chosen):
                    m(rows[linear.in_features])
                best[name] = min(best[name], time.perf_counter() - t0)
    log.debug("one row's products over %.0f MiB of weights: %.2f ms whole, %.2f ms split", size / 2**20,
              1e3 * best["whole"], 1e3 * best["split"])
    return best["split"] < best["whole"]


def split_decoding_copy(model: nn.Module, check: bool = True) -> nn.Module:
    """``model`` with its large float32 CPU linear maps made ``SplitLinear`` (weights shared); the
    model itself where there is none (on an accelerator, in bfloat16, or a tiny model), or where
    (``check``) ``split_pays`` finds the split no faster on this machine."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear) and splits(m)]
    if not linears or (check and not split_pays(linears)):
        return model
    log.debug("decoding steps split their float32 products over torch's threads")
    return linear_copy(model, lambda linear: SplitLinear(linear) if splits(linear) else None)
