"""Logits processors and the `Sampler` against hand-computed distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from slmkit.errors import InvalidParameterError, InvalidRequestError
from slmkit.sampling import (
    Sampler,
    log_softmax,
    make_logits_processors,
    make_logits_warpers,
    top_logprobs,
)
from slmkit.sampling.sampler import _draw
from slmkit.types import SamplingParams

WEIGHTS = [0.1, 0.2, 0.3, 0.4]  # a distribution whose every transform has a by-hand answer


def logits_of(weights) -> np.ndarray:
    """Logits whose softmax is `weights` (normalised); zero weights become -inf."""
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(weights, dtype=np.float64)).astype(np.float32)


def frozen(row) -> np.ndarray:
    """A read-only copy: any write by the code under test raises."""
    row = np.array(row, dtype=np.float32)
    row.flags.writeable = False
    return row


def probs(params: SamplingParams, row, token_ids=(), prompt_len=None) -> np.ndarray:
    row = frozen(row)
    token_ids = list(token_ids)
    prompt_len = len(token_ids) if prompt_len is None else prompt_len
    return Sampler(params, row.shape[0]).probabilities(row, token_ids, prompt_len)


def processed(params: SamplingParams, row, token_ids=(), prompt_len=None) -> np.ndarray:
    row = frozen(row)
    token_ids = list(token_ids)
    prompt_len = len(token_ids) if prompt_len is None else prompt_len
    return Sampler(params, row.shape[0]).process(row, token_ids, prompt_len)


def test_default_params_activate_nothing():
    params = SamplingParams()
    assert make_logits_processors(params, 5) == []
    assert make_logits_warpers(params) == []
    assert make_logits_warpers(SamplingParams(temperature=0.0, top_k=3)) != []
    greedy = Sampler(SamplingParams(temperature=0.0, top_k=3, top_p=0.5), 5)
    assert greedy.processors == [] and greedy.warpers == []  # truncation cannot move an argmax


# --- scoring processors -------------------------------------------------------------------------


def test_logit_bias_adds_to_listed_tokens():
    params = SamplingParams(logit_bias={0: math.log(3.0)})
    # weights 1,1,1,1,4 (sum 8) become 3,1,1,1,4 (sum 10)
    out = probs(params, logits_of([1, 1, 1, 1, 4]))
    np.testing.assert_allclose(out, [0.3, 0.1, 0.1, 0.1, 0.4], rtol=1e-6)


def test_logit_bias_outside_vocabulary_is_rejected():
    with pytest.raises(InvalidParameterError) as excinfo:
        Sampler(SamplingParams(logit_bias={5: 1.0}), 5)
    assert excinfo.value.param == "logit_bias"
    assert "0..4" in excinfo.value.message


def test_repetition_penalty_divides_positive_and_multiplies_negative_over_the_prompt_too():
    params = SamplingParams(repetition_penalty=2.0)
    row = [2.0, -2.0, 1.0, 0.5, 0.0]
    # token 0 only in the prompt, token 1 twice (counted once), token 3 generated
    out = processed(params, row, token_ids=[0, 1, 1, 3], prompt_len=3)
    np.testing.assert_allclose(out, [1.0, -4.0, 1.0, 0.25, 0.0])


def test_frequency_and_presence_count_generated_tokens_only():
    params = SamplingParams(frequency_penalty=0.5, presence_penalty=0.25)
    # prompt 0 0 1 | generated 1 1 2: token 1 twice (-1.0 - 0.25), token 2 once (-0.5 - 0.25)
    out = processed(params, np.zeros(5), token_ids=[0, 0, 1, 1, 1, 2], prompt_len=3)
    np.testing.assert_allclose(out, [0.0, -1.25, -0.75, 0.0, 0.0])
    untouched = processed(params, np.zeros(5), token_ids=[0, 0, 1], prompt_len=3)
    np.testing.assert_array_equal(untouched, np.zeros(5))


def test_negative_presence_penalty_encourages_repeats():
    params = SamplingParams(presence_penalty=-math.log(2.0))
    # weights 1,1,1,1 with token 2 generated: its weight doubles -> 1,1,2,1 / 5
    np.testing.assert_allclose(
        probs(params, np.zeros(4), token_ids=[0, 2], prompt_len=1), [0.2, 0.2, 0.4, 0.2], rtol=1e-6
    )


def test_penalties_come_before_bias_and_user_processors_see_both():
    seen = {}

    def spy(token_ids, logits):
        seen["token_ids"] = list(token_ids)
        seen["logits"] = logits.copy()
        logits[4] += 10.0
        return logits

    params = SamplingParams(repetition_penalty=2.0, logit_bias={0: 1.0}, logits_processors=[spy])
    out = processed(params, [1.0, 0.0, 0.0, 0.0, 0.0], token_ids=[0, 3], prompt_len=1)
    np.testing.assert_allclose(seen["logits"], [1.5, 0.0, 0.0, 0.0, 0.0])  # 1 / 2 + 1
    assert seen["token_ids"] == [0, 3]
    np.testing.assert_allclose(out, [1.5, 0.0, 0.0, 0.0, 10.0])


def test_user_processor_may_return_a_new_array():
    params = SamplingParams(temperature=0.0, logits_processors=[lambda ids, logits: -logits])
    assert Sampler(params, 4).sample(frozen([3.0, 1.0, 0.0, 2.0]), [], 0) == 2


@pytest.mark.parametrize(
    "bad",
    [
        lambda ids, logits: None,
        lambda ids, logits: list(logits),
        lambda ids, logits: logits[:-1],
        lambda ids, logits: logits.reshape(1, -1),
    ],
)
def test_user_processor_with_a_bad_return_is_rejected(bad):
    sampler = Sampler(SamplingParams(logits_processors=[bad]), 4)
    with pytest.raises(InvalidParameterError) as excinfo:
        sampler.sample(frozen(np.zeros(4)), [1], 1)
    assert excinfo.value.param == "logits_processors"


def test_banning_every_token_is_an_error_not_a_random_pick():
    params = SamplingParams(temperature=0.0, logit_bias={i: -math.inf for i in range(3)})
    with pytest.raises(InvalidRequestError, match="every token"):
        Sampler(params, 3).sample(frozen(np.zeros(3)), [], 0)


# --- warpers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        (0.5, [1 / 30, 4 / 30, 9 / 30, 16 / 30]),  # weights squared
        (2.0, np.sqrt(WEIGHTS) / np.sqrt(WEIGHTS).sum()),  # square roots
        (1.0, WEIGHTS),
    ],
)
def test_temperature(value, expected):
    out = probs(SamplingParams(temperature=value), logits_of(WEIGHTS))
    np.testing.assert_allclose(out, expected, rtol=1e-5)


@pytest.mark.parametrize(
    "k, expected",
    [
        (1, [0, 0, 0, 1]),
        (2, [0, 0, 3 / 7, 4 / 7]),
        (3, [0, 2 / 9, 3 / 9, 4 / 9]),
        (4, WEIGHTS),
        (100, WEIGHTS),  # k beyond the vocabulary keeps everything
    ],
)
def test_top_k(k, expected):
    out = probs(SamplingParams(top_k=k), logits_of(WEIGHTS))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-12)


def test_top_k_keeps_exactly_k_among_ties():
    out = probs(SamplingParams(top_k=2), [1.0, 3.0, 3.0, 3.0, 0.0])
    assert np.count_nonzero(out) == 2
    assert set(np.flatnonzero(out)) <= {1, 2, 3}
    np.testing.assert_allclose(out[out > 0], [0.5, 0.5])


@pytest.mark.parametrize(
    "p, expected",
    [
        (1e-6, [0, 0, 0, 1]),  # a tiny nucleus keeps exactly the top token
        (0.35, [0, 0, 0, 1]),  # 0.4 alone reaches 0.35
        (0.5, [0, 0, 3 / 7, 4 / 7]),  # 0.4 < 0.5 <= 0.4 + 0.3
        (0.75, [0, 2 / 9, 3 / 9, 4 / 9]),
        (0.95, WEIGHTS),
    ],
)
def test_top_p(p, expected):
    out = probs(SamplingParams(top_p=p), logits_of(WEIGHTS))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-12)


def test_top_p_beyond_the_first_guess_of_candidates():
    # 100 heavy tokens (weight 10) then 900 light ones (0.1): total 1090. A nucleus of 0.955
    # needs all heavy ones (1000) plus 410 light ones (40.95 / 0.1 = 409.5).
    weights = np.full(1000, 0.1)
    weights[::10] = 10.0
    assert np.count_nonzero(probs(SamplingParams(top_p=0.955), logits_of(weights))) == 510
    assert np.count_nonzero(probs(SamplingParams(top_p=0.9), logits_of(weights))) == 99  # 98.1


def test_top_p_matches_a_full_sort_reference():
    rng = np.random.default_rng(0)
    for trial in range(50):
        row = (rng.standard_normal(3000) * rng.uniform(0.5, 4)).astype(np.float32)
        p = rng.uniform(0.05, 0.99)
        order = np.argsort(-row, kind="stable")
        sorted_probs = np.exp(row[order] - row.max()).astype(np.float64)
        sorted_probs /= sorted_probs.sum()
        expected = int(np.searchsorted(np.cumsum(sorted_probs), p)) + 1
        kept = np.count_nonzero(probs(SamplingParams(top_p=p), row))
        assert abs(kept - expected) <= 1, (trial, kept, expected)  # float rounding at the border
        assert set(np.flatnonzero(probs(SamplingParams(top_p=p), row))) >= set(order[: expected - 1])


@pytest.mark.parametrize(
    "m, expected",
    [
        (0.6, [0, 0, 3 / 7, 4 / 7]),  # threshold 0.24 keeps 0.3 and 0.4
        (0.4, [0, 2 / 9, 3 / 9, 4 / 9]),  # threshold 0.16
        (1.0, [0, 0, 0, 1]),  # only the maximum
    ],
)
def test_min_p(m, expected):
    out = probs(SamplingParams(min_p=m), logits_of(WEIGHTS))
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-12)


def test_min_p_one_keeps_tied_maxima():
    np.testing.assert_allclose(probs(SamplingParams(min_p=1.0), [2.0, 1.0, 2.0]), [0.5, 0, 0.5])


def test_temperature_applies_before_top_p():
    # At temperature 0.5 the weights become 1,4,9,16 / 30: 16/30 alone covers top_p=0.5.
    # (Nucleus first would have kept 0.4 + 0.3.)
    params = SamplingParams(temperature=0.5, top_p=0.5)
    np.testing.assert_allclose(probs(params, logits_of(WEIGHTS)), [0, 0, 0, 1])


def test_everything_masked_but_one_token():
    row = [-np.inf, -np.inf, 2.0, -np.inf, -np.inf]
    params = SamplingParams(temperature=0.7, top_k=3, top_p=0.5, min_p=0.5, seed=1)
    np.testing.assert_allclose(probs(params, row), [0, 0, 1, 0, 0])
    sampler = Sampler(params, 5)
    assert {sampler.sample(frozen(row), [], 0) for _ in range(50)} == {2}


# --- the sampler --------------------------------------------------------------------------------


def test_greedy_takes_the_argmax_after_processors():
    row = frozen([1.0, 3.0, 2.0, 0.0])
    assert Sampler(SamplingParams(temperature=0.0), 4).sample(row, [1], 1) == 1
    penalised = Sampler(SamplingParams(temperature=0.0, repetition_penalty=2.0), 4)
    assert penalised.sample(row, [1], 1) == 2  # 3 / 2 < 2
    biased = Sampler(SamplingParams(temperature=0.0, logit_bias={3: 5.0}), 4)
    assert biased.sample(row, [], 0) == 3


def test_sampling_never_modifies_the_callers_logits():
    row = np.array([0.5, 2.0, -1.0, 1.0, 0.0], dtype=np.float32)
    before = row.copy()
    for params in [
        SamplingParams(temperature=0.0),
        SamplingParams(),
        SamplingParams(temperature=0.0, repetition_penalty=1.5, logit_bias={0: 1.0}),
        SamplingParams(temperature=0.7, top_k=3, top_p=0.8, min_p=0.1, frequency_penalty=1.0),
    ]:
        Sampler(params, 5).sample(row, [0, 1, 3], 1)
        np.testing.assert_array_equal(row, before)
        Sampler(params, 5).sample(frozen(row), [0, 1, 3], 1)  # read-only input works too


def test_same_seed_same_tokens_and_different_seeds_differ():
    row = frozen(np.zeros(1000))  # uniform: 20 equal draws by chance has probability 1e-60

    def draws(seed):
        sampler = Sampler(SamplingParams(seed=seed), 1000)
        return [sampler.sample(row, [], 0) for _ in range(20)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    assert draws(None) != draws(None)


def chi_square(counts: np.ndarray, expected_probs) -> float:
    expected = np.asarray(expected_probs) * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("vocab", [4, 1000])
def test_sampled_frequencies_match_the_distribution(vocab):
    # On 1000 tokens the live ones sit in different inverse-CDF blocks, one in the ragged tail.
    live = [0, 1, 2, 3] if vocab == 4 else [3, 300, 700, 999]
    weights = np.zeros(vocab)
    weights[live] = WEIGHTS
    sampler = Sampler(SamplingParams(seed=1234), vocab)
    row = frozen(logits_of(weights))
    samples = np.array([sampler.sample(row, [], 0) for _ in range(20000)])
    assert set(samples.tolist()) <= set(live)
    counts = np.array([(samples == token).sum() for token in live])
    # chi-square with 3 degrees of freedom: P(> 25) ~ 1.6e-5; a biased sampler scores far higher
    # (drawing 0.11 instead of 0.1 for one token already gives ~ 20).
    assert chi_square(counts, WEIGHTS) < 25


def test_sampled_frequencies_after_top_k_and_temperature():
    sampler = Sampler(SamplingParams(seed=99, temperature=0.5, top_k=3), 4)
    row = frozen(logits_of(WEIGHTS))
    samples = np.array([sampler.sample(row, [], 0) for _ in range(20000)])
    counts = np.bincount(samples, minlength=4)
    assert counts[0] == 0
    assert chi_square(counts[1:], [4 / 29, 9 / 29, 16 / 29]) < 22  # 2 dof: P(> 22) ~ 1.7e-5


def test_draw_at_the_edges_of_the_unit_interval():
    weights = np.array([0.0, 1.0, 1.0, 0.0], dtype=np.float32)
    assert _draw(weights, 0.0) == 1
    assert _draw(weights, 0.4999) == 1
    assert _draw(weights, 0.5) == 2
    assert _draw(weights, np.nextafter(1.0, 0.0)) == 2


# --- log-probabilities ----------------------------------------------------------------------------


def test_log_softmax_and_top_logprobs():
    row = frozen([np.log(1.0), np.log(2.0), np.log(3.0), -np.inf])
    np.testing.assert_allclose(log_softmax(row)[:3], np.log([1 / 6, 2 / 6, 3 / 6]), rtol=1e-6)
    assert log_softmax(row)[3] == -np.inf
    top = top_logprobs(row, 2)
    assert [token for token, _ in top] == [2, 1]
    np.testing.assert_allclose([lp for _, lp in top], np.log([0.5, 1 / 3]), rtol=1e-6)
    assert [token for token, _ in top_logprobs(row, 10)] == [2, 1, 0, 3]
    assert top_logprobs(row, 0) == []
    assert [token for token, _ in top_logprobs(frozen([1.0, 2.0, 2.0]), 2)] == [1, 2]  # ties by id
