"""Prompt-lookup speculation: the same tokens as decoding one at a time, exact KV, exact sampling."""

from __future__ import annotations

import numpy as np
import pytest
from engine_helpers import assert_same_distribution, submit_together
from fakes import ByteTokenizer, FakeRunner

from slmkit.engine.engine import Engine, Request
from slmkit.engine.speculative import DraftLength, NgramProposer, verify_sampled
from slmkit.errors import InvalidParameterError
from slmkit.types import SamplingParams

VOCAB = 258


def _noise(tokens) -> np.ndarray:
    rng = np.random.default_rng(abs(hash(tuple(tokens))) % (2**32))
    return rng.normal(size=VOCAB).astype(np.float32)


def open_model(tokens):
    """Logits from a hash of the whole sequence: nothing repeats, drafts are mostly wrong."""
    return _noise(tokens)


def copy_model(tokens):
    """Mostly copies the token 9 back (a quoted passage), sometimes departs from it: drafts are
    often right, sometimes wrong, and which depends on the whole sequence."""
    row = _noise(tokens)
    if len(tokens) >= 9 and row[0] < 1.0:
        row[tokens[-9]] += 6.0
    return row


def run(model, prompts, params, *, abort_at=None, **engine_options):
    """(tokens, texts, finish reasons, runner, engine) of the prompts submitted together."""
    runner = FakeRunner(model, vocab_size=VOCAB, max_sequences=8, context_length=256, max_batch_tokens=64)
    engine = Engine(runner, ByteTokenizer(), **engine_options)
    tokens, texts, reasons = submit_together(engine, prompts, params, abort_at=abort_at)
    return tokens, texts, reasons, runner, engine


def assert_kv_exact(runner, engine):
    """Every slot holds exactly the tokens the scheduler believes: no rejected draft left over."""
    assert engine.scheduler.running_cells() == 0
    cached = engine.scheduler._cached
    for slot, kv in enumerate(runner.kv):
        assert kv == (cached[slot].tokens if slot in cached else []), f"slot {slot}"


PROMPTS = [b"the quick brown fox jumps over the lazy dog; " * (1 + i % 3) for i in range(8)]


@pytest.mark.parametrize("model", [copy_model, open_model])
@pytest.mark.parametrize("n", [1, 8])
def test_greedy_tokens_equal_with_and_without_speculation(model, n):
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    plain, plain_text, _, _, _ = run(model, PROMPTS[:n], params)
    spec, spec_text, _, runner, engine = run(model, PROMPTS[:n], params, speculative="ngram")
    assert spec == plain and spec_text == plain_text
    assert_kv_exact(runner, engine)
    if model is copy_model:
        assert engine.stats.accepted > 0
        assert any(len(c.token_ids) > 1 and c.all_logits for b in runner.batches for c in b)
        assert engine.stats.steps < run(model, PROMPTS[:n], params)[4].stats.steps  # fewer forwards


def test_per_request_choice_overrides_the_engine_default():
    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    _, _, _, _, off = run(copy_model, PROMPTS[:2], params.updated(speculative="off"), speculative="ngram")
    _, _, _, _, on = run(copy_model, PROMPTS[:2], params.updated(speculative="ngram"))
    assert off.stats.drafted == 0 and on.stats.drafted > 0
    with pytest.raises(InvalidParameterError, match="speculative"):
        SamplingParams(speculative="medusa")
    with pytest.raises(InvalidParameterError, match="speculative"):
        Engine(FakeRunner(open_model, vocab_size=VOCAB), ByteTokenizer(), speculative="yes")


@pytest.mark.parametrize("max_tokens", range(1, 14))
def test_max_tokens_reached_mid_draft(max_tokens):
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    plain, _, reasons, _, _ = run(copy_model, PROMPTS[:3], params)
    spec, _, spec_reasons, runner, engine = run(copy_model, PROMPTS[:3], params, speculative="ngram")
    assert spec == plain and spec_reasons == reasons == ["length"] * 3
    assert all(len(t) == max_tokens for t in spec)
    assert_kv_exact(runner, engine)


