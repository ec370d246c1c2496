"""The audit log of a window summarised by the database: one row a (referral, target), and the
counts by event, for `handover report` (bot/services/reports.py).

`handover report` once read every row of the window into Python; over a long log that was most
of its time. Here the database groups the rows (`GROUP BY referral_id, target`, the window's
`at` bounds read through the `at` index), and Python sees one row a target. What a row says is
exactly what reading the window's rows in order of (`at`, `id`) would say:

- whether the target was scheduled or sent, asked (sent), responded to, answered (a sharing
  answer) or ended (bot.services.coverage's ENDING_EVENTS), and its breaches and unroutables;
- its recipient: that of its last send naming one, else the first named by its scheduling or
  by a response (the recipient, else the responder);
- its first send (when, to whom), and the first sharing answer after that send.

"First" and "last" are in the order of (`at`, `id`). Each is the minimum or maximum of
`ordered_text(at, id, value)`: the instant and the id written as fixed-width text, then the
value, so that a plain MIN or MAX picks the first or last row and carries its value along.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import Select, String, and_, case, func, literal, or_, select
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.functions import FunctionElement

from bot.delivery.kinds import RESPONSE_KINDS
from bot.models import AuditEvent
from bot.services.coverage import ENDING_EVENTS, SHARING_ANSWERS, TargetOutcome
from bot.services.logbook import YIELD_PER, LogWindow

SENT_EVENTS = ("prompt_sent", "prompt_sent_late")
SCHEDULED = "prompt_scheduled"
RECEIVED = "referral_received"
RESPONSES = frozenset(kind.value for kind in RESPONSE_KINDS)
# Which of these each target had (its sends and sharing answers are read with their order).
FLAGS = (frozenset({SCHEDULED}), RESPONSES, frozenset(ENDING_EVENTS))
_INSTANT = 26  # "2026-01-05 18:00:00.000000"
_ORDER = _INSTANT + 13  # then the id plus 10**12: 13 digits
_ID_OFFSET = 10**12
_CHUNK = 500


class ordered_text(FunctionElement):
    """`at`, `id` and a text value as one string that sorts as (at, id) does."""

    type = String()
    name = "ordered_text"
    inherit_cache = True


@compiles(ordered_text, "sqlite")
def _ordered_text_sqlite(element: ordered_text, compiler, **kw) -> str:
    # SQLite keeps a DateTime as text "YYYY-MM-DD HH:MM:SS.ffffff", already fixed-width; an id
    # plus 10**12 is 13 digits wide.
    at, row_id, value = (compiler.process(c, **kw) for c in element.clauses)
    return f"({at} || ({row_id} + {_ID_OFFSET}) || {value})"


@compiles(ordered_text, "postgresql")
def _ordered_text_postgresql(element: ordered_text, compiler, **kw) -> str:
    at, row_id, value = (compiler.process(c, **kw) for c in element.clauses)
    # COLLATE "C": compare byte by byte, whatever the database's collation.
    return (
        f"((to_char({at}, 'YYYY-MM-DD HH24:MI:SS.US') || CAST({row_id} + {_ID_OFFSET} AS TEXT) "
        f'|| {value}) COLLATE "C")'
    )


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text[:_INSTANT]).replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TargetFacts:
    """What the window's rows say of one (referral, target)."""

    referral_id: str | None
    target: str
    outcome: TargetOutcome | None  # None: only other events (a reminder, an on-call alert)
    asked: bool
    responded: bool
    answered: bool
    breaches: int
    unroutables: int
    recipient: str | None
    first_sent: str | None = None  # its first send: ordered_text(at, id, recipient)
    answered_at: datetime | None = None  # its first sharing answer after that send
    unsettled: bool = False  # answered before and after its first send: see settle_answers

    @property
    def first_sent_at(self) -> datetime | None:
        """When it was first sent."""
        return _instant(self.first_sent) if self.first_sent is not None else None

    @property
    def first_sent_to(self) -> str | None:
        """To whom it was first sent (None when the send named nobody)."""
        return (self.first_sent[_ORDER:] or None) if self.first_sent is not None else None

    @property
    def tallied(self) -> bool:
        """Whether it counts in the figures by agency and team (asked, responded, or ended
        breached or unroutable)."""
        return self.asked or self.responded or bool(self.breaches or self.unroutables)


def event_counts(session: Session, window: LogWindow) -> dict[str, int]:
    """How many rows of each event the window holds."""
    e = AuditEvent.__table__.c
    rows = session.execute(window.apply(select(e.event, func.count()).group_by(e.event)))
    return {event: count for event, count in rows}


def referrers(session: Session, window: LogWindow) -> dict[str, str | None]:
    """Each referral received in the window ('' for one without an ID) and who made it (the
    last `referral_received` row's actor, were there two)."""
    e = AuditEvent.__table__.c
    statement = window.apply(
        select(func.coalesce(e.referral_id, ""), e.actor).where(e.event == RECEIVED)
    ).order_by(e.at, e.id)
    return {referral_id: actor for referral_id, actor in session.execute(statement)}


