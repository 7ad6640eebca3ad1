"""Faults inside one request fail that request only; a dying engine loop answers its callers."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from fakes import ByteTokenizer, FakeRunner

from slmkit.engine.async_engine import AsyncEngine
from slmkit.engine.engine import Engine, Request
from slmkit.errors import EngineDeadError, SlmkitError
from slmkit.types import SamplingParams

VOCAB = 258


def counting_model(tokens):
    """Next token = last + 1 (mod 200): every answer is predictable."""
    row = np.zeros(VOCAB, dtype=np.float32)
    row[(tokens[-1] + 1) % 200] = 10.0
    return row


def run(engine, requests):
    outputs = {r.request_id: [] for r in requests}
    for r in requests:
        engine.add_request(r, outputs[r.request_id].append)
    engine.run_until_done()
    return outputs


GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)


def test_a_raising_logits_processor_fails_only_its_request():
    def broken(token_ids, logits):
        raise ZeroDivisionError("user code bug")

    engine = Engine(FakeRunner(counting_model, vocab_size=VOCAB), ByteTokenizer())
    out = run(engine, [Request([10], GREEDY, "good"), Request([20], GREEDY.updated(logits_processors=[broken]), "bad"),
                       Request([30], GREEDY, "good2")])
    assert [t for d in out["good"] for t in d.token_ids] == [11, 12, 13, 14, 15, 16]
    assert [t for d in out["good2"] for t in d.token_ids] == [31, 32, 33, 34, 35, 36]
    error = out["bad"][-1].error
    assert isinstance(error, SlmkitError) and "ZeroDivisionError: user code bug" in error.message
    assert out["bad"][-1].finish_reason == "abort"
    assert not engine.has_work and engine.scheduler.running_cells() == 0


class ExplodingTokenizer(ByteTokenizer):
    """Detokenizing token 15 raises, as a broken vocabulary entry would."""

    def token_bytes(self, token_id):
        if token_id == 15:
            raise UnicodeError("corrupt piece")
        return super().token_bytes(token_id)


def test_a_detokenizer_failure_fails_only_its_request():
    engine = Engine(FakeRunner(counting_model, vocab_size=VOCAB), ExplodingTokenizer())
    out = run(engine, [Request([12], GREEDY, "hits-15"), Request([40], GREEDY, "fine")])
    assert "corrupt piece" in out["hits-15"][-1].error.message
    assert [t for d in out["fine"] for t in d.token_ids] == [41, 42, 43, 44, 45, 46]
    assert out["fine"][-1].finish_reason == "length" and out["fine"][-1].error is None
    assert not engine.has_work


def test_a_request_that_cannot_start_is_refused_and_the_loop_goes_on(monkeypatch):
    import slmkit.engine.engine as engine_module

    real = engine_module.Sampler

    def sampler(params, *args, **kwargs):
        if params.seed == 7:
            raise ValueError("seed rejected by the generator")
        return real(params, *args, **kwargs)

    monkeypatch.setattr(engine_module, "Sampler", sampler)
    engine = AsyncEngine(Engine(FakeRunner(counting_model, vocab_size=VOCAB), ByteTokenizer()))

    async def answer(seed):
        tokens = []
        async for out in engine.generate(Request([50], GREEDY.updated(seed=seed))):
            tokens.extend(out.token_ids)
        return tokens

    async def main():
        with pytest.raises(SlmkitError, match="seed rejected"):
            await answer(7)
        return await answer(8)

    try:
        assert asyncio.run(main()) == [51, 52, 53, 54, 55, 56]
        assert engine.loop.alive
    finally:
        engine.stop(timeout=10)


class LoopKiller(BaseException):
    """Something no `except Exception` catches, as a bug in the loop itself would be."""


def test_a_dead_engine_loop_answers_waiting_callers_and_refuses_new_ones():
    calls = {"n": 0}

    def slow_then_fatal(tokens):
        calls["n"] += 1
        if calls["n"] == 3:
            raise LoopKiller("the loop itself broke")
        return counting_model(tokens)

    class FatalRunner(FakeRunner):
        def forward(self, chunks):
            if calls["n"] >= 2:
                calls["n"] += 1
                raise LoopKiller("the loop itself broke")
            return super().forward(chunks)

    engine = AsyncEngine(Engine(FatalRunner(slow_then_fatal, vocab_size=VOCAB), ByteTokenizer()))

    async def main():
        async def answer():
            async for _ in engine.generate(Request([60], SamplingParams(temperature=0, max_tokens=50, ignore_eos=True))):
                pass

        results = await asyncio.wait_for(asyncio.gather(answer(), answer(), return_exceptions=True), 10)
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, EngineDeadError) for r in results), results
    assert "LoopKiller" in results[0].message and results[0].status_code == 503
    engine.loop._thread.join(5)
    assert not engine.loop.alive and "the loop itself broke" in engine.loop.failure

    async def after():
        async for _ in engine.generate(Request([1], GREEDY)):
            pass

    with pytest.raises(EngineDeadError):
        asyncio.run(after())
    engine.stop(timeout=5)  # returns at once: no hang on a dead loop
