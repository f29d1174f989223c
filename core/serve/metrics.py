"""Prometheus metrics of one service (a registry per app, so that several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """Request counts and latencies per endpoint, encode/search time, batch sizes, caches, queue depth."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "capsearch_http_requests",
            "HTTP requests by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "capsearch_http_request_seconds",
            "HTTP request latency by endpoint",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("capsearch_http_in_flight", "requests being served now", registry=r)
        self.encode = Histogram(
            "capsearch_encode_seconds",
            "query encoding time (a forward pass)",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.search = Histogram(
            "capsearch_search_seconds", "index search time per query", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.batch_size = Histogram(
            "capsearch_encode_batch_size",
            "text queries encoded together in one forward pass",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.cache = Counter(
            "capsearch_cache_lookups", "cache lookups by cache and result", ["cache", "result"], registry=r
        )
        self.cache_hit_ratio = Gauge(
            "capsearch_cache_hit_ratio", "cache hits over lookups", ["cache"], registry=r
        )
        self.queue_depth = Gauge(
            "capsearch_encode_queue_depth", "jobs waiting for the model thread", registry=r
        )
        self.ready = Gauge("capsearch_ready", "1 once the model and index are loaded", registry=r)
