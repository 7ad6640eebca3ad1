"""The batching engine core: many requests, one ``forward`` per step.

Single-threaded on purpose: whoever owns the engine calls `step()` in a loop (the server's
engine thread); callers reach it only through `add_request` / `abort`, whose outputs arrive
through the callback each request brings.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from slmkit.backends.base import Chunk, Runner, Tokenizer
from slmkit.engine.scheduler import Scheduler, SchedulerConfig
from slmkit.engine.sequence import Sequence, check_prompt_tokens
from slmkit.engine.text_stream import TextStream
from slmkit.errors import InvalidParameterError
from slmkit.sampling import Sampler
from slmkit.types import RequestOutput, SamplingParams, Timings, Usage

OutputCallback = Callable[[RequestOutput], None]


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    request_id: str = field(default_factory=lambda: f"req-{uuid.uuid4().hex[:16]}")


@dataclass(eq=False)
class _Active:
    seq: Sequence
    sampler: Sampler
    text: TextStream
    end_ids: set[int]
    max_length: int  # prompt + max_tokens, capped by the context
    emit: OutputCallback
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None


class Engine:
    def __init__(self, runner: Runner, tokenizer: Tokenizer, *, max_batch_tokens: int | None = None):
        self.runner = runner
        self.tokenizer = tokenizer
        self.scheduler = Scheduler(SchedulerConfig(
            max_sequences=runner.max_sequences,
            max_batch_tokens=min(max_batch_tokens or runner.max_batch_tokens, runner.max_batch_tokens),
            kv_capacity=runner.kv_cells,
        ))
        self._active: dict[str, _Active] = {}

    # -- requests in ----------------------------------------------------------------------
    def add_request(self, request: Request, emit: OutputCallback) -> None:
        """Queue a request; too long or malformed ones are refused here, before any work."""
        ids, params = request.prompt_ids, request.params
        if request.request_id in self._active:
            raise InvalidParameterError("request_id", f"{request.request_id!r} is already running")
        context = self.runner.context_length
        check_prompt_tokens(ids, vocab_size=self.runner.vocab_size, context_length=context)
        max_length = context if params.max_tokens is None else min(context, len(ids) + params.max_tokens)
        seq = Sequence(request.request_id, list(ids), params)
        self._active[request.request_id] = _Active(
            seq, Sampler(params, self.runner.vocab_size), TextStream(self.tokenizer.token_bytes, params.stop),
            params.end_token_ids(self.tokenizer.special.end_of_generation), max_length, emit,
        )
        self.scheduler.add(seq)

    def abort(self, request_id: str) -> bool:
        """Stop a request now and free its KV cells; False if it is not running."""
        active = self._active.get(request_id)
        if active is None:
            return False
        self._finish(active, "abort")
        return True

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    @property
    def num_running(self) -> int:
        return len(self.scheduler.running)

    @property
    def num_waiting(self) -> int:
        return len(self.scheduler.waiting)

    # -- one step -------------------------------------------------------------------------
    def step(self) -> int:
        """Schedule, run one forward, sample, emit; returns the number of tokens run."""
        plan = self.scheduler.schedule()
        for slot in plan.freed_slots:
            self.runner.free(slot)
        if not plan.chunks:
            return 0
        # Chunks capture start and want_logits before num_computed moves on below.
        chunks = [Chunk(c.seq.seq_id, c.seq.tokens[c.start : c.start + c.num_tokens], c.start, c.wants_logits)
                  for c in plan.chunks]
        logits = self.runner.forward(chunks)
        row = 0
        for c, chunk in zip(plan.chunks, chunks):
            c.seq.num_computed += c.num_tokens
            if chunk.want_logits:
                self._on_token(self._active[c.seq.request_id], logits[row])
                row += 1
        return plan.num_tokens

    def _on_token(self, active: _Active, logits_row) -> None:
        seq = active.seq
        token = active.sampler.sample(logits_row, seq.tokens, seq.num_prompt)
        seq.tokens.append(token)
        if active.first_token_at is None:
            active.first_token_at = time.perf_counter()
        ended = token in active.end_ids
        delta = "" if ended else active.text.add(token)
        active.emit(RequestOutput(delta, [token], request_id=seq.request_id))
        if ended or active.text.stopped:
            self._finish(active, "stop")
        elif len(seq.tokens) >= active.max_length:
            self._finish(active, "length")

    def _finish(self, active: _Active, reason: str) -> None:
        seq = active.seq
        slot = self.scheduler.finish(seq)
        if slot is not None:
            self.runner.free(slot)
        del self._active[seq.request_id]
        now = time.perf_counter()
        first = active.first_token_at or now
        seq.finish_reason = reason
        active.emit(RequestOutput(
            active.text.finish() if reason != "abort" else "", [], finish_reason=reason,
            request_id=seq.request_id, usage=Usage(seq.num_prompt, seq.num_generated),
            timings=Timings(prefill_seconds=first - active.started, decode_seconds=now - first,
                            time_to_first_token=first - active.started),
        ))

    def run_until_done(self) -> None:
        while self.has_work:
            self.step()
