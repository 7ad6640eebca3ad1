"""Prometheus metrics: counters and latency histograms recorded per request, engine gauges read
at scrape time (queue depth, running sequences, KV cells)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from slmkit.server.models import ModelManager

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, manager: "ModelManager"):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("slmkit_requests", "HTTP requests", ["route", "status"], registry=r)
        self.prompt_tokens = Counter("slmkit_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.cached_tokens = Counter("slmkit_prompt_cached_tokens", "Prompt tokens reused from the prefix cache",
                                     ["model"], registry=r)
        self.generation_tokens = Counter("slmkit_generation_tokens", "Tokens generated", ["model"], registry=r)
        self.ttft = Histogram("slmkit_time_to_first_token_seconds", "Time to first token", ["model"],
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.itl = Histogram("slmkit_inter_token_latency_seconds", "Time between streamed tokens", ["model"],
                             buckets=_LATENCY_BUCKETS, registry=r)
        self.duration = Histogram("slmkit_request_duration_seconds", "Whole request time", ["route"],
                                  buckets=_LATENCY_BUCKETS, registry=r)
        r.register(_EngineGauges(manager))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineGauges:
    def __init__(self, manager: "ModelManager"):
        self.manager = manager

    def collect(self):
        families = {
            "queue": GaugeMetricFamily("slmkit_queue_depth", "Requests waiting for a slot", labels=["model"]),
            "running": GaugeMetricFamily("slmkit_running_sequences", "Sequences being generated", labels=["model"]),
            "used": GaugeMetricFamily("slmkit_kv_cache_used_cells", "KV cells of running sequences", labels=["model"]),
            "cached": GaugeMetricFamily("slmkit_kv_cache_cached_cells", "KV cells kept as reusable prefixes",
                                        labels=["model"]),
            "total": GaugeMetricFamily("slmkit_kv_cache_total_cells", "KV cells in all slots", labels=["model"]),
        }
        drafted = CounterMetricFamily("slmkit_speculative_drafted_tokens", "Draft tokens verified", labels=["model"])
        accepted = CounterMetricFamily("slmkit_speculative_accepted_tokens", "Draft tokens accepted",
                                       labels=["model"])
        rate = GaugeMetricFamily("slmkit_speculative_acceptance_rate", "Accepted / drafted tokens so far",
                                 labels=["model"])
        draft_time = CounterMetricFamily("slmkit_speculative_draft_model_seconds", "Time in the draft model's "
                                         "forwards (draft-model speculation)", labels=["model"])
        loaded = GaugeMetricFamily("slmkit_models_loaded", "Models in memory")
        loaded.add_metric([], len(self.manager.loaded))
        for name, served in list(self.manager.loaded.items()):
            snap = served.engine.snapshot
            families["queue"].add_metric([name], snap.waiting)
            families["running"].add_metric([name], snap.running)
            families["used"].add_metric([name], snap.kv_used_cells)
            families["cached"].add_metric([name], snap.kv_cached_cells)
            families["total"].add_metric([name], snap.kv_total_cells)
            drafted.add_metric([name], snap.drafted_tokens)
            accepted.add_metric([name], snap.accepted_tokens)
            rate.add_metric([name], snap.accepted_tokens / snap.drafted_tokens if snap.drafted_tokens else 0.0)
            draft_time.add_metric([name], snap.draft_seconds)
        yield loaded
        yield from families.values()
        yield from (drafted, accepted, rate, draft_time)
