"""Pick the next token of one sequence from its logits row, following `SamplingParams`.

This runs once per generated token on a full vocabulary row (49k floats for SmolLM2), next to
decode steps of a few milliseconds, so the common cases are kept to a handful of numpy calls:
greedy without processors is one ``argmax`` on the runner's own memory, and a random draw never
sorts the vocabulary.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from slmkit.errors import InvalidRequestError
from slmkit.sampling.grammar import GrammarConstraint, apply_masks
from slmkit.sampling.processors import (
    apply_processors,
    apply_warpers,
    make_logits_processors,
    make_logits_warpers,
)
from slmkit.types import SamplingParams

_BLOCK = 256  # inverse-CDF block size: a flat cumsum over 49k entries costs ~4x two levels


class Sampler:
    """The token picker of one sequence: build it once, call `sample` after every forward.

    Random draws come from the sampler's own ``np.random.Generator`` seeded from
    ``params.seed`` (None: fresh entropy), so a seed reproduces the same tokens whatever other
    sequences share the batch.
    """

    def __init__(self, params: SamplingParams, vocab_size: int, constraint: GrammarConstraint | None = None):
        self.params = params
        self.vocab_size = vocab_size
        self.constraint = constraint  # the output format's grammar, if the request has one
        self.processors = make_logits_processors(params, vocab_size)
        self.warpers = [] if params.greedy else make_logits_warpers(params)
        self.rng = np.random.default_rng(params.seed)

    def sample(self, logits: np.ndarray, token_ids: Sequence[int], prompt_len: int, *,
               allowed: np.ndarray | None = None) -> int:
        """The next token id.

        `logits` is the sequence's row of next-token logits (never modified: it may be the
        runner's memory); `token_ids` is the whole sequence so far, the first `prompt_len` of
        them the prompt. With a constraint, `allowed` is its mask when the caller computed it
        for the whole batch (`grammar.fill_masks`) and already applied it to `logits`
        (`grammar.apply_masks`); else the sampler does both.
        """
        if self.constraint is None:
            return self._pick(logits, token_ids, prompt_len)
        if allowed is None:
            allowed = self.constraint.allowed()
            logits = apply_masks(logits[None], allowed[None])[0]
        token = self._pick_constrained(logits, allowed, token_ids, prompt_len)
        self.constraint.accept(token)
        return token

    def _pick_constrained(self, logits: np.ndarray, allowed: np.ndarray, token_ids: Sequence[int],
                          prompt_len: int) -> int:
        """The pick from the grammar's tokens only (`logits` arrive masked): the mask goes on before
        top-k / top-p / min-p truncate, so truncation chooses among allowed tokens and can never
        leave none."""
        if not allowed.any():
            raise InvalidRequestError("the output format allows no token here: "
                                      f"{self.constraint.matcher.get_error() or 'the grammar is stuck'}",
                                      param="response_format")
        row = apply_processors(self.processors, np.array(logits, dtype=np.float32), token_ids, prompt_len)
        if row.max() == -np.inf:
            raise InvalidRequestError("logit_bias / logits_processors removed every token the output format "
                                      "allows here", param="logit_bias")
        if self.params.greedy:
            return int(np.argmax(row))
        return _draw(_unnormalized_probs(apply_warpers(self.warpers, row)), self.rng.random())

    def _pick(self, logits: np.ndarray, token_ids: Sequence[int], prompt_len: int) -> int:
        if not self.processors and not self.warpers:
            if self.params.greedy:
                return int(np.argmax(logits))
            return _draw(_unnormalized_probs(logits), self.rng.random())
        row = self.process(logits, token_ids, prompt_len)
        if self.params.greedy:
            return int(np.argmax(row))
        return _draw(_unnormalized_probs(row), self.rng.random())

    def process(self, logits: np.ndarray, token_ids: Sequence[int], prompt_len: int) -> np.ndarray:
        """A processed copy of `logits`: what greedy takes the argmax of, or a draw samples from."""
        row = np.array(logits, dtype=np.float32)  # the one copy; every step below works in place
        row = apply_processors(self.processors, row, token_ids, prompt_len)
        row = apply_warpers(self.warpers, row)
        if row.max() == -np.inf:
            raise InvalidRequestError(
                "logit_bias / logits_processors removed every token: nothing is left to sample",
                param="logits_processors" if self.params.logits_processors else "logit_bias",
            )
        return row

    def probabilities(
        self, logits: np.ndarray, token_ids: Sequence[int], prompt_len: int
    ) -> np.ndarray:
        """The distribution `sample` draws from (one-hot on the argmax when greedy)."""
        row = self.process(logits, token_ids, prompt_len)
        if self.params.greedy:
            probs = np.zeros(row.shape[0], dtype=np.float64)
            probs[int(np.argmax(row))] = 1.0
            return probs
        weights = _unnormalized_probs(row).astype(np.float64)
        return weights / weights.sum()


def log_softmax(row: np.ndarray) -> np.ndarray:
    """Log-probabilities of one logits row (float32; ``-inf`` logits stay ``-inf``)."""
    row = np.asarray(row, dtype=np.float32)
    shifted = row - row.max()
    return shifted - np.float32(np.log(np.exp(shifted, dtype=np.float64).sum()))


def top_logprobs(row: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The `k` most likely tokens of a logits row as ``[(token_id, logprob)]``, best first."""
    row = np.asarray(row, dtype=np.float32)
    k = min(k, row.shape[0])
    if k <= 0:
        return []
    ids = np.argpartition(row, -k)[-k:] if k < row.shape[0] else np.arange(row.shape[0])
    ids = ids[np.lexsort((ids, -row[ids]))]  # best first, equal logits by token id
    log_total = float(row.max()) + float(np.log(np.exp(row - row.max(), dtype=np.float64).sum()))
    return [(int(i), float(row[i]) - log_total) for i in ids]


def _unnormalized_probs(row: np.ndarray) -> np.ndarray:
    return np.exp(row - row.max())


def _draw(weights: np.ndarray, u: float) -> int:
    """The index i with probability ``weights[i] / sum(weights)`` for a uniform ``u`` in [0, 1).

    Inverse CDF in two levels (block sums, then one block) because numpy's cumsum is sequential
    and would dominate sampling on a large vocabulary.
    """
    n = weights.shape[0]
    full = n - n % _BLOCK
    block_sums = weights[:full].reshape(-1, _BLOCK).sum(axis=1, dtype=np.float64)
    if full < n:
        block_sums = np.append(block_sums, weights[full:].sum(dtype=np.float64))
    cdf = np.cumsum(block_sums)
    target = u * cdf[-1]
    block = int(np.searchsorted(cdf, target, side="right"))
    if block == len(cdf):  # rounding landed the target on the total: take the last live block
        block = int(np.flatnonzero(block_sums)[-1])
    if block > 0:
        target -= cdf[block - 1]
    start = block * _BLOCK
    segment = weights[start : start + _BLOCK]
    index = int(np.searchsorted(np.cumsum(segment, dtype=np.float64), target, side="right"))
    if index >= segment.shape[0]:
        # Rounding put the target past this block's own running sum: take its last live token.
        index = int(np.flatnonzero(segment)[-1])
    return start + index
