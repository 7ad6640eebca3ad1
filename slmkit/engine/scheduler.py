"""Continuous-batching policy: no I/O, no model calls (vLLM v1's ``schedule()`` shape).

Each step: every running sequence gets its next chunk (one token when decoding, a slice of
the prompt while prefilling) under a token budget; decodes go first so a long prompt never
stalls running streams. Free sequence slots and KV cells then admit waiting requests. When
the KV cache cannot hold the next step, the newest running sequence is preempted: its cells
are dropped and it waits at the front of the queue to be recomputed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from slmkit.engine.sequence import Sequence, SeqStatus


@dataclass
class SchedulerConfig:
    max_sequences: int  # runner slots
    max_batch_tokens: int  # tokens per forward
    kv_capacity: int  # KV cells shared by all sequences


@dataclass
class ScheduledChunk:
    seq: Sequence
    num_tokens: int

    @property
    def start(self) -> int:
        return self.seq.num_computed

    @property
    def wants_logits(self) -> bool:
        return self.seq.num_computed + self.num_tokens == len(self.seq.tokens)


@dataclass
class SchedulerOutput:
    chunks: list[ScheduledChunk] = field(default_factory=list)
    freed_slots: list[int] = field(default_factory=list)  # preempted: free their KV before running

    @property
    def num_tokens(self) -> int:
        return sum(c.num_tokens for c in self.chunks)


class Scheduler:
    def __init__(self, config: SchedulerConfig):
        self.config = config
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self._free_slots = list(range(config.max_sequences - 1, -1, -1))

    # -- bookkeeping ----------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def finish(self, seq: Sequence) -> int | None:
        """Take a sequence out (finished or aborted); returns the slot whose KV must be freed."""
        seq.status = SeqStatus.FINISHED
        if seq in self.waiting:
            self.waiting.remove(seq)
        if seq in self.running:
            self.running.remove(seq)
        slot, seq.seq_id = seq.seq_id, None
        if slot is not None:
            self._free_slots.append(slot)
        return slot

    def used_cells(self) -> int:
        return sum(s.num_computed for s in self.running)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # -- the policy -----------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        while True:
            chunks = self._plan_running()
            cells = self.used_cells() + sum(c.num_tokens for c in chunks)
            # One sequence always fits: the engine keeps each within the context length.
            if cells <= self.config.kv_capacity or len(self.running) <= 1:
                break
            out.freed_slots.append(self._preempt(self.running[-1]))
        out.chunks = chunks
        budget = self.config.max_batch_tokens - out.num_tokens
        while self.waiting and budget > 0 and self._free_slots:
            seq = self.waiting[0]
            n = min(seq.num_uncomputed, budget)
            if cells + n > self.config.kv_capacity:
                break
            self.waiting.popleft()
            seq.status = SeqStatus.RUNNING
            seq.seq_id = self._free_slots.pop()
            self.running.append(seq)
            out.chunks.append(ScheduledChunk(seq, n))
            budget -= n
            cells += n
        return out

    def _plan_running(self) -> list[ScheduledChunk]:
        """Decodes first (one token each), then prompt slices, under the token budget."""
        budget = self.config.max_batch_tokens
        chunks = []
        decoding = [s for s in self.running if s.num_uncomputed == 1]
        prefilling = [s for s in self.running if s.num_uncomputed > 1]
        for seq in decoding + prefilling:
            if budget == 0:
                break
            n = min(seq.num_uncomputed, budget)
            chunks.append(ScheduledChunk(seq, n))
            budget -= n
        return chunks

    def _preempt(self, seq: Sequence) -> int:
        """Send the sequence back to the front of the queue; it will be recomputed."""
        self.running.remove(seq)
        slot, seq.seq_id = seq.seq_id, None
        self._free_slots.append(slot)
        seq.num_computed = 0
        seq.status = SeqStatus.WAITING
        seq.preemptions += 1
        self.waiting.appendleft(seq)
        return slot
