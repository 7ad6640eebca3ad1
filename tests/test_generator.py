"""The token loop on a fake runner: laziness, rewind, limits, logits access, cleanup."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import FakeRunner

from slmkit.engine.generator import Generator
from slmkit.errors import ContextLengthError, InvalidParameterError, InvalidRequestError
from slmkit.types import SamplingParams

VOCAB = 8
END = 7


def counting_model(tokens):
    """Next token = (last + 1) % 7; token 7 (END) only follows 6."""
    row = np.full(VOCAB, -10.0, dtype=np.float32)
    last = tokens[-1]
    row[END if last == 6 else (last + 1) % 7] = 10.0
    return row


def make(params=None, **runner_kw):
    runner = FakeRunner(counting_model, vocab_size=VOCAB, **runner_kw)
    gen = Generator(runner, params or SamplingParams(temperature=0), end_token_ids=frozenset({END}))
    return runner, gen


def run(gen):
    while not gen.is_done():
        gen.generate_next_token()


def test_one_forward_per_token_and_none_after_the_last():
    runner, gen = make(SamplingParams(temperature=0, max_tokens=3))
    gen.append_tokens([1, 2])
    run(gen)
    assert gen.get_sequence() == [1, 2, 3, 4, 5]
    assert gen.finish_reason == "length"
    # prefill + 2 decode steps: the third sampled token is never fed to the model
    assert runner.forward_calls == 3


def test_end_token_stops_and_ignore_eos_does_not():
    runner, gen = make()
    gen.append_tokens([5])
    run(gen)
    assert gen.get_sequence() == [5, 6, END] and gen.finish_reason == "stop"
    runner, gen = make(SamplingParams(temperature=0, max_tokens=4, ignore_eos=True))
    gen.append_tokens([5])
    run(gen)
    assert gen.finish_reason == "length"


def test_long_prompts_are_fed_in_chunks_of_the_batch_limit():
    runner, gen = make(SamplingParams(temperature=0, max_tokens=1), max_batch_tokens=4)
    gen.append_tokens([1, 2, 3, 4, 5, 6, 0, 1, 2, 3])
    run(gen)
    sizes = [len(batch[0].token_ids) for batch in runner.batches]
    assert sizes == [4, 4, 2]
    assert [batch[0].want_logits for batch in runner.batches] == [False, False, True]


def test_rewind_drops_kv_and_regenerates_the_same_tokens():
    runner, gen = make(SamplingParams(temperature=0, max_tokens=5))
    gen.append_tokens([0])
    run(gen)
    full = gen.get_sequence()
    gen.rewind_to(3)
    assert gen.get_sequence() == full[:3] and not gen.is_done()
    assert runner.sequence_length(0) <= 3
    run(gen)
    assert gen.get_sequence() == full


def test_rewind_bounds_and_generate_after_done():
    runner, gen = make(SamplingParams(temperature=0, max_tokens=1))
    gen.append_tokens([1])
    run(gen)
    with pytest.raises(InvalidRequestError, match="done"):
        gen.generate_next_token()
    with pytest.raises(InvalidParameterError, match="length"):
        gen.rewind_to(5)


def test_append_tokens_continues_a_conversation():
    runner, gen = make(SamplingParams(temperature=0, max_tokens=2))
    gen.append_tokens([1])
    run(gen)
    gen.append_tokens([0])
    assert not gen.is_done()
    run(gen)
    assert gen.get_sequence() == [1, 2, 3, 0, 1, 2]


def test_context_limit_is_checked_before_anything_runs():
    runner, gen = make(context_length=8)
    with pytest.raises(ContextLengthError, match="context holds 8"):
        gen.append_tokens(list(range(7)) + [0])
    assert runner.forward_calls == 0
    gen.append_tokens([0, 1, 2])
    run(gen)  # max_tokens 256, but the context ends it
    assert gen.finish_reason in ("length", "stop") and gen.token_count <= 8


def test_get_and_set_logits():
    runner, gen = make(SamplingParams(temperature=0, max_tokens=2))
    gen.append_tokens([1])
    logits = gen.get_logits()
    assert int(np.argmax(logits)) == 2
    logits[:] = -1.0
    logits[6] = 1.0
    gen.set_logits(logits)
    assert gen.generate_next_token() == 6
    with pytest.raises(InvalidParameterError, match="expected 8"):
        gen.set_logits(np.zeros(3))


def test_bad_tokens_and_empty_sequence_are_clear_errors():
    runner, gen = make()
    with pytest.raises(InvalidRequestError, match="append_tokens"):
        gen.generate_next_token()
    with pytest.raises(InvalidParameterError, match="outside the vocabulary"):
        gen.append_tokens([99])
    with pytest.raises(InvalidParameterError):
        gen.append_tokens([])


def test_close_frees_the_sequence():
    freed = []
    runner = FakeRunner(counting_model, vocab_size=VOCAB)
    with Generator(runner, SamplingParams(temperature=0, max_tokens=3), seq_id=2, on_close=freed.append) as gen:
        gen.append_tokens([1, 2])
        run(gen)
        assert runner.used_cells() > 0
    assert runner.used_cells() == 0 and freed == [2]
    with pytest.raises(InvalidRequestError, match="closed"):
        gen.append_tokens([1])
