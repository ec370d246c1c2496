"""Read-only queries on the escalation log and the live state of referrals, for managers.

Two kinds of question are answered here:

- *What does the log say?* `iter_log` streams audit rows in order, filtered by referral and a
  time window (`LogWindow`), and `log_record` renders one row as `log --format jsonl` prints it
  (docs/reference/commands.md).
- *What is the state now?* open referrals, overdue prompts, a referral's history (who was asked,
  when, who answered, who never did), a person's open prompts, and the strategy-discussion
  coverage of each referral.

Coverage has one rule, in bot.services.coverage (docs/coverage.md).

These functions take a session and never commit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Row, Select, func, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from bot.delivery.kinds import (
    UNANSWERED_TARGET_STATES,
    OutboxKind,
    RowState,
    TargetState,
)
from bot.errors import InputError
from bot.models import (
    URGENCIES,
    AuditEvent,
    ContactFollowup,
    OutboxMessage,
    Referral,
    ReferralStatus,
    Response,
    Target,
)
from bot.services.agencies import AgencyResolver
from bot.services.coverage import (
    Coverage,
    coverage_for_referrals,
)
from bot.services.visibility import Scope
from bot.settings import EscalationPolicy
from rota.escalation import BREACH, ESCALATE, ESCALATE_CHANNEL, REMIND, STEPS
from rota.store import RotaStore
from rota.worktime import WorkingTime

LOG_FIELDS = ("at", "referral_id", "event", "actor", "recipient", "target", "detail")

AWAITING_STATES = (TargetState.HELD, *UNANSWERED_TARGET_STATES)  # asked, or about to be

# The log's event for each escalation step (as bot.delivery.escalation records them)
STEP_BY_EVENT = {
    "reminder_sent": REMIND,
    "escalated": ESCALATE,
    "escalated_channel": ESCALATE_CHANNEL,
    "breach": BREACH,
}

# A prompt due a moment ago is the dispatcher's next job, not yet a failure to chase.
OVERDUE_GRACE = timedelta(minutes=5)
YIELD_PER = 500
_CHUNK = 500
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# ----- the log --------------------------------------------------------------------------------


class unindexed(FunctionElement):
    """A column compared without its index on SQLite (`+column`), so that a window holding
    most of the table is read by one scan, not a look-up in the table for every index entry."""

    inherit_cache = True
    name = "unindexed"

    def __init__(self, column: ColumnElement[Any]) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(unindexed)
def _unindexed(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(unindexed, "sqlite")
def _unindexed_sqlite(element: unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return f"+{compiler.process(element.clauses, **kw)}"  # SQLite's unary + keeps the value


@dataclass(frozen=True)
class LogWindow:
    """Which audit rows to read: a referral and a time window (since inclusive)."""

    referral_id: str | None = None
    since: datetime | None = None  # inclusive
    before: datetime | None = None  # exclusive (an `--until` date: the next local midnight)
    until: datetime | None = None  # inclusive (an `--until` date-time)
    scan: bool = False  # compare `at` to the bounds row by row, not through its index

    def contains(self, at: datetime) -> bool:
        """Whether an instant falls inside the window."""
        if self.since is not None and at < self.since:
            return False
        if self.before is not None and at >= self.before:
            return False
        return not (self.until is not None and at > self.until)

    def apply(self, statement: Select) -> Select:
        """Add the window's conditions on AuditEvent to a select."""
        if self.referral_id is not None:
            statement = statement.where(AuditEvent.referral_id == self.referral_id)
        at = AuditEvent.__table__.c.at
        if self.scan:
            at = unindexed(at)
        if self.since is not None:
            statement = statement.where(at >= self.since)
        if self.before is not None:
            statement = statement.where(at < self.before)
        if self.until is not None:
            statement = statement.where(at <= self.until)
        return statement


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def parse_local_bound(text: str, tz: ZoneInfo, option: str) -> date | datetime:
    """A date, or an aware date-time (local when it has no offset); InputError otherwise."""
    value = text.strip()
    try:
        if _DATE_RE.match(value):
            return date.fromisoformat(value)
        instant = datetime.fromisoformat(value)
    except ValueError as exc:
        raise InputError(
            f"{option}: {text!r} is not a date (2026-11-14) or date-time (2026-11-14T09:00)"
        ) from exc
    return (instant if instant.tzinfo is not None else instant.replace(tzinfo=tz)).astimezone(UTC)


