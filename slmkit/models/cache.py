"""The KV cache of the torch engine and the per-forward view of a batch (`ForwardBatch`).

One tensor per layer, ``[slots + 1, kv_heads, capacity, head_dim]`` for K and V (the ``+ 1`` is
a scratch slot that padding tokens write to). Rows are sequences; writing a token is one
``index_put`` of ``[B, T, kv_heads, head_dim]`` at (slot, position) pairs. The capacity grows in
powers of two up to ``max_len`` as sequences get longer, so sixteen slots of a long context cost
memory only once they are used. Memory is zeroed: masked keys are still read, and uninitialised
memory could hold NaN, which a zero attention weight does not cancel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ForwardBatch:
    """What the model needs to know about one padded batch ``[B, T]`` of sequence chunks."""

    positions: torch.Tensor  # [B, T] absolute positions (padding: continues past the chunk)
    slots: torch.Tensor  # [B] cache row of each batch row
    valid: torch.Tensor  # [B, T] False on padding
    kv_length: int  # keys 0 .. kv_length-1 are read
    use_long_rope: torch.Tensor | None = None  # [B] longrope regime per row
    contiguous_from: int | None = None  # slots == range(contiguous_from, +B): read by slicing
    _masks: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, starts: list[int], lengths: list[int], slots: list[int], device,
              use_long: list[bool] | None = None) -> "ForwardBatch":
        width = max(lengths)
        offsets = torch.arange(width, device=device)
        start = torch.tensor(starts, device=device)
        positions = start[:, None] + offsets[None, :]
        valid = offsets[None, :] < torch.tensor(lengths, device=device)[:, None]
        first = slots[0]
        contiguous = first if slots == list(range(first, first + len(slots))) else None
        return cls(
            positions=positions,
            slots=torch.tensor(slots, device=device),
            valid=valid,
            kv_length=max(s + n for s, n in zip(starts, lengths)),
            use_long_rope=torch.tensor(use_long, device=device) if use_long is not None else None,
            contiguous_from=contiguous,
        )

    def mask(self, sliding_window: int | None) -> torch.Tensor:
        """``[B, 1, T, L]`` bool: causal, within the window, padding queries see key 0 only."""
        mask = self._masks.get(sliding_window)
        if mask is None:
            keys = torch.arange(self.kv_length, device=self.positions.device)
            q = self.positions[:, :, None]
            mask = keys[None, None, :] <= q
            if sliding_window is not None:
                mask &= keys[None, None, :] > q - sliding_window
            mask &= self.valid[:, :, None]
            mask[:, :, 0] |= ~self.valid  # a fully masked row would give NaN
            mask = mask[:, None]
            self._masks[sliding_window] = mask
        return mask


class KVCache:
    def __init__(self, num_layers: int, slots: int, kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str = "cpu"):
        self.shape = (slots + 1, kv_heads, 0, head_dim)
        self.dtype, self.device = dtype, device
        self.k: list[torch.Tensor] = [torch.zeros(self.shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v: list[torch.Tensor] = [torch.zeros(self.shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.scratch = slots
        self.max_len = max_len
        self.capacity = 0

    def reserve(self, length: int) -> None:
        """Make room for positions ``< length`` in every slot."""
        if length <= self.capacity:
            return
        capacity = min(self.max_len, max(256, 1 << (length - 1).bit_length()))
        slots, heads, _, dim = self.shape
        for store in (self.k, self.v):
            for layer, old in enumerate(store):
                new = torch.zeros((slots, heads, capacity, dim), dtype=self.dtype, device=self.device)
                new[:, :, : self.capacity] = old
                store[layer] = new
        self.capacity = capacity

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

    def update(self, layer: int, batch: ForwardBatch, k: torch.Tensor, v: torch.Tensor):
        """Write ``k, v`` ``[B, T, kv_heads, D]``; return this layer's keys/values ``[B, kv_heads, L, D]``."""
        self.reserve(batch.kv_length)
        write_slots, write_pos = self._write_index(batch)
        self.k[layer][write_slots, :, write_pos] = k
        self.v[layer][write_slots, :, write_pos] = v
        length = batch.kv_length
        if batch.contiguous_from is not None:
            rows = slice(batch.contiguous_from, batch.contiguous_from + batch.slots.shape[0])
            return self.k[layer][rows, :, :length], self.v[layer][rows, :, :length]
        return self.k[layer][batch.slots, :, :length], self.v[layer][batch.slots, :, :length]

    def _write_index(self, batch: ForwardBatch):
        index = batch._masks.get("write")
        if index is None:
            slots = torch.where(batch.valid, batch.slots[:, None], self.scratch)
            positions = torch.where(batch.valid, batch.positions, 0)
            index = batch._masks["write"] = (slots, positions)
        return index

    def copy(self, src: int, dst: int, length: int) -> None:
        for k, v in zip(self.k, self.v):
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]
