"""The seam every engine rests on: a `Runner` turns token ids of many sequences into logits.

A runner owns the KV cache and nothing else: no text, no sampling policy, no HTTP. The
`Generator` drives one sequence through it, beam search several sequences sharing a copied
prefix, and the batching engine many independent sequences in one `forward` per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from slmkit import limits
from slmkit.errors import ContextLengthError, InvalidParameterError, SlmkitError


@dataclass
class EmbeddingSpan:
    """Input rows that replace the token embeddings at positions ``start .. start + len(rows) - 1``
    of a sequence: an image's features in a vision model's prompt. ``rows`` is ``[n, hidden]`` in the
    runner's own array type (a torch tensor for the torch engine)."""

    start: int
    rows: Any

    @property
    def end(self) -> int:
        return self.start + len(self.rows)

    def within(self, start: int, end: int) -> "EmbeddingSpan | None":
        """The part of the span at positions ``start .. end - 1``, or None if they do not overlap."""
        first, last = max(self.start, start), min(self.end, end)
        if first >= last:
            return None
        if (first, last) == (self.start, self.end):
            return self
        return EmbeddingSpan(first, self.rows[first - self.start : last - self.start])


def spans_within(spans: Sequence[EmbeddingSpan], start: int, end: int) -> list[EmbeddingSpan]:
    """The parts of ``spans`` at positions ``start .. end - 1`` (a chunk's, or a rewound prefix's)."""
    return [part for part in (span.within(start, end) for span in spans) if part is not None]


@dataclass
class Chunk:
    """Part of one sequence to run this step."""

    seq_id: int
    token_ids: Sequence[int]  # a prompt chunk, or the one new token when decoding
    start_pos: int  # position of token_ids[0] in the sequence
    want_logits: bool = True  # logits for the last token of the chunk only
    all_logits: bool = False  # logits for every token of the chunk (scoring text: perplexity, choices)
    # Spans overlapping this chunk (they may reach past it: a runner uses the overlap only). The torch
    # runner takes them; vision models run on it only.
    embeddings: Sequence[EmbeddingSpan] = ()


@runtime_checkable
class Runner(Protocol):
    vocab_size: int
    max_sequences: int  # seq ids are 0 .. max_sequences-1
    context_length: int  # most tokens one sequence can hold
    kv_cells: int  # KV cells of all sequences together (== context_length when they share a pool)
    max_batch_tokens: int  # most tokens one `forward` call takes

    def forward(self, chunks: list[Chunk]) -> np.ndarray:
        """Run the chunks; return ``[n_wanted, vocab]`` float32 logits in chunk order
        (one row per token of an ``all_logits`` chunk).

        The array may be a view into the runner's memory: it is valid until the next call.
        """
        ...

    def truncate(self, seq_id: int, length: int) -> None:
        """Rewind: forget the KV of positions ``>= length`` of the sequence."""
        ...

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Make positions ``[0, length)`` of ``dst`` share ``src``'s KV (prefix caching, beams)."""
        ...

    def free(self, seq_id: int) -> None:
        """Drop every KV cell of the sequence."""
        ...

    def used_cells(self) -> int:
        """KV cells in use across all sequences."""
        ...


@dataclass
class SpecialTokens:
    bos: int | None = None
    eos: int | None = None
    eot: int | None = None
    end_of_generation: frozenset[int] = field(default_factory=frozenset)  # any of them ends a turn
    add_bos: bool = False  # whether the model expects BOS at the start of a prompt


