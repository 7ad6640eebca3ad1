"""Retries (attempts, the waits taken: Retry-After, GitHub's x-ratelimit-timeremaining, backoff
with jitter) and streams that break, are aborted or closed early. No test sleeps through a
backoff: the transport's injected sleep records the waits instead."""

from __future__ import annotations

import asyncio
import time

import pytest
from fake_providers import (  # noqa: F401  (fixtures)
    CHAT,
    REPLY,
    Drop,
    FakeProvider,
    Hangup,
    Reply,
    Slow,
    Stall,
    StreamError,
    arun,
    chat,
    fake,
    keep_responses,
    provider_for,
    run,
    transport,
    waits,
)

from slmkit.errors import (
    InvalidParameterError,
    ProviderTimeoutError,
    ProviderError,
    ProviderRateLimitError,
    ProviderUnavailableError,
)
from slmkit.providers import ProviderRequest, ProviderSettings, ProvidersConfig, RetryPolicy, get_provider
from slmkit.providers.http import retry_after_seconds


# -- retries ------------------------------------------------------------------------------
def test_retry_after_then_5xx_then_success(transport, waits):
    with FakeProvider("openai") as fake:
        fake.queue(Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "2"}), Reply(503))
        outs = run(provider_for(fake, transport), chat(fake))
    assert "".join(o.text for o in outs) == REPLY
    assert len(fake.requests) == 3
    # Retry-After exactly; then backoff for retry 1: d = 0.5 * 2 = 1.0, jitter 0.5 -> d/2 + 0.5 * d/2
    assert waits.waits == [2.0, 0.75]


def test_async_retries_use_the_async_sleep(transport, waits):
    with FakeProvider("ollama", key=None) as fake:
        fake.queue(Reply(503, {"error": "busy"}), Reply(429, {"error": "later"}, {"retry-after-ms": "1500"}))
        outs = arun(provider_for(fake, transport), chat(fake))
    assert "".join(o.text for o in outs) == REPLY and len(fake.requests) == 3
    assert waits.waits == [0.375, 1.5]


def test_github_time_remaining_wins_over_retry_after(transport, waits):
    with FakeProvider("github") as fake:
        fake.queue(Reply(429, {"error": {"code": "RateLimitReached", "message": "Rate limit of 15 per 60s"}},
                         {"x-ratelimit-timeremaining": "7", "Retry-After": "30"}))
        run(provider_for(fake, transport), chat(fake))
    assert waits.waits == [7.0]


def test_a_long_retry_after_is_raised_at_once(transport, waits):
    with FakeProvider("github") as fake:
        fake.queue(Reply(429, {"error": {"code": "RateLimitReached", "message": "daily limit"}},
                         {"x-ratelimit-timeremaining": "3600"}))
        with pytest.raises(ProviderRateLimitError) as err:
            run(provider_for(fake, transport), chat(fake))
    assert err.value.retry_after == 3600 and "3600" in err.value.message and "daily limit" in err.value.message
    assert len(fake.requests) == 1 and waits.waits == []


def test_retries_give_up_after_max_retries(transport, waits):
    with FakeProvider("nim") as fake:
        fake.queue(*[Reply(503, {"status": 503, "title": "Service Unavailable", "detail": "no capacity"})] * 4)
        with pytest.raises(ProviderUnavailableError) as err:
            run(provider_for(fake, transport), chat(fake))
    assert len(fake.requests) == 4 and waits.waits == [0.375, 0.75, 1.5]
    assert "no capacity" in err.value.message and "4 attempts" in err.value.message


def test_rate_limit_exhausted_is_a_rate_limit_error(transport, waits):
    with FakeProvider("openai") as fake:
        fake.queue(*[Reply(429, {"error": {"message": "too many"}}, {"Retry-After": "1"})] * 4)
        with pytest.raises(ProviderRateLimitError) as err:
            run(provider_for(fake, transport), chat(fake))
    assert err.value.retry_after == 1 and waits.waits == [1.0, 1.0, 1.0] and err.value.status_code == 429


def test_not_retried_statuses(transport, waits):
    with FakeProvider("openai") as fake:
        fake.queue(Reply(501, {"error": {"message": "no"}}))
        with pytest.raises(ProviderUnavailableError):
            run(provider_for(fake, transport), chat(fake))
    assert len(fake.requests) == 1 and waits.waits == []


def test_hangup_before_answer_is_retried(transport, waits):
    with FakeProvider("azure") as fake:
        fake.queue(Hangup())
        outs = run(provider_for(fake, transport), chat(fake))
    assert "".join(o.text for o in outs) == REPLY and len(fake.requests) == 2 and waits.waits == [0.375]


def test_connection_refused_retries_then_names_the_host_variable(transport, waits):
    from server_process import free_port

    provider = get_provider("ollama", transport=transport, config=ProvidersConfig(
        {"ollama": ProviderSettings(base_url=f"127.0.0.1:{free_port()}")}))
    with pytest.raises(ProviderUnavailableError) as err:
        run(provider, ProviderRequest("phi3.5", messages=CHAT))
    assert "OLLAMA_HOST" in err.value.message and "4 attempt" in err.value.message
    assert waits.waits == [0.375, 0.75, 1.5]


