"""The batching engine core: many requests, one ``forward`` per step.

Single-threaded on purpose: whoever owns the engine calls `step()` in a loop (the server's
engine thread); callers reach it only through `add_request` / `abort`, whose outputs arrive
through the callback each request brings.

With speculation on (``speculative="ngram"`` or ``"draft"``, or per request), a decoding sequence
drafts a few tokens, from its own history or from a draft model (`engine.draft_model`, all
drafting sequences in one batched forward per draft step); they run in its chunk of the same
forward and `_verify` keeps the longest prefix the model agrees with, so the output is what
decoding one token at a time gives: token for token when greedy, in distribution when sampled.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from slmkit import limits
from slmkit.backends.base import Chunk, EmbeddingSpan, Runner, Tokenizer, spans_within
from slmkit.engine.draft_model import DraftModelProposer, DraftRequest
from slmkit.engine.scheduler import KvOp, ScheduledChunk, Scheduler, SchedulerConfig
from slmkit.engine.sequence import Sequence, check_prompt_tokens
from slmkit.engine.speculative import DraftLength, NgramProposer, verify_sampled
from slmkit.engine.text_stream import TextStream
from slmkit.errors import InvalidParameterError, SlmkitError
from slmkit.sampling import Sampler, apply_masks, fill_masks, make_constraint
from slmkit.sampling.sampler import log_softmax, top_logprobs
from slmkit.types import RequestOutput, SamplingParams, Timings, TokenLogprob, Usage

OutputCallback = Callable[[RequestOutput], None]
DRAFT_NEEDS_MODEL = "'draft' needs a draft model (--draft-model NAME, or LLM(..., draft_model=NAME))"
log = logging.getLogger("slmkit.engine")


@dataclass
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    request_id: str = field(default_factory=lambda: f"req-{uuid.uuid4().hex[:16]}")
    embeddings: list[EmbeddingSpan] = field(default_factory=list)  # image rows of a vision prompt


@dataclass(eq=False)
class _Active:
    seq: Sequence
    sampler: Sampler
    text: TextStream
    end_ids: set[int]
    max_length: int  # prompt + max_tokens, capped by the context
    emit: OutputCallback
    draft_length: DraftLength | None = None  # None: this request does not speculate
    ngram: NgramProposer | None = None  # its prompt lookup; None with a draft model (or no speculation)
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    kv_length: int | None = None  # the runner's KV length while a draft's rejected tail is in it
    draft_seconds: float = 0.0  # its share of the draft model's time (split evenly per draft step)
    drafted: int = 0  # its speculated tokens verified, and of them accepted (its final Timings)
    accepted: int = 0

    @property
    def plain_greedy(self) -> bool:
        """Argmax of the raw logits: such rows are sampled together in one numpy call."""
        s = self.sampler
        return s.params.greedy and not s.processors and s.constraint is None and s.params.logprobs is None


class Engine:
    def __init__(self, runner: Runner, tokenizer: Tokenizer, *, max_batch_tokens: int | None = None,
                 prefix_caching: bool = True, max_chunk_per_sequence: int | None = None,
                 speculative: str = "off", max_draft_tokens: int = limits.DEFAULT_DRAFT_TOKENS,
                 fast_forward: bool = True, draft_runner: Runner | None = None):
        """`draft_runner`: a draft model's runner (same tokenizer, at least as many sequence slots),
        which makes ``speculative="draft"`` possible for the engine and its requests."""
        if speculative not in limits.SPECULATIVE_MODES:
            raise InvalidParameterError("speculative", f"must be one of {', '.join(limits.SPECULATIVE_MODES)}, "
                                        f"got {speculative!r}")
        if speculative == "draft" and draft_runner is None:
            raise InvalidParameterError("speculative", DRAFT_NEEDS_MODEL)
        if draft_runner is not None and draft_runner.max_sequences < runner.max_sequences:
            raise InvalidParameterError("draft_model", f"the draft runner has {draft_runner.max_sequences} "
                                        f"sequence slots, the target {runner.max_sequences}")
        if isinstance(max_draft_tokens, bool) or not isinstance(max_draft_tokens, int) or \
                not 1 <= max_draft_tokens <= limits.MAX_DRAFT_TOKENS:
            raise InvalidParameterError("max_draft_tokens", f"must be an integer from 1 to "
                                        f"{limits.MAX_DRAFT_TOKENS}, got {max_draft_tokens!r}")
        self.speculative = speculative  # the default of requests that do not choose
        self.max_draft_tokens = max_draft_tokens
        self.runner = runner
        self.tokenizer = tokenizer
        # Tokens an output format forces are appended unsampled and run as one chunk.
        self.fast_forward = fast_forward
        self.scheduler = Scheduler(SchedulerConfig(
            max_sequences=runner.max_sequences,
            max_batch_tokens=min(max_batch_tokens or runner.max_batch_tokens, runner.max_batch_tokens),
            kv_capacity=runner.kv_cells,
            prefix_caching=prefix_caching,
            max_chunk_per_sequence=max_chunk_per_sequence,
        ))
        self.drafter = None if draft_runner is None else DraftModelProposer(
            draft_runner, runner.vocab_size, max_chunk_per_sequence)
        self._active: dict[str, _Active] = {}
        self.stats = EngineStats()

    # -- requests in ----------------------------------------------------------------------
    def validate(self, request: Request) -> None:
        """Raise the error `add_request` would, without queueing (callable from any thread)."""
        if request.params.num_beams > 1:
            raise InvalidParameterError("num_beams", "the batching engine samples; beam search runs "
                                        "through LLM.generate")
        if request.params.speculative == "draft" and self.drafter is None:
            raise InvalidParameterError("speculative", DRAFT_NEEDS_MODEL)
        check_prompt_tokens(request.prompt_ids, vocab_size=self.runner.vocab_size,
                            context_length=self.runner.context_length)

    def add_request(self, request: Request, emit: OutputCallback) -> None:
        """Queue a request; too long or malformed ones are refused here, before any work."""
        ids, params = request.prompt_ids, request.params
        if request.request_id in self._active:
            raise InvalidParameterError("request_id", f"{request.request_id!r} is already running")
        self.validate(request)
        context = self.runner.context_length
        max_length = context if params.max_tokens is None else min(context, len(ids) + params.max_tokens)
        seq = Sequence(request.request_id, list(ids), params, embeddings=list(request.embeddings))
        try:
            sampler = Sampler(params, self.runner.vocab_size,
                              make_constraint(self.tokenizer, params, self.runner.vocab_size))
            text = TextStream(self.tokenizer.token_bytes, params.stop)
        except Exception as exc:  # noqa: BLE001 - one bad request is refused, the engine goes on
            raise _as_slmkit_error(exc, "this request could not start") from exc
        mode = self._speculation(request, sampler)
        self._active[request.request_id] = _Active(
            seq, sampler, text, params.end_token_ids(self.tokenizer.special.end_of_generation), max_length, emit,
            draft_length=None if mode == "off" else DraftLength(max_draft=self.max_draft_tokens),
            ngram=NgramProposer() if mode == "ngram" else None,
        )
        self.scheduler.add(seq)

    def _speculation(self, request: Request, sampler: Sampler) -> str:
        """How this request drafts: ``off``, ``ngram`` or ``draft``."""
        mode = request.params.speculative or self.speculative
        # Requests under an output format decode one token at a time: their matcher advances per
        # sampled token (and forced tokens are fast-forwarded), so drafts would need its rollback.
        if sampler.constraint is not None:
            return "off"
        # A draft model reads token ids only: it cannot see an image's rows.
        if mode == "draft" and request.embeddings:
            return "off"
        return mode

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
        """Schedule, run one forward, sample, emit; returns the number of tokens run.

        A failing forward fails the requests of that batch (their outputs carry the error),
        never the engine.
        """
        started = time.perf_counter()
        drafting = self._propose_drafts()
        plan = self.scheduler.schedule()
        for op in plan.kv_ops:
            self._apply(op)
        if not plan.chunks:
            return 0
        # Chunks capture start and want_logits before num_computed moves on below.
        chunks = [Chunk(c.seq.seq_id, c.token_ids, c.start, c.wants_logits, all_logits=c.num_draft > 0,
                        embeddings=spans_within(c.seq.embeddings, c.start, c.start + c.num_tokens))
                  for c in plan.chunks]
        drafts = {id(c): c.seq.draft[: c.num_draft] for c in plan.chunks if c.num_draft}
        for seq in self.scheduler.running:
            seq.draft = []
        forward_at = time.perf_counter()
        try:
            logits = self.runner.forward(chunks)
        except Exception as exc:  # noqa: BLE001 - reported to each request of the batch
            for c in plan.chunks:
                active = self._active.get(c.seq.request_id)
                if active is not None:
                    self._finish(active, "abort", error=_as_slmkit_error(exc))
            return 0
        forward_done = time.perf_counter()
        sampled: list[tuple[_Active, int]] = []
        verifying: list[tuple[_Active, ScheduledChunk, int]] = []
        row = 0
        for c in plan.chunks:
            if c.num_draft:
                verifying.append((self._active[c.seq.request_id], c, row))
                row += c.num_tokens
                continue
            wants = c.wants_logits  # read before num_computed moves on
            c.seq.num_computed += c.num_tokens
            if wants:
                sampled.append((self._active[c.seq.request_id], row))
                row += 1
        self._sample_all(sampled, logits)
        for active, c, first_row in verifying:
            if active.seq.request_id in self._active:
                self._verify(active, c, drafts[id(c)], logits[first_row : first_row + c.num_tokens])
        self.stats.record(plan.num_tokens, row, forward_at - started - drafting,
                          forward_done - forward_at, time.perf_counter() - forward_done)
        return plan.num_tokens

    def _propose_drafts(self) -> float:
        """Each decoding sequence that speculates guesses up to k tokens; at most one fewer than it
        may still generate, since the verifying forward yields one token more than it drafts.
        Prompt lookup drafts per sequence; the draft model for all its sequences together.
        Returns the seconds spent in the draft model."""
        asks: list[tuple[Sequence, DraftRequest]] = []
        for seq in self.scheduler.running:
            active = self._active.get(seq.request_id)
            if active is None or active.draft_length is None or seq.num_uncomputed != 1:
                continue
            n = active.draft_length.take(active.max_length - len(seq.tokens) - 1)
            seq.draft = active.ngram.propose(seq.tokens, n) if active.ngram is not None else []
            if active.ngram is None and n:
                asks.append((seq, DraftRequest(seq.seq_id, seq.tokens, n, active.end_ids)))
        if not asks:
            return 0.0
        before, forwards = self.drafter.seconds, self.drafter.forwards
        drafts = self.drafter.propose([ask for _, ask in asks])
        seconds = self.drafter.seconds - before
        self.stats.draft_seconds += seconds
        self.stats.draft_forwards += self.drafter.forwards - forwards
        for seq, ask in asks:
            seq.draft = drafts.get(ask.slot, [])
            self._active[seq.request_id].draft_seconds += seconds / len(asks)
        return seconds

    def _verify(self, active: _Active, chunk: ScheduledChunk, draft: list[int], rows: np.ndarray) -> None:
        """Walk the draft with the logits of every position: each row gives the token decoding
        would have produced there; go on while it is the drafted one. Then drop the rejected
        tail's KV. Row ``len(draft)`` (all accepted) gives one more token for free."""
        seq = active.seq
        known = chunk.start + 1  # the sequence's last token is computed now, drafts may follow
        seq.num_computed = known
        active.kv_length = known + len(draft)
        accepted = 0
        active.drafted += len(draft)  # counted before any token goes out: the request may end on one
        try:
            for i, row in enumerate(rows):
                token, hit = self._pick(active, row, draft[i] if i < len(draft) else None)
                seq.num_computed = known + i + hit  # a hit's KV is already in the runner
                logprob = None if seq.params.logprobs is None else _token_logprob(row, token, seq.params.logprobs)
                accepted += hit
                active.accepted += hit
                self._on_token(active, token, logprob)
                if not hit or seq.request_id not in self._active:
                    break
        except Exception as exc:  # noqa: BLE001 - reported to that request
            if seq.request_id in self._active:
                self._finish(active, "abort", error=_as_slmkit_error(exc, "generation failed"))
        active.draft_length.record(len(draft), accepted)
        self.stats.drafted += len(draft)
        self.stats.accepted += accepted
        if seq.request_id in self._active:
            self._drop_rejected(active)

    def _pick(self, active: _Active, row: np.ndarray, draft: int | None) -> tuple[int, bool]:
        """The token at this position and whether it is the drafted one (for sampled requests,
        by the speculative rejection rule, which leaves the distribution exactly the sampler's)."""
        sampler, seq = active.sampler, active.seq
        if draft is None or sampler.params.greedy:
            token = sampler.sample(row, seq.tokens, seq.num_prompt)
            return token, token == draft
        probs = sampler.probabilities(row, seq.tokens, seq.num_prompt)
        return verify_sampled(probs, draft, sampler.rng.random(), sampler.rng)

    def _drop_rejected(self, active: _Active) -> None:
        seq = active.seq
        if active.kv_length is not None and seq.seq_id is not None and active.kv_length > seq.num_computed:
            self.runner.truncate(seq.seq_id, seq.num_computed)
        active.kv_length = None

    def _apply(self, op: KvOp) -> None:
        if op.kind == "free":
            self.runner.free(op.slot)
            self._forget_draft(op.slot)
        elif op.kind == "truncate":
            self.runner.truncate(op.slot, op.length)
        else:
            self.runner.copy_prefix(op.src, op.slot, op.length)

    def _sample_all(self, sampled: list[tuple["_Active", int]], logits: np.ndarray) -> None:
        """Plain greedy rows in one vectorized argmax; constrained rows masked together (masks
        computed in parallel, applied in one step); then each row sampled on its own."""
        greedy_rows = [row for active, row in sampled if active.plain_greedy]
        argmax = logits[greedy_rows].argmax(axis=1) if len(greedy_rows) > 1 else None
        tokens = dict(zip(greedy_rows, argmax.tolist())) if argmax is not None else {}
        masked = self._mask_constrained(sampled, logits)
        for active, row in sampled:
            seq = active.seq
            if seq.request_id not in self._active:  # failed while masking
                continue
            # Sampling, the user's logits processors and detokenization run per request: whatever
            # one of them raises fails that request only.
            try:
                token = tokens.get(row)
                if token is None:
                    if row in masked:
                        allowed, masked_row = masked[row]
                        token = active.sampler.sample(masked_row, seq.tokens, seq.num_prompt, allowed=allowed)
                    else:
                        token = active.sampler.sample(logits[row], seq.tokens, seq.num_prompt)
                logprob = None
                if seq.params.logprobs is not None:
                    logprob = _token_logprob(logits[row], token, seq.params.logprobs)
                self._on_token(active, token, logprob)
                if active.sampler.constraint is not None and seq.request_id in self._active:
                    self._after_constrained(active)
            except Exception as exc:  # noqa: BLE001 - reported to that request
                if seq.request_id in self._active:
                    self._finish(active, "abort", error=_as_slmkit_error(exc, "generation failed"))

    def _mask_constrained(self, sampled: list[tuple["_Active", int]], logits: np.ndarray
                          ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """``{row: (allowed, masked logits)}`` for the rows under an output format. A grammar
        failing here fails its own request only."""
        rows = [(active, row) for active, row in sampled if active.sampler.constraint is not None]
        if not rows:
            return {}
        started = time.perf_counter()
        try:
            allowed = fill_masks([active.sampler.constraint for active, _ in rows])
        except Exception as exc:  # noqa: BLE001 - the batch's grammars failed together: fail those requests
            for active, _ in rows:
                self._finish(active, "abort", error=_as_slmkit_error(exc, "the output format failed"))
            return {}
        masked = apply_masks(logits[[row for _, row in rows]], allowed)
        self.stats.mask_seconds += time.perf_counter() - started
        self.stats.masked += len(rows)
        return {row: (allowed[i], masked[i]) for i, (_, row) in enumerate(rows)}

    def _after_constrained(self, active: _Active) -> None:
        """A complete structure ends the request; tokens the grammar forces go in unsampled."""
        constraint, seq = active.sampler.constraint, active.seq
        if constraint.done:
            self._finish(active, "stop")
            return
        if not self.fast_forward:
            return
        forced = constraint.forced_tokens()[: active.max_length - len(seq.tokens)]
        if not forced:
            return
        constraint.accept_forced(forced)
        self.stats.forced += len(forced)
        for token in forced:
            self._on_token(active, token, None)
            if seq.request_id not in self._active:
                return
        if constraint.done:
            self._finish(active, "stop")

    def _on_token(self, active: _Active, token: int, logprob: TokenLogprob | None) -> None:
        seq = active.seq
        seq.tokens.append(token)
        if active.first_token_at is None:
            active.first_token_at = time.perf_counter()
        ended = token in active.end_ids
        delta = "" if ended else active.text.add(token)
        active.emit(RequestOutput(delta, [token], request_id=seq.request_id,
                                  logprobs=None if logprob is None else [logprob]))
        if ended or active.text.stopped:
            self._finish(active, "stop")
        elif len(seq.tokens) >= active.max_length:
            self._finish(active, "length")

    def _finish(self, active: _Active, reason: str, error: SlmkitError | None = None) -> None:
        seq = active.seq
        self._drop_rejected(active)  # a cached prefix must hold exactly the tokens it names
        # A finished sequence's KV stays as a cached prefix; an aborted one's is freed now.
        slot = self.scheduler.finish(seq, keep_cache=reason != "abort")
        if slot is not None:
            self.runner.free(slot)
            self._forget_draft(slot)
        del self._active[seq.request_id]
        text = ""
        if reason != "abort":
            try:
                text = active.text.finish()
            except Exception as exc:  # noqa: BLE001 - the caller still gets its final output
                reason, error = "abort", _as_slmkit_error(exc, "detokenization failed")
        now = time.perf_counter()
        first = active.first_token_at or now
        seq.finish_reason = reason
        active.emit(RequestOutput(
            text, [], finish_reason=reason,
            request_id=seq.request_id, usage=Usage(seq.num_prompt, seq.num_generated, seq.num_cached),
            timings=Timings(prefill_seconds=first - active.started, decode_seconds=now - first,
                            time_to_first_token=first - active.started,
                            drafted_tokens=active.drafted, accepted_tokens=active.accepted,
                            draft_seconds=active.draft_seconds),
            error=error, stop_sequence=active.text.matched_stop if reason == "stop" else None,
        ))

    def _forget_draft(self, slot: int) -> None:
        """The target freed a slot's KV: so does the drafter (it keeps it while the target does)."""
        if self.drafter is not None:
            self.drafter.forget(slot)

    def run_until_done(self) -> None:
        while self.has_work:
            self.step()

    def abort_all(self, error: SlmkitError | None = None) -> None:
        for active in list(self._active.values()):
            self._finish(active, "abort", error=error)


@dataclass
class EngineStats:
    """Running totals of where step time goes: the forward versus our Python around it."""

    steps: int = 0
    tokens: int = 0
    sampled: int = 0
    schedule_seconds: float = 0.0
    forward_seconds: float = 0.0
    sample_seconds: float = 0.0
    drafted: int = 0  # speculated tokens verified
    accepted: int = 0  # of them, kept
    draft_seconds: float = 0.0  # in the draft model's forwards (not part of schedule_seconds)
    draft_forwards: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0
    mask_seconds: float = 0.0  # computing and applying output-format masks (part of sample_seconds)
    masked: int = 0  # rows sampled under an output format
    forced: int = 0  # tokens an output format forced (fast-forwarded, never sampled)

    def record(self, tokens: int, sampled: int, schedule: float, forward: float, sample: float) -> None:
        self.steps += 1
        self.tokens += tokens
        self.sampled += sampled
        self.schedule_seconds += schedule
        self.forward_seconds += forward
        self.sample_seconds += sample

    @property
    def python_fraction(self) -> float:
        total = self.schedule_seconds + self.forward_seconds + self.sample_seconds
        return (self.schedule_seconds + self.sample_seconds) / total if total else 0.0


def _token_logprob(row: np.ndarray, token: int, k: int) -> TokenLogprob:
    logprobs = log_softmax(row)
    return TokenLogprob(token, float(logprobs[token]), top_logprobs(row, k) if k else [])


def _as_slmkit_error(exc: Exception, what: str = "the model failed on this batch") -> SlmkitError:
    if isinstance(exc, SlmkitError):
        return exc
    log.error("%s: %s", what, exc, exc_info=exc)
    return SlmkitError(f"{what}: {type(exc).__name__}: {exc}")