def parse_window(
    since: str | None, until: str | None, tz: ZoneInfo, referral_id: str | None = None
) -> LogWindow:
    """The window of `--since`/`--until`; an `--until` date includes the whole of that day."""
    earliest, latest = 2000, 2999  # as the CLI's --at: far dates overflow the date arithmetic

    def bound(text: str, option: str) -> date | datetime:
        try:
            value = parse_local_bound(text, tz, option)
        except OverflowError:  # e.g. 0001-01-01T00:00+01:00 is before year 1 in UTC
            value = None
        if value is None or not earliest <= value.year <= latest:
            raise InputError(f"{option}: {text!r} is outside the years {earliest} to {latest}")
        return value

    since_at: datetime | None = None
    before: datetime | None = None
    until_at: datetime | None = None
    if since:
        start = bound(since, "--since")
        since_at = start if isinstance(start, datetime) else _local_midnight(start, tz)
    if until:
        end_bound = bound(until, "--until")
        if isinstance(end_bound, datetime):
            until_at = end_bound
        else:
            before = _local_midnight(end_bound + timedelta(days=1), tz)
    # An --until time is inclusive, so it may equal --since (the events of that instant); an
    # --until date ends at the next midnight, exclusive (docs/reference/commands.md).
    ends_before = (until_at is not None and since_at is not None and until_at < since_at) or (
        before is not None and since_at is not None and before <= since_at
    )
    if ends_before:
        raise InputError("--until is before --since")
    ref = referral_id.strip() if referral_id else None
    return LogWindow(referral_id=ref or None, since=since_at, before=before, until=until_at)


def iter_log(session: Session, window: LogWindow = LogWindow()) -> Iterator[Row]:
    """Audit rows in the window, by time then id, streamed in batches (never all at once).

    Plain rows with the columns of AuditEvent as attributes, not ORM objects: building and
    expunging an object a row was most of the time of `report` and `log` over a long log.
    """
    columns = AuditEvent.__table__.c
    statement = window.apply(select(*columns)).order_by(columns.at, columns.id)
    yield from session.execute(statement.execution_options(yield_per=YIELD_PER))


