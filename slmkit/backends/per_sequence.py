"""`PerSequenceRunner`: the `Runner` bookkeeping of the engines that keep one engine object per
sequence (an ORT GenAI ``Generator``, an OpenVINO ``InferRequest``, a transformers cache, an
mlx-lm prompt cache) instead of one KV pool for all.

The base holds what each sequence's engine object holds (its tokens), refuses a step that cannot
run, and implements `truncate`, `copy_prefix`, `free`, `used_cells` and `close` on top of a few
hooks; an engine's runner says only how its object is made, cut, copied and dropped, and how a
step's chunks run on it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Sequence

import numpy as np

from slmkit.backends.base import Chunk, check_chunks
from slmkit.errors import InvalidParameterError, SlmkitError


class PerSequenceRunner(ABC):
    """Sizes, tokens held and engine object per sequence. A subclass implements `forward`,
    `_new_state`, `_rewind` and `_copy_state`, and overrides `_drop_state` (and `close`) where
    freeing a sequence keeps or drops more than its engine object."""

    def __init__(self, *, vocab_size: int, context_length: int, max_sequences: int, max_batch_tokens: int):
        if max_sequences < 1:
            raise InvalidParameterError("max_sequences", "must be >= 1")
        self.vocab_size = vocab_size
        self.max_sequences = max_sequences
        self.context_length = context_length
        self.kv_cells = context_length * max_sequences
        self.max_batch_tokens = min(max_batch_tokens, context_length)
        self._states: dict[int, Any] = {}  # seq id -> its engine object (absent: nothing made yet)
        self._tokens: list[list[int]] = [[] for _ in range(max_sequences)]  # what each state holds

    # -- engine hooks ---------------------------------------------------------------------
    @abstractmethod
    def _new_state(self) -> Any:
        """A fresh engine object for an empty sequence."""

    @abstractmethod
    def _rewind(self, seq_id: int, length: int) -> None:
        """Cut the sequence's state to its first ``length`` tokens (``0 < length <`` what it
        holds); ``self._tokens`` still lists them all and is cut after."""

    @abstractmethod
    def _copy_state(self, src: int, dst: int, length: int) -> None:
        """Give ``dst`` (just freed) the state of ``src``'s first ``length`` tokens (``0 < length``);
        ``self._tokens[dst]`` is set to that prefix after."""

    def _drop_state(self, seq_id: int) -> None:
        """Forget the sequence's state (by default: the engine object goes)."""
        self._states.pop(seq_id, None)

    # -- Runner protocol ------------------------------------------------------------------
    @abstractmethod
    def forward(self, chunks: list[Chunk]) -> np.ndarray:
        """Run the chunks (after `_check`); rows through `_stack`, tokens recorded by `_hold`."""

    def truncate(self, seq_id: int, length: int) -> None:
        length = max(0, length)
        if length >= len(self._tokens[seq_id]):
            return
        if length == 0:
            self.free(seq_id)
            return
        self._rewind(seq_id, length)
        del self._tokens[seq_id][length:]

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        if length > len(self._tokens[src]):
            raise SlmkitError(f"sequence {src} holds {len(self._tokens[src])} tokens, cannot copy {length}")
        if src == dst:
            self.truncate(dst, length)
            return
        self.free(dst)
        if length == 0:
            return
        self._copy_state(src, dst, length)
        self._tokens[dst] = self._tokens[src][:length]

    def free(self, seq_id: int) -> None:
        self._drop_state(seq_id)
        self._tokens[seq_id] = []

    def sequence_length(self, seq_id: int) -> int:
        return len(self._tokens[seq_id])

    def used_cells(self) -> int:
        return sum(map(len, self._tokens))

    def close(self) -> None:
        self._states.clear()

    # -- for subclasses -------------------------------------------------------------------
    def _state(self, seq_id: int) -> Any:
        """The sequence's engine object, made on first use."""
        state = self._states.get(seq_id)
        if state is None:
            state = self._states[seq_id] = self._new_state()
        return state

    def _check(self, chunks: Sequence[Chunk]) -> None:
        """Refuse a step that cannot run, before any of it runs."""
        check_chunks(self, chunks, self._tokens)

    def _hold(self, chunk: Chunk) -> None:
        """Record that the chunk's tokens now sit in its sequence's state."""
        self._tokens[chunk.seq_id].extend(int(t) for t in chunk.token_ids)

    def _stack(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        """The ``[n_wanted, vocab]`` result of `forward` from its rows in chunk order."""
        if not rows:
            return np.empty((0, self.vocab_size), dtype=np.float32)
        return np.concatenate(rows)