class Tokenizer(Protocol):
    """Text <-> token ids. Pieces are bytes so a detokenizer can join split UTF-8 correctly."""

    vocab_size: int
    special: SpecialTokens

    def encode(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        ...

    def decode(self, token_ids: Sequence[int], *, skip_special: bool = True) -> str:
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token contributes to generated text (empty for control tokens)."""
        ...

    def token_text(self, token_id: int) -> str:
        """A readable name for one token, special tokens included (``<|im_end|>``)."""
        ...


def check_runner_options(*, context_length: int | None, threads: int | None, max_sequences: int,
                         trained_context: int | None) -> int:
    """Validate what sizes a runner before anything is allocated; returns the context length.

    The context is capped at what the model was trained for: past it the KV cache grows with no
    benefit (positions the model never saw), and an absurd value would try to allocate it.
    """
    default = min(trained_context or 4096, 8192)
    context = default if context_length is None else context_length
    if isinstance(context, bool) or not isinstance(context, int) or context < limits.MIN_CONTEXT:
        raise InvalidParameterError("context_length", f"must be an integer >= {limits.MIN_CONTEXT}, got {context!r}")
    if trained_context and context > trained_context:
        raise InvalidParameterError("context_length", f"{context} is more than the {trained_context} tokens "
                                    f"this model was trained for; use at most {trained_context}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                or not 1 <= threads <= limits.MAX_THREADS):
        raise InvalidParameterError("threads", f"must be an integer from 1 to {limits.MAX_THREADS}, got {threads!r}")
    if isinstance(max_sequences, bool) or not isinstance(max_sequences, int) or not 1 <= max_sequences <= limits.MAX_SEQUENCES:
        raise InvalidParameterError("max_sequences", f"must be an integer from 1 to {limits.MAX_SEQUENCES}, "
                                    f"got {max_sequences!r}")
    return context


def check_chunks(runner: Runner, chunks: Sequence[Chunk], held: Sequence[Sequence[int]]) -> None:
    """Refuse a step a runner cannot run, before any of it runs; ``held[seq_id]``: the tokens a
    sequence holds (a chunk must start where they end)."""
    total = 0
    for chunk in chunks:
        k = len(chunk.token_ids)
        if not 0 <= chunk.seq_id < runner.max_sequences:
            raise InvalidParameterError("seq_id", f"sequence {chunk.seq_id} is outside 0..{runner.max_sequences - 1}")
        if k == 0:
            raise InvalidParameterError("chunk", f"empty chunk for sequence {chunk.seq_id}")
        total += k
        if total > runner.max_batch_tokens:
            raise InvalidParameterError(
                "chunk", f"batch of {total} tokens exceeds max_batch_tokens={runner.max_batch_tokens}")
        if chunk.start_pos != len(held[chunk.seq_id]):
            raise SlmkitError(f"sequence {chunk.seq_id} holds {len(held[chunk.seq_id])} tokens, "
                              f"chunk starts at {chunk.start_pos}")
        if chunk.start_pos + k > runner.context_length:
            raise ContextLengthError(f"sequence {chunk.seq_id} would reach {chunk.start_pos + k} tokens; "
                                     f"the context holds {runner.context_length}")
        if min(chunk.token_ids) < 0 or max(chunk.token_ids) >= runner.vocab_size:
            raise InvalidParameterError("token_ids", f"a token id is outside the vocabulary (0..{runner.vocab_size - 1})")


class OneSlot:
    """One sequence slot of a runner seen as a runner of one sequence (seq id 0): how the
    `LLM` runs a batching `Engine` (speculation) for one request next to its other slots."""

    max_sequences = 1

    def __init__(self, runner: Runner, seq_id: int):
        self.runner, self.seq_id = runner, seq_id
        self.vocab_size = runner.vocab_size
        self.context_length = runner.context_length
        self.kv_cells = min(runner.context_length, runner.kv_cells)
        self.max_batch_tokens = runner.max_batch_tokens

    def forward(self, chunks: list[Chunk]) -> np.ndarray:
        return self.runner.forward([replace(c, seq_id=self.seq_id) for c in chunks])

    def truncate(self, seq_id: int, length: int) -> None:
        self.runner.truncate(self.seq_id, length)

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        raise NotImplementedError("a single slot has no other sequence to copy from")

    def free(self, seq_id: int) -> None:
        self.runner.free(self.seq_id)

    def used_cells(self) -> int:
        return self.runner.used_cells()
