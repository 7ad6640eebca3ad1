"""Tokens of one request in, text deltas out: detokenize, match stop strings, hold back.

Shared by the single-stream API and the batching engine, so both emit text the same way.
"""

from __future__ import annotations

from typing import Callable, Sequence

from slmkit.text import IncrementalDetokenizer, StopMatcher


class TextStream:
    """Turns generated token ids into safe-to-emit text.

    Never emits half a UTF-8 character, never emits a stop string, holds back only the text
    that could still become one. End-of-generation tokens contribute no text.
    """

    def __init__(self, token_bytes: Callable[[int], bytes], stop: Sequence[str] = ()):
        self._detokenizer = IncrementalDetokenizer(token_bytes)
        self._stops = StopMatcher(stop)
        self.stopped = False

    @property
    def matched_stop(self) -> str | None:
        return self._stops.matched

    def add(self, token_id: int) -> str:
        """Feed one generated token; returns the text it releases ("" if held back)."""
        if self.stopped:
            return ""
        text, self.stopped = self._stops.feed(self._detokenizer.add(token_id))
        return text

    def finish(self) -> str:
        """Text still held back when generation ends without a stop string."""
        if self.stopped:
            return ""
        text, self.stopped = self._stops.feed(self._detokenizer.flush())
        return text if self.stopped else text + self._stops.flush()
