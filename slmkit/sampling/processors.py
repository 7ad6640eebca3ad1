"""Logits processors: small steps that reshape one row of vocabulary logits before a pick.

Two kinds, applied in the order of llama.cpp / vLLM:

- *processors* score tokens from the sequence so far: repetition / frequency / presence penalties,
  then ``logit_bias``, then the user's ``logits_processors``. Each is
  ``fn(token_ids, logits, prompt_len) -> logits``. Beam search uses these too.
- *warpers* shape the distribution a random draw is made from: temperature, then top-k, top-p,
  min-p. Each is ``fn(logits) -> logits``. Greedy decoding and beam search skip them.

Both may modify ``logits`` in place (the `Sampler` hands them its own copy) and mark removed
tokens with ``-inf``. ``make_logits_processors`` / ``make_logits_warpers`` return only the steps
the parameters turn on, so default parameters cost nothing.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from slmkit.errors import InvalidParameterError
from slmkit.types import LogitsProcessor, SamplingParams

Processor = Callable[[Sequence[int], np.ndarray, int], np.ndarray]
Warper = Callable[[np.ndarray], np.ndarray]

_NUCLEUS_FIRST_GUESS = 64  # top-p candidates tried before widening; nuclei are usually small


def make_logits_processors(params: SamplingParams, vocab_size: int) -> list[Processor]:
    """The active scoring steps of `params`: penalties, then ``logit_bias``, then user hooks.

    Bias comes after the penalties so that a ban (-100) or a force (+100) means the same whatever
    the penalties did.
    """
    processors: list[Processor] = []
    if params.repetition_penalty != 1.0:
        processors.append(repetition_penalty(params.repetition_penalty))
    if params.frequency_penalty != 0.0 or params.presence_penalty != 0.0:
        processors.append(
            frequency_presence_penalty(params.frequency_penalty, params.presence_penalty)
        )
    if params.logit_bias:
        processors.append(logit_bias(params.logit_bias, vocab_size))
    for index, fn in enumerate(params.logits_processors):
        processors.append(user_processor(fn, vocab_size, index))
    return processors


def make_logits_warpers(params: SamplingParams) -> list[Warper]:
    """The active distribution-shaping steps: temperature, top-k, top-p, min-p.

    ``temperature == 0`` (greedy) adds nothing here: the sampler takes the argmax instead.
    """
    warpers: list[Warper] = []
    if params.temperature not in (0.0, 1.0):
        warpers.append(temperature(params.temperature))
    if params.top_k > 0:
        warpers.append(top_k(params.top_k))
    if params.top_p < 1.0:
        warpers.append(top_p(params.top_p))
    if params.min_p > 0.0:
        warpers.append(min_p(params.min_p))
    return warpers


def apply_processors(
    processors: Sequence[Processor], logits: np.ndarray, token_ids: Sequence[int], prompt_len: int
) -> np.ndarray:
    """Run `processors` in order over `logits` (modified in place where the steps allow)."""
    for processor in processors:
        logits = processor(token_ids, logits, prompt_len)
    return logits


def apply_warpers(warpers: Sequence[Warper], logits: np.ndarray) -> np.ndarray:
    """Run `warpers` in order over `logits` (modified in place)."""
    for warper in warpers:
        logits = warper(logits)
    return logits


def repetition_penalty(penalty: float) -> Processor:
    """CTRL / HF repetition penalty over prompt and generated tokens.

    A seen token's logit is divided by `penalty` when positive and multiplied when negative, so
    ``penalty > 1`` always makes repeats less likely.
    """

    def apply(token_ids: Sequence[int], logits: np.ndarray, prompt_len: int) -> np.ndarray:
        if len(token_ids) == 0:
            return logits
        ids = np.asarray(token_ids, dtype=np.intp)
        # Repeated ids are harmless: every write is computed from the values read before it.
        seen = logits[ids]
        logits[ids] = np.where(seen > 0, seen / penalty, seen * penalty)
        return logits

    return apply


def frequency_presence_penalty(frequency: float, presence: float) -> Processor:
    """OpenAI penalties over generated tokens only (``token_ids[prompt_len:]``).

    ``logit -= frequency * count + presence * (count > 0)``.
    """

    def apply(token_ids: Sequence[int], logits: np.ndarray, prompt_len: int) -> np.ndarray:
        if len(token_ids) <= prompt_len:
            return logits
        ids, counts = np.unique(np.asarray(token_ids[prompt_len:], dtype=np.intp), return_counts=True)
        logits[ids] -= (frequency * counts + presence).astype(logits.dtype)
        return logits

    return apply


def logit_bias(bias: dict[int, float], vocab_size: int) -> Processor:
    """Add ``bias[token]`` to each listed token's logit (OpenAI ``logit_bias``)."""
    outside = sorted(token for token in bias if not 0 <= token < vocab_size)
    if outside:
        raise InvalidParameterError(
            "logit_bias", f"token id {outside[0]} is outside the vocabulary (0..{vocab_size - 1})"
        )
    ids = np.fromiter(bias.keys(), dtype=np.intp, count=len(bias))
    values = np.fromiter(bias.values(), dtype=np.float32, count=len(bias))

    def apply(token_ids: Sequence[int], logits: np.ndarray, prompt_len: int) -> np.ndarray:
        logits[ids] += values  # dict keys are unique, so the fancy-index add is exact
        return logits

    return apply


