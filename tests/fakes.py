"""Test doubles for the backend seam: a toy `Runner` and a byte-level `Tokenizer` (nanochat style).

Import them from any test (pytest puts ``tests/`` on ``sys.path``)::

    from fakes import ByteTokenizer, FakeRunner

`FakeRunner` is stricter than a real backend on purpose: it asserts that every chunk continues
its sequence exactly where the KV ends, and the logits it returns are read-only, so a caller that
loses track of positions or writes into the runner's memory fails loudly.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from slmkit.backends.base import Chunk, SpecialTokens
from slmkit.errors import ContextLengthError, InvalidParameterError, SlmkitError

NextLogits = Callable[[Sequence[int]], np.ndarray]


class FakeRunner:
    """A deterministic toy model behind the `Runner` protocol.

    `model` decides the next-token logits from the tokens a sequence holds so far, either as
    a transition table (``model[last_token]`` is the logits row, shape ``[vocab, vocab]``) or as
    a function ``fn(tokens) -> row`` of the whole sequence. The runner keeps each sequence's
    token list as its "KV cache" and records every `forward` batch in ``batches``.

    ``fail_on_call=n`` makes the n-th `forward` (1-based) raise `RuntimeError`, to test cleanup.
    """

    def __init__(
        self,
        model: np.ndarray | NextLogits,
        *,
        vocab_size: int | None = None,
        max_sequences: int = 8,
        context_length: int = 512,
        kv_cells: int | None = None,
        max_batch_tokens: int = 64,
        fail_on_call: int | None = None,
    ):
        if isinstance(model, np.ndarray):
            table = np.asarray(model, dtype=np.float32)
            if table.ndim != 2 or table.shape[0] != table.shape[1]:
                raise ValueError(f"a transition table must be [vocab, vocab], got {table.shape}")
            self.vocab_size = table.shape[1]
            self._next_logits: NextLogits = lambda tokens: table[tokens[-1]]
        else:
            if vocab_size is None:
                raise ValueError("give vocab_size with a model function")
            self.vocab_size = vocab_size
            self._next_logits = model
        self.max_sequences = max_sequences
        self.context_length = context_length
        self.kv_cells = kv_cells or context_length  # default: one pool shared by all sequences
        self.max_batch_tokens = max_batch_tokens
        self.fail_on_call = fail_on_call
        self.kv: list[list[int]] = [[] for _ in range(max_sequences)]
        self.forward_calls = 0
        self.batches: list[list[Chunk]] = []

    def forward(self, chunks: list[Chunk]) -> np.ndarray:
        """Append each chunk to its sequence; logits for chunks that want them, in chunk order."""
        self.forward_calls += 1
        if self.fail_on_call == self.forward_calls:
            raise RuntimeError(f"FakeRunner: forward call {self.forward_calls} fails as asked")
        assert chunks, "forward called without chunks"
        n_tokens = sum(len(chunk.token_ids) for chunk in chunks)
        assert n_tokens <= self.max_batch_tokens, (
            f"batch of {n_tokens} tokens exceeds max_batch_tokens={self.max_batch_tokens}"
        )
        seen = [chunk.seq_id for chunk in chunks]
        assert len(set(seen)) == len(seen), f"a sequence appears twice in one batch: {seen}"
        rows = []
        for chunk in chunks:
            self._check_seq(chunk.seq_id)
            assert len(chunk.token_ids) > 0, f"empty chunk for sequence {chunk.seq_id}"
            held = len(self.kv[chunk.seq_id])
            assert chunk.start_pos == held, (
                f"sequence {chunk.seq_id} holds {held} tokens, chunk starts at {chunk.start_pos}"
            )
            if held + len(chunk.token_ids) > self.context_length:
                raise ContextLengthError(
                    f"sequence {chunk.seq_id} would reach {held + len(chunk.token_ids)} tokens; "
                    f"the context holds {self.context_length}"
                )
            for token in chunk.token_ids:
                assert 0 <= token < self.vocab_size, f"token {token} outside the vocabulary"
            if chunk.all_logits:  # one row per token: what follows each prefix
                for token in chunk.token_ids:
                    self.kv[chunk.seq_id].append(int(token))
                    rows.append(np.asarray(self._next_logits(list(self.kv[chunk.seq_id])), np.float32))
                continue
            self.kv[chunk.seq_id].extend(int(t) for t in chunk.token_ids)
            if chunk.want_logits:
                rows.append(np.asarray(self._next_logits(list(self.kv[chunk.seq_id])), np.float32))
        self.batches.append(
            [Chunk(c.seq_id, list(c.token_ids), c.start_pos, c.want_logits, c.all_logits) for c in chunks]
        )
        assert self.used_cells() <= self.kv_cells, f"{self.used_cells()} cells used of {self.kv_cells}"
        out = np.array(rows, dtype=np.float32).reshape(len(rows), self.vocab_size)
        out.flags.writeable = False
        return out

    def truncate(self, seq_id: int, length: int) -> None:
        self._check_seq(seq_id)
        del self.kv[seq_id][max(0, length) :]

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        self._check_seq(src)
        self._check_seq(dst)
        if length > len(self.kv[src]):
            raise SlmkitError(f"sequence {src} holds {len(self.kv[src])} tokens, cannot copy {length}")
        self.kv[dst] = self.kv[src][:length]

    def free(self, seq_id: int) -> None:
        self._check_seq(seq_id)
        self.kv[seq_id] = []

    def used_cells(self) -> int:
        return sum(len(tokens) for tokens in self.kv)

    def sequence_length(self, seq_id: int) -> int:
        self._check_seq(seq_id)
        return len(self.kv[seq_id])

    def _check_seq(self, seq_id: int) -> None:
        assert 0 <= seq_id < self.max_sequences, (
            f"seq id {seq_id} outside 0..{self.max_sequences - 1}"
        )


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, then special tokens: ``<|bos|>`` 256, ``<|eos|>`` 257.

    `extra_specials` adds more named specials after those (``"<|im_start|>"`` gets 258, ...);
    with ``parse_special`` their text in a prompt encodes to the single id. Only ``<|eos|>``
    ends generation unless `end_of_generation` names others.
    """

    BOS = 256
    EOS = 257

    def __init__(
        self,
        extra_specials: Sequence[str] = (),
        *,
        end_of_generation: Sequence[str] = ("<|eos|>",),
        add_bos: bool = False,
    ):
        names = ["<|bos|>", "<|eos|>", *extra_specials]
        self._special_ids = {name: 256 + i for i, name in enumerate(names)}
        self._special_names = {i: name for name, i in self._special_ids.items()}
        self._special_pattern = re.compile("|".join(re.escape(name) for name in names))
        self.vocab_size = 256 + len(names)
        self.special = SpecialTokens(
            bos=self.BOS,
            eos=self.EOS,
            end_of_generation=frozenset(self._special_ids[name] for name in end_of_generation),
            add_bos=add_bos,
        )

    def encode(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        ids = [self.BOS] if add_special and self.special.add_bos else []
        position = 0
        if parse_special:
            for match in self._special_pattern.finditer(text):
                ids.extend(text[position : match.start()].encode("utf-8"))
                ids.append(self._special_ids[match.group()])
                position = match.end()
        ids.extend(text[position:].encode("utf-8"))
        return ids

    def decode(self, token_ids: Sequence[int], *, skip_special: bool = True) -> str:
        data = bytearray()
        for token_id in token_ids:
            self._check_id(token_id)
            if token_id < 256:
                data.append(token_id)
            elif not skip_special:
                data.extend(self._special_names[token_id].encode("utf-8"))
        return data.decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        self._check_id(token_id)
        return bytes([token_id]) if token_id < 256 else b""

    def token_text(self, token_id: int) -> str:
        self._check_id(token_id)
        if token_id >= 256:
            return self._special_names[token_id]
        return chr(token_id) if token_id < 128 else f"<0x{token_id:02X}>"

    def token_id(self, text: str) -> int | None:
        """The id of a token spelled exactly `text` (a special's name or one ASCII char), or None."""
        ids = self.encode(text, add_special=False)
        return ids[0] if len(ids) == 1 else None

    def _check_id(self, token_id: int) -> None:
        if not 0 <= token_id < self.vocab_size:
            raise InvalidParameterError(
                "token_ids", f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})"
            )
