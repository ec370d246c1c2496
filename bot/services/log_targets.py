"""The audit log of a window summarised by the database: one row a (referral, target), and the
counts by event, for `handover report` (bot/services/reports.py).

`handover report` once read every row of the window into Python; over a long log that was most
of its time. Here the database groups the rows (`GROUP BY referral_id, target`, the window's
`at` bounds read through the `at` index, or by a scan: `LogWindow.scan`), and Python sees one row
a target (for the report page, one a target and week: `target_facts_by_week`). What a row says is
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
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Integer,
    Select,
    String,
    and_,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from bot.db import driver_query
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
def _ordered_text_sqlite(element: ordered_text, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps a DateTime as text "YYYY-MM-DD HH:MM:SS.ffffff", already fixed-width; an id
    # plus 10**12 is 13 digits wide.
    at, row_id, value = (compiler.process(c, **kw) for c in element.clauses)
    return f"({at} || ({row_id} + {_ID_OFFSET}) || {value})"


@compiles(ordered_text, "postgresql")
def _ordered_text_postgresql(element: ordered_text, compiler: SQLCompiler, **kw: Any) -> str:
    at, row_id, value = (compiler.process(c, **kw) for c in element.clauses)
    # COLLATE "C": compare byte by byte, whatever the database's collation.
    return (
        f"((to_char({at}, 'YYYY-MM-DD HH24:MI:SS.US') || CAST({row_id} + {_ID_OFFSET} AS TEXT) "
        f'|| {value}) COLLATE "C")'
    )


def _instant(text: str) -> datetime:
    # The offset parsed with the rest: a quarter of the time of setting tzinfo with replace(),
    # for the two instants of each target answered.
    return datetime.fromisoformat(text[:_INSTANT] + "+00:00")


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__, four
# times the cost of building one, and one is built for each row of the summary.
@dataclass(slots=True)
class TargetFacts:
    """What the window's rows say of one (referral, target); not changed once built."""

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


def event_counts_by_week(
    session: Session, window: LogWindow, week_starts: Sequence[datetime]
) -> list[dict[str, int]]:
    """`event_counts` of each week of the window (cut at `week_starts`, as `week_of` numbers
    them), from one grouped read."""
    e = AuditEvent.__table__.c
    week = week_of(week_starts)
    counts: list[dict[str, int]] = [{} for _ in range(len(week_starts) + 1)]
    keys = [week, e.event] if week_starts else [e.event]  # see _summary_statement
    statement = window.apply(select(week, e.event, func.count()).group_by(*keys))
    for index, event, count in session.execute(statement):
        counts[index][event] = count
    return counts


def referrers_by_week(
    session: Session, window: LogWindow, week_starts: Sequence[datetime]
) -> list[dict[str, str | None]]:
    """`referrers` of each week of the window (cut at `week_starts`), from one read."""
    e = AuditEvent.__table__.c
    found: list[dict[str, str | None]] = [{} for _ in range(len(week_starts) + 1)]
    statement = window.apply(
        select(week_of(week_starts), func.coalesce(e.referral_id, ""), e.actor).where(
            e.event == RECEIVED
        )
    ).order_by(e.at, e.id)
    for index, referral_id, actor in session.execute(statement):
        found[index][referral_id] = actor
    return found


