"""The retrieval index: pre-RoPE keys of the retrieval layer for every context token."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KeyCache:
    """Keys [Hkv, L, D] of one decoder layer, kept before RoPE.

    Keeping them un-rotated lets the scorer choose the positions afterwards: the original
    absolute ones, or one short fixed distance from the query, which keeps every query-key
    distance inside the model's trained window however long the context is.
    The tensor is allocated once for the whole context and filled chunk by chunk, so a
    million-token context never needs a concatenation of growing tensors.
    """

    keys: torch.Tensor
    layer: int
    filled: int = 0

    @classmethod
    def allocate(cls, num_kv_heads: int, length: int, head_dim: int, layer: int,
                 dtype: torch.dtype, device: torch.device | str, pin: bool = False) -> "KeyCache":
        """``pin``: page-locked host memory, so blocks copy to an accelerator asynchronously (plain
        memory where the backend offers none)."""
        shape = (num_kv_heads, length, head_dim)
        try:
            return cls(torch.empty(shape, dtype=dtype, device=device, pin_memory=pin), layer)
        except RuntimeError:
            return cls(torch.empty(shape, dtype=dtype, device=device), layer)

    def grown(self, more: int) -> "KeyCache":
        """A copy of the filled keys with room for ``more`` (a stream that goes on: an index updated)."""
        cache = KeyCache.allocate(self.keys.shape[0], self.filled + more, self.keys.shape[2], self.layer,
                                  self.keys.dtype, self.keys.device)
        cache.append(self.keys[:, :self.filled])
        return cache

    def append(self, keys: torch.Tensor) -> None:
        n = keys.shape[1]
        if self.filled + n > self.capacity:
            raise ValueError(f"key cache overflow: {self.filled} + {n} > {self.capacity}")
        self.keys[:, self.filled:self.filled + n] = keys
        self.filled += n

    @property
    def capacity(self) -> int:
        return self.keys.shape[1]

    @property
    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size()
