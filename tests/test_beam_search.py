"""Beam search on the toy `FakeRunner`, checked against brute-force enumeration."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import FakeRunner

from slmkit.errors import InvalidParameterError
from slmkit.sampling import Sampler, beam_search
from slmkit.types import SamplingParams


def table_from(rows: dict[int, dict[int, float]], vocab: int) -> np.ndarray:
    """A transition table: ``rows[last][next]`` are weights; unlisted pairs get a tiny weight."""
    weights = np.full((vocab, vocab), 1e-6)
    for last, row in rows.items():
        for token, weight in row.items():
            weights[last, token] = weight
    return np.log(weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def brute_force(table, prompt, end_ids, max_tokens, length_penalty):
    """Every hypothesis beam search could return, as ``(tokens, logprob, score)``, best first."""
    found = []

    def walk(tokens, logprob):
        row = table[(prompt + tokens)[-1]].astype(np.float64)
        logprobs = row - np.log(np.exp(row - row.max()).sum()) - row.max()
        for token in range(table.shape[1]):
            longer, total = tokens + [token], logprob + logprobs[token]
            if token in end_ids or len(longer) == max_tokens:
                found.append((longer, total, total / len(longer) ** length_penalty))
            else:
                walk(longer, total)

    walk([], 0.0)
    return sorted(found, key=lambda hyp: -hyp[2])


def greedy(table, prompt, end_ids, max_tokens):
    tokens = []
    while len(tokens) < max_tokens:
        tokens.append(int(np.argmax(table[(prompt + tokens)[-1]])))
        if tokens[-1] in end_ids:
            break
    return tokens


def run(table, prompt, *, end_ids=frozenset(), max_sequences=8, **params):
    runner = FakeRunner(table, max_sequences=max_sequences)
    beams = beam_search(runner, prompt, SamplingParams(**params), set(end_ids), list(range(max_sequences)))
    assert runner.used_cells() == 0
    return beams, runner


# From token 0, 1 looks best (0.5 vs 0.4), but after 1 everything is flat while after 2 the
# model is sure of 2: the best two-token continuation is 2 2 (0.36 > 0.125).
TRAP = table_from(
    {
        0: {1: 0.5, 2: 0.4, 3: 0.1},
        1: {0: 0.25, 1: 0.25, 2: 0.25, 3: 0.25},
        2: {2: 0.9, 0: 0.05, 1: 0.05},
        3: {0: 0.5, 3: 0.5},
    },
    4,
)


def test_beam_search_escapes_the_greedy_trap():
    best = brute_force(TRAP, [0], set(), 2, 1.0)[0]
    assert best[0] == [2, 2]
    assert greedy(TRAP, [0], set(), 2)[0] == 1
    beams, _ = run(TRAP, [0], num_beams=2, max_tokens=2, temperature=0.0)
    assert beams[0].token_ids == [2, 2]
    assert beams[0].logprob == pytest.approx(np.log(0.4 * 0.9), abs=1e-4)
    assert beams[0].finish_reason == "length"
    one_beam, _ = run(TRAP, [0], num_beams=1, max_tokens=2)
    assert one_beam[0].token_ids[0] == 1  # a single beam is greedy


def test_three_token_trap():
    # Greedy: 1 (0.6), then 3 (0.5), then anything (flat). Best: 2 4 4 (0.4 * 1 * 1).
    table = table_from(
        {
            0: {1: 0.6, 2: 0.4},
            1: {3: 0.5, 4: 0.5},
            2: {4: 1.0},
            3: {i: 0.2 for i in range(5)},
            4: {4: 1.0},
        },
        5,
    )
    assert greedy(table, [0], set(), 3)[:2] == [1, 3]
    best = brute_force(table, [0], set(), 3, 1.0)[0]
    beams, _ = run(table, [0], num_beams=2, max_tokens=3)
    assert beams[0].token_ids == best[0] == [2, 4, 4]
    assert beams[0].logprob == pytest.approx(best[1], abs=1e-4)


@pytest.mark.parametrize("length_penalty", [-1.0, 0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("seed", range(4))
def test_exhaustive_width_returns_every_hypothesis_ranked(seed, length_penalty):
    # 4 tokens (3 ends a hypothesis), 3 steps: at most 36 candidates a step, so 64 beams never
    # prune and the search must reproduce the full enumeration, end tokens and scores included.
    table = np.random.default_rng(seed).standard_normal((4, 4)).astype(np.float32) * 2
    expected = brute_force(table, [1, 0], {3}, 3, length_penalty)
    beams, _ = run(
        table, [1, 0], end_ids={3}, max_sequences=128, num_beams=64, max_tokens=3,
        length_penalty=length_penalty,
    )
    # A Markov table makes reordered paths (0 1 0 / 1 0 0) tie, so compare as a mapping.
    found = {tuple(beam.token_ids): beam for beam in beams}
    assert len(found) == len(beams) == len(expected)
    for tokens, logprob, score in expected:
        beam = found[tuple(tokens)]
        assert beam.logprob == pytest.approx(logprob, abs=1e-4)
        assert beam.score == pytest.approx(score, abs=1e-4)
        assert beam.finish_reason == ("stop" if tokens[-1] == 3 else "length")
    assert [b.score for b in beams] == sorted((b.score for b in beams), reverse=True)


EOS = 2
# After the prompt: stop now (0.4) or say 1 (0.6); after 1: another 1 (0.7) or stop (0.3).
CHATTY = table_from({0: {EOS: 0.4, 1: 0.6}, 1: {1: 0.7, EOS: 0.3}, EOS: {EOS: 1.0}}, 3)


@pytest.mark.parametrize("length_penalty, expected", [(0.0, [EOS]), (1.0, [1, 1, 1, 1, 1, 1])])
def test_length_penalty_decides_between_short_and_long(length_penalty, expected):
    assert brute_force(CHATTY, [0], {EOS}, 6, length_penalty)[0][0] == expected
    beams, _ = run(CHATTY, [0], end_ids={EOS}, num_beams=2, max_tokens=6, length_penalty=length_penalty)
    assert beams[0].token_ids == expected
    assert beams[0].finish_reason == ("stop" if expected[-1] == EOS else "length")
    assert [b.score for b in beams] == sorted((b.score for b in beams), reverse=True)
    for beam in beams:
        assert beam.score == pytest.approx(beam.logprob / len(beam.token_ids) ** length_penalty)


def test_end_tokens_finish_hypotheses_and_are_never_continued():
    beams, runner = run(CHATTY, [0], end_ids={EOS}, num_beams=3, max_tokens=6, length_penalty=0.0)
    assert len(beams) == 3
    assert beams[0].token_ids == [EOS]
    for beam in beams:
        assert EOS not in beam.token_ids[:-1]
        assert beam.finish_reason == ("stop" if beam.token_ids[-1] == EOS else "length")
    for batch in runner.batches[1:]:  # after the prefill, no beam is fed an end token
        assert all(chunk.token_ids != [EOS] for chunk in batch)


def test_search_stops_once_no_live_beam_can_win():
    # The model nearly always stops at once: two finished hypotheses after two steps, and no
    # live beam can catch up, so the 50-token budget is not spent.
    table = table_from({i: {EOS: 0.9, 0: 0.05, 1: 0.05} for i in range(3)}, 3)
    beams, runner = run(table, [0], end_ids={EOS}, num_beams=2, max_tokens=50, length_penalty=0.0)
    assert beams[0].token_ids == [EOS]
    assert all(beam.finish_reason == "stop" for beam in beams)
    assert runner.forward_calls <= 3


def test_without_end_tokens_every_beam_runs_to_max_tokens():
    beams, runner = run(TRAP, [0], num_beams=3, max_tokens=4)
    assert len(beams) == 3
    assert all(len(b.token_ids) == 4 and b.finish_reason == "length" for b in beams)
    assert runner.forward_calls == 1 + 3  # prefill, then one batch per step but the last
    assert all(len(batch) == 3 for batch in runner.batches[2:])  # one chunk per live beam


def test_long_prompt_is_prefilled_in_chunks():
    prompt = [1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 0]  # 17 tokens, 5-token chunks
    runner = FakeRunner(TRAP, max_sequences=4, max_batch_tokens=5)
    beams = beam_search(runner, prompt, SamplingParams(num_beams=2, max_tokens=2), set(), [0, 1, 2, 3])
    prefill = runner.batches[:4]
    assert [batch[0].start_pos for batch in prefill] == [0, 5, 10, 15]
    assert [batch[0].want_logits for batch in prefill] == [False, False, False, True]
    assert beams[0].token_ids == [2, 2]
    assert runner.used_cells() == 0


def test_scoring_processors_apply_but_temperature_does_not():
    banned, _ = run(TRAP, [0], num_beams=2, max_tokens=2, logit_bias={2: -100.0})
    assert all(2 not in beam.token_ids for beam in banned)
    warm, _ = run(TRAP, [0], num_beams=2, max_tokens=2, temperature=1.0, top_k=1, top_p=0.1)
    cold, _ = run(TRAP, [0], num_beams=2, max_tokens=2, temperature=0.0)
    assert [b.token_ids for b in warm] == [b.token_ids for b in cold]
    # The sampler's processors and beam search agree on what a penalty does.
    penalised, _ = run(TRAP, [0], num_beams=1, max_tokens=3, repetition_penalty=50.0, temperature=0.0)
    sampler = Sampler(SamplingParams(repetition_penalty=50.0, temperature=0.0), 4)
    tokens = [0]
    for _ in range(3):
        tokens.append(sampler.sample(TRAP[tokens[-1]], tokens, 1))
    assert penalised[0].token_ids == tokens[1:]


def test_sequence_ids_are_freed_when_the_runner_fails():
    runner = FakeRunner(TRAP, max_sequences=4, fail_on_call=3)
    with pytest.raises(RuntimeError):
        beam_search(runner, [0, 1], SamplingParams(num_beams=2, max_tokens=5), set(), [0, 1, 2, 3])
    assert runner.used_cells() == 0


def test_too_few_sequence_ids_is_a_clear_error():
    runner = FakeRunner(TRAP, max_sequences=4)
    with pytest.raises(InvalidParameterError) as excinfo:
        beam_search(runner, [0], SamplingParams(num_beams=3), set(), [0, 1, 2, 3])
    assert excinfo.value.param == "num_beams"
    assert "6 sequence slots" in excinfo.value.message
