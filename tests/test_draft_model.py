"""Draft-model speculation on fake runners: a second model proposes, the target verifies; the
tokens are those of decoding one at a time, the drafter's KV follows the target's slots, and
every draft step is one forward over all drafting sequences."""

from __future__ import annotations

import numpy as np
import pytest
from engine_helpers import assert_same_distribution, submit_together
from fakes import ByteTokenizer, FakeRunner

from slmkit.backends.draft import check_same_tokenizer
from slmkit.engine.engine import Engine, Request
from slmkit.errors import InvalidParameterError
from slmkit.types import SamplingParams

VOCAB = 258


def _noise(tokens, salt=0) -> np.ndarray:
    rng = np.random.default_rng((abs(hash(tuple(tokens))) + salt) % (2**32))
    return rng.normal(size=VOCAB).astype(np.float32)


def target(tokens):
    """Mostly copies the token 9 back, sometimes departs from it (as in test_speculative)."""
    row = _noise(tokens)
    if len(tokens) >= 9 and row[0] < 1.0:
        row[tokens[-9]] += 6.0
    return row


def near(tokens):
    """The target's logits, but one position in four another argmax: a drafter that is often
    right and sometimes wrong, depending on the whole sequence."""
    row = np.array(target(tokens))
    if _noise(tokens, salt=7)[0] > 0.67:
        row[int(np.argmin(row))] += 100.0
    return row


PROMPTS = [b"the quick brown fox jumps over the lazy dog; " * (1 + i % 3) for i in range(12)]
GREEDY = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)


def run(prompts, params, *, drafter=near, abort_at=None, draft_fail_on=None, kv_cells=None, batch=64,
        **engine_options):
    """(tokens, texts, finish reasons, target runner, draft runner, engine) of the prompts
    submitted together; ``drafter=None``: no draft model."""
    runner = FakeRunner(target, vocab_size=VOCAB, max_sequences=8, context_length=256, max_batch_tokens=batch,
                        kv_cells=kv_cells or 8 * 256)
    draft = None if drafter is None else FakeRunner(drafter, vocab_size=VOCAB, max_sequences=8, context_length=256,
                                                    max_batch_tokens=batch, kv_cells=8 * 256,
                                                    fail_on_call=draft_fail_on)
    engine = Engine(runner, ByteTokenizer(), draft_runner=draft, **engine_options)
    tokens, texts, reasons = submit_together(engine, prompts, params, abort_at=abort_at)
    return tokens, texts, reasons, runner, draft, engine


def plain(prompts, params):
    return run(prompts, params, drafter=None)


def assert_kv_exact(runner, draft, engine):
    """The target's slots hold exactly what the scheduler believes; the drafter's hold what it
    believes, and only for slots whose KV the target still keeps."""
    assert engine.scheduler.running_cells() == 0
    cached = engine.scheduler._cached
    for slot, kv in enumerate(runner.kv):
        assert kv == (cached[slot].tokens if slot in cached else []), f"slot {slot}"
    for slot, kv in enumerate(draft.kv):
        assert kv == engine.drafter.held(slot), f"draft slot {slot}"
        if slot not in cached:
            assert kv == [], f"draft slot {slot} outlived the target's"


@pytest.mark.parametrize("drafter", [target, near])
@pytest.mark.parametrize("n", [1, 8, 12])
def test_greedy_tokens_equal_without_a_draft_model(drafter, n):
    want, want_text, _, _, _, _ = plain(PROMPTS[:n], GREEDY)
    got, text, _, runner, draft, engine = run(PROMPTS[:n], GREEDY, drafter=drafter, speculative="draft")
    assert got == want and text == want_text
    assert_kv_exact(runner, draft, engine)
    stats = engine.stats
    assert stats.drafted > 0 and stats.draft_forwards > 0 and stats.draft_seconds > 0
    if drafter is target:  # drafting for itself: every draft is the target's own choice
        assert stats.accepted == stats.drafted
    else:
        assert 0 < stats.accepted < stats.drafted
    assert stats.steps < plain(PROMPTS[:n], GREEDY)[5].stats.steps  # fewer target forwards


def test_a_draft_step_is_one_forward_over_every_drafting_sequence():
    """(With a batch that holds all eight prompts at once, so that they decode in step.)"""
    _, _, _, runner, draft, engine = run(PROMPTS[:8], GREEDY, drafter=target, speculative="draft", batch=1024)
    widths = [len(batch) for batch in draft.batches]
    assert widths.count(8) >= len(widths) - 1  # catch-up and greedy steps take all eight sequences at once
    # one catch-up forward and at most k - 1 greedy steps per target step that drafted
    assert engine.stats.draft_forwards == len(draft.batches) <= engine.stats.steps * engine.max_draft_tokens
    decoding = [b for b in draft.batches if all(len(c.token_ids) == 1 for c in b)]
    assert len(decoding) > len(draft.batches) / 2


