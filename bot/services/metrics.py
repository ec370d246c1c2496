"""What `GET /metrics` shows, read from the database (docs/operations.md).

Every figure is a count over the outbox or the audit log, so every instance of `serve` answers
the same and a restart loses nothing. Three grouped queries, each answered from an index
(`ix_outbox_state_due`, `ix_outbox_metrics`, `ix_audit_log_event`) and bounded by the
service's statement timeout (bot/db.py):

- the outbox's open rows (pending or claimed) by kind: how many are due now, how many wait for
  a later time, and the oldest due time;
- the settled rows (sent or failed) by kind, channel and outcome, and how late those
  delivered went out (`lateness_ms`: `sent_at - due_at`) counted into buckets, in one scan;
- the audit log's events by name (escalation steps and breaches among them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.orm import Session

from bot.delivery.kinds import OutboxKind, RowState
from bot.models import AuditEvent, OutboxMessage
from bot.slackjobs.queue import JobCounts, count_jobs

# Upper bounds (seconds) of the lateness histogram: on time is within the dispatcher's
# 30-second safety pass; a prompt more than 2 minutes after its time is logged late.
LATENESS_BUCKETS: tuple[float, ...] = (1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 14400)
OPEN_STATES = (RowState.PENDING, RowState.CLAIMED)
SETTLED_STATES = (RowState.SENT, RowState.FAILED)
NO_CHANNEL = "none"
# Escalation steps as the log names them (docs/reference/audit-events.md).
ESCALATION_EVENTS = ("reminder_sent", "escalated", "escalated_channel")


class SendOutcome(StrEnum):
    """How a settled outbox row ended, as /metrics counts it."""

    DELIVERED = "delivered"
    DELIVERED_LATE = "delivered_late"  # sent, but logged late
    FAILED = "failed"


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
    outcome: SendOutcome
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
    slack_jobs: JobCounts

    def oldest_job_age(self) -> float:
        """Seconds since the oldest click job not yet done was written (0 when none)."""
        oldest = self.slack_jobs.oldest_created_at
        return max(0.0, (self.at - oldest).total_seconds()) if oldest is not None else 0.0

    def oldest_due_age(self, kind: str) -> float:
        """Seconds since the oldest due, unsettled row of `kind` was due (0 when none)."""
        for rows in self.open_rows:
            if rows.kind == kind and rows.oldest_due_at is not None:
                return max(0.0, (self.at - rows.oldest_due_at).total_seconds())
        return 0.0


def read_snapshot(
    session: Session, now: datetime, buckets: Sequence[float] = LATENESS_BUCKETS
) -> Snapshot:
    """Read the figures of /metrics at `now` (three grouped, indexed queries and the click jobs'
    count)."""
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

    # One scan of the settled messages: counted by kind, channel and outcome, and (for those
    # delivered) into the lateness buckets, which are then summed by channel.
    outcome = case(
        (row.state == RowState.FAILED, literal(SendOutcome.FAILED.value)),
        (row.late.is_(True), literal(SendOutcome.DELIVERED_LATE.value)),
        else_=literal(SendOutcome.DELIVERED.value),
    )
    channel = func.coalesce(row.channel, NO_CHANNEL)
    late_ms = row.lateness_ms
    timed = and_(row.state == RowState.SENT, late_ms.is_not(None))
    bucket_sums = [
        func.sum(case((and_(timed, late_ms <= round(bound * 1000)), 1), else_=0))
        for bound in buckets
    ]
    sends: list[Sends] = []
    by_channel: dict[str, list[float]] = {}  # channel -> [count, total ms, *cumulative]
    for kind, channel_name, result, count, timed_count, total_ms, *cumulative in session.execute(
        select(
            row.kind,
            channel,
            outcome,
            func.count(),
            func.sum(case((timed, 1), else_=0)),
            func.sum(case((timed, late_ms), else_=0)),
            *bucket_sums,
        )
        .where(row.state.in_(SETTLED_STATES), row.kind != OutboxKind.ESCALATION)
        .group_by(row.kind, channel, outcome)
    ):
        sends.append(
            Sends(kind=kind, channel=channel_name, outcome=SendOutcome(result), count=int(count))
        )
        if timed_count:
            sums = by_channel.setdefault(channel_name, [0] * (2 + len(buckets)))
            for i, value in enumerate((timed_count, total_ms, *cumulative)):
                sums[i] += int(value or 0)
    lateness = [
        Lateness(
            channel=channel_name,
            buckets=tuple(zip(buckets, (int(c) for c in sums[2:]), strict=True)),
            count=int(sums[0]),
            total_seconds=sums[1] / 1000,
        )
        for channel_name, sums in sorted(by_channel.items())
    ]

    events = {
        name: int(count)
        for name, count in session.execute(
            select(AuditEvent.event, func.count()).group_by(AuditEvent.event)
        )
    }
    return Snapshot(
        at=now,
        open_rows=open_rows,
        sends=sends,
        lateness=lateness,
        events=events,
        slack_jobs=count_jobs(session),
    )
