"""Prompt-lookup (n-gram) speculation: guess a sequence's next tokens from its own history.

Copying is common in what small models are asked to do (quote a passage, edit code and print
it back, answer from a given context), and on a CPU a forward of a few tokens of one sequence
costs little more than one: the weights are read once either way. So each decoding sequence
looks up the longest recent n-gram that ends its tokens, proposes the tokens that followed its
last earlier occurrence, and the engine verifies them in the same batched forward as everyone
else's tokens (`verify_sampled` keeps the output distribution exact). A draft model
(`engine.draft_model`) is the other proposer; both adapt how much they draft through `DraftLength`.

The index is incremental: each appended token adds one entry per n-gram size, so a lookup is a
few dict probes however long the sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from slmkit import limits

NGRAM_MAX = 4  # longest suffix looked up; longer matches rarely change the proposal
NGRAM_MIN = 2  # a single token repeats too often to predict what follows it
MAX_BACKOFF = 32  # steps a sequence whose drafts keep failing waits before drafting again


@dataclass
class DraftLength:
    """How many tokens one sequence drafts next, adapted to how many of its recent drafts were
    accepted: k grows while whole drafts are accepted and shrinks to just past what was; a
    draft with nothing accepted makes the sequence skip 1, 2, 4 ... `MAX_BACKOFF` proposals
    (open-ended text: a wrong guess still costs a row of the forward). Every proposer uses it."""

    max_draft: int = limits.DEFAULT_DRAFT_TOKENS
    k: int = 4
    _backoff: int = 0  # after a draft with nothing accepted: proposals to skip, doubling each time
    _skip: int = 0

    def __post_init__(self) -> None:
        self.k = min(self.k, self.max_draft)

    def take(self, limit: int) -> int:
        """Tokens to draft now, at most ``limit``: 0 while backing off."""
        n = min(self.k, limit)
        if n <= 0:
            return 0
        if self._skip:
            self._skip -= 1
            return 0
        return n

    def record(self, drafted: int, accepted: int) -> None:
        """Adapt k: grow while whole drafts are accepted, shrink to just past what was."""
        if drafted == 0:
            return
        if accepted == drafted:
            self.k = min(self.max_draft, self.k * 2)
        else:
            self.k = max(1, accepted + 1)
        if accepted:
            self._backoff = 0
        else:
            self._backoff = min(MAX_BACKOFF, max(1, 2 * self._backoff))
            self._skip = self._backoff


@dataclass
class NgramProposer:
    """Prompt lookup for one sequence: the tokens that followed the latest earlier occurrence of
    its longest recent n-gram."""

    _index: dict[tuple[int, ...], int] = field(default_factory=dict)  # n-gram -> its last end position
    _indexed: int = 0  # tokens[:_indexed] are in the index (their continuation was known)

    def propose(self, tokens: list[int], n: int) -> list[int]:
        """Up to `n` tokens guessed to follow `tokens` (empty when nothing matches)."""
        self._extend(tokens)
        if n <= 0:
            return []
        end = len(tokens)
        for size in range(min(NGRAM_MAX, end - 1), NGRAM_MIN - 1, -1):
            last = self._index.get(tuple(tokens[end - size :]))
            if last is not None:
                return tokens[last + 1 : last + 1 + n]
        return []

    def _extend(self, tokens: list[int]) -> None:
        # An n-gram ending at position p goes in only once tokens[p + 1] exists, so a lookup of the
        # sequence's own suffix finds an earlier occurrence, never itself.
        for p in range(self._indexed, len(tokens) - 1):
            for size in range(NGRAM_MIN, NGRAM_MAX + 1):
                if p + 1 >= size:
                    self._index[tuple(tokens[p + 1 - size : p + 1])] = p
        self._indexed = max(self._indexed, len(tokens) - 1)


def verify_sampled(probs: np.ndarray, draft: int, u: float, rng: np.random.Generator) -> tuple[int, bool]:
    """Speculative sampling's accept/reject step for a point-mass draft (prompt lookup and a draft
    model's argmax both propose one token with certainty): accept `draft` with probability ``p(draft)``, else draw from ``p``
    with `draft` removed and renormalised. The result is distributed exactly as ``p``.

    `probs` is the target distribution (sums to 1); `u` a uniform draw in [0, 1).
    """
    p = float(probs[draft])
    if u < p:
        return draft, True
    residual = np.array(probs, dtype=np.float64)
    residual[draft] = 0.0
    total = residual.sum()
    if total <= 0.0:  # p(draft) was 1 up to rounding: nothing else can be drawn
        return draft, True
    token = int(np.searchsorted(np.cumsum(residual), rng.random() * total, side="right"))
    if token >= len(residual) or residual[token] == 0.0:  # rounding past the last live token
        token = int(np.flatnonzero(residual)[-1])
    return token, False
