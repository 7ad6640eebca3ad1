"""Beam search over a `Runner`: several sequences sharing the prompt's KV through copied prefixes.

Hugging Face semantics: each step every live beam is extended by every token, the best
``2 * num_beams`` continuations are ranked, end tokens among the first ``num_beams`` of them become
finished hypotheses, and the best ``num_beams`` others live on. A hypothesis scores
``logprob / len ** length_penalty`` (its generated tokens, end token included), so a positive
length penalty favours longer outputs. The search is deterministic: the scoring processors
(penalties, bias, user hooks) apply, temperature / top-k / top-p / min-p do not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from slmkit.backends.base import Chunk, Runner
from slmkit.errors import ContextLengthError, InvalidParameterError
from slmkit.sampling.processors import Processor, apply_processors, make_logits_processors
from slmkit.sampling.sampler import log_softmax
from slmkit.types import FinishReason, SamplingParams


@dataclass
class Beam:
    """One hypothesis: its generated tokens (end token included), their summed log-probability
    and its length-penalised score."""

    token_ids: list[int]
    logprob: float
    score: float
    finish_reason: FinishReason


@dataclass
class _Live:
    seq_id: int  # its KV holds the prompt and every token of token_ids
    token_ids: list[int]
    logprob: float


def beam_search(
    runner: Runner,
    prompt_ids: Sequence[int],
    params: SamplingParams,
    end_token_ids: set[int],
    seq_ids: list[int],
) -> list[Beam]:
    """The ``params.num_beams`` best hypotheses continuing `prompt_ids`, best first.

    Needs ``2 * num_beams`` free sequence ids in `seq_ids`: beams are forked from one half into
    the other every step (a child may overwrite nothing its siblings still copy from). Every id
    used is freed on return, also when the runner raises.
    """
    num_beams = params.num_beams
    if len(seq_ids) < 2 * num_beams:
        raise InvalidParameterError(
            "num_beams",
            f"{num_beams} beams need {2 * num_beams} sequence slots, only {len(seq_ids)} given",
        )
    if num_beams > runner.max_batch_tokens:
        raise InvalidParameterError(
            "num_beams", f"at most max_batch_tokens={runner.max_batch_tokens} beams fit one step"
        )
    prompt = list(prompt_ids)
    if not prompt:
        raise InvalidParameterError("prompt", "beam search needs at least one prompt token")
    room = runner.context_length - len(prompt)
    if room <= 0:
        raise ContextLengthError(
            f"the prompt has {len(prompt)} tokens; the context holds {runner.context_length}"
        )
    max_len = room if params.max_tokens is None else min(params.max_tokens, room)
    processors = make_logits_processors(params, runner.vocab_size)
    current, spare = list(seq_ids[:num_beams]), list(seq_ids[num_beams : 2 * num_beams])
    finished: list[Beam] = []
    try:
        for seq_id in current + spare:
            runner.free(seq_id)
        rows = _prefill(runner, current[0], prompt)
        live = [_Live(current[0], [], 0.0)]
        while True:
            scores = np.stack(
                [
                    _beam_logprobs(rows[i], beam, prompt, processors)
                    for i, beam in enumerate(live)
                ]
            )
            children: list[tuple[_Live, _Live]] = []
            for rank, (parent_index, token, logprob) in enumerate(_best(scores, 2 * num_beams)):
                parent = live[parent_index]
                tokens = parent.token_ids + [token]
                if token in end_token_ids:
                    if rank < num_beams:
                        _add_finished(finished, tokens, logprob, "stop", params)
                    continue
                children.append((parent, _Live(spare[len(children)], tokens, logprob)))
                if len(children) == num_beams:
                    break
            if not children:
                break
            if len(children[0][1].token_ids) >= max_len:
                for _, child in children:
                    _add_finished(finished, child.token_ids, child.logprob, "length", params)
                break
            if _cannot_improve(finished, [child for _, child in children], params):
                break
            rows = _fork_and_feed(runner, len(prompt), children)
            live = [child for _, child in children]
            current, spare = spare, current
    finally:
        for seq_id in seq_ids[: 2 * num_beams]:
            runner.free(seq_id)
    return finished


def _prefill(runner: Runner, seq_id: int, prompt: list[int]) -> np.ndarray:
    step = runner.max_batch_tokens
    for start in range(0, len(prompt), step):
        part = prompt[start : start + step]
        rows = runner.forward([Chunk(seq_id, part, start, want_logits=start + step >= len(prompt))])
    return rows


def _beam_logprobs(
    row: np.ndarray, beam: _Live, prompt: list[int], processors: list[Processor]
) -> np.ndarray:
    """Total log-probability of `beam` extended by each token (float64, ``-inf`` if banned)."""
    if processors:
        row = apply_processors(
            processors, np.array(row, dtype=np.float32), prompt + beam.token_ids, len(prompt)
        )
    return log_softmax(row).astype(np.float64) + beam.logprob


def _best(scores: np.ndarray, k: int) -> list[tuple[int, int, float]]:
    """The `k` best ``(beam index, token, total logprob)`` of a [beams, vocab] matrix, best first."""
    flat = scores.ravel()
    k = min(k, flat.shape[0])
    top = np.argpartition(flat, -k)[-k:] if k < flat.shape[0] else np.arange(flat.shape[0])
    top = top[np.lexsort((top, -flat[top]))]  # equal scores: lower beam, then lower token first
    vocab = scores.shape[1]
    return [(int(i) // vocab, int(i) % vocab, float(flat[i])) for i in top if flat[i] > -np.inf]


def _add_finished(
    finished: list[Beam],
    tokens: list[int],
    logprob: float,
    reason: FinishReason,
    params: SamplingParams,
) -> None:
    score = logprob / (len(tokens) ** params.length_penalty)
    finished.append(Beam(tokens, logprob, score, reason))
    finished.sort(key=lambda beam: -beam.score)  # stable: earlier hypotheses win ties
    del finished[params.num_beams :]


def _cannot_improve(finished: list[Beam], live: list[_Live], params: SamplingParams) -> bool:
    """Whether no live beam can beat the worst kept hypothesis any more.

    A live beam is credited with ending on its next token at no further cost. Log-probabilities
    only fall, so that bound is exact for ``length_penalty <= 0``; for a positive penalty, where
    a longer ending could still score higher, it is Hugging Face's (default) heuristic.
    """
    if len(finished) < params.num_beams:
        return False
    best = max(beam.logprob for beam in live)
    length = len(live[0].token_ids) + 1
    return finished[-1].score >= best / (length ** params.length_penalty)


def _fork_and_feed(
    runner: Runner, prompt_len: int, children: list[tuple[_Live, _Live]]
) -> np.ndarray:
    chunks = []
    for parent, child in children:
        length = prompt_len + len(parent.token_ids)
        runner.free(child.seq_id)
        runner.copy_prefix(parent.seq_id, child.seq_id, length)
        chunks.append(Chunk(child.seq_id, [child.token_ids[-1]], length))
    return runner.forward(chunks)