def test_the_draft_kv_is_cut_back_to_the_common_prefix_never_recomputed():
    """After the first catch-up (the prompt), the drafter only ever runs the few tokens the
    target added: the accepted ones are in its KV already."""
    _, _, _, _, draft, _ = run(PROMPTS[:1], GREEDY, drafter=target, speculative="draft")
    sizes = [len(c.token_ids) for batch in draft.batches for c in batch]
    assert sizes[0] == len(PROMPTS[0]) + 1  # the first draft follows the first sampled token
    assert max(sizes[1:]) <= 2  # the target's own token, after a fully accepted draft its last


@pytest.mark.parametrize("max_tokens", range(1, 12))
def test_max_tokens_reached_mid_draft(max_tokens):
    params = GREEDY.updated(max_tokens=max_tokens)
    want, _, reasons, _, _, _ = plain(PROMPTS[:3], params)
    got, _, got_reasons, runner, draft, engine = run(PROMPTS[:3], params, drafter=target, speculative="draft")
    assert got == want and got_reasons == reasons == ["length"] * 3
    assert all(len(t) == max_tokens for t in got)
    assert_kv_exact(runner, draft, engine)


def test_stop_string_inside_an_accepted_draft():
    _, full_text, _, _, _, _ = plain(PROMPTS[:1], GREEDY.updated(max_tokens=60))
    stop = full_text[0][20:23]
    params = GREEDY.updated(max_tokens=60, stop=[stop])
    want, want_text, want_reason, _, _, _ = plain(PROMPTS[:1], params)
    got, text, reason, runner, draft, engine = run(PROMPTS[:1], params, drafter=target, speculative="draft")
    assert got == want and text == want_text and reason == want_reason == ["stop"]
    assert stop not in text[0] and engine.stats.accepted > 0
    assert_kv_exact(runner, draft, engine)


@pytest.mark.parametrize("abort_at", [1, 3, 6, 9])
def test_abort_mid_run_frees_kv_in_both_runners(abort_at):
    want, _, _, _, _, _ = plain(PROMPTS[:3], GREEDY)
    got, _, reasons, runner, draft, engine = run(PROMPTS[:3], GREEDY, abort_at=abort_at, speculative="draft")
    assert got[0] == want[0][:abort_at] and reasons[0] == "abort" and got[1:] == want[1:]
    assert_kv_exact(runner, draft, engine)  # r0's cells were freed in both runners


def test_without_prefix_caching_a_finished_request_frees_both_runners():
    _, _, _, runner, draft, engine = run(PROMPTS[:4], GREEDY, speculative="draft", prefix_caching=False)
    assert runner.kv == [[]] * 8 and draft.kv == [[]] * 8
    assert_kv_exact(runner, draft, engine)


def test_preempted_sequences_stay_exact():
    """A KV pool too small for every sequence: the newest are preempted and recomputed."""
    want, _, _, _, _, _ = plain(PROMPTS[:6], GREEDY)
    got, _, _, runner, draft, engine = run(PROMPTS[:6], GREEDY, speculative="draft", kv_cells=400,
                                           prefix_caching=False)
    assert got == want and engine.stats.drafted > 0
    assert sum(c.start_pos == 0 for batch in runner.batches for c in batch) > 6  # some were recomputed
    assert_kv_exact(runner, draft, engine)


def test_a_failing_draft_model_falls_back_to_one_token_at_a_time():
    want, _, _, _, _, _ = plain(PROMPTS[:3], GREEDY)
    got, _, reasons, runner, draft, engine = run(PROMPTS[:3], GREEDY, draft_fail_on=4, speculative="draft")
    assert got == want and reasons == ["length"] * 3
    assert engine.stats.drafted > 0  # it drafted again after the failed step
    assert_kv_exact(runner, draft, engine)


def test_sampled_requests_with_a_seed_reproduce():
    params = SamplingParams(temperature=0.8, max_tokens=30, ignore_eos=True, seed=7)
    first = run(PROMPTS[:4], params, speculative="draft")
    again = run(PROMPTS[:4], params, speculative="draft")
    assert first[0] == again[0] and first[5].stats.drafted > 0


def test_sampled_requests_follow_the_target_distribution():
    """The second and third generated tokens over many seeds: the same distribution as decoding
    one at a time (two-sample chi-square), with a drafter that disagrees with the target."""
    def peaked(tokens):
        row = np.full(VOCAB, -30.0, np.float32)
        row[[97, 98, 99]] = [1.0, 0.5, 0.0]
        row[tokens[-2] if len(tokens) > 1 else 97] += 1.0
        return row

    def other(tokens):
        row = peaked(tokens)
        row[99] += 3.0  # proposes c far more often than the target draws it
        return row

    prompt = list(b"abcabcabcabc")
    counts = {}
    for drafter in (None, other):
        tally = np.zeros((2, 3))
        for seed in range(1200):
            runner = FakeRunner(peaked, vocab_size=VOCAB, max_sequences=1, context_length=64)
            draft = None if drafter is None else FakeRunner(drafter, vocab_size=VOCAB, max_sequences=1,
                                                            context_length=64)
            engine = Engine(runner, ByteTokenizer(), draft_runner=draft,
                            speculative="draft" if drafter else "off")
            outs = []
            engine.add_request(Request(prompt, SamplingParams(temperature=1.0, max_tokens=3, ignore_eos=True,
                                                              seed=seed), "r"), outs.append)
            engine.run_until_done()
            tokens = [t for o in outs for t in o.token_ids]
            for pos in (1, 2):
                tally[pos - 1, tokens[pos] - 97] += 1
        counts[drafter is not None] = tally
    assert_same_distribution(counts[False], counts[True])


