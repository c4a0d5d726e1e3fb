"""Every Prometheus metric of the daemon, registered on one explicit registry.

One `Metrics` object is built by the supervisor and handed to whoever records; nothing registers
on the global default registry, so tests can build as many daemons as they like in one process.
`metrics_app` is the tiny ASGI app served on `metrics_port` inside the root nursery.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_asgi_app,
)

from storage.queue import AuditEvent

FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SLOW_BUCKETS = (0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "pezzottify_http_requests_total",
            "HTTP requests answered",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_duration = Histogram(
            "pezzottify_http_request_duration_seconds",
            "HTTP request handling time",
            ["route"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.job_executions = Counter(
            "pezzottify_background_job_executions_total",
            "Background job runs by final status",
            ["job_id", "status"],
            registry=r,
        )
        self.job_duration = Histogram(
            "pezzottify_background_job_duration_seconds",
            "Background job run time",
            ["job_id"],
            buckets=SLOW_BUCKETS,
            registry=r,
        )
        self.job_running = Gauge(
            "pezzottify_background_job_running", "1 while a job runs", ["job_id"], registry=r
        )
        self.queue_size = Gauge(
            "pezzottify_download_queue_size",
            "Download queue items by status and priority",
            ["status", "priority"],
            registry=r,
        )
        self.download_processed = Counter(
            "pezzottify_download_processed_total",
            "Queue items processed by content type and result",
            ["content_type", "result"],
            registry=r,
        )
        self.download_failures = Counter(
            "pezzottify_download_failures_total",
            "Failed download attempts by content type and error type (retried or not)",
            ["content_type", "error_type"],
            registry=r,
        )
        self.download_seconds = Histogram(
            "pezzottify_download_processing_seconds",
            "Time to process one queue item",
            ["content_type"],
            buckets=SLOW_BUCKETS,
            registry=r,
        )
        self.capacity_used = Gauge(
            "pezzottify_download_capacity_used",
            "Albums started in the current hour/day",
            ["period"],
            registry=r,
        )
        self.capacity_limit = Gauge(
            "pezzottify_download_capacity_limit",
            "The configured album budget per hour/day (max_albums_per_hour, max_albums_per_day)",
            ["period"],
            registry=r,
        )
        self.download_paused = Gauge(
            "pezzottify_download_paused",
            "1 while an admin has paused the download queue",
            registry=r,
        )
        self.user_requests = Counter(
            "pezzottify_download_user_requests_total",
            "Download requests accepted from users",
            ["type"],
            registry=r,
        )
        self.audit_events = Counter(
            "pezzottify_download_audit_events_total",
            "Audit log entries written",
            ["event_type"],
            registry=r,
        )
        self.stale_in_progress = Gauge(
            "pezzottify_download_stale_in_progress",
            "Items in progress for longer than the stale threshold",
            registry=r,
        )
        self.notifications = Counter(
            "pezzottify_notifications_total",
            "Notification delivery attempts by result (sent, retried, failed, skipped)",
            ["result"],
            registry=r,
        )
        self.actor_restarts = Counter(
            "pezzottify_actor_restarts_total",
            "Actors restarted after an unexpected failure",
            ["actor"],
            registry=r,
        )

    def count_audit_events(self, events: Sequence[AuditEvent]) -> None:
        """The queue stores' `on_audit`: entries their committed transactions appended."""
        for event in events:
            self.audit_events.labels(event.value).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def metrics_app(metrics: Metrics) -> Any:
    """ASGI app for the metrics listener: prometheus-client's exposition at /metrics, JSON 404
    elsewhere, and the lifespan handshake hypercorn expects."""
    exposition = make_asgi_app(registry=metrics.registry)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        elif scope["path"] == "/metrics":
            await exposition(scope, receive, send)
        else:
            body = b'{"error": "not found", "code": "NOT_FOUND"}'
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body})

    return app