def _summary_statement(window: LogWindow, week_starts: Sequence[datetime] | None = None) -> Select:
    e = AuditEvent.__table__.c
    sent = e.event.in_(SENT_EVENTS)
    sharing = e.event.in_(sorted(SHARING_ANSWERS))
    empty = literal("")

    def ordered(value: ColumnElement[str]) -> ordered_text:
        return ordered_text(e.at, e.id, value)

    named = func.coalesce(func.nullif(e.recipient, empty), e.actor, empty)  # a response's
    keys = [e.referral_id, e.target]
    columns = [*keys] if week_starts is None else [*keys, week_of(week_starts)]
    if week_starts:  # not a lone week's constant (GROUP BY 0 would name a column)
        keys = columns
    statement = (
        select(
            *columns,
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
        .group_by(*keys)
        .order_by(*keys)
    )
    return window.apply(statement)


def week_of(week_starts: Sequence[datetime]) -> ColumnElement[int]:
    """The week an audit row falls in: 0, or the last i + 1 with `week_starts[i]` <= its `at`
    (`week_starts` ascending), as a CASE of a binary search (a few comparisons a row).
    Labelled `week`: grouped and ordered by that name, so PostgreSQL matches its bounds."""
    at = AuditEvent.__table__.c.at

    def search(low: int, high: int) -> ColumnElement[int]:  # the row's week is in low..high
        if low == high:
            return literal_column(str(low), Integer)
        middle = (low + high + 1) // 2
        return case(
            (at < week_starts[middle - 1], search(low, middle - 1)), else_=search(middle, high)
        )

    return search(0, len(week_starts)).label("week")


def _outcome(answered: bool, ended: int, opened: bool) -> TargetOutcome | None:
    # As the log read in order would leave it: a sharing answer wins, then an end; a target
    # only scheduled or sent is open.
    if answered:
        return TargetOutcome.ANSWERED
    if ended:
        return TargetOutcome.ENDED
    return TargetOutcome.OPEN if opened else None


def _facts(referral_id: str | None, target: str, summary: Sequence) -> TargetFacts:
    """The facts of a target from its row of `_summary_statement` (after the keys)."""
    (
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
    ) = summary
    answered_at = None
    unsettled = False
    if first_sent is not None and first_answer is not None:
        if first_answer > first_sent[:_ORDER]:
            answered_at = _instant(first_answer)
        else:
            unsettled = last_answer > first_sent[:_ORDER]
    return TargetFacts(
        referral_id=referral_id,
        target=target,
        outcome=_outcome(first_answer is not None, ended, bool(scheduled or first_sent)),
        asked=first_sent is not None,
        responded=responded > 0,
        answered=first_answer is not None,
        breaches=breaches,
        unroutables=unroutables,
        recipient=_recipient(last_sent, first_named),
        first_sent=first_sent,
        answered_at=answered_at,
        unsettled=unsettled,
    )


def _recipient(last_sent: str | None, first_named: str | None) -> str | None:
    if last_sent is not None:
        return last_sent[_ORDER:] or None
    return (first_named[_ORDER:] or None) if first_named is not None else None


def _rows(session: Session, statement: Select) -> Iterator[tuple]:
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        return _streamed_rows(bind, statement)
    result = session.execute(statement.execution_options(yield_per=YIELD_PER))
    # A batch at a time, as plain tuples: fewer calls a target than fetching Rows one by one
    # (about 3% of the report's CPU at 1,000,000 rows).
    return (row for batch in result.tuples().partitions() for row in batch)


def _streamed_rows(bind: Engine | Connection, statement: Select) -> Iterator[tuple]:
    """The rows of a summary on PostgreSQL, streamed on a connection of their own.

    Through a server-side cursor (the session's `yield_per`) the server computes each batch only
    when Python asks for it, so the two take turns: at 1,000,000 rows about 3 s of the server's
    grouping, then about 5 s of Python. Streamed, the server sends rows as it groups them while
    Python reads the ones before (the socket's buffer between them), on the machine's other core.
    The session's connection stays free for what the report reads meanwhile (people, teams,
    closures). Its own connection sees what is committed, as each statement of a read-committed
    session does: the report writes nothing."""
    engine = bind.engine
    with engine.connect() as connection:
        # One backend, no parallel workers: Python reads the rows more slowly than one backend
        # groups them, so workers would add the server's CPU (a fifth more at 1,000,000 rows)
        # and take a core from Python on a small machine, not shorten the report.
        connection.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
        sql, parameters = driver_query(connection, statement)
        driver = connection.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:
            # `size`: rows come in chunks (libpq 17's chunked rows mode), not one by one.
            yield from cursor.stream(sql, parameters, size=YIELD_PER)


def target_facts(session: Session, window: LogWindow) -> Iterator[TargetFacts]:
    """Every (referral, target) the window's rows name (referral_received aside), by referral
    then target, streamed. A target answered at or before its first send comes `unsettled`
    (were it answered again after): `settle_answers` finds its answer."""
    for referral_id, target, *summary in _rows(session, _summary_statement(window)):
        yield _facts(referral_id, target, summary)


class WeekOutcome(NamedTuple):
    """What one week's rows alone say of a target: its outcome and its recipient."""

    week: int
    outcome: TargetOutcome
    recipient: str | None


# How the summaries of a target's weeks combine into the window's: counts add up, firsts are
# the least and lasts the greatest (each `ordered_text` sorts as (at, id)).
_COMBINE = (*(5 * ("sum",)), "min", "max", "min", "min", "max")


def _combine(summaries: list[Sequence]) -> list:
    combined = []
    for how, values in zip(_COMBINE, zip(*summaries, strict=True), strict=True):
        if how == "sum":
            combined.append(sum(values))
        else:
            present = [v for v in values if v is not None]
            combined.append((min if how == "min" else max)(present) if present else None)
    return combined


def target_facts_by_week(
    session: Session, window: LogWindow, week_starts: Sequence[datetime]
) -> Iterator[tuple[TargetFacts, list[WeekOutcome]]]:
    """`target_facts` of the window, each with what each week alone says of the target (weeks
    cut at `week_starts`, as `week_of` numbers them; those with no outcome left out), from one
    grouped read of the window."""
    statement = _summary_statement(window, week_starts)
    rows: list[tuple] = []  # the target's: (referral_id, target, week, *summary) a week
    for row in _rows(session, statement):
        if rows and (row[0] != rows[0][0] or row[1] != rows[0][1]):
            yield _facts_of_weeks(rows)
            rows = []
        rows.append(row)
    if rows:
        yield _facts_of_weeks(rows)


def _facts_of_weeks(rows: list[tuple]) -> tuple[TargetFacts, list[WeekOutcome]]:
    referral_id, target = rows[0][0], rows[0][1]
    if len(rows) == 1:  # most targets: the week's facts are the window's
        found = _facts(referral_id, target, rows[0][3:])
        if found.outcome is None:
            return found, []
        return found, [WeekOutcome(rows[0][2], found.outcome, found.recipient)]
    outcomes = []
    for (
        _,
        _,
        week,
        scheduled,
        _,
        ended,
        _,
        _,
        first_sent,
        last_sent,
        first_named,
        answer,
        _,
    ) in rows:
        outcome = _outcome(answer is not None, ended, bool(scheduled or first_sent))
        if outcome is not None:
            outcomes.append(WeekOutcome(week, outcome, _recipient(last_sent, first_named)))
    return _facts(referral_id, target, _combine([row[3:] for row in rows])), outcomes


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