def _summary_statement(window: LogWindow) -> Select:
    e = AuditEvent.__table__.c
    sent = e.event.in_(SENT_EVENTS)
    sharing = e.event.in_(sorted(SHARING_ANSWERS))
    empty = literal("")

    def ordered(value) -> ordered_text:
        return ordered_text(e.at, e.id, value)

    named = func.coalesce(func.nullif(e.recipient, empty), e.actor, empty)  # a response's
    statement = (
        select(
            e.referral_id,
            e.target,
            *(func.count(case((e.event.in_(sorted(events)), 1))) for events in FLAGS),
            func.count(case((e.event == "breach", 1))),
            func.count(case((e.event == "unroutable", 1))),
            func.min(case((sent, ordered(func.coalesce(e.recipient, empty))))),
            func.max(case((and_(sent, e.recipient != empty), ordered(e.recipient)))),
            func.min(
                case(
                    (e.event == SCHEDULED, ordered(func.coalesce(e.recipient, empty))),
                    (e.event.in_(sorted(RESPONSES)), ordered(named)),
                )
            ),
            func.min(case((sharing, ordered(empty)))),
            func.max(case((sharing, ordered(empty)))),
        )
        .where(e.target != empty)
        .where(e.event != RECEIVED)
        .group_by(e.referral_id, e.target)
        .order_by(e.referral_id, e.target)
    )
    return window.apply(statement)


def _outcome(answered: bool, ended: int, opened: bool) -> TargetOutcome | None:
    # As the log read in order would leave it: a sharing answer wins, then an end; a target
    # only scheduled or sent is open.
    if answered:
        return TargetOutcome.ANSWERED
    if ended:
        return TargetOutcome.ENDED
    return TargetOutcome.OPEN if opened else None


def target_facts(session: Session, window: LogWindow) -> Iterator[TargetFacts]:
    """Every (referral, target) the window's rows name (referral_received aside), by referral
    then target, streamed. A target answered at or before its first send comes `unsettled`
    (were it answered again after): `settle_answers` finds its answer."""
    result = session.execute(_summary_statement(window).execution_options(yield_per=YIELD_PER))
    # A batch at a time, as plain tuples: fewer calls a target than fetching Rows one by one
    # (about 3% of the report's CPU at 1,000,000 rows).
    for row in (row for batch in result.tuples().partitions() for row in batch):
        (
            referral_id,
            target,
            scheduled,
            responded,
            ended,
            breaches,
            unroutables,
            first_sent,
            last_sent,
            first_named,
            first_answer,
            last_answer,
        ) = row
        if last_sent is not None:
            recipient = last_sent[_ORDER:]
        else:
            recipient = first_named[_ORDER:] if first_named is not None else None
        answered_at = None
        unsettled = False
        if first_sent is not None and first_answer is not None:
            if first_answer > first_sent[:_ORDER]:
                answered_at = _instant(first_answer)
            else:
                unsettled = last_answer > first_sent[:_ORDER]
        yield TargetFacts(
            referral_id=referral_id,
            target=target,
            outcome=_outcome(first_answer is not None, ended, bool(scheduled or first_sent)),
            asked=first_sent is not None,
            responded=responded > 0,
            answered=first_answer is not None,
            breaches=breaches,
            unroutables=unroutables,
            recipient=recipient or None,
            first_sent=first_sent,
            answered_at=answered_at,
            unsettled=unsettled,
        )


def settle_answers(
    session: Session, window: LogWindow, unsettled: Sequence[TargetFacts]
) -> Iterator[TargetFacts]:
    """Unsettled targets (rare: a sharing answer logged before the send, and another after)
    with the first sharing answer after their first send."""
    e = AuditEvent.__table__.c
    for i in range(0, len(unsettled), _CHUNK):
        chunk = unsettled[i : i + _CHUNK]
        first_sent = {(f.referral_id, f.target): (f.first_sent or "")[:_ORDER] for f in chunk}
        ids = sorted({f.referral_id for f in chunk if f.referral_id is not None})
        statement = window.apply(
            select(e.referral_id, e.target, ordered_text(e.at, e.id, literal("")))
            .where(e.event.in_(sorted(SHARING_ANSWERS)))
            .where(or_(e.referral_id.in_(ids), e.referral_id.is_(None)))
        )
        found: dict[tuple[str | None, str], str] = {}
        for referral_id, target, order in session.execute(statement):
            key = (referral_id, target)
            after = first_sent.get(key)
            if after is not None and order > after and (key not in found or order < found[key]):
                found[key] = order
        for f in chunk:
            order = found[(f.referral_id, f.target)]  # there is one: see target_facts
            yield replace(f, answered_at=_instant(order), unsettled=False)
