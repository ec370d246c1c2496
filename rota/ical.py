"""Shifts as iCalendar: a calendar of shifts to subscribe to, and shifts read from a feed.

How a feed's events become shifts (docs/rota-files.md):
- the person is the event's `X-HANDOVER-PERSON` (a person_id), else the one `ATTENDEE` whose
  email is a person's email in the rota;
- the role is the event's `X-HANDOVER-ROLE`, else the calendar's, else `--ical-role`;
- start and end are the event's; a time without a zone is local, an all-day event runs from
  midnight to midnight; repeating events (RRULE) are expanded, cancelled ones left out.
A calendar written by `build_shift_calendar` carries both X- properties, so it imports back
to the same shifts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from rota.problems import ProblemLog
from rota.sources import COLUMNS, SourceFile, Table, broken_table, control_character

if TYPE_CHECKING:
    from icalendar import Event

PRODID = "-//Handover//rota shifts//EN"
ROLE_PROPERTY = "X-HANDOVER-ROLE"
PERSON_PROPERTY = "X-HANDOVER-PERSON"
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
) -> bytes:
    """An iCalendar file of the shifts, local times with the zone's VTIMEZONE.

    `stamp` is when the rota was last revised (DTSTAMP and LAST-MODIFIED) and `sequence`
    its version, so a calendar takes a re-imported event as the newer one.
    """
    from icalendar import Calendar, Event

    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    calendar.add("x-wr-calname", title)
    calendar.add("x-wr-timezone", tz.key)
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
class _Feed:
    source: SourceFile
    problems: ProblemLog
    tz: tzinfo
    default_role: str | None
    people_for_email: Callable[[str], Sequence[str]]

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
) -> Table:
    """The feed's shifts as a table of the shifts kind, numbered by event (broken if unreadable).

    Repeating events are expanded up to `until`; `people_for_email` names the people an
    (already lower-cased) email address belongs to.
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
    feed = _Feed(source, problems, tz, default_role, people_for_email)
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
            if row is not None:
                yield number, row


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
    for field, value in zip(("person_id", "role"), values, strict=False):
        message = control_character(value)
        if message:
            feed.bad(number, field, message)
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