def detail_value(text: str | None) -> Any:
    """An audit row's detail as its JSON value, or the plain string when it is not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def log_record(row: AuditEvent | Row, tz: ZoneInfo) -> dict[str, Any]:
    """One audit row as `log --format jsonl` prints it (docs/reference/commands.md); `at` is
    ISO 8601 with the local offset."""
    return _record(row, row.at.astimezone(tz).isoformat())


def _record(row: AuditEvent | Row, local_at: str) -> dict[str, Any]:
    return {
        "at": local_at,
        "referral_id": row.referral_id,
        "event": row.event,
        "actor": row.actor,
        "recipient": row.recipient,
        "target": row.target,
        "detail": detail_value(row.detail),
    }


# ----- working time ---------------------------------------------------------------------------


def working_minutes_between(working_time: WorkingTime, start: datetime, end: datetime) -> float:
    """Minutes of `working_time` between two instants (wall-clock minutes for shift workers)."""
    if end <= start:
        return 0.0
    return working_time.working_time_between(start, end).total_seconds() / 60


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i : i + _CHUNK]


# ----- live state -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ReferralFacts:
    """The fields of a referral that may appear in Slack; the summary is deliberately absent."""

    referral_id: str
    external_ref: str
    category: str
    urgency: str
    referred_at: datetime
    received_at: datetime

    @classmethod
    def of(cls, referral: Any) -> ReferralFacts:
        """Copy the shareable fields from a Referral (or any object with those attributes)."""
        return cls(
            referral_id=referral.referral_id,
            external_ref=referral.external_ref,
            category=referral.category,
            urgency=referral.urgency,
            referred_at=referral.referred_at,
            received_at=referral.received_at,
        )


def _in_scope(statement: Select, scope: Scope | None) -> Select:
    """Only the referrals `scope` may read (all of them without a scope)."""
    if scope is None or scope.everything:
        return statement
    return statement.where(Referral.referral_id.in_(scope.referral_ids()))


def count_open_referrals(session: Session, scope: Scope | None = None) -> int:
    """How many referrals are open (of those in `scope`)."""
    return session.scalar(
        _in_scope(
            select(func.count())
            .select_from(Referral)
            .where(Referral.status == ReferralStatus.OPEN),
            scope,
        )
    )


def open_referrals(
    session: Session, *, offset: int = 0, limit: int | None = None, scope: Scope | None = None
) -> list[Referral]:
    """Open referrals (of those in `scope`), most recently received first."""
    statement = _in_scope(
        select(Referral)
        .where(Referral.status == ReferralStatus.OPEN)
        .order_by(Referral.received_at.desc(), Referral.referral_id)
        .offset(offset),
        scope,
    )
    if limit is not None:
        statement = statement.limit(limit)
    return list(session.scalars(statement))


@dataclass(frozen=True)
class Overdue:
    """A target nobody has answered in time: never sent though due, or past its reminder.

    For a sent prompt, `last_step` is the latest escalation step performed by then (one of
    rota.escalation's STEPS) and `next_step` the step still due, each with its instant.
    """

    referral_id: str
    target: str
    prompt_id: int
    recipient_id: str | None
    state: str  # held | failed (never sent) | prompted (sent, unanswered)
    since: datetime  # when it became overdue: the due time, or the reminder time
    last_step: str | None = None
    last_step_at: datetime | None = None
    next_step: str | None = None
    next_step_at: datetime | None = None


@dataclass(frozen=True)
class _Progress:
    last_step: str | None = None
    last_step_at: datetime | None = None
    next_step: str | None = None
    next_step_at: datetime | None = None


def _step_of(row: OutboxMessage) -> str | None:
    try:
        detail = json.loads(row.detail or "{}")
    except ValueError:
        return None
    step = detail.get("step") if isinstance(detail, dict) else None
    return step if step in STEPS else None


def _later(current: tuple[str, datetime] | None, step: str, at: datetime) -> tuple[str, datetime]:
    """The later of two performed steps (at the same instant, the further step)."""
    if current is None or (at, STEPS.index(step)) > (current[1], STEPS.index(current[0])):
        return step, at
    return current


def _escalation_progress(
    session: Session, prompted: Sequence[tuple[OutboxMessage, Target]], now: datetime
) -> dict[int, _Progress]:
    """Each sent prompt's latest escalation step performed by `now`, and the next one due.

    A step counts as performed when its outbox row was sent or the log records it (the log
    also holds steps recorded before their row was, and those of older versions).
    """
    by_target = {target.id: (prompt, target) for prompt, target in prompted}
    last: dict[int, tuple[str, datetime]] = {}
    upcoming: dict[int, tuple[str, datetime]] = {}
    for chunk in _chunks(list(by_target)):
        rows = session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.kind == OutboxKind.ESCALATION, OutboxMessage.target_id.in_(chunk)
            )
        )
        for row in rows:
            step = _step_of(row)
            assert row.target_id is not None
            if step is None:
                continue
            if row.state == RowState.SENT and row.sent_at is not None and row.sent_at <= now:
                last[row.target_id] = _later(last.get(row.target_id), step, row.sent_at)
            elif row.state in (RowState.PENDING, RowState.CLAIMED):
                known = upcoming.get(row.target_id)
                if known is None or row.due_at < known[1]:
                    upcoming[row.target_id] = (step, row.due_at)
    by_name = {(t.referral_id, t.spec): t.id for _, t in prompted}
    referral_ids = sorted({t.referral_id for _, t in prompted})
    for chunk in _chunks(referral_ids):
        events = session.execute(
            select(AuditEvent.referral_id, AuditEvent.target, AuditEvent.event, AuditEvent.at)
            .where(AuditEvent.referral_id.in_(chunk))
            .where(AuditEvent.event.in_(list(STEP_BY_EVENT)))
            .where(AuditEvent.at <= now)
        ).all()
        for referral_id, target_text, event, at in events:
            target_id = by_name.get((referral_id, target_text))
            if target_id is None:
                continue
            prompt = by_target[target_id][0]
            if prompt.sent_at is not None and at >= prompt.sent_at:
                last[target_id] = _later(last.get(target_id), STEP_BY_EVENT[event], at)
    progress: dict[int, _Progress] = {}
    for target_id in by_target:
        done, due = last.get(target_id), upcoming.get(target_id)
        progress[target_id] = _Progress(
            last_step=done[0] if done else None,
            last_step_at=done[1] if done else None,
            next_step=due[0] if due else None,
            next_step_at=due[1] if due else None,
        )
    return progress


def _prompts_of_open_referrals(scope: Scope | None = None) -> Select:
    """Each prompt row of an open referral (in `scope`), with its target."""
    return _in_scope(
        select(OutboxMessage, Target)
        .join(Target, Target.id == OutboxMessage.target_id)
        .join(Referral, Referral.referral_id == OutboxMessage.referral_id)
        .where(Referral.status == ReferralStatus.OPEN)
        .where(OutboxMessage.kind == OutboxKind.PROMPT),
        scope,
    )


class Policies(Protocol):
    """The escalation offsets of each urgency (bot.settings.Settings)."""

    def policy_for(self, urgency: str | None) -> EscalationPolicy:
        """The escalation offsets of a referral of `urgency`."""
        ...


def overdue_prompts(
    session: Session,
    now: datetime,
    policies: Policies,
    tz: ZoneInfo,
    scope: Scope | None = None,
) -> list[Overdue]:
    """Open referrals' targets (in `scope`) still `prompted` past their reminder time (in the
    recipient's working time, at their referral's urgency's offset), or never sent (`held`, or
    `failed`) past due; oldest first."""
    found: list[Overdue] = []
    held = session.execute(
        _prompts_of_open_referrals(scope)
        .where(OutboxMessage.state.in_((RowState.PENDING, RowState.CLAIMED, RowState.FAILED)))
        .where(Target.state.in_((TargetState.HELD, TargetState.FAILED)))
        .where(OutboxMessage.due_at <= now - OVERDUE_GRACE)
    ).all()
    for prompt, target in held:
        found.append(
            Overdue(
                referral_id=prompt.referral_id,
                target=target.spec,
                prompt_id=prompt.id,
                recipient_id=prompt.recipient_id or target.planned_recipient,
                state=target.state,
                since=prompt.due_at,
            )
        )
    # A reminder is at least `reminder_minutes` (the shorter urgency's) of wall-clock time
    # after the send.
    shortest = min(policies.policy_for(u).reminder_minutes for u in URGENCIES)
    earliest = now - timedelta(minutes=shortest)
    prompted = session.execute(
        _prompts_of_open_referrals(scope)
        .add_columns(Referral.urgency)
        .where(OutboxMessage.state == RowState.SENT)
        .where(Target.state.in_(UNANSWERED_TARGET_STATES))
        .where(OutboxMessage.sent_at <= earliest)
    ).all()
    resolver = AgencyResolver(RotaStore(session), tz)
    resolver.preload((t.spec for _, t, _ in prompted), (p.recipient_id for p, _, _ in prompted))
    late: list[tuple[OutboxMessage, Target, datetime]] = []
    for prompt, target, urgency in prompted:
        assert prompt.sent_at is not None
        working = resolver.working_time(target.spec, prompt.recipient_id)
        minutes = policies.policy_for(urgency).reminder_minutes
        reminder_at = working.add_working_minutes(prompt.sent_at, minutes)
        if reminder_at <= now:
            late.append((prompt, target, reminder_at))
    progress = _escalation_progress(session, [(p, t) for p, t, _ in late], now)
    for prompt, target, reminder_at in late:
        steps = progress[target.id]
        found.append(
            Overdue(
                referral_id=prompt.referral_id,
                target=target.spec,
                prompt_id=prompt.id,
                recipient_id=prompt.recipient_id,
                state=TargetState.PROMPTED,
                since=reminder_at,
                last_step=steps.last_step,
                last_step_at=steps.last_step_at,
                next_step=steps.next_step,
                next_step_at=steps.next_step_at,
            )
        )
    found.sort(key=lambda o: (o.since, o.referral_id, o.prompt_id))
    return found


@dataclass(frozen=True)
class Asked:
    """One message sent for a target: to whom, when, and whether it went late."""

    prompt_id: int
    kind: str
    recipient_id: str | None
    address: str | None
    sent_at: datetime
    late: bool


@dataclass(frozen=True)
class Answer:
    """One response recorded for a target."""

    kind: str
    responder_id: str
    on_behalf_of: str | None
    at: datetime


@dataclass(frozen=True)
class TargetHistory:
    """A target of a referral: who was asked, when, and who answered."""

    target: str
    state: str
    due_at: datetime | None
    planned_recipient: str | None
    asked: list[Asked] = field(default_factory=list)
    answers: list[Answer] = field(default_factory=list)

    @property
    def never_answered(self) -> bool:
        """Asked at least once, and nobody has answered."""
        return bool(self.asked) and not self.answers


@dataclass(frozen=True)
class OfferHistory:
    """Information a professional offered, and whether the contact happened."""

    professional_id: str
    method: str
    contact_by: datetime
    state: str  # awaiting | confirmed | missed
    answered_by: str | None


@dataclass(frozen=True)
class ReferralHistory:
    """A referral with each target's history, its coverage and the contacts offered."""

    referral: Referral
    targets: list[TargetHistory]
    coverage: Coverage
    offers: list[OfferHistory] = field(default_factory=list)


