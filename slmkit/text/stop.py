"""Stop strings over streamed text: never emit a stop, hold back only what could become one.

Text arrives in small pieces (one token's worth), so a stop string can be split across many
pieces. The matcher keeps back the longest tail of the text seen so far that is still the start of
some stop string, and releases everything before it at once, so streaming stays as live as it can.
"""

from __future__ import annotations

from typing import Sequence


class StopMatcher:
    """Cuts a text stream at the first stop string.

    ``feed(text)`` returns ``(safe_text, stopped)``: the text that can be shown now and whether a
    stop string was found. On a stop, ``safe_text`` ends right before the stop; the stop and
    everything after it are dropped, `matched` names the stop, and later feeds return ``("", True)``.
    ``flush()`` returns the held-back text when generation ends without a stop.

    When several stops match, the one that is complete first in the stream wins (on a tie, the
    longer one). That rule gives the same result however the text is split into pieces.
    """

    def __init__(self, stops: Sequence[str]):
        self.stops: tuple[str, ...] = tuple(dict.fromkeys(s for s in stops if s))
        self.matched: str | None = None
        self._pending = ""
        self._longest = max((len(s) for s in self.stops), default=0)
        # Every proper prefix of every stop: the tails worth holding back.
        self._prefixes = {s[:k] for s in self.stops for k in range(1, len(s))}

    @property
    def stopped(self) -> bool:
        return self.matched is not None

    @property
    def held_back(self) -> str:
        """Text received but not yet released (a possible start of a stop string)."""
        return self._pending

    def feed(self, text: str) -> tuple[str, bool]:
        """Add streamed text; return the text safe to emit now and whether a stop was hit."""
        if self.matched is not None:
            return "", True
        if not self.stops:
            return text, False
        buffer = self._pending + text
        cut = self._first_match(buffer)
        if cut is not None:
            start, stop = cut
            self.matched = stop
            self._pending = ""
            return buffer[:start], True
        keep = self._held_back_length(buffer)
        self._pending = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep], False

    def flush(self) -> str:
        """End of generation: release the held-back text (it never became a stop)."""
        text, self._pending = self._pending, ""
        return text

    def _first_match(self, buffer: str) -> tuple[int, str] | None:
        # The held-back text cannot hold a whole stop (it would have matched on an earlier
        # feed), so any match ends in the new text; the search still starts at 0 because the
        # match may begin inside the held-back part.
        best: tuple[int, int, str] | None = None  # (end, start, stop)
        for stop in self.stops:
            start = buffer.find(stop)
            if start < 0:
                continue
            candidate = (start + len(stop), start, stop)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
        return None if best is None else (best[1], best[2])

    def _held_back_length(self, buffer: str) -> int:
        for length in range(min(len(buffer), self._longest - 1), 0, -1):
            if buffer[len(buffer) - length :] in self._prefixes:
                return length
        return 0