def test_stop_string_inside_an_accepted_draft():
    params = SamplingParams(temperature=0, max_tokens=60, ignore_eos=True)
    plain, plain_text, _, _, _ = run(copy_model, PROMPTS[:1], params)
    stop = plain_text[0][20:23]  # three characters the model copies somewhere after the start
    stopped = params.updated(stop=[stop])
    want, want_text, want_reason, _, _ = run(copy_model, PROMPTS[:1], stopped)
    spec, spec_text, reason, runner, engine = run(copy_model, PROMPTS[:1], stopped, speculative="ngram")
    assert spec == want and spec_text == want_text and reason == want_reason == ["stop"]
    assert stop not in spec_text[0] and len(spec_text[0]) < len(plain_text[0])
    assert engine.stats.accepted > 0
    assert_kv_exact(runner, engine)


def test_end_token_inside_a_draft_and_logprobs_are_exact():
    def ending_model(tokens):
        row = copy_model(tokens)
        if len(tokens) > 70:
            row[257] += 20.0  # <|eos|>
        return row

    params = SamplingParams(temperature=0, max_tokens=60, logprobs=2)
    runner_outs = []
    for options in ({}, {"speculative": "ngram"}):
        runner = FakeRunner(ending_model, vocab_size=VOCAB, max_sequences=2, context_length=256)
        engine = Engine(runner, ByteTokenizer(), **options)
        outs = []
        engine.add_request(Request(list(PROMPTS[1]), params, "r"), outs.append)
        engine.run_until_done()
        runner_outs.append(([t for o in outs for t in o.token_ids],
                            [(lp.token_id, lp.logprob, lp.top) for o in outs for lp in (o.logprobs or [])],
                            outs[-1].finish_reason))
        assert_kv_exact(runner, engine)
    assert runner_outs[0] == runner_outs[1] and runner_outs[0][2] == "stop"


@pytest.mark.parametrize("abort_at", [1, 3, 5, 8])
def test_abort_mid_verification_frees_kv_and_stops_output(abort_at):
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    plain, _, _, _, _ = run(copy_model, PROMPTS[:3], params)
    spec, _, reasons, runner, engine = run(copy_model, PROMPTS[:3], params, abort_at=abort_at,
                                           speculative="ngram")
    assert spec[0] == plain[0][:abort_at] and reasons[0] == "abort"
    assert spec[1:] == plain[1:]
    assert_kv_exact(runner, engine)


def test_a_failing_processor_inside_a_draft_fails_that_request_only():
    calls = []

    def processor(token_ids, logits):
        calls.append(1)
        if len(calls) == 15:
            raise ValueError("boom")
        return logits

    good = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    runner = FakeRunner(copy_model, vocab_size=VOCAB, max_sequences=4, context_length=256)
    engine = Engine(runner, ByteTokenizer(), speculative="ngram")
    outs = {"bad": [], "good": []}
    engine.add_request(Request(list(PROMPTS[2]), good.updated(logits_processors=[processor]), "bad"),
                       outs["bad"].append)
    engine.add_request(Request(list(PROMPTS[2]), good, "good"), outs["good"].append)
    engine.run_until_done()
    assert outs["bad"][-1].finish_reason == "abort" and "boom" in str(outs["bad"][-1].error)
    assert sum(len(o.token_ids) for o in outs["bad"]) == 14  # every token before the failing call
    assert outs["good"][-1].finish_reason == "length" and outs["good"][-1].error is None
    want, _, _, _, _ = run(copy_model, [PROMPTS[2]], good)
    assert [t for o in outs["good"] for t in o.token_ids] == want[0]
    assert_kv_exact(runner, engine)


def test_the_rejection_rule_samples_the_target_distribution():
    """Chi-square of 40 000 draws against p, for a likely, an unlikely and an impossible draft."""
    p = np.array([0.05, 0.4, 0.1, 0.25, 0.0, 0.2])
    draws = 40_000
    critical = 20.52  # chi-square, 5 degrees of freedom, 0.999 quantile (tables)
    for draft in (1, 5, 4):
        rng = np.random.default_rng(draft)
        counts = np.zeros(len(p))
        accepted = 0
        for _ in range(draws):
            token, hit = verify_sampled(p, draft, rng.random(), rng)
            counts[token] += 1
            accepted += hit
            assert hit == (token == draft)
        live = p > 0
        expected = p[live] * draws
        stat = float(((counts[live] - expected) ** 2 / expected).sum())
        assert stat < critical, (draft, counts, stat)
        assert counts[~live].sum() == 0
        assert abs(accepted / draws - p[draft]) < 0.01  # accepted with probability p(draft)