def referral_history(session: Session, referral_id: str, tz: ZoneInfo) -> ReferralHistory | None:
    """Who was asked, when, who answered and who never did, for one referral (None if unknown)."""
    referral = session.get(Referral, referral_id)
    if referral is None:
        return None
    targets = list(
        session.scalars(
            select(Target).where(Target.referral_id == referral_id).order_by(Target.position)
        )
    )
    prompts = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.referral_id == referral_id)
        .where(OutboxMessage.target_id.is_not(None))
        # The prompt and each step performed; a step's own messages are that step.
        .where(OutboxMessage.kind.in_((OutboxKind.PROMPT, OutboxKind.ESCALATION)))
        .where(OutboxMessage.sent_at.is_not(None))
        .order_by(OutboxMessage.sent_at, OutboxMessage.id)
    ).all()
    responses = session.scalars(
        select(Response)
        .where(Response.referral_id == referral_id)
        .order_by(Response.at, Response.id)
    ).all()
    asked: dict[int, list[Asked]] = {}
    for p in prompts:
        assert p.target_id is not None and p.sent_at is not None
        asked.setdefault(p.target_id, []).append(
            Asked(p.id, p.kind, p.recipient_id, p.address, p.sent_at, bool(p.late))
        )
    answers: dict[int, list[Answer]] = {}
    for r in responses:
        answers.setdefault(r.target_id, []).append(
            Answer(r.kind, r.responder_id, r.on_behalf_of, r.at)
        )
    history = [
        TargetHistory(
            target=t.spec,
            state=t.state,
            due_at=t.due_at,
            planned_recipient=t.planned_recipient,
            asked=asked.get(t.id, []),
            answers=answers.get(t.id, []),
        )
        for t in targets
    ]
    coverage = coverage_for_referrals(session, [referral_id], tz)[referral_id]
    offers = [
        OfferHistory(f.professional_id, f.method, f.contact_by, f.state, f.answered_by)
        for f in session.scalars(
            select(ContactFollowup)
            .where(ContactFollowup.referral_id == referral_id)
            .order_by(ContactFollowup.id)
        )
    ]
    return ReferralHistory(referral=referral, targets=history, coverage=coverage, offers=offers)


