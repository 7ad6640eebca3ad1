"""One generation as every route runs it: deadline, metrics, and abort when the caller leaves."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import AsyncIterator, Sequence

from slmkit.backends.base import EmbeddingSpan
from slmkit.errors import RequestTimeoutError
from slmkit.server.metrics import Metrics
from slmkit.server.models import ServedModel
from slmkit.types import RequestOutput, SamplingParams, TokenLogprob, ToolCall, Usage


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


async def stream_tokens(served: ServedModel, prompt_ids: list[int], params: SamplingParams, *,
                        metrics: Metrics, timeout: float, max_queue: int, request_id: str | None = None,
                        embeddings: Sequence[EmbeddingSpan] = ()) -> AsyncIterator[RequestOutput]:
    """Deltas of one completion. Leaving early (disconnect, error) aborts it at once; running
    past `timeout` seconds aborts it and raises `RequestTimeoutError`."""
    started = time.perf_counter()
    deadline = started + timeout
    gen = served.generate(prompt_ids, params, request_id or new_id("req"), max_queue, embeddings)
    last = None
    try:
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise asyncio.TimeoutError
            try:
                out = await asyncio.wait_for(gen.__anext__(), remaining)
            except StopAsyncIteration:
                return
            now = time.perf_counter()
            if out.token_ids:
                if last is None:
                    metrics.ttft.labels(served.name).observe(now - started)
                else:
                    metrics.itl.labels(served.name).observe(now - last)
                last = now
            if out.finished:
                metrics.prompt_tokens.labels(served.name).inc(out.usage.prompt_tokens)
                metrics.cached_tokens.labels(served.name).inc(out.usage.cached_tokens)
                metrics.generation_tokens.labels(served.name).inc(out.usage.completion_tokens)
            yield out
    except asyncio.TimeoutError:
        raise RequestTimeoutError(
            f"the request ran past the server's limit of {timeout:g} s and was stopped; ask for "
            "fewer tokens or raise --request-timeout"
        ) from None
    finally:
        try:
            await gen.aclose()
        except RuntimeError:
            # "already running": a wait_for cancelled twice (the client left; anyio cancels again
            # while wait_for waits for its __anext__ task) returns before that task has unwound.
            # The task's CancelledError ends the generator itself, and so aborts the sequence.
            pass


@dataclass
class Completion:
    """A whole completion gathered from its deltas."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    stop_sequence: str | None = None
    usage: Usage = field(default_factory=Usage)
    ttft: float = 0.0
    decode_seconds: float = 0.0
    tool_calls: list[ToolCall] = field(default_factory=list)  # parsed by a remote provider


async def collect(deltas: AsyncIterator[RequestOutput]) -> Completion:
    done = Completion()
    pieces = []
    try:
        async for out in deltas:
            pieces.append(out.text)
            done.token_ids.extend(out.token_ids)
            if out.logprobs:
                done.logprobs.extend(out.logprobs)
            done.tool_calls.extend(out.tool_calls)
            if out.finished:
                done.finish_reason = out.finish_reason
                done.stop_sequence = out.stop_sequence
                done.usage = out.usage
                done.ttft = out.timings.time_to_first_token
                done.decode_seconds = out.timings.decode_seconds
    finally:  # also when cancelled (the client left): closing aborts the request now
        await deltas.aclose()
    done.text = "".join(pieces)
    return done


def seeds_for(params: SamplingParams, n: int) -> list[SamplingParams]:
    """``n`` choices: distinct seeds (derived from the request's seed, if any)."""
    if n == 1:
        return [params]
    return [params.updated(seed=None if params.seed is None else params.seed + i) for i in range(n)]
