"""Streams of `RequestOutput` deltas as `LLM` and `RemoteLLM` return them: whole or as an iterator."""

from __future__ import annotations

from typing import Iterator

from slmkit.types import RequestOutput


def chain_outputs(first: RequestOutput, rest: Iterator[RequestOutput]) -> Iterator[RequestOutput]:
    """The stream again, with its already-read first delta in front."""
    yield first
    yield from rest


def join_outputs(deltas: list[RequestOutput]) -> RequestOutput:
    """One output holding all the deltas' text and tokens, with the last one's ending."""
    last = deltas[-1]
    return RequestOutput(
        text="".join(d.text for d in deltas),
        token_ids=[t for d in deltas for t in d.token_ids],
        finish_reason=last.finish_reason, usage=last.usage, timings=last.timings,
        request_id=last.request_id,
    )