def test_sampled_requests_with_speculation_follow_the_model_and_reproduce_with_a_seed():
    """Over many seeds, the second and third generated tokens have the distribution decoding one
    at a time gives (two-sample chi-square), and one seed always gives the same tokens."""
    def peaked(tokens):  # a few likely tokens, so that drafts are often accepted and often not
        row = np.full(VOCAB, -30.0, np.float32)
        row[[97, 98, 99]] = [1.0, 0.5, 0.0]
        row[tokens[-2] if len(tokens) > 1 else 97] += 1.0  # copying the token two back is likelier
        return row

    prompt = list(b"abcabcabcabc")
    counts = {}
    for options in ({}, {"speculative": "ngram"}):
        tally, drafted = np.zeros((2, 3)), 0
        for seed in range(1500):
            params = SamplingParams(temperature=1.0, max_tokens=3, ignore_eos=True, seed=seed)
            tokens, _, _, _, engine = run(peaked, [prompt], params, **options)
            for pos in (1, 2):
                tally[pos - 1, tokens[0][pos] - 97] += 1
            drafted += engine.stats.drafted
        counts[bool(options)] = tally
        assert (drafted > 0) == bool(options)
    assert_same_distribution(counts[False], counts[True])
    seeded = SamplingParams(temperature=0.8, max_tokens=30, ignore_eos=True, seed=7)
    first = run(copy_model, PROMPTS[:2], seeded, speculative="ngram")[0]
    assert run(copy_model, PROMPTS[:2], seeded, speculative="ngram")[0] == first


def test_proposer_finds_the_latest_earlier_match_and_draft_length_adapts_k():
    proposer = NgramProposer()
    tokens = [1, 2, 3, 4, 5, 9, 1, 2, 3, 7, 8, 1, 2, 3]
    assert proposer.propose(tokens, 4) == [7, 8, 1, 2]  # the latest "1 2 3"
    assert proposer.propose(tokens, 2) == [7, 8]
    assert NgramProposer().propose([5, 6, 7, 8], 8) == []  # nothing repeats
    length = DraftLength(max_draft=8)
    assert length.take(8) == 4 and length.take(2) == 2  # k starts at 4, capped by the limit
    length.record(4, 4)
    assert length.k == 8
    length.record(8, 2)
    assert length.k == 3
    length.record(3, 0)
    assert length.k == 1
    # Nothing accepted: skip 1 proposal, then (after another miss) 2, ...; an accept resets it.
    assert length.take(0) == 0  # nothing may be drafted: not a skipped proposal
    assert [length.take(8), length.take(8)] == [0, 1]
    length.record(1, 0)
    assert [length.take(8) for _ in range(3)] == [0, 0, 1]
    length.record(1, 1)
    assert length.take(8) == 2