def test_modes_per_request_and_the_errors_without_a_draft_model():
    runner = FakeRunner(target, vocab_size=VOCAB)
    with pytest.raises(InvalidParameterError, match="speculative: 'draft' needs a draft model"):
        Engine(runner, ByteTokenizer(), speculative="draft")
    engine = Engine(runner, ByteTokenizer())
    with pytest.raises(InvalidParameterError, match="speculative: 'draft' needs a draft model"):
        engine.add_request(Request(list(b"hello"), GREEDY.updated(speculative="draft")), lambda out: None)
    with pytest.raises(InvalidParameterError, match="2 sequence slots, the target 8"):
        Engine(runner, ByteTokenizer(), draft_runner=FakeRunner(target, vocab_size=VOCAB, max_sequences=2))
    # With a draft model the engine's default may stay off (or ngram) and a request choose draft.
    _, _, _, _, draft, engine = run(PROMPTS[:2], GREEDY.updated(speculative="draft"))
    assert engine.stats.drafted > 0 and draft.batches
    _, _, _, _, draft, engine = run(PROMPTS[:2], GREEDY.updated(speculative="ngram"), speculative="draft")
    assert engine.stats.drafted > 0 and not draft.batches
    _, _, _, _, draft, engine = run(PROMPTS[:2], GREEDY.updated(speculative="off"), speculative="draft")
    assert engine.stats.drafted == 0 and not draft.batches


def test_output_formats_and_images_do_not_draft():
    from slmkit.backends.base import EmbeddingSpan

    runner = FakeRunner(target, vocab_size=VOCAB)
    draft = FakeRunner(target, vocab_size=VOCAB)
    engine = Engine(runner, ByteTokenizer(), draft_runner=draft, speculative="draft")
    outs = []
    image = [EmbeddingSpan(2, np.zeros((3, 4), np.float32))]
    engine.add_request(Request(list(PROMPTS[0]), GREEDY, "img", embeddings=image), outs.append)
    engine.run_until_done()
    assert outs[-1].finish_reason == "length" and engine.stats.drafted == 0 and not draft.batches


def test_tokenizers_must_agree_id_for_id():
    check_same_tokenizer(ByteTokenizer(), ByteTokenizer(), target_name="t", draft_name="d")
    with pytest.raises(InvalidParameterError, match="a vocabulary of 259 tokens and t 258"):
        check_same_tokenizer(ByteTokenizer(), ByteTokenizer(["<|x|>"]), target_name="t", draft_name="d")

    class Renamed(ByteTokenizer):
        def token_text(self, token_id):
            return "<|end|>" if token_id == 257 else super().token_text(token_id)

    with pytest.raises(InvalidParameterError, match=r"token id 257 is '<\|end\|>' in the draft and '<\|eos\|>'"):
        check_same_tokenizer(ByteTokenizer(), Renamed(), target_name="t", draft_name="d")


def test_the_final_timings_count_the_draft_the_request_ended_in():
    def ending(tokens):
        row = target(tokens)
        if len(tokens) > 60:
            row[257] += 50.0  # <|eos|>, inside a draft both models agree on
        return row

    runner = FakeRunner(ending, vocab_size=VOCAB, max_sequences=1, context_length=256)
    engine = Engine(runner, ByteTokenizer(), draft_runner=FakeRunner(ending, vocab_size=VOCAB, max_sequences=1,
                                                                     context_length=256), speculative="draft")
    outs = []
    engine.add_request(Request(list(PROMPTS[0]), SamplingParams(temperature=0, max_tokens=60), "r"), outs.append)
    engine.run_until_done()
    timings = outs[-1].timings
    assert outs[-1].finish_reason == "stop" and outs[-2].token_ids == [257]
    assert (timings.drafted_tokens, timings.accepted_tokens) == (engine.stats.drafted, engine.stats.accepted)
    assert timings.accepted_tokens > 0 and timings.draft_seconds == pytest.approx(engine.stats.draft_seconds)


@pytest.mark.parametrize("kind", ["transformers", "ortgenai"])
def test_a_draft_model_on_an_engine_that_cannot_draft_is_refused_before_it_loads(tmp_path, kind):
    from slmkit.backends.draft import load_draft_model
    from slmkit.backends.loading import BackendOptions

    folder = tmp_path / kind
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    if kind == "ortgenai":
        (folder / "genai_config.json").write_text("{}")
    with pytest.raises(InvalidParameterError, match=f"draft_model: d runs on the {kind} engine; a draft model "
                                                    "runs on llamacpp or torch"):
        load_draft_model("d", folder, BackendOptions(), target_name="t", target_tokenizer=ByteTokenizer(),
                         target_runner=FakeRunner(target, vocab_size=VOCAB))
