"""Token ids to text, one token at a time, without ever emitting half a UTF-8 character.

Byte-level tokenizers split multi-byte characters (accents, CJK, emoji) across 2-4 tokens, so a
token's bytes alone are often not valid UTF-8. Decoding each token separately would print U+FFFD
mid-stream; decoding the whole sequence each step would cost O(n) per token. An incremental UTF-8
decoder keeps only the few bytes of an unfinished character, which makes each step O(1).
"""

from __future__ import annotations

import codecs
from typing import Callable, Iterable

TokenBytes = Callable[[int], bytes]
"""``token_bytes(token_id) -> bytes``: what one token contributes to the text (see `Tokenizer`)."""


class IncrementalDetokenizer:
    """Turns generated token ids into text deltas, holding back incomplete characters.

    ``add`` returns the text that the token completes (often "" while a character is split);
    ``flush`` ends the stream, turning any bytes still pending into U+FFFD.
    """

    def __init__(self, token_bytes: TokenBytes):
        self._token_bytes = token_bytes
        # errors="replace": invalid bytes become U+FFFD as soon as they are known to be invalid,
        # while a valid but unfinished sequence waits for the next token.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id: int) -> str:
        """Feed one token; return the newly completed text."""
        return self._decoder.decode(self._token_bytes(token_id))

    def flush(self) -> str:
        """End of generation: return what is left, incomplete bytes as U+FFFD, and reset."""
        text = self._decoder.decode(b"", final=True)
        self._decoder.reset()
        return text


def detokenize_all(token_bytes: TokenBytes, token_ids: Iterable[int]) -> str:
    """Decode a whole sequence at once (incomplete or invalid bytes become U+FFFD)."""
    return b"".join(token_bytes(token_id) for token_id in token_ids).decode("utf-8", errors="replace")