@dataclass(frozen=True)
class OpenPrompt:
    """A message a person was sent and has not answered: what the Home tab's buttons act on.
    `acknowledged`: seen, and still to be answered (docs/coverage.md)."""

    prompt_id: int
    target: str
    sent_at: datetime
    referral: Referral
    acknowledged: bool = False


def open_prompts_for_person(session: Session, person_id: str) -> list[OpenPrompt]:
    """Prompts sent to `person_id` whose target is unanswered (or only acknowledged: still to
    be answered), oldest first (one a target).

    Each is the target's prompt itself (kind `prompt`), with the time it was sent: its
    reminders and escalation steps are about the same question, not new ones to answer.
    """
    rows = session.execute(
        select(OutboxMessage, Target, Referral)
        .join(Target, Target.id == OutboxMessage.target_id)
        .join(Referral, Referral.referral_id == OutboxMessage.referral_id)
        .where(OutboxMessage.recipient_id == person_id)
        .where(OutboxMessage.kind == OutboxKind.PROMPT)
        .where(OutboxMessage.state == RowState.SENT)
        .where(Target.state.in_([*UNANSWERED_TARGET_STATES, TargetState.ACKNOWLEDGED]))
        .where(Referral.status == ReferralStatus.OPEN)
        .order_by(OutboxMessage.sent_at, OutboxMessage.id)
    ).all()
    latest: dict[int, OpenPrompt] = {}
    for prompt, target, referral in rows:
        assert prompt.sent_at is not None
        # A target is prompted once; were it prompted again, the latest prompt is answered.
        latest[target.id] = OpenPrompt(
            prompt.id,
            target.spec,
            prompt.sent_at,
            referral,
            acknowledged=target.state == TargetState.ACKNOWLEDGED,
        )
    return sorted(latest.values(), key=lambda p: (p.sent_at, p.prompt_id))
