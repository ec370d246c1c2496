"""`GET /metrics`: the database's figures in Prometheus's text format (docs/operations.md).

A custom collector reads a snapshot (bot/services/metrics.py) at each scrape: nothing is
counted in the process, so every instance answers the same and a restart loses nothing. A
database that cannot answer makes the scrape a 503 (Prometheus records the target as down)
rather than figures that look like zero. With HANDOVER_METRICS_TOKEN set, a scrape must carry
it as a bearer token (a 401 otherwise, logged without what was presented).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Callable, Iterator
from datetime import datetime

from flask import Blueprint, Response, request
from prometheus_client import generate_latest
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery.kinds import OutboxKind
from bot.services.metrics import ESCALATION_EVENTS, Snapshot, read_snapshot

logger = logging.getLogger(__name__)


def metric_families(snapshot: Snapshot) -> Iterator[Metric]:
    """The snapshot as Prometheus metric families (names in docs/operations.md)."""
    depth = GaugeMetricFamily(
        "handover_outbox_depth",
        "Outbox rows due now and not yet sent, by kind",
        labels=["kind"],
    )
    scheduled = GaugeMetricFamily(
        "handover_outbox_scheduled",
        "Outbox rows waiting for a later due time (held prompts, escalation steps), by kind",
        labels=["kind"],
    )
    age = GaugeMetricFamily(
        "handover_outbox_oldest_due_age_seconds",
        "Seconds since the oldest due, unsent outbox row of each kind was due (0 when none)",
        labels=["kind"],
    )
    by_kind = {rows.kind: rows for rows in snapshot.open_rows}
    for kind in OutboxKind:
        rows = by_kind.get(kind.value)
        depth.add_metric([kind.value], rows.due if rows else 0)
        scheduled.add_metric([kind.value], rows.scheduled if rows else 0)
        age.add_metric([kind.value], snapshot.oldest_due_age(kind.value))
    yield from (depth, scheduled, age)

    sends = CounterMetricFamily(
        "handover_sends",
        "Messages settled by the dispatcher, by kind, channel and outcome "
        "(delivered, delivered_late, failed)",
        labels=["kind", "channel", "outcome"],
    )
    for send in snapshot.sends:
        sends.add_metric([send.kind, send.channel, send.outcome], send.count)
    yield sends

    lateness = HistogramMetricFamily(
        "handover_send_lateness_seconds",
        "How long after its due time each delivered message went out, by channel",
        labels=["channel"],
    )
    for late in snapshot.lateness:
        buckets = [(_bound(b), count) for b, count in late.buckets]
        lateness.add_metric(
            [late.channel], [*buckets, ("+Inf", late.count)], sum_value=late.total_seconds
        )
    yield lateness

    escalations = CounterMetricFamily(
        "handover_escalations",
        "Escalation steps in the log, by step (reminder_sent, escalated, escalated_channel)",
        labels=["step"],
    )
    for step in ESCALATION_EVENTS:
        escalations.add_metric([step], snapshot.events.get(step, 0))
    yield escalations
    yield CounterMetricFamily(
        "handover_breaches", "Breaches in the log", value=snapshot.events.get("breach", 0)
    )
    events = CounterMetricFamily(
        "handover_log_events", "Audit log events, by event name", labels=["event"]
    )
    for name, count in sorted(snapshot.events.items()):
        events.add_metric([name], count)
    yield events

    yield GaugeMetricFamily(
        "handover_slack_jobs_waiting",
        "Clicks and slash commands acknowledged whose work (a job in slack_jobs) is not done yet",
        value=snapshot.slack_jobs.waiting,
    )
    yield GaugeMetricFamily(
        "handover_slack_jobs_oldest_age_seconds",
        "Seconds since the oldest click or command job not yet done was written (0 when none)",
        value=snapshot.oldest_job_age(),
    )


def _bound(seconds: float) -> str:
    return str(float(seconds))


class DatabaseCollector(Collector):
    """Reads a snapshot from the database at each collection."""

    def __init__(self, session_factory: sessionmaker[Session], now: Callable[[], datetime]) -> None:
        self._session_factory = session_factory
        self._now = now

    def collect(self) -> Iterator[Metric]:
        with self._session_factory() as session:
            snapshot = read_snapshot(session, self._now())
        yield from metric_families(snapshot)


def bearer_token_matches(authorization: str | None, token: str) -> bool:
    """Whether an `Authorization` header carries `Bearer <token>` (compared in constant time)."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def exposure_warning(host: str, token: str | None) -> str | None:
    """What `serve` warns at start-up when /metrics is open to the network: it listens on a
    non-loopback `host` and HANDOVER_METRICS_TOKEN is unset; None otherwise."""
    if token is not None or _is_loopback(host):
        return None
    return (
        f"GET /metrics answers anyone who can reach {host}: set HANDOVER_METRICS_TOKEN to "
        "require a bearer token, or HOST=127.0.0.1 (docs/operations.md)"
    )


def _is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def create_metrics_blueprint(
    session_factory: sessionmaker[Session],
    now: Callable[[], datetime],
    *,
    token: str | None = None,
) -> Blueprint:
    """`GET /metrics` on its own registry (no process-local counters); with a `token`, only
    for a request that carries it as a bearer token (docs/reference/http.md)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(session_factory, now))
    blueprint = Blueprint("metrics", __name__)

    @blueprint.get("/metrics")
    def metrics():
        if token is not None and not bearer_token_matches(
            request.headers.get("Authorization"), token
        ):
            # RFC 6750: no credentials is a bare challenge; wrong ones say invalid_token.
            # Never what was presented. A flood is logged once a minute (bot/logfilter.py).
            presented = "Authorization" in request.headers
            if presented:
                logger.warning(
                    "metrics: refused a scrape from %s: wrong or malformed bearer token",
                    request.remote_addr,
                )
            else:
                logger.warning(
                    "metrics: refused a scrape from %s: no Authorization header",
                    request.remote_addr,
                )
            challenge = 'Bearer realm="handover-metrics"'
            if presented:
                challenge += ', error="invalid_token"'
            return Response(
                "unauthorized\n",
                status=401,
                content_type="text/plain; charset=utf-8",
                headers={"WWW-Authenticate": challenge},
            )
        try:
            body = generate_latest(registry)
        except SQLAlchemyError as exc:
            logger.warning("metrics: database unavailable (%s)", exc.__class__.__name__)
            return Response(
                "database unavailable\n", status=503, content_type="text/plain; charset=utf-8"
            )
        # The classic text format (0.0.4): every Prometheus and agent reads it.
        return Response(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)

    return blueprint
