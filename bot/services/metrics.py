"""What `GET /metrics` shows, read from the database (docs/operations.md).

Every figure is a count over the outbox or the audit log, so every instance of `serve` answers
the same and a restart loses nothing. Four grouped queries, each answered from an index
(`ix_outbox_state_due`, `ix_outbox_metrics`, `ix_audit_log_event`) and bounded by the
service's statement timeout (bot/db.py):

- the outbox's open rows (pending or claimed) by kind: how many are due now, how many wait for
  a later time, and the oldest due time;
- the settled rows (sent or failed) by kind, channel and outcome;
- how late delivered rows went out (`sent_at - due_at`), by channel, counted into buckets;
- the audit log's events by name (escalation steps and breaches among them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.orm import Session

from bot.delivery.kinds import OutboxKind, RowState
from bot.models import AuditEvent, OutboxMessage

# Upper bounds (seconds) of the lateness histogram: on time is within the dispatcher's
# 30-second safety pass; a prompt more than 2 minutes after its time is logged late.
LATENESS_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 14400)
OPEN_STATES = (RowState.PENDING, RowState.CLAIMED)
SETTLED_STATES = (RowState.SENT, RowState.FAILED)
NO_CHANNEL = "none"
# Escalation steps as the log names them (docs/reference/audit-events.md).
ESCALATION_EVENTS = ("reminder_sent", "escalated", "escalated_channel")


@dataclass(frozen=True)
class OpenRows:
    """Outbox rows of one kind not yet settled."""

    kind: str
    due: int  # due now (or overdue)
    scheduled: int  # due later
    oldest_due_at: datetime | None


@dataclass(frozen=True)
class Sends:
    """Settled outbox rows of one kind, channel and outcome."""

    kind: str
    channel: str
    outcome: str  # delivered | delivered_late | failed
    count: int


@dataclass(frozen=True)
class Lateness:
    """How late delivered rows of one channel went out: cumulative bucket counts."""

    channel: str
    buckets: tuple[tuple[float, int], ...]  # (upper bound, rows at most that late)
    count: int
    total_seconds: float


@dataclass(frozen=True)
class Snapshot:
    """Everything /metrics shows, read at `at`."""

    at: datetime
    open_rows: list[OpenRows]
    sends: list[Sends]
    lateness: list[Lateness]
    events: dict[str, int]

    def oldest_due_age(self, kind: str) -> float:
        """Seconds since the oldest due, unsettled row of `kind` was due (0 when none)."""
        for rows in self.open_rows:
            if rows.kind == kind and rows.oldest_due_at is not None:
                return max(0.0, (self.at - rows.oldest_due_at).total_seconds())
        return 0.0


def read_snapshot(
    session: Session, now: datetime, buckets: Sequence[float] = LATENESS_BUCKETS
) -> Snapshot:
    """Read the figures of /metrics at `now` (four grouped, indexed queries)."""
    row = OutboxMessage
    is_due = row.due_at <= now
    open_rows = [
        OpenRows(kind=kind, due=int(due or 0), scheduled=int(later or 0), oldest_due_at=oldest)
        for kind, due, later, oldest in session.execute(
            select(
                row.kind,
                func.sum(case((is_due, 1), else_=0)),
                func.sum(case((is_due, 0), else_=1)),
                func.min(case((is_due, row.due_at), else_=None)),
            )
            .where(row.state.in_(OPEN_STATES))
            .group_by(row.kind)
        )
    ]

    outcome = case(
        (row.state == RowState.FAILED, literal("failed")),
        (row.late.is_(True), literal("delivered_late")),
        else_=literal("delivered"),
    )
    channel = func.coalesce(row.channel, NO_CHANNEL)
    messages = and_(row.state.in_(SETTLED_STATES), row.kind != OutboxKind.ESCALATION)
    sends = [
        Sends(kind=kind, channel=channel_name, outcome=result, count=int(count))
        for kind, channel_name, result, count in session.execute(
            select(row.kind, channel, outcome, func.count())
            .where(messages)
            .group_by(row.kind, channel, outcome)
        )
    ]

    late_ms = row.lateness_ms
    bucket_sums = [
        func.sum(case((late_ms <= round(bound * 1000), 1), else_=0)) for bound in buckets
    ]
    lateness = []
    for channel_name, count, total, *cumulative in session.execute(
        select(channel, func.count(), func.sum(late_ms), *bucket_sums)
        .where(row.state == RowState.SENT, row.kind != OutboxKind.ESCALATION)
        .where(late_ms.is_not(None))
        .group_by(channel)
    ):
        lateness.append(
            Lateness(
                channel=channel_name,
                buckets=tuple(zip(buckets, (int(c or 0) for c in cumulative), strict=True)),
                count=int(count),
                total_seconds=(total or 0) / 1000,
            )
        )

    events = {
        name: int(count)
        for name, count in session.execute(
            select(AuditEvent.event, func.count()).group_by(AuditEvent.event)
        )
    }
    return Snapshot(at=now, open_rows=open_rows, sends=sends, lateness=lateness, events=events)
