"""The scheduling policy on its own: admission, budget, decode-first, preemption."""

from __future__ import annotations

from slmkit.engine.scheduler import Scheduler, SchedulerConfig
from slmkit.engine.sequence import Sequence, SeqStatus
from slmkit.types import SamplingParams

P = SamplingParams(temperature=0)


def seq(name, n_prompt):
    return Sequence(name, list(range(1, n_prompt + 1)), P)


def run(sched, out):
    """What the engine does after a forward: count computed tokens, sample one where wanted."""
    for c in out.chunks:
        wanted = c.wants_logits
        c.seq.num_computed += c.num_tokens
        if wanted:
            c.seq.tokens.append(0)


def test_admits_up_to_the_slots_and_budget():
    sched = Scheduler(SchedulerConfig(max_sequences=2, max_batch_tokens=16, kv_capacity=100))
    a, b, c = seq("a", 4), seq("b", 4), seq("c", 4)
    for s in (a, b, c):
        sched.add(s)
    out = sched.schedule()
    assert [(ch.seq.request_id, ch.num_tokens) for ch in out.chunks] == [("a", 4), ("b", 4)]
    assert c.status is SeqStatus.WAITING and {a.seq_id, b.seq_id} == {0, 1}


def test_long_prompt_is_chunked_and_decodes_go_first():
    sched = Scheduler(SchedulerConfig(max_sequences=4, max_batch_tokens=8, kv_capacity=100))
    short = seq("short", 2)
    sched.add(short)
    run(sched, sched.schedule())  # short prefilled, one token sampled
    long = seq("long", 20)
    sched.add(long)
    out = sched.schedule()
    assert [(ch.seq.request_id, ch.num_tokens) for ch in out.chunks] == [("short", 1), ("long", 7)]
    assert not out.chunks[1].wants_logits
    run(sched, out)
    out = sched.schedule()
    assert [(ch.seq.request_id, ch.num_tokens) for ch in out.chunks] == [("short", 1), ("long", 7)]
    run(sched, out)
    out = sched.schedule()
    assert [(ch.seq.request_id, ch.num_tokens) for ch in out.chunks] == [("short", 1), ("long", 6)]
    assert out.chunks[1].wants_logits


def test_waits_when_the_kv_cache_is_full_and_admits_after_finish():
    sched = Scheduler(SchedulerConfig(max_sequences=4, max_batch_tokens=64, kv_capacity=10))
    a, b = seq("a", 8), seq("b", 8)
    sched.add(a), sched.add(b)
    out = sched.schedule()
    assert [ch.seq.request_id for ch in out.chunks] == ["a"]
    run(sched, out)
    assert b.status is SeqStatus.WAITING
    slot = sched.finish(a)
    assert slot == 0 and a.status is SeqStatus.FINISHED
    out = sched.schedule()
    assert [ch.seq.request_id for ch in out.chunks] == ["b"] and b.seq_id == 0


def test_preempts_the_newest_when_decoding_would_overflow():
    sched = Scheduler(SchedulerConfig(max_sequences=4, max_batch_tokens=64, kv_capacity=10))
    a, b = seq("a", 4), seq("b", 5)
    sched.add(a), sched.add(b)
    run(sched, sched.schedule())  # 9 cells used; both have a sampled token to compute
    out = sched.schedule()  # both decoding would need 11 cells: b goes back to wait
    assert out.freed_slots == [1]
    assert [ch.seq.request_id for ch in out.chunks] == ["a"]
    assert b.status is SeqStatus.WAITING and b.num_computed == 0 and b.preemptions == 1
    assert sched.waiting[0] is b and len(b.tokens) == 6  # keeps its generated token


def test_abort_of_a_waiting_sequence_frees_nothing():
    sched = Scheduler(SchedulerConfig(max_sequences=1, max_batch_tokens=64, kv_capacity=100))
    a, b = seq("a", 3), seq("b", 3)
    sched.add(a), sched.add(b)
    sched.schedule()
    assert sched.finish(b) is None and not sched.waiting
    assert sched.finish(a) == 0 and not sched.has_work