def user_processor(fn: LogitsProcessor, vocab_size: int, index: int = 0) -> Processor:
    """Wrap a user hook ``fn(token_ids, logits) -> logits``, checking what it returns."""
    name = getattr(fn, "__name__", type(fn).__name__)

    def apply(token_ids: Sequence[int], logits: np.ndarray, prompt_len: int) -> np.ndarray:
        out = fn(token_ids, logits)
        if not isinstance(out, np.ndarray) or out.shape != (vocab_size,):
            got = f"shape {out.shape}" if isinstance(out, np.ndarray) else type(out).__name__
            raise InvalidParameterError(
                "logits_processors",
                f"processor {index} ({name}) must return a numpy array of shape ({vocab_size},), "
                f"got {got}",
            )
        if out.dtype != np.float32:
            out = out.astype(np.float32)
        return out

    return apply


def temperature(value: float) -> Warper:
    """Divide the logits by `value` (> 0): below 1 sharpens, above 1 flattens."""

    def apply(logits: np.ndarray) -> np.ndarray:
        logits /= np.float32(value)
        return logits

    return apply


def top_k(k: int) -> Warper:
    """Keep exactly the `k` highest logits (ties at the border are broken arbitrarily)."""

    def apply(logits: np.ndarray) -> np.ndarray:
        if k >= logits.shape[0]:
            return logits
        logits[np.argpartition(logits, -k)[:-k]] = -np.inf
        return logits

    return apply


def top_p(p: float) -> Warper:
    """Nucleus: keep the fewest most likely tokens whose probabilities sum to at least `p`.

    The most likely token is always kept. Only the head of the distribution is sorted: a full
    sort of a 49k vocabulary costs more than a decode step's whole sampling budget.
    """

    def apply(logits: np.ndarray) -> np.ndarray:
        # Tokens already removed (top-k, bans) are left out: argpartition crawls on masses of
        # equal values.
        live = logits > -np.inf
        candidates = None if live.all() else np.flatnonzero(live)
        values = logits if candidates is None else logits[candidates]
        n = values.shape[0]
        weights = np.exp(values - values.max())
        needed = p * weights.sum(dtype=np.float64)
        width = min(_NUCLEUS_FIRST_GUESS, n)
        while True:
            head = np.argpartition(values, -width)[-width:] if width < n else np.arange(n)
            head = head[np.argsort(-values[head], kind="stable")]
            cumulative = np.cumsum(weights[head], dtype=np.float64)
            if cumulative[-1] >= needed or width == n:
                break
            width = min(4 * width, n)
        keep = head[: min(int(np.searchsorted(cumulative, needed)) + 1, width)]
        if candidates is not None:
            keep = candidates[keep]
        kept = logits[keep]
        logits.fill(-np.inf)
        logits[keep] = kept
        return logits

    return apply


def min_p(value: float) -> Warper:
    """Keep tokens with ``p >= value * p_max`` (compared as logits: no softmax needed)."""
    log_value = np.float32(math.log(value))

    def apply(logits: np.ndarray) -> np.ndarray:
        logits[logits < logits.max() + log_value] = -np.inf
        return logits

    return apply
