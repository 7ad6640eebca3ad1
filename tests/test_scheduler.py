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


def finish_all(sched, *seqs):
    for s in seqs:
        assert sched.finish(s, keep_cache=True) is None


def test_a_finished_sequence_leaves_its_prefix_for_the_next_request():
    sched = Scheduler(SchedulerConfig(max_sequences=2, max_batch_tokens=64, kv_capacity=100))
    a = seq("a", 10)
    sched.add(a)
    run(sched, sched.schedule())
    finish_all(sched, a)  # slot 0 holds tokens 1..10
    assert sched.cached_cells() == 10 and sched.running_cells() == 0
    b = Sequence("b", list(range(1, 8)) + [99, 98], P)  # shares 7 tokens
    sched.add(b)
    out = sched.schedule()
    assert b.seq_id == a_slot(out, b) == 0 and b.num_cached == 7
    assert [(op.kind, op.slot, op.length) for op in out.kv_ops] == [("truncate", 0, 7)]
    assert [(ch.seq.request_id, ch.start, ch.num_tokens) for ch in out.chunks] == [("b", 7, 2)]


def a_slot(out, s):
    return next(ch.seq.seq_id for ch in out.chunks if ch.seq is s)


def test_a_fully_cached_prompt_still_computes_its_last_token():
    sched = Scheduler(SchedulerConfig(max_sequences=1, max_batch_tokens=64, kv_capacity=100))
    a = seq("a", 6)
    sched.add(a)
    run(sched, sched.schedule())
    finish_all(sched, a)
    b = seq("b", 6)
    sched.add(b)
    out = sched.schedule()
    assert [(ch.start, ch.num_tokens, ch.wants_logits) for ch in out.chunks] == [(5, 1, True)]
    assert [(op.kind, op.length) for op in out.kv_ops] == [("truncate", 5)]


def test_unrelated_requests_prefer_empty_slots_then_the_oldest_cache():
    sched = Scheduler(SchedulerConfig(max_sequences=2, max_batch_tokens=64, kv_capacity=100))
    a = seq("a", 4)
    sched.add(a)
    run(sched, sched.schedule())
    finish_all(sched, a)
    b = Sequence("b", [50, 51, 52], P)
    sched.add(b)
    out = sched.schedule()
    assert b.seq_id == 1 and out.kv_ops == [] and sched.cached_cells() == 4  # a's cache kept
    run(sched, out)
    c = Sequence("c", [60, 61], P)
    sched.add(c)
    out = sched.schedule()
    assert c.seq_id == 0 and [(op.kind, op.slot) for op in out.kv_ops] == [("free", 0)]
    assert sched.cached_cells() == 0


def test_a_running_sequence_donates_a_long_shared_prefix_by_copy():
    sched = Scheduler(SchedulerConfig(max_sequences=2, max_batch_tokens=64, kv_capacity=200,
                                      min_prefix_copy=8))
    a = seq("a", 40)
    sched.add(a)
    run(sched, sched.schedule())
    b = Sequence("b", list(range(1, 33)) + [77, 78], P)
    sched.add(b)
    out = sched.schedule()
    assert [(op.kind, op.slot, op.src, op.length) for op in out.kv_ops] == [("copy", 1, 0, 32)]
    assert [(ch.seq.request_id, ch.start, ch.num_tokens) for ch in out.chunks] == [("a", 40, 1), ("b", 32, 2)]


def test_cached_prefixes_are_dropped_before_anyone_is_preempted():
    sched = Scheduler(SchedulerConfig(max_sequences=3, max_batch_tokens=64, kv_capacity=12))
    a, b = seq("a", 6), Sequence("b", [40, 41, 42, 43], P)
    sched.add(a), sched.add(b)
    run(sched, sched.schedule())
    a_slot = a.seq_id
    finish_all(sched, a)  # 6 cached + 4 running (+1 to decode) of 12
    c = Sequence("c", [50, 51, 52, 53], P)
    sched.add(c)
    out = sched.schedule()
    assert ("free", a_slot) in [(op.kind, op.slot) for op in out.kv_ops]
    assert [ch.seq.request_id for ch in out.chunks] == ["b", "c"] and b.preemptions == 0
    assert sched.cached_cells() == 0


def test_aborted_sequences_leave_no_cache():
    sched = Scheduler(SchedulerConfig(max_sequences=1, max_batch_tokens=64, kv_capacity=100))
    a = seq("a", 5)
    sched.add(a)
    run(sched, sched.schedule())
    assert sched.finish(a) == 0 and sched.cached_cells() == 0
