"""Shifts as iCalendar: a calendar of shifts to subscribe to, and shifts read from a feed.

How a feed's events become shifts (docs/rota-files.md):
- the person is the event's `X-HANDOVER-PERSON` (a person_id), else the one `ATTENDEE` whose
  email is a person's email in the rota;
- the role is the event's `X-HANDOVER-ROLE`, else the calendar's, else `--ical-role`;
- start and end are the event's; a time without a zone is local, an all-day event runs from
  midnight to midnight; repeating events (RRULE) are expanded, cancelled ones left out.
A calendar written by `build_shift_calendar` carries both X- properties, so it imports back
to the same shifts, and declares its scope (the X-HANDOVER-SCOPE- properties: the role or the
person and the window it was written for), so that importing it replaces only the stored shifts
inside that scope.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rota.bulk import ShiftScope
from rota.problems import ProblemLog
from rota.sources import (
    COLUMNS,
    ID_RE,
    ROLE_RE,
    SourceFile,
    Table,
    broken_table,
    control_character,
)

if TYPE_CHECKING:
    from icalendar import Event

PRODID = "-//Handover//rota shifts//EN"
ROLE_PROPERTY = "X-HANDOVER-ROLE"
PERSON_PROPERTY = "X-HANDOVER-PERSON"
SCOPE_ROLE = "X-HANDOVER-SCOPE-ROLE"
SCOPE_PERSON = "X-HANDOVER-SCOPE-PERSON"
SCOPE_FROM = "X-HANDOVER-SCOPE-FROM"
SCOPE_TO = "X-HANDOVER-SCOPE-TO"
SCOPE_PROPERTIES = (SCOPE_ROLE, SCOPE_PERSON, SCOPE_FROM, SCOPE_TO)
UID_DOMAIN = "handover"
# Repeating events are expanded from this date on; no rota reaches further back.
EXPAND_FROM = date(2000, 1, 1)


@dataclass(frozen=True)
class CalendarShift:
    """One shift as a calendar shows it."""

    person_id: str
    person_name: str
    role: str
    start_at: datetime  # aware
    end_at: datetime  # aware


def shift_uid(person_id: str, role: str, start_at: datetime) -> str:
    """The event UID of a shift: the same shift gets the same UID in every export.

    A shift is who, what and when it starts: a shift whose end moves keeps its UID, so a
    calendar that imports the file again updates the event instead of adding another.
    """
    key = f"{person_id}\x1f{role}\x1f{start_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    return f"{hashlib.sha256(key.encode()).hexdigest()[:32]}@{UID_DOMAIN}"


def build_shift_calendar(
    shifts: Sequence[CalendarShift],
    *,
    title: str,
    tz: ZoneInfo,
    stamp: datetime,
    sequence: int,
    first_day: date,
    last_day: date,
    scope: ShiftScope | None = None,
) -> bytes:
    """An iCalendar file of the shifts, local times with the zone's VTIMEZONE.

    `stamp` is when the rota was last revised (DTSTAMP and LAST-MODIFIED) and `sequence`
    its version, so a calendar takes a re-imported event as the newer one. `scope` is
    declared as X-HANDOVER-SCOPE- properties (times in UTC), read back by `read_scope`.
    """
    from icalendar import Calendar, Event

    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    calendar.add("x-wr-calname", title)
    calendar.add("x-wr-timezone", tz.key)
    if scope is not None:
        if scope.roles is not None:
            calendar.add(SCOPE_ROLE, ",".join(scope.roles))
        if scope.person_id is not None:
            calendar.add(SCOPE_PERSON, scope.person_id)
        if scope.start is not None and scope.end is not None:
            calendar.add(SCOPE_FROM, f"{scope.start.astimezone(UTC):%Y%m%dT%H%M%SZ}")
            calendar.add(SCOPE_TO, f"{scope.end.astimezone(UTC):%Y%m%dT%H%M%SZ}")
    stamp = stamp.astimezone(UTC)
    for shift in shifts:
        event = Event()
        event.add("uid", shift_uid(shift.person_id, shift.role, shift.start_at))
        event.add("dtstamp", stamp)
        event.add("last-modified", stamp)
        event.add("sequence", sequence)
        event.add("dtstart", shift.start_at.astimezone(tz))
        event.add("dtend", shift.end_at.astimezone(tz))
        event.add("summary", f"{shift.role}: {shift.person_name}")
        event.add("transp", "OPAQUE")
        event.add(ROLE_PROPERTY, shift.role)
        event.add(PERSON_PROPERTY, shift.person_id)
        calendar.add_component(event)
    earliest = min((s.start_at.astimezone(tz).date() for s in shifts), default=first_day)
    latest = max((s.end_at.astimezone(tz).date() for s in shifts), default=last_day)
    calendar.add_missing_timezones(
        first_date=min(first_day, earliest) - timedelta(days=1),
        last_date=max(last_day, latest) + timedelta(days=1),
    )
    return calendar.to_ical()


# --- reading a feed ---------------------------------------------------------------------------


@dataclass
class Replaced:
    """What the calendars of the feeds read replace (docs/rota-files.md, "Calendars").

    A calendar that declares a scope replaces the stored shifts inside it; one that declares
    none, every stored shift of the roles its events name (`roles`).
    """

    scopes: list[ShiftScope] = field(default_factory=list)
    roles: set[str] = field(default_factory=set)
    unscoped: bool = False  # some calendar declares no scope


@dataclass
class _Feed:
    source: SourceFile
    problems: ProblemLog
    tz: tzinfo
    default_role: str | None
    people_for_email: Callable[[str], Sequence[str]]
    replaced: Replaced
    # Each calendar's declared scope, by id(); a calendar declaring none is not in it, one
    # whose scope is malformed maps to None (the import is refused, its events not checked).
    scopes: dict[int, ShiftScope | None] = field(default_factory=dict)

    def bad(self, number: int, field: str, message: str) -> None:
        self.problems.add(self.source.display, number, field, message, event=True)


def read_ical_table(
    source: SourceFile,
    problems: ProblemLog,
    *,
    tz: tzinfo,
    until: datetime,
    default_role: str | None,
    people_for_email: Callable[[str], Sequence[str]],
    replaced: Replaced,
) -> Table:
    """The feed's shifts as a table of the shifts kind, numbered by event (broken if unreadable).

    Repeating events are expanded up to `until`; `people_for_email` names the people an
    (already lower-cased) email address belongs to. What the calendars replace is added to
    `replaced` as their events are read; an event outside its calendar's scope is a problem.
    """
    from icalendar import Calendar

    display = source.display
    try:
        data = source.path.read_bytes()
    except OSError as exc:
        problems.add(display, 1, "-", f"cannot read the file: {exc.strerror}")
        return broken_table("shifts", display)
    try:
        data.decode("utf-8")
        calendars = Calendar.from_ical(data, multiple=True)
    except (ValueError, IndexError, KeyError) as exc:
        problems.add(display, 1, "-", f"not an iCalendar file ({_reason(exc)})")
        return broken_table("shifts", display)
    if not calendars:
        problems.add(display, 1, "-", "not an iCalendar file (no BEGIN:VCALENDAR)")
        return broken_table("shifts", display)
    feed = _Feed(source, problems, tz, default_role, people_for_email, replaced)
    for calendar in calendars:
        if any(calendar.get(name) is not None for name in SCOPE_PROPERTIES):
            scope = read_scope(
                calendar, tz, lambda name, message: problems.add(display, 1, name, message)
            )
            feed.scopes[id(calendar)] = scope
            if scope is not None:
                replaced.scopes.append(scope)
        else:
            replaced.unscoped = True
    events = [(calendar, event) for calendar in calendars for event in calendar.walk("VEVENT")]
    table = Table(
        kind="shifts",
        file=display,
        sheet=None,
        header_line=0,
        columns=list(COLUMNS["shifts"]),
        rows=iter(()),
        total_lines=len(events),
        event_numbers=True,
    )
    table.rows = _feed_rows(feed, events, until)
    return table


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _feed_rows(
    feed: _Feed, events: list[tuple[Any, Any]], until: datetime
) -> Iterator[tuple[int, list[str]]]:
    """(event number, [person_id, role, start, end]) for every occurrence of every event."""
    import recurring_ical_events
    from icalendar import Calendar

    numbers: dict[tuple[str, object], int] = {}
    groups: dict[str, list[int]] = {}
    # Single events are all taken, however far ahead; repeating ones only up to `until`.
    until = max([until, *(_single_end(event) for _calendar, event in events)])
    for number, (_calendar, event) in enumerate(events, start=1):
        uid = str(event.get("UID") or f"#{number}")
        recurrence = event.get("RECURRENCE-ID")
        numbers[(uid, _instant_key(recurrence.dt) if recurrence else None)] = number
        groups.setdefault(uid, []).append(number)

    for uid, members in groups.items():
        first = members[0]
        calendar = events[first - 1][0]
        single = Calendar()
        for timezone in calendar.walk("VTIMEZONE"):
            single.add_component(timezone)
        for number in members:
            event = events[number - 1][1]
            if event.get("DTSTART") is None:
                feed.bad(number, "DTSTART", "the event has no start")
                continue
            if _ends_before_start(event):
                # The expansion library would quietly swap them.
                feed.bad(number, "DTEND", "the event ends before it starts")
                continue
            single.add_component(event)
        try:
            occurrences = recurring_ical_events.of(single).between(EXPAND_FROM, until)
        except Exception as exc:  # the library raises many kinds for a malformed series
            feed.bad(first, "RRULE", f"cannot expand the event ({_reason(exc)})")
            continue
        for occurrence in sorted(occurrences, key=lambda o: _instant_key(o.start)):
            if str(occurrence.get("STATUS", "")).upper() == "CANCELLED":
                continue
            recurrence = occurrence.get("RECURRENCE-ID")
            key = (uid, _instant_key(recurrence.dt)) if recurrence else None
            number = numbers.get(key, first) if key else first
            calendar_role = calendar.get(ROLE_PROPERTY)
            row = _occurrence_row(feed, number, occurrence, calendar_role)
            if row is None:
                continue
            if id(calendar) not in feed.scopes:
                feed.replaced.roles.add(row[1])
            elif not _in_scope(feed, number, occurrence, row, feed.scopes[id(calendar)]):
                continue
            yield number, row


def read_scope(calendar: Any, tz: tzinfo, bad: Callable[[str, str], None]) -> ShiftScope | None:
    """The scope a calendar declares by its X-HANDOVER-SCOPE- properties; None if malformed.

    `bad(property, message)` is told each problem. The window is FROM and TO, both or
    neither: date-times with an offset or in UTC (`20270101T000000Z`).
    """
    values: dict[str, str] = {}
    ok = True
    for name in SCOPE_PROPERTIES:
        value = calendar.get(name)
        if value is None:
            continue
        if isinstance(value, list):
            bad(name, "given more than once")
            ok = False
            continue
        values[name] = str(value).strip()
        message = control_character(values[name])
        if message:
            bad(name, message)
            ok = False
    if not ok:
        return None
    roles: tuple[str, ...] | None = None
    if SCOPE_ROLE in values:
        roles = tuple(sorted({role.strip() for role in values[SCOPE_ROLE].split(",")}))
        wrong = [role for role in roles if not ROLE_RE.match(role)]
        if wrong:
            bad(SCOPE_ROLE, f"{values[SCOPE_ROLE]!r} is not a role or roles separated by commas")
            ok = False
    person = values.get(SCOPE_PERSON)
    if person is not None and not ID_RE.match(person):
        bad(SCOPE_PERSON, f"{person!r} is not a person id")
        ok = False
    window: list[datetime] = []
    for name in (SCOPE_FROM, SCOPE_TO):
        text = values.get(name)
        if text is None:
            if len(values.keys() & {SCOPE_FROM, SCOPE_TO}) == 1:
                other = SCOPE_TO if name == SCOPE_FROM else SCOPE_FROM
                bad(
                    name,
                    f"missing: a window needs both {SCOPE_FROM} and {SCOPE_TO} ({other} is given)",
                )
                ok = False
            continue
        instant = _scope_instant(text)
        if instant is None:
            bad(
                name,
                f"{text!r} is not a date-time with an offset or in UTC (like 20270101T000000Z)",
            )
            ok = False
        else:
            window.append(instant)
    if len(window) == 2 and window[0] >= window[1]:
        bad(SCOPE_TO, f"{values[SCOPE_TO]} is not after {SCOPE_FROM} {values[SCOPE_FROM]}")
        ok = False
    if not ok:
        return None
    start, end = window if len(window) == 2 else (None, None)
    return ShiftScope(roles, person, start, end, _scope_label(roles, person, start, end, tz))


def _scope_instant(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if len(text) < 11 or value.tzinfo is None:  # a date alone, or a local time: which zone?
        return None
    return value.astimezone(UTC)


def _scope_label(
    roles: tuple[str, ...] | None,
    person: str | None,
    start: datetime | None,
    end: datetime | None,
    tz: tzinfo,
) -> str:
    """How the import's counts name a scope: `edt_manager (hv-jsmith, 01/01/2027 to 31/01/2027)`."""
    details = [person] if person is not None else []
    if start is not None and end is not None:
        first, last = start.astimezone(tz), end.astimezone(tz)
        if first.time() == time(0) and last.time() == time(0):
            details.append(f"{first:%d/%m/%Y} to {last - timedelta(days=1):%d/%m/%Y}")
        else:
            details.append(f"{first:%d/%m/%Y %H:%M} to {last:%d/%m/%Y %H:%M}")
    label = ", ".join(roles) if roles is not None else "every role"
    return f"{label} ({', '.join(details)})" if details else label


