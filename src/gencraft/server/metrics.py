"""Prometheus metrics of one server (its own registry, so several apps in one process don't clash)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _SchedulerCollector:
    """Queue depth and active sequences per loaded model, read at scrape time."""

    def __init__(self, catalog: Any) -> None:
        self.catalog = catalog

    def collect(self):
        q = GaugeMetricFamily("gencraft_queue_depth", "Sequences waiting to join a batch", labels=["model"])
        a = GaugeMetricFamily("gencraft_active_sequences", "Sequences in the running batch", labels=["model"])
        for name, s in self.catalog.loaded().items():
            q.add_metric([name], s.stats.queued)
            a.add_metric([name], s.stats.active)
        yield q
        yield a


class Metrics:
    """Requests, tokens, latencies, time to first token, queue depth."""

    def __init__(self, catalog: Any) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gencraft_requests", "HTTP requests", ["route", "status"], registry=r)
        self.latency = Histogram("gencraft_request_seconds", "Request latency (to the last byte)", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("gencraft_time_to_first_token_seconds", "Time to the first streamed token",
                                     ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("gencraft_tokens", "Tokens processed", ["model", "type"], registry=r)
        self.images_made = Counter("gencraft_images", "Images generated", ["model"], registry=r)
        r.register(_SchedulerCollector(catalog))

    def request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def prompt_tokens(self, model: str, n: int) -> None:
        self.tokens.labels(model, "prompt").inc(n)

    def completion_tokens(self, model: str, n: int) -> None:
        self.tokens.labels(model, "completion").inc(n)

    def ttft(self, model: str, seconds: float) -> None:
        self.first_token.labels(model).observe(seconds)

    def images(self, model: str, n: int) -> None:
        self.images_made.labels(model).inc(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
