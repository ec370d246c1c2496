"""The slack_jobs table's verbs: add a batch, claim the ready jobs, finish, retry or drop one.

Every instant is an argument (the runner and the writer read the wall clock). A payload's
`private` part (what a person typed, a slash command's response_url) is erased once the job is
done or dropped, or by its work itself once used (`forget_private`); the rest stays until the
row is deleted (`forget_finished_jobs`). A job is claimed
with a lease, as an outbox row is (bot/delivery/outbox.py): on PostgreSQL the claim skips rows
another runner holds locked, and SQLite serialises its writers (BEGIN IMMEDIATE, bot/db.py), so
each job is run by one runner at a time; a runner that dies holding a job leaves it to be
claimed again when its lease ends.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, delete, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from bot.models import SlackJob, SlackJobState
from bot.services.replay import REPLAY_WINDOW

NOTIFY_CHANNEL = "handover_slack_jobs"  # what a runner's watch LISTENs to on PostgreSQL
DEFAULT_LEASE = timedelta(minutes=2)
# Waits before the 2nd, 3rd, ... attempt; after the last attempt the job is dropped.
BACKOFF = (timedelta(seconds=2), timedelta(seconds=10), timedelta(seconds=60), timedelta(minutes=5))
MAX_ATTEMPTS = len(BACKOFF) + 1
# The payload's key of what must not outlive the job's work (a slash command's response_url and
# typed words: a close's reason is the referral's alone, erased by retention).
PRIVATE = "private"


@dataclass(frozen=True)
class NewJob:
    """A job to add: its kind, its payload, and the signature of the request that started it
    (None in Socket Mode, where no request is signed) with the request's timestamp."""

    kind: str
    payload: Mapping[str, Any]
    signature: str | None = None
    timestamp: int | None = None


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    payload: dict[str, Any]
    attempts: int  # including this one
    claimed_by: str  # the runner holding it: its work's writes are fenced on it
    ready_at: datetime  # when it became ready (written, or handed back for a retry)
    created_at: datetime  # when it was written: the click or the command, a moment after