@pytest.mark.slow
def test_greedy_on_smollm2_equals_without_speculation_single_and_8_concurrent(llm):
    """Copy-heavy and open-ended prompts on the real model: a verifying chunk of k+1 rows must
    give the logits one-at-a-time decoding gives, which chunks under 64 rows guarantee."""
    from engine_helpers import collect_tokens

    from slmkit.backends.llamacpp import LlamaCppModel

    passage = ("The committee met on Tuesday to review the budget. It approved the new library, "
               "delayed the road repairs and asked for a report on the water supply by March.")
    asks = [f"Repeat this text exactly:\n{passage}", f"Quote the second sentence of: {passage}",
            "def add(a, b):\n    return a + b\n\nRename add to plus and print the code back.",
            "Tell me a short story about a lighthouse.", "What is the capital of France?",
            f"Using only this context, what did the committee delay? Context: {passage}",
            "List three colors.", "Write a haiku about rain."]
    prompts = [llm.encode_prompt(llm.apply_chat_template([{"role": "user", "content": a}])) for a in asks]
    params = SamplingParams(temperature=0, max_tokens=32)
    model = LlamaCppModel(llm.model.path)
    runner = model.create_runner(context_length=2048, max_sequences=8, unified_kv=False)
    try:
        for group in ([prompts[0]], [prompts[3]], prompts):
            plain = collect_tokens(runner, model.tokenizer, group, params, max_chunk_per_sequence=63,
                                   prefix_caching=False)
            spec = collect_tokens(runner, model.tokenizer, group, params, max_chunk_per_sequence=63,
                                  prefix_caching=False, speculative="ngram")
            assert spec == plain
    finally:
        runner.close()
        model.close()
    # The Python API: LLM's one-slot engine path against its token-at-a-time Generator.
    short = llm.encode_prompt(llm.apply_chat_template([{"role": "user", "content": "Repeat exactly: one two "
                                                        "three four five, one two three four five."}]))
    spec = llm.generate(short, params.updated(speculative="ngram"))
    assert spec.token_ids == llm.generate(short, params).token_ids
    assert spec.timings.drafted_tokens > 0
    # JSON mode: a request under an output format does not draft (its matcher advances per token);
    # the answer is the Generator path's. (Token ids differ in the trailing end token: the engine
    # ends a finished structure without sampling it, the Generator samples it; see the notes.)
    ask = llm.encode_prompt(llm.apply_chat_template([{"role": "user", "content": 'Return {"a": "red", "b": '
                                                      '"red", "c": "red"} as JSON.'}]))
    json_params = params.updated(response_format="json_object", max_tokens=24)
    constrained = llm.generate(ask, json_params.updated(speculative="ngram"))
    assert constrained.timings.drafted_tokens == 0
    assert constrained.text == llm.generate(ask, json_params).text


@pytest.mark.slow
def test_serve_speculative_ngram_answers_as_without_and_counts_drafts(slmkit_home, llm):
    import httpx
    from server_process import ServerProcess

    text = "Copy this line back exactly: the red fox and the blue fox ran to the old mill by the river."
    body = {"model": "smollm2:original", "messages": [{"role": "user", "content": text}],
            "temperature": 0, "max_tokens": 40}
    answers = {}
    for mode in ("off", "ngram"):
        proc = ServerProcess("--model", "smollm2:original", "--parallel", "2", "--batch-invariant",
                             "--speculative", mode)
        try:
            r = httpx.post(f"{proc.base}/v1/chat/completions", json=body, timeout=120)
            assert r.status_code == 200
            answers[mode] = r.json()["choices"][0]["message"]["content"]
            m = proc.metrics()
            drafted = m['slmkit_speculative_drafted_tokens_total{model="smollm2:original"}']
            accepted = m['slmkit_speculative_accepted_tokens_total{model="smollm2:original"}']
            assert (drafted > 0) == (mode == "ngram") and 0 <= accepted <= drafted
        finally:
            proc.stop()
    assert answers["ngram"] == answers["off"]



def test_one_slot_view_runs_the_engine_in_that_slot_only():
    """What LLM(speculative=...) does: an engine on slot 3 of a runner whose other slots are busy."""
    from slmkit.backends.base import OneSlot

    params = SamplingParams(temperature=0, max_tokens=30, ignore_eos=True)
    want, _, _, _, _ = run(copy_model, [PROMPTS[1]], params)
    runner = FakeRunner(copy_model, vocab_size=VOCAB, max_sequences=4, context_length=256)
    runner.kv[1] = [65, 66]  # another user's sequence, untouched
    engine = Engine(OneSlot(runner, 3), ByteTokenizer(), prefix_caching=False, speculative="ngram")
    outs = []
    engine.add_request(Request(list(PROMPTS[1]), params, "r"), outs.append)
    engine.run_until_done()
    assert [t for o in outs for t in o.token_ids] == want[0] and engine.stats.accepted > 0
    assert {c.seq_id for b in runner.batches for c in b} == {3}
    assert runner.kv[1] == [65, 66] and runner.kv[3] == []