def _in_scope(
    feed: _Feed, number: int, occurrence: Event, row: list[str], scope: ShiftScope | None
) -> bool:
    """Whether an event's shift lies in its calendar's declared scope (a problem if not)."""
    if scope is None:
        return True
    person, role = row[0], row[1]
    start, end = _aware(occurrence.start, feed.tz), _aware(occurrence.end, feed.tz)
    if scope.holds(person, role, start, end):
        return True
    if scope.roles is not None and role not in scope.roles:
        field_name, what = (
            ROLE_PROPERTY,
            f"role {role} is not among {SCOPE_ROLE} {', '.join(scope.roles)}",
        )
    elif scope.person_id is not None and person != scope.person_id:
        field_name, what = (
            PERSON_PROPERTY,
            f"person {person} is not {SCOPE_PERSON} {scope.person_id}",
        )
    else:
        field_name, what = "DTSTART", f"the shift is outside the window {SCOPE_FROM} to {SCOPE_TO}"
    feed.bad(
        number,
        field_name,
        f"{what}: the calendar replaces only the shifts of its scope ({scope.label})",
    )
    return False


def _aware(value: date | datetime, tz: tzinfo) -> datetime:
    """An event time as an instant: a floating time is local, a date its local midnight."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=tz, fold=0)
    return datetime.combine(value, time(0), tz)


def _single_end(event: Any) -> datetime:
    """Just past the last instant of an event that does not repeat (the far past if it does)."""
    far_past = datetime.combine(EXPAND_FROM, time(0), UTC)
    if event.get("RRULE") is not None or event.get("RDATE") is not None:
        return far_past
    found = [far_past]
    for name in ("DTSTART", "DTEND"):
        prop = event.get(name)
        value = getattr(prop, "dt", None)
        if isinstance(value, datetime):
            found.append(value if value.tzinfo else value.replace(tzinfo=UTC))
        elif isinstance(value, date):
            found.append(datetime.combine(value, time(0), UTC))
    return max(found) + timedelta(days=2)


def _ends_before_start(event: Any) -> bool:
    end = event.get("DTEND")
    if end is None:
        return False
    start, end = _instant_key(event["DTSTART"].dt), _instant_key(end.dt)
    try:
        return end < start  # type: ignore[operator]
    except TypeError:  # a date against a date-time, or floating against zoned
        return False


def _instant_key(value: date | datetime) -> object:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    return value


def _occurrence_row(
    feed: _Feed, number: int, occurrence: Event, calendar_role: object
) -> list[str] | None:
    person = _person(feed, number, occurrence)
    role = occurrence.get(ROLE_PROPERTY) or calendar_role or feed.default_role
    if role is None:
        feed.bad(
            number,
            ROLE_PROPERTY,
            f"no role: give the event (or the calendar) {ROLE_PROPERTY}, or import with "
            "--ical-role ROLE",
        )
    if person is None or role is None:
        return None
    values = [person, str(role).strip(), _text(occurrence.start), _text(occurrence.end)]
    for column, value in zip(("person_id", "role"), values, strict=False):
        message = control_character(value)
        if message:
            feed.bad(number, column, message)
            return None
    return values


def _person(feed: _Feed, number: int, occurrence: Event) -> str | None:
    given = occurrence.get(PERSON_PROPERTY)
    if given is not None:
        return str(given).strip()
    attendees = occurrence.get("ATTENDEE")
    if attendees is None:
        feed.bad(
            number,
            "ATTENDEE",
            f"no person: give an ATTENDEE with the person's email, or {PERSON_PROPERTY}",
        )
        return None
    if not isinstance(attendees, list):
        attendees = [attendees]
    emails = [_email(attendee) for attendee in attendees]
    found = sorted({p for email in emails if email for p in feed.people_for_email(email)})
    if len(found) == 1:
        return found[0]
    shown = ", ".join(e for e in emails if e) or "none with an email"
    if not found:
        message = (
            f"no attendee is a person of the rota (attendees: {shown}); add their email to "
            f"people.csv or give {PERSON_PROPERTY}"
        )
    else:
        message = (
            f"the attendees are several people of the rota ({', '.join(found)}); give "
            f"{PERSON_PROPERTY}"
        )
    feed.bad(number, "ATTENDEE", message)
    return None


def _email(attendee: object) -> str | None:
    text = str(attendee).strip()
    if text.lower().startswith("mailto:"):
        text = text[len("mailto:") :]
    return text.lower() if "@" in text else None


def _text(value: date | datetime) -> str:
    """An event time as the importer reads it: with its offset, or local when floating."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(microsecond=0).isoformat()
        return value.astimezone(UTC).replace(microsecond=0).isoformat()
    return f"{value.isoformat()}T00:00"