def public_part(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload without its private part."""
    return {key: value for key, value in payload.items() if key != PRIVATE}


def add_jobs(connection: Connection, jobs: Sequence[NewJob], *, now: datetime) -> list[NewJob]:
    """Insert `jobs` in one statement (up to 1,000 rows); those whose signature is already
    there (replays) are skipped. Returns the jobs added, in order."""
    if not jobs:
        return []
    rows = [
        {
            "kind": job.kind,
            "payload": _json(job.payload),
            "signature": job.signature,
            "state": SlackJobState.WAITING.value,
            "created_at": now,
            "ready_at": now,
            "expires_at": _expiry(job, now),
            "attempts": 0,
        }
        for job in jobs
    ]
    # One statement: SQLAlchemy sends the batch as a multi-row INSERT ("insertmanyvalues"),
    # conflicts skipped, the signatures added returned. It compiles it at every call (it caches
    # no ON CONFLICT statement), a cost the writer's batches share (bot/slackjobs/writer.py).
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = (
        insert(SlackJob)
        .on_conflict_do_nothing(index_elements=["signature"])
        .returning(SlackJob.signature)
    )
    added = {signature for (signature,) in connection.execute(statement, rows)}
    if connection.dialect.name == "postgresql":
        # Delivered at the commit, to every runner's watch (bot/slackjobs/runner.py): an empty
        # payload is jobs written (bot/slackjobs/beacon.py sends the web process's others).
        connection.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
    seen: set[str] = set()
    kept = []
    for job in jobs:
        if job.signature is None:
            kept.append(job)
        elif job.signature in added and job.signature not in seen:
            seen.add(job.signature)  # a replay in the same batch: the first is the one added
            kept.append(job)
    return kept


def _expiry(job: NewJob, now: datetime) -> datetime:
    """When the job's signature could no longer pass Slack's signature check."""
    if job.timestamp is None:
        return now + REPLAY_WINDOW
    return datetime.fromtimestamp(job.timestamp, UTC) + REPLAY_WINDOW


def _ready(now: datetime):
    waiting = and_(SlackJob.state == SlackJobState.WAITING, SlackJob.ready_at <= now)
    abandoned = and_(SlackJob.state == SlackJobState.RUNNING, SlackJob.claimed_until < now)
    return or_(waiting, abandoned)


def claim_ready(
    session: Session, now: datetime, *, instance_id: str, limit: int, lease: timedelta
) -> list[ClaimedJob]:
    """Claim up to `limit` ready jobs (oldest first) for `instance_id` until now + lease."""
    query = select(SlackJob).where(_ready(now)).order_by(SlackJob.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    claimed = []
    for job in session.scalars(query):
        job.state = SlackJobState.RUNNING
        job.claimed_by = instance_id
        job.claimed_until = now + lease
        job.attempts += 1
        claimed.append(
            ClaimedJob(
                job.id,
                job.kind,
                json.loads(job.payload),
                job.attempts,
                instance_id,
                _aware(job.ready_at),
                _aware(job.created_at),
            )
        )
    session.flush()
    return claimed


def finish(
    session: Session,
    job_id: int,
    *,
    instance_id: str,
    now: datetime,
    payload: dict[str, Any] | None = None,
) -> bool:
    """Mark a job this runner holds done, its payload without its private part (`payload`: the
    job's as claimed); False when its claim was lost meanwhile."""
    return _settle(
        session, job_id, instance_id, state=SlackJobState.DONE, finished_at=now,
        **_erased(payload),
    )  # fmt: skip


def retry_later(
    session: Session, job_id: int, *, instance_id: str, ready_at: datetime, error: str
) -> bool:
    """Hand a failed job back, to be claimed again at `ready_at`."""
    return _settle(
        session, job_id, instance_id, state=SlackJobState.WAITING, ready_at=ready_at,
        last_error=error[:120],
    )  # fmt: skip


def drop(
    session: Session,
    job_id: int,
    *,
    instance_id: str,
    now: datetime,
    error: str,
    payload: dict[str, Any] | None = None,
) -> bool:
    """Give a job up after its last attempt, its payload without its private part (the caller
    records slack_job_dropped)."""
    return _settle(
        session, job_id, instance_id, state=SlackJobState.DROPPED, finished_at=now,
        last_error=error[:120], **_erased(payload),
    )  # fmt: skip


def forget_private(session: Session, job: ClaimedJob) -> bool:
    """Erase the private part of a job its runner still holds, in the caller's transaction (the
    work that used it commits with it, so a later attempt finds it gone); False when the claim
    was lost, and the caller must not commit its work."""
    result = session.execute(
        update(SlackJob)
        .where(_held(job.id, job.claimed_by))
        .values(payload=_json(public_part(job.payload)))
        .execution_options(synchronize_session=False)
    )
    return (result.rowcount or 0) == 1


def _erased(payload: dict[str, Any] | None) -> dict[str, Any]:
    if payload is None or PRIVATE not in payload:
        return {}
    return {"payload": _json(public_part(payload))}


def _json(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


def _settle(session: Session, job_id: int, instance_id: str, **values: Any) -> bool:
    result = session.execute(
        update(SlackJob)
        .where(_held(job_id, instance_id))
        .values(claimed_by=None, claimed_until=None, **values)
        .execution_options(synchronize_session=False)
    )
    return (result.rowcount or 0) == 1


def _held(job_id: int, instance_id: str):
    return and_(
        SlackJob.id == job_id,
        SlackJob.state == SlackJobState.RUNNING,
        SlackJob.claimed_by == instance_id,
    )


def next_ready_at(session: Session) -> datetime | None:
    """The earliest instant at which a job that is not ready now becomes ready."""
    waiting = session.scalar(
        select(func.min(SlackJob.ready_at)).where(SlackJob.state == SlackJobState.WAITING)
    )
    lease_ends = session.scalar(
        select(func.min(SlackJob.claimed_until)).where(SlackJob.state == SlackJobState.RUNNING)
    )
    candidates = [_aware(t) for t in (waiting, lease_ends) if t is not None]
    return min(candidates) if candidates else None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class JobCounts:
    """For /metrics: jobs not yet done (waiting or running) and the oldest one's creation."""

    waiting: int
    oldest_created_at: datetime | None


def count_jobs(session: Session) -> JobCounts:
    """Jobs waiting or running, and when the oldest of them was written (one indexed query)."""
    open_states = (SlackJobState.WAITING, SlackJobState.RUNNING)
    waiting, oldest = session.execute(
        select(func.count(), func.min(SlackJob.created_at)).where(SlackJob.state.in_(open_states))
    ).one()
    return JobCounts(int(waiting or 0), _aware(oldest) if oldest else None)


def forget_finished_jobs(session: Session, *, now: datetime) -> int:
    """Delete finished jobs whose signatures can no longer pass the signature check."""
    result = session.execute(
        delete(SlackJob).where(
            SlackJob.state.in_((SlackJobState.DONE, SlackJobState.DROPPED)),
            SlackJob.expires_at < now,
        )
    )
    return result.rowcount or 0
