"""Continuous-batching policy: no I/O, no model calls (vLLM v1's ``schedule()`` shape).

Each step: every running sequence gets its next chunk (one token when decoding, a slice of
the prompt while prefilling) under a token budget; decodes go first so a long prompt never
stalls running streams. Free sequence slots and KV cells then admit waiting requests. When
the KV cache cannot hold the next step, cached prefixes are dropped first, then the newest
running sequence is preempted: its cells are dropped and it waits at the front of the queue
to be recomputed.

Speculation: a decoding sequence may carry a draft (its guessed next tokens, see
`engine.speculative`); it runs in the same chunk as the sequence's last token, after every
sequence has its one certain token and before prompt slices, and drafts are dropped before any
KV is evicted for them.

Prefix caching (llama-server's slot reuse, plus copies): a finished sequence leaves its tokens'
KV in its slot. A new request takes the free slot sharing the longest prefix with its prompt
and computes only the rest; when a running sequence shares a longer prefix, its KV is copied
into the new slot instead. The runner work this implies comes out as ordered `KvOp`s.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from slmkit.engine.sequence import Sequence, SeqStatus


@dataclass
class SchedulerConfig:
    max_sequences: int  # runner slots
    max_batch_tokens: int  # tokens per forward
    kv_capacity: int  # KV cells shared by all sequences
    prefix_caching: bool = True
    min_prefix_copy: int = 32  # a copy from another slot must save at least this many tokens
    # Tokens of one sequence per forward. llama.cpp's CPU flash attention switches to a tiled
    # kernel (other rounding) at 64 query rows of one sequence, so below that every row is
    # computed the same way whatever the chunking, the batch or the cache reuse: bit-identical.
    max_chunk_per_sequence: int | None = None


@dataclass
class ScheduledChunk:
    """``num_tokens`` of the sequence from ``start``; the last ``num_draft`` of them are its
    guessed continuation (``seq.draft``), verified with logits for every position."""

    seq: Sequence
    num_tokens: int
    num_draft: int = 0

    @property
    def start(self) -> int:
        return self.seq.num_computed

    @property
    def wants_logits(self) -> bool:
        return self.num_draft > 0 or self.seq.num_computed + self.num_tokens == len(self.seq.tokens)

    @property
    def token_ids(self) -> list[int]:
        known = self.num_tokens - self.num_draft
        return self.seq.tokens[self.start : self.start + known] + self.seq.draft[: self.num_draft]


@dataclass
class KvOp:
    """Runner work before the forward: ``free`` a slot, ``truncate`` it to ``length`` tokens, or
    ``copy`` the first ``length`` tokens of slot ``src`` into it."""

    kind: Literal["free", "truncate", "copy"]
    slot: int
    length: int = 0
    src: int | None = None


@dataclass
class SchedulerOutput:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    kv_ops: list[KvOp] = field(default_factory=list)  # apply in order before running the chunks

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks)

    @property
    def freed_slots(self) -> list[int]:
        return [op.slot for op in self.kv_ops if op.kind == "free"]


@dataclass
class _CachedPrefix:
    tokens: list[int]
    last_used: int


def common_prefix_length(a: list[int], b: list[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    if n <= 0:
        return 0
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


class Scheduler:
    def __init__(self, config: SchedulerConfig):
        self.config = config
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._free_slots = set(range(config.max_sequences))
        self._cached: dict[int, _CachedPrefix] = {}  # free slots whose KV still holds tokens
        self._clock = 0

    # -- bookkeeping ----------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def finish(self, seq: Sequence, *, keep_cache: bool = False) -> int | None:
        """Take a sequence out (finished or aborted); returns the slot whose KV must be freed now,
        or None (never ran, or its KV stays as a cached prefix)."""
        seq.status = SeqStatus.FINISHED
        if seq in self.waiting:
            self.waiting.remove(seq)
        if seq in self.running:
            self.running.remove(seq)
        slot, seq.seq_id = seq.seq_id, None
        if slot is None:
            return None
        self._free_slots.add(slot)
        # a sequence with images is not kept: its cached tokens would match other images' placeholders
        if keep_cache and self.config.prefix_caching and seq.num_computed > 0 and not seq.embeddings:
            self._cached[slot] = _CachedPrefix(seq.tokens[: seq.num_computed], self._tick())
            return None
        return slot

    def running_cells(self) -> int:
        return sum(s.num_computed for s in self.running)

    def cached_cells(self) -> int:
        return sum(len(c.tokens) for c in self._cached.values())

    def used_cells(self) -> int:
        return self.running_cells() + self.cached_cells()

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def _tick(self) -> int:
        self._clock += 1
        return self._clock

    # -- the policy -----------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        while True:
            chunks = self._plan_running()
            cells = self.used_cells() + sum(c.num_tokens for c in chunks)
            if cells <= self.config.kv_capacity:
                break
            if any(c.num_draft for c in chunks):  # guesses go before anyone's cached or computed KV
                for c in chunks:
                    c.seq.draft = []
            elif self._cached:
                out.kv_ops.append(self._evict_oldest())
            elif len(self.running) > 1:  # one sequence always fits: each is held to the context
                out.kv_ops.append(KvOp("free", self._preempt(self.running[-1])))
            else:
                break
        out.chunks = chunks
        budget = self.config.max_batch_tokens - out.num_tokens
        while self.waiting and budget > 0 and self._free_slots:
            seq = self.waiting[0]
            slot, reuse, src = self._choose_slot(seq)
            n = min(len(seq.tokens) - reuse, budget, self.config.max_chunk_per_sequence or budget)
            dropped = len(self._cached[slot].tokens) if slot in self._cached else 0
            needed = cells - dropped + reuse + n
            while needed > self.config.kv_capacity:
                victims = [s for s in self._cached if s not in (slot, src)]
                if not victims:
                    break
                victim = min(victims, key=lambda s: self._cached[s].last_used)
                needed -= len(self._cached[victim].tokens)
                cells -= len(self._cached[victim].tokens)
                out.kv_ops.append(self._evict(victim))
            if needed > self.config.kv_capacity:
                break
            out.kv_ops.extend(self._take_slot(seq, slot, reuse, src))
            self.waiting.popleft()
            self.running.append(seq)
            out.chunks.append(ScheduledChunk(seq, n))
            budget -= n
            cells = needed
        return out

    def _choose_slot(self, seq: Sequence) -> tuple[int, int, int | None]:
        """(slot, tokens reused, slot to copy them from or None) for a waiting sequence."""
        limit = min(len(seq.tokens) - 1, seq.shareable_length)  # the last token gives the logits
        best_slot, best = None, 0
        if self.config.prefix_caching:
            for slot, cached in self._cached.items():
                n = common_prefix_length(cached.tokens, seq.tokens, limit)
                if n > best:
                    best_slot, best = slot, n
            donor, donated = None, 0
            for other in self.running:
                n = common_prefix_length(other.tokens[: min(other.num_computed, other.shareable_length)],
                                         seq.tokens, limit)
                if n > donated:
                    donor, donated = other, n
            if donor is not None and donated >= max(best + 1, self.config.min_prefix_copy):
                return self._spare_slot(), donated, donor.seq_id
        if best_slot is not None:
            return best_slot, best, None
        return self._spare_slot(), 0, None

    def _spare_slot(self) -> int:
        """A free slot to overwrite: an empty one, else the least recently used cached one."""
        empty = sorted(self._free_slots - self._cached.keys())
        if empty:
            return empty[0]
        return min(self._free_slots, key=lambda s: self._cached[s].last_used)

    def _take_slot(self, seq: Sequence, slot: int, reuse: int, src: int | None) -> list[KvOp]:
        self._free_slots.discard(slot)
        cached = self._cached.pop(slot, None)
        seq.status = SeqStatus.RUNNING
        seq.seq_id = slot
        seq.num_computed = reuse
        seq.num_cached = reuse
        if src is not None:
            return [KvOp("copy", slot, reuse, src)]
        if cached is None:
            return []
        if reuse == 0:
            return [KvOp("free", slot)]
        return [KvOp("truncate", slot, reuse)] if reuse < len(cached.tokens) else []

    def _evict(self, slot: int) -> KvOp:
        del self._cached[slot]
        return KvOp("free", slot)

    def _evict_oldest(self) -> KvOp:
        return self._evict(min(self._cached, key=lambda s: self._cached[s].last_used))

    def _plan_running(self) -> list[ScheduledChunk]:
        """Decodes first (one token each), then their drafts, then prompt slices, under the token
        budget: a guess never takes a place certain work needs."""
        budget = self.config.max_batch_tokens
        chunks = []
        decoding = [s for s in self.running if s.num_uncomputed == 1]
        prefilling = [s for s in self.running if s.num_uncomputed > 1]
        for seq in decoding[:budget]:
            chunks.append(ScheduledChunk(seq, 1))
        budget -= len(chunks)
        per_seq = self.config.max_chunk_per_sequence
        for chunk in chunks:
            room = min(len(chunk.seq.draft), budget, (per_seq or budget + 1) - 1)
            if room > 0:
                chunk.num_draft = room
                chunk.num_tokens += room
                budget -= room
        for seq in prefilling:
            if budget == 0:
                break
            n = min(seq.num_uncomputed, budget, per_seq or budget)
            chunks.append(ScheduledChunk(seq, n))
            budget -= n
        return chunks

    def _preempt(self, seq: Sequence) -> int:
        """Send the sequence back to the front of the queue; it will be recomputed."""
        self.running.remove(seq)
        slot, seq.seq_id = seq.seq_id, None
        self._free_slots.add(slot)
        seq.num_computed = 0
        seq.status = SeqStatus.WAITING
        seq.preemptions += 1
        self.waiting.appendleft(seq)
        return slot
