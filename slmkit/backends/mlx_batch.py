"""Decode tokens of several sequences as one ``[B, 1]`` forward over mlx-lm's ``BatchKVCache``.

mlx-lm's batch cache holds its rows left-padded to one length. A `DecodeBatch` keeps the rows of
the sequences that decoded together last step, so a steady batch costs no copying: a sequence
that joins is merged in (``BatchKVCache.merge`` of its own caches, then ``extend``), one that
leaves is ``extract``ed back into a ``KVCache`` of its own and its row dropped (``filter``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np


class DecodeBatch:
    def __init__(self, mx):
        self._mx = mx
        self._layers: list | None = None  # one BatchKVCache per layer
        self._rows: list[int | None] = []  # batch row -> seq id (None: a row whose sequence left)

    def holds(self, seq_id: int) -> bool:
        return seq_id in self._rows

    def take(self, seq_id: int, *, keep: bool) -> list | None:
        """Drop the sequence's row; with ``keep``, its KV as an mlx-lm prompt cache of its own."""
        row = self._rows.index(seq_id)
        cache = None
        if keep:
            cache = [layer.extract(row) for layer in self._layers]
            # Evaluated now: a lazy array is bound to the stream of the thread that made it.
            self._mx.eval([(c.keys, c.values) for c in cache])
        self._rows[row] = None
        if all(s is None for s in self._rows):
            self.clear()
        return cache

    def clear(self) -> None:
        self._layers, self._rows = None, []

    def forward(self, model, tokens: dict[int, int], own_cache: Callable[[int], list],
                give_back: Callable[[int, list], None]) -> dict[int, np.ndarray]:
        """Logits ``[1, vocab]`` per sequence for ``tokens`` (seq id -> its next token). Rows of
        sequences not in ``tokens`` go back to their own caches through ``give_back``; joining
        sequences bring theirs from ``own_cache``."""
        mx = self._mx
        from mlx_lm.models.cache import BatchKVCache

        for seq in [s for s in self._rows if s is not None and s not in tokens]:
            give_back(seq, self.take(seq, keep=True))
        live = [row for row, s in enumerate(self._rows) if s is not None]
        if self._layers is not None and len(live) < len(self._rows):
            index = mx.array(live)
            for layer in self._layers:
                layer.filter(index)
            self._rows = [self._rows[row] for row in live]
        joining = [s for s in tokens if s not in self._rows]
        if joining:
            caches = [own_cache(s) for s in joining]
            merged = [BatchKVCache.merge([cache[i] for cache in caches]) for i in range(len(caches[0]))]
            if self._layers is None:
                self._layers = merged
            else:
                for mine, theirs in zip(self._layers, merged):
                    mine.extend(theirs)
            self._rows += joining
        inputs = mx.array([[tokens[s]] for s in self._rows], dtype=mx.int32)
        logits = model(inputs, cache=self._layers)[:, -1, :]
        mx.eval(logits, [(c.keys, c.values, c.offset, c.left_padding) for c in self._layers])
        out = np.array(logits.astype(mx.float32))
        return {s: out[row][None] for row, s in enumerate(self._rows)}
