"""Retention: what is erased, when, and the record kept that it was (docs/security.md).

A closed referral's personal data — its free-text `summary` (the account of the child and
family) and `close_reason` (typed by a person), and `request_hash` (a digest of the request,
summary included, that could confirm a guess of it) — is erased once it was closed before the
cut-off. What stays is the minimal record allowed even in Slack
(docs/information-governance.md): the referral ID, the case system's reference, category,
urgency, times, who was asked and who answered. The case system remains the record of the
child; it has its own retention schedule.

The audit log is never altered: it must never carry personal data in the first place (free
text stays out of it: bot/services/closing.py keeps a close reason with the referral), and a
`referral_purged` event records each erasure, so the hash chain still verifies.

`run_daily_retention` is what the dispatcher runs once a day, at RETENTION_TIME service time
and at its start when that day's run has not happened (`run_retention_for_the_day`: a row of
`retention_runs` a day, written in the run's transaction, makes it once a day however many
dispatchers run and however often they restart); `handover purge` calls the same functions.
Sessions come from the caller; nothing here commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from bot.models import Referral, ReferralStatus, RetentionRun, SlackEvent
from bot.services import audit
from bot.services.replay import forget_expired_requests
from bot.settings import Settings
from bot.slackjobs.queue import forget_finished_jobs

# Slack retries an event delivery for a few minutes at most; two days is ample.
EVENT_ID_RETENTION = timedelta(days=2)
ERASED_FIELDS = ("summary", "close_reason", "request_hash")
RETENTION_ACTOR = "retention"
# When the dispatcher's daily run falls, in service time: after the night's work and clear of
# the clock changes (01:00-02:00 in the UK), so that it falls once every day.
RETENTION_TIME = time(3, 0)


@dataclass(frozen=True)
class PurgedReferral:
    """A closed referral a retention run erased (or would erase), and when it was closed."""

    referral_id: str
    closed_at: datetime


@dataclass(frozen=True)
class RetentionReport:
    """What one retention run erased (or, in a dry run, would erase) and pruned."""

    before: datetime | None
    referrals: list[PurgedReferral] = field(default_factory=list)
    slack_events: int = 0
    slack_requests: int = 0
    dry_run: bool = False


def referrals_to_purge(session: Session, *, before: datetime) -> list[Referral]:
    """Closed referrals not yet purged whose closing came before `before`, oldest first."""
    return list(
        session.scalars(
            select(Referral)
            .where(
                Referral.status == ReferralStatus.CLOSED,
                Referral.closed_at < before,
                Referral.purged_at.is_(None),
            )
            .order_by(Referral.closed_at, Referral.referral_id)
        )
    )


def purge_referrals(
    session: Session, *, before: datetime, now: datetime, dry_run: bool = False
) -> list[PurgedReferral]:
    """Erase the personal data of referrals closed before `before`, logging each erasure."""
    purged = []
    for referral in referrals_to_purge(session, before=before):
        assert referral.closed_at is not None
        purged.append(PurgedReferral(referral.referral_id, referral.closed_at))
        if dry_run:
            continue
        referral.summary = ""
        referral.close_reason = None
        referral.request_hash = ""
        referral.purged_at = now
        audit.record(
            session,
            "referral_purged",
            at=now,
            referral_id=referral.referral_id,
            actor=RETENTION_ACTOR,
            detail={
                "closed_at": referral.closed_at.isoformat(),
                "closed_before": before.isoformat(),
                "erased": list(ERASED_FIELDS),
            },
            rota_version=referral.rota_version,
        )
    session.flush()
    return purged


def prune_slack_events(session: Session, *, now: datetime) -> int:
    """Forget the event ids of deliveries Slack can no longer retry."""
    result = session.execute(
        delete(SlackEvent).where(SlackEvent.received_at < now - EVENT_ID_RETENTION)
    )
    return result.rowcount or 0


def retention_cutoff(settings: Settings, now: datetime) -> datetime | None:
    """`now` less HANDOVER_RETENTION_DAYS, or None when no retention period is set."""
    if settings.retention_days is None:
        return None
    return now - timedelta(days=settings.retention_days)


def run_retention(
    session: Session, *, now: datetime, before: datetime | None, dry_run: bool = False
) -> RetentionReport:
    """Purge referrals closed before `before` (none when None) and prune the dedupe tables."""
    referrals = purge_referrals(session, before=before, now=now, dry_run=dry_run) if before else []
    if dry_run:
        return RetentionReport(before, referrals, dry_run=True)
    return RetentionReport(
        before,
        referrals,
        slack_events=prune_slack_events(session, now=now),
        # A finished click job is its request's signature too (bot/slackjobs/queue.py).
        slack_requests=forget_expired_requests(session, now=now)
        + forget_finished_jobs(session, now=now),
    )


def run_daily_retention(session: Session, *, now: datetime, settings: Settings) -> RetentionReport:
    """The dispatcher's daily pass: HANDOVER_RETENTION_DAYS (if set) and the dedupe tables."""
    return run_retention(session, now=now, before=retention_cutoff(settings, now))


def retention_day(now: datetime, tz: ZoneInfo) -> date:
    """The day a daily run at `now` counts for: the date, in service time, of the latest
    RETENTION_TIME at or before `now` (at 02:59 on the 16th it is still the 15th's run)."""
    local = now.astimezone(tz)
    return local.date() if local.time() >= RETENTION_TIME else local.date() - timedelta(days=1)


def next_retention_at(after: datetime, tz: ZoneInfo) -> datetime:
    """The first RETENTION_TIME, service time, strictly after `after` (UTC)."""
    local_day = after.astimezone(tz).date()
    for day in (local_day, local_day + timedelta(days=1)):
        at = datetime.combine(day, RETENTION_TIME, tzinfo=tz).astimezone(UTC)
        if at > after:
            return at
    raise AssertionError("unreachable: RETENTION_TIME falls every day")


def run_retention_for_the_day(
    session: Session, *, now: datetime, settings: Settings, ran_by: str
) -> RetentionReport | None:
    """The daily run, unless the day (`retention_day`) already had one: then None.

    The day's `retention_runs` row is written first, in the caller's transaction: a dispatcher
    claiming the same day at the same moment waits on it and then fails with IntegrityError
    (its transaction changes nothing); a run that fails rolls its row back with it, so the next
    attempt runs the day again.
    """
    day = retention_day(now, settings.timezone)
    if session.get(RetentionRun, day) is not None:
        return None
    run = RetentionRun(day=day, ran_at=now, ran_by=ran_by, referrals_purged=0)
    session.add(run)
    session.flush()
    report = run_daily_retention(session, now=now, settings=settings)
    run.referrals_purged = len(report.referrals)
    session.flush()
    return report