def test_backoff_is_exponential_with_bounded_jitter():
    import random

    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    rng = random.Random(1).random
    for retry in range(8):
        ceiling = min(8.0, 0.5 * 2 ** retry)
        samples = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(ceiling / 2 <= s <= ceiling for s in samples)
        assert max(samples) - min(samples) > ceiling / 4  # really jittered


def test_retry_after_header_forms():
    from email.utils import formatdate

    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"x-ratelimit-timeremaining": "12", "retry-after": "9"}) == 12.0
    assert 18 < retry_after_seconds({"retry-after": formatdate(time.time() + 20, usegmt=True)}) <= 20
    assert retry_after_seconds({"retry-after": "soon"}) is None and retry_after_seconds({}) is None


# -- streams that break, abort, closing early ---------------------------------------------
@pytest.mark.parametrize("collect", ["sync", "async"])
def test_no_retry_once_tokens_streamed(fake, transport, waits, collect):
    fake.queue(Drop(after=3))
    provider = provider_for(fake, transport)
    received: list[str] = []

    async def consume_async():
        async for out in provider.astream(chat(fake)):
            received.append(out.text)

    with pytest.raises(ProviderError) as err:
        if collect == "sync":
            for out in provider.stream(chat(fake)):
                received.append(out.text)
        else:
            asyncio.run(consume_async())
    assert "".join(received) == "Hello there!"  # the deltas before the break reached the caller
    assert err.value.code == "stream_interrupted" and "not retried" in err.value.message
    assert len(fake.requests) == 1 and waits.waits == []


def test_error_in_the_stream_is_raised_after_the_deltas(fake, transport):
    fake.queue(StreamError(after=2, message="out of memory"))
    received: list[str] = []
    with pytest.raises(ProviderError) as err:
        for out in provider_for(fake, transport).stream(chat(fake)):
            received.append(out.text)
    assert "".join(received) == "Hello there"
    assert "out of memory" in err.value.message and len(fake.requests) == 1


@pytest.mark.parametrize("kind", ["openai", "ollama"])
def test_closing_the_async_stream_early_closes_the_response(kind, transport):
    with FakeProvider(kind, key=None) as fake:
        fake.queue(Slow(delay=0.02))
        provider = provider_for(fake, transport)
        responses = keep_responses(transport)  # held here, so only an explicit close closes them

        async def take_three():
            stream = provider.astream(chat(fake))
            got = [await stream.__anext__() for _ in range(3)]
            await stream.aclose()
            # Checked inside the loop: its shutdown would close the response anyway.
            deadline = time.monotonic() + 5
            while not fake.disconnected.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return got, fake.disconnected.is_set()

        got, disconnected = asyncio.run(take_three())
        assert [o.text for o in got] == [" tok0", " tok1", " tok2"]
        assert disconnected, "the server never saw the client go away"
        assert len(responses) == 1 and responses[0].is_closed


def test_closing_the_sync_stream_early_closes_the_response(transport):
    with FakeProvider("github") as fake:
        fake.queue(Slow(delay=0.02))
        responses = keep_responses(transport)
        stream = provider_for(fake, transport).stream(chat(fake))
        assert next(stream).text == " tok0"
        stream.close()
        assert fake.disconnected.wait(5)
        assert len(responses) == 1 and responses[0].is_closed


def test_abort_ends_the_stream_with_abort(transport):
    with FakeProvider("nim") as fake:
        fake.queue(Slow(delay=0.01))
        provider = provider_for(fake, transport)
        request = chat(fake)
        outs = []
        for out in provider.stream(request):
            outs.append(out)
            if len(outs) == 2:
                assert provider.abort(request.request_id)
        assert outs[-1].finish_reason == "abort" and len(outs) <= 4
        assert fake.disconnected.wait(5)
        assert not provider.abort(request.request_id)  # no longer running


def test_stream_validation_happens_before_any_io(transport):
    with FakeProvider("ollama", key=None) as fake:
        provider = provider_for(fake, transport)
        with pytest.raises(InvalidParameterError):
            provider.stream(chat(fake, ignore_eos=True))  # raised at the call, not at the first next()
    assert fake.requests == []


@pytest.mark.parametrize("stall", [Stall(30), Slow(delay=30, pieces=2)], ids=["before-answer", "mid-stream"])
def test_a_provider_that_hangs_is_cut_by_the_read_timeout(stall, waits):
    """Silent before the answer (retried, then given up) or in the middle of it (not retried):
    either way the caller gets a timeout error after about the read timeout, not a hang."""
    from slmkit.providers.http import HttpTransport, Timeouts

    quick = HttpTransport(timeouts=Timeouts(connect=2, read=0.5), retry=RetryPolicy(max_retries=1, base_delay=0.1),
                          sleep=waits.sleep, async_sleep=waits.async_sleep, random=lambda: 0.5)
    with FakeProvider("openai") as fake:
        fake.queue(stall, stall)
        started = time.monotonic()
        with pytest.raises(ProviderTimeoutError, match="timeout"):
            run(provider_for(fake, quick), chat(fake))
        assert time.monotonic() - started < 5
