"""The batching engine: results identical to running alone, aborts free KV at once."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import ByteTokenizer, FakeRunner

from slmkit.engine.engine import Engine, Request
from slmkit.errors import ContextLengthError
from slmkit.types import SamplingParams


def hash_model(tokens):
    """Deterministic logits depending on the whole sequence (so mixing sequences would show)."""
    rng = np.random.default_rng(abs(hash(tuple(tokens))) % (2**32))
    return rng.normal(size=258).astype(np.float32)


def collect(engine, requests):
    outputs = {r.request_id: [] for r in requests}
    for r in requests:
        engine.add_request(r, outputs[r.request_id].append)
    engine.run_until_done()
    return outputs


def tokens_of(deltas):
    return [t for d in deltas for t in d.token_ids]


def test_batched_tokens_equal_alone_on_the_fake_runner():
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    prompts = [[65 + i] * (3 + 5 * i) for i in range(6)]
    alone = []
    for p in prompts:
        engine = Engine(FakeRunner(hash_model, vocab_size=258), ByteTokenizer())
        alone.append(tokens_of(collect(engine, [Request(p, params, f"r{len(alone)}")])[f"r{len(alone)}"]))
    runner = FakeRunner(hash_model, vocab_size=258, max_sequences=4, max_batch_tokens=16, context_length=64)
    engine = Engine(runner, ByteTokenizer())
    together = collect(engine, [Request(p, params, f"r{i}") for i, p in enumerate(prompts)])
    assert [tokens_of(together[f"r{i}"]) for i in range(6)] == alone
    assert engine.scheduler.running_cells() == 0
    assert runner.used_cells() == engine.scheduler.cached_cells()  # only reusable prefixes stay
    assert max(len(b) for b in runner.batches) > 1  # really batched


def test_abort_frees_cells_and_ends_the_stream():
    runner = FakeRunner(hash_model, vocab_size=258)
    engine = Engine(runner, ByteTokenizer())
    out = []
    engine.add_request(Request([65] * 10, SamplingParams(temperature=0, max_tokens=50, ignore_eos=True), "x"), out.append)
    engine.step(), engine.step()
    assert runner.used_cells() > 0
    assert engine.abort("x") and not engine.abort("x")
    assert runner.used_cells() == 0 and out[-1].finish_reason == "abort" and not engine.has_work


def test_too_long_prompt_is_refused_before_any_work():
    runner = FakeRunner(hash_model, vocab_size=258, context_length=16)
    engine = Engine(runner, ByteTokenizer())
    with pytest.raises(ContextLengthError, match="context holds 16"):
        engine.add_request(Request([65] * 16, SamplingParams()), lambda o: None)
    assert not engine.has_work and runner.forward_calls == 0


@pytest.mark.slow
def test_16_greedy_requests_together_equal_alone_on_smollm2(llm):
    from slmkit.backends.llamacpp import LlamaCppModel

    model = LlamaCppModel(llm.model.path)
    runner = model.create_runner(context_length=512, max_sequences=16, unified_kv=False)
    try:
        questions = [f"What is {a} + {b}?" for a, b in zip(range(1, 17), range(3, 19))]
        prompts = [llm.encode_prompt(llm.apply_chat_template([{"role": "user", "content": q}])) for q in questions]
        params = SamplingParams(temperature=0, max_tokens=24)
        alone = [llm.generate(p, params).token_ids for p in prompts]
        engine = Engine(runner, model.tokenizer)
        together = collect(engine, [Request(p, params, f"q{i}") for i, p in enumerate(prompts)])
        assert [tokens_of(together[f"q{i}"]) for i in range(16)] == alone
        assert engine.scheduler.running_cells() == 0
        assert runner.used_cells() == engine.scheduler.cached_cells()
        texts = ["".join(d.text for d in together[f"q{i}"]) for i in range(16)]
        assert texts[0] == llm.generate(prompts[0], params).text
        # Now every slot holds a cached conversation: the same questions again reuse their
        # prefixes (all but the last prompt token) and still give the same tokens.
        again = collect(engine, [Request(p, params, f"again{i}") for i, p in enumerate(prompts)])
        assert [tokens_of(again[f"again{i}"]) for i in range(16)] == alone
        assert all(again[f"again{i}"][-1].usage.cached_tokens == len(prompts[i]) - 1 for i in range(16))
    finally:
        runner.close()
        model.close()


@pytest.mark.slow
def test_prefix_reuse_on_smollm2_gives_the_tokens_of_a_cold_run(llm):
    """A follow-up turn and a shared system prompt compute only their new tokens."""
    from slmkit.backends.llamacpp import LlamaCppModel

    model = LlamaCppModel(llm.model.path)
    runner = model.create_runner(context_length=1024, max_sequences=4, unified_kv=False)
    try:
        params = SamplingParams(temperature=0, max_tokens=16)
        first = llm.encode_prompt(llm.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}]))
        # Chunks under 64 tokens keep llama.cpp's attention off its tiled kernel, so reused
        # KV is bit-identical to recomputed KV (see SchedulerConfig.max_chunk_per_sequence).
        engine = Engine(runner, model.tokenizer, max_chunk_per_sequence=63)
        cold_runner = model.create_runner(context_length=1024, max_sequences=1, unified_kv=False)
        cold = Engine(cold_runner, model.tokenizer, prefix_caching=False, max_chunk_per_sequence=63)
        turn1 = collect(engine, [Request(first, params, "t1")])["t1"]
        answer = "".join(d.text for d in turn1)
        follow = llm.encode_prompt(llm.apply_chat_template([
            {"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": answer},
            {"role": "user", "content": "And what is 3 + 3?"}]))
        other = llm.encode_prompt(llm.apply_chat_template([{"role": "user", "content": "Name a color."}]))
        outs = collect(engine, [Request(follow, params, "t2")])["t2"]
        assert outs[-1].usage.cached_tokens >= len(first)
        assert tokens_of(outs) == tokens_of(collect(cold, [Request(follow, params, "c2")])["c2"])
        outs = collect(engine, [Request(other, params, "t3")])["t3"]
        assert outs[-1].usage.cached_tokens > 0  # the system prompt
        assert tokens_of(outs) == tokens_of(collect(cold, [Request(other, params, "c3")])["c3"])
        assert cold.scheduler.cached_cells() == 0
    finally:
        cold_runner.close()
        runner.close()
        model.close()


@pytest.mark.slow
def test_long_prompts_are_batch_invariant_with_chunks_under_64(llm):
    """Prompts of 100-300 tokens, prefilled in slices next to other sequences, reusing cached
    prefixes: with max_chunk_per_sequence=63 every answer equals the one computed alone."""
    from slmkit.backends.llamacpp import LlamaCppModel

    model = LlamaCppModel(llm.model.path)
    runner = model.create_runner(context_length=1024, max_sequences=6, unified_kv=False)
    alone_runner = model.create_runner(context_length=1024, max_sequences=1, unified_kv=False)
    try:
        story = "The river rose slowly through the night while the village slept. " * 12
        prompts = [llm.encode_prompt(llm.apply_chat_template([{"role": "user", "content": story[: 150 * (i + 2)]
                                                                + f" Question {i}: what rose?"}]))
                   for i in range(6)]
        assert min(len(p) for p in prompts) > 64
        params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
        alone_engine = Engine(alone_runner, model.tokenizer, prefix_caching=False, max_chunk_per_sequence=63)
        alone = [tokens_of(collect(alone_engine, [Request(p, params, f"a{i}")])[f"a{i}"])
                 for i, p in enumerate(prompts)]
        engine = Engine(runner, model.tokenizer, max_chunk_per_sequence=63, max_batch_tokens=128)
        for round_ in range(2):  # the second round reuses the cached prefixes of the first
            together = collect(engine, [Request(p, params, f"{round_}-{i}") for i, p in enumerate(prompts)])
            got = [tokens_of(together[f"{round_}-{i}"]) for i in range(6)]
            assert got == alone, sum(a != b for a, b in zip(got, alone))
        assert together["1-0"][-1].usage.cached_tokens > 0
    finally:
        alone_runner.close()
        runner.close()
        model.close()


def test_llamacpp_runner_takes_chunks_out_of_slot_order(llm):
    """The runner puts a batch in slot order (llama.cpp splits one in arrival order into more
    micro-batches) and must hand every chunk back its own logit rows."""
    from slmkit.backends.base import Chunk
    from slmkit.backends.llamacpp import LlamaCppModel

    model = LlamaCppModel(llm.model.path)
    prompts = [model.tokenizer.encode(t) for t in ("The capital of France is", "2 + 2 =", "Once upon a")]

    def run(order):
        runner = model.create_runner(context_length=256, max_sequences=4, unified_kv=False)
        try:
            prefill = runner.forward([Chunk(seq, prompts[seq], 0, all_logits=seq == 1) for seq in order])
            rows = {seq: [] for seq in order}
            start = 0
            for seq in order:
                k = len(prompts[seq]) if seq == 1 else 1
                rows[seq] = prefill[start:start + k].copy()
                start += k
            decode = runner.forward([Chunk(seq, [int(rows[seq][-1].argmax())], len(prompts[seq])) for seq in order])
            return rows, {seq: decode[i].copy() for i, seq in enumerate(order)}
        finally:
            runner.close()

    try:
        in_order, in_order_next = run([0, 1, 2])
        shuffled, shuffled_next = run([2, 0, 1])
        for seq in range(3):
            np.testing.assert_allclose(shuffled[seq], in_order[seq], atol=1e-4)
            np.testing.assert_allclose(shuffled_next[seq], in_order_next[seq], atol=1e-4)
        assert in_order[1].shape[0] == len(prompts[1])
    finally:
        model.close()
