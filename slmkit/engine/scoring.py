"""Log-likelihood of given text: what perplexity and multiple-choice evaluation need.

Generation wants logits for the last token only; scoring wants them for every token, so the
text runs through the runner in ``all_logits`` chunks. A chunk's rows are reduced to the
log-probability of each next token at once, so at most one chunk of ``[tokens, vocab]`` floats
is alive (a 262k-token vocabulary makes each row a megabyte).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from slmkit.backends.base import Chunk, Runner
from slmkit.errors import ContextLengthError, InvalidParameterError

_ROW_BUDGET = 16 * 1024 * 1024  # logits floats per forward: 64 rows of a 262k vocabulary


def log_softmax_rows(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (sums over a big vocabulary lose digits in float32)."""
    rows = np.asarray(logits, dtype=np.float64)
    shifted = rows - rows.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class Scorer:
    """Scores token sequences on one sequence slot of a runner (the slot's KV is replaced)."""

    def __init__(self, runner: Runner, seq_id: int):
        self.runner = runner
        self.seq_id = seq_id
        self.chunk_tokens = max(1, min(runner.max_batch_tokens, _ROW_BUDGET // runner.vocab_size))

    def token_logprobs(self, token_ids: Sequence[int]) -> np.ndarray:
        """``log p(token_i | tokens before i)`` for i >= 1 (the first token has no context):
        an array one shorter than `token_ids`."""
        ids = self._check(token_ids, minimum=2)
        self.runner.free(self.seq_id)
        scores, _ = self._feed(ids, start=0, previous=None)
        return scores[1:]

    def continuation_logprobs(self, context_ids: Sequence[int],
                              continuations: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """``log p`` of each token of every continuation given the context: the context runs
        once, and the KV cache is rewound to it before each continuation."""
        context = self._check(context_ids, minimum=1)
        self.runner.free(self.seq_id)
        last = self._prime(context)
        results = []
        for continuation in continuations:
            ids = self._check(continuation, minimum=1, offset=len(context))
            self.runner.truncate(self.seq_id, len(context))
            scores, _ = self._feed(ids, start=len(context), previous=last)
            results.append(scores)
        self.runner.free(self.seq_id)
        return results

    def _prime(self, ids: list[int]) -> np.ndarray:
        """Run `ids` for their KV only; the log-softmax row after the last one."""
        step = self.runner.max_batch_tokens
        for begin in range(0, len(ids), step):
            piece = ids[begin : begin + step]
            logits = self.runner.forward([Chunk(self.seq_id, piece, begin, want_logits=begin + step >= len(ids))])
        return log_softmax_rows(logits)[-1]

    def _feed(self, ids: list[int], *, start: int, previous: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Run `ids` from position `start`; returns the log-probability of each of them (NaN
        where nothing came before) and the log-softmax row after the last one."""
        scores = np.full(len(ids), np.nan)
        for begin in range(0, len(ids), self.chunk_tokens):
            piece = ids[begin : begin + self.chunk_tokens]
            rows = log_softmax_rows(self.runner.forward(
                [Chunk(self.seq_id, piece, start + begin, all_logits=True)]))
            if previous is not None:
                scores[begin] = previous[piece[0]]
            scores[begin + 1 : begin + len(piece)] = rows[np.arange(len(piece) - 1), piece[1:]]
            previous = rows[-1]
        return scores, previous

    def _check(self, token_ids: Sequence[int], *, minimum: int, offset: int = 0) -> list[int]:
        ids = [int(t) for t in token_ids]
        if len(ids) < minimum:
            raise InvalidParameterError("token_ids", f"scoring needs at least {minimum} token(s), got {len(ids)}")
        if offset + len(ids) > self.runner.context_length:
            raise ContextLengthError(f"{offset + len(ids)} tokens do not fit the context of "
                                     f"{self.runner.context_length}; score shorter text or raise the context length")
        return ids
