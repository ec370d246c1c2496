"""Shifts as iCalendar: the exported calendar read back by a real parser, and feeds imported."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from icalendar import Calendar

from rota.ical import CalendarShift, build_shift_calendar, shift_uid
from rota.importer import KnownIds, RotaImportError, read_rota_files
from tests.rota.test_importer import LONDON, PEOPLE, TEAMS, write_rota

NOW = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
STAMP = datetime(2026, 9, 30, 16, 45, tzinfo=UTC)

# Night shifts across both clock changes, and a plain winter one.
SHIFTS = [
    CalendarShift(
        "edt-mgr",
        "Raj Malhotra",
        "edt_manager",
        datetime(2026, 10, 24, 18, 0, tzinfo=UTC),  # Sat 19:00 BST
        datetime(2026, 10, 25, 7, 0, tzinfo=UTC),  # Sun 07:00 GMT: 13 hours
    ),
    CalendarShift(
        "edt-mgr",
        "Raj Malhotra",
        "edt_manager",
        datetime(2027, 3, 27, 19, 0, tzinfo=UTC),  # Sat 19:00 GMT
        datetime(2027, 3, 28, 6, 0, tzinfo=UTC),  # Sun 07:00 BST: 11 hours
    ),
    CalendarShift(
        "edt-sue",
        "Sue Whitfield",
        "edt_manager",
        datetime(2026, 12, 24, 17, 0, tzinfo=UTC),
        datetime(2026, 12, 29, 9, 0, tzinfo=UTC),
    ),
]


def export(shifts: list[CalendarShift] = SHIFTS, sequence: int = 4) -> bytes:
    return build_shift_calendar(
        shifts,
        title="Handover: edt_manager",
        tz=LONDON,
        stamp=STAMP,
        sequence=sequence,
        first_day=date(2026, 10, 1),
        last_day=date(2027, 4, 1),
    )


def test_the_exported_calendar_parses_with_exact_instants_across_clock_changes() -> None:
    calendar = Calendar.from_ical(export())
    events = list(calendar.walk("VEVENT"))
    assert [(e.start.astimezone(UTC), e.end.astimezone(UTC)) for e in events] == [
        (s.start_at, s.end_at) for s in SHIFTS
    ]
    # Local wall-clock times, labelled with the zone, as a calendar app shows them.
    assert [(e.start.replace(tzinfo=None), e.end.replace(tzinfo=None)) for e in events] == [
        (datetime(2026, 10, 24, 19, 0), datetime(2026, 10, 25, 7, 0)),
        (datetime(2027, 3, 27, 19, 0), datetime(2027, 3, 28, 7, 0)),
        (datetime(2026, 12, 24, 17, 0), datetime(2026, 12, 29, 9, 0)),
    ]
    assert {str(e["DTSTART"].params["TZID"]) for e in events} == {"Europe/London"}
    assert [str(e["SUMMARY"]) for e in events] == [
        "edt_manager: Raj Malhotra",
        "edt_manager: Raj Malhotra",
        "edt_manager: Sue Whitfield",
    ]
    assert [str(e["X-HANDOVER-PERSON"]) for e in events] == ["edt-mgr", "edt-mgr", "edt-sue"]
    assert {e["SEQUENCE"] for e in events} == {4}
    assert {e.DTSTAMP for e in events} == {STAMP}
    assert str(calendar["X-WR-CALNAME"]) == "Handover: edt_manager"


def test_the_vtimezone_alone_gives_the_same_instants() -> None:
    """A calendar app that knows no zone names uses the VTIMEZONE; it must be right."""
    calendar = Calendar.from_ical(export())
    (vtimezone,) = calendar.walk("VTIMEZONE")
    assert str(vtimezone["TZID"]) == "Europe/London"
    zone = vtimezone.to_tz()
    for event, shift in zip(calendar.walk("VEVENT"), SHIFTS, strict=True):
        wall_start = event.start.replace(tzinfo=None)
        wall_end = event.end.replace(tzinfo=None)
        assert wall_start.replace(tzinfo=zone).astimezone(UTC) == shift.start_at
        assert wall_end.replace(tzinfo=zone).astimezone(UTC) == shift.end_at


def test_uids_are_stable_per_shift_so_a_reimport_updates() -> None:
    first = [str(e["UID"]) for e in Calendar.from_ical(export()).walk("VEVENT")]
    again = [str(e["UID"]) for e in Calendar.from_ical(export(sequence=5)).walk("VEVENT")]
    assert first == again
    assert len(set(first)) == 3 and all(uid.endswith("@handover") for uid in first)
    moved_end = replace(SHIFTS[2], end_at=datetime(2026, 12, 29, 10, 0, tzinfo=UTC))
    assert shift_uid(moved_end.person_id, moved_end.role, moved_end.start_at) == first[2]
    assert shift_uid("edt-mgr", "edt_manager", SHIFTS[2].start_at) != first[2]


def test_an_empty_calendar_is_still_a_valid_calendar() -> None:
    calendar = Calendar.from_ical(export([]))
    assert list(calendar.walk("VEVENT")) == []
    assert str(calendar["VERSION"]) == "2.0"


# --- importing a feed ---------------------------------------------------------------------------

FEED_HEAD = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Rota tool//EN\r\n"
FEED_TAIL = "END:VCALENDAR\r\n"


def feed(*events: str, calendar_lines: str = "") -> str:
    body = "".join(f"BEGIN:VEVENT\r\n{e.strip()}\r\nEND:VEVENT\r\n" for e in events)
    return FEED_HEAD + calendar_lines + body + FEED_TAIL


def read_feed(
    folder: Path, text: str, *, role: str | None = None, with_people: bool = True
) -> object:
    path = folder / "oncall.ics"
    path.write_text(text.replace("\r\n", "\n").replace("\n", "\r\n"), encoding="utf-8")
    paths = ["oncall.ics"]
    if with_people:
        write_rota(folder / "rota", teams=TEAMS, people=PEOPLE)
        paths.insert(0, "rota")
    return read_rota_files(paths, LONDON, ical_role=role, now=NOW)


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_weekly_feed_expands_with_attendees_matched_by_email(in_tmp: Path) -> None:
    text = feed(
        # Fridays 17:00 to Mondays 09:00, local: across the autumn change the UTC times move.
        "UID:weekend@rota\nDTSTART;TZID=Europe/London:20261016T170000\n"
        "DTEND;TZID=Europe/London:20261019T090000\nRRULE:FREQ=WEEKLY;COUNT=3\n"
        "ATTENDEE;CN=Raj:mailto:RAJ.Malhotra@wexcombe.example",
        "UID:one@rota\nDTSTART:20261105T170000Z\nDTEND:20261106T090000Z\n"
        "ATTENDEE:mailto:someone.else@elsewhere.example\n"
        "ATTENDEE:mailto:amy.carter@wexcombe.example",
        calendar_lines="X-HANDOVER-ROLE:edt_manager\r\n",
    )
    batch = read_feed(in_tmp, text)
    assert [(s.person_id, s.role, s.start_at, s.end_at, s.line) for s in batch.shifts] == [
        (
            "edt-mgr",
            "edt_manager",
            datetime(2026, 10, 16, 16, 0, tzinfo=UTC),
            datetime(2026, 10, 19, 8, 0, tzinfo=UTC),
            1,
        ),
        (
            "edt-mgr",
            "edt_manager",
            datetime(2026, 10, 23, 16, 0, tzinfo=UTC),
            datetime(2026, 10, 26, 9, 0, tzinfo=UTC),
            1,
        ),
        (
            "edt-mgr",
            "edt_manager",
            datetime(2026, 10, 30, 17, 0, tzinfo=UTC),
            datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
            1,
        ),
        (
            "edt-amy",
            "edt_manager",
            datetime(2026, 11, 5, 17, 0, tzinfo=UTC),
            datetime(2026, 11, 6, 9, 0, tzinfo=UTC),
            2,
        ),
    ]
    # Only calendars gave shifts: they replace the shifts of their roles alone.
    assert batch.shift_roles == frozenset({"edt_manager"})


def test_overrides_cancellations_floating_and_all_day_events(in_tmp: Path) -> None:
    text = feed(
        "UID:nights@rota\nDTSTART:20261102T190000\nDTEND:20261103T070000\n"
        "RRULE:FREQ=DAILY;COUNT=3\nX-HANDOVER-PERSON:edt-amy",
        # The second night moved to Raj, the third cancelled.
        "UID:nights@rota\nRECURRENCE-ID:20261103T190000\nDTSTART:20261103T200000\n"
        "DTEND:20261104T080000\nX-HANDOVER-PERSON:edt-mgr",
        "UID:nights@rota\nRECURRENCE-ID:20261104T190000\nDTSTART:20261104T190000\n"
        "DTEND:20261105T070000\nSTATUS:CANCELLED\nX-HANDOVER-PERSON:edt-amy",
        "UID:boxing@rota\nDTSTART;VALUE=DATE:20261226\nDTEND;VALUE=DATE:20261227\n"
        "X-HANDOVER-PERSON:hv-kpatel\nX-HANDOVER-ROLE:duty:hv-north",
    )
    batch = read_feed(in_tmp, text, role="edt_worker")
    assert [(s.person_id, s.role, s.start_at, s.end_at, s.line) for s in batch.shifts] == [
        (
            "edt-amy",
            "edt_worker",
            datetime(2026, 11, 2, 19, 0, tzinfo=UTC),
            datetime(2026, 11, 3, 7, 0, tzinfo=UTC),
            1,
        ),
        (
            "edt-mgr",
            "edt_worker",
            datetime(2026, 11, 3, 20, 0, tzinfo=UTC),
            datetime(2026, 11, 4, 8, 0, tzinfo=UTC),
            2,
        ),
        (
            "hv-kpatel",
            "duty:hv-north",
            datetime(2026, 12, 26, 0, 0, tzinfo=UTC),
            datetime(2026, 12, 27, 0, 0, tzinfo=UTC),
            4,
        ),
    ]
    assert batch.shift_roles == frozenset({"edt_worker", "duty:hv-north"})


def test_feed_problems_name_the_event(in_tmp: Path) -> None:
    text = feed(
        "UID:a\nDTSTART:20261105T170000Z\nDTEND:20261106T090000Z\n"
        "ATTENDEE:mailto:nobody@elsewhere.example",
        "UID:b\nDTSTART:20261106T170000Z\nDTEND:20261107T090000Z",
        "UID:c\nDTSTART:20261107T170000Z\nDTEND:20261107T090000Z\nX-HANDOVER-PERSON:edt-amy",
        "UID:d\nDTEND:20261107T090000Z\nX-HANDOVER-PERSON:edt-amy",
        "UID:e\nDTSTART:20261108T170000Z\nDTEND:20261109T090000Z\nX-HANDOVER-PERSON:ghost",
        "UID:f\nDTSTART:20261109T170000Z\nDTEND:20261110T090000Z\nX-HANDOVER-PERSON:edt-amy\n"
        "X-HANDOVER-ROLE:EDT Worker",
    )
    with pytest.raises(RotaImportError) as caught:
        read_feed(in_tmp, text, role="edt_worker")
    assert [str(p) for p in caught.value.problems] == [
        "oncall.ics:EVENT 1: ATTENDEE: no attendee is a person of the rota (attendees: "
        "nobody@elsewhere.example); add their email to people.csv or give X-HANDOVER-PERSON",
        "oncall.ics:EVENT 2: ATTENDEE: no person: give an ATTENDEE with the person's email, "
        "or X-HANDOVER-PERSON",
        "oncall.ics:EVENT 3: DTEND: the event ends before it starts",
        "oncall.ics:EVENT 4: DTSTART: the event has no start",
        "oncall.ics:EVENT 5: person_id: unknown person 'ghost'",
        "oncall.ics:EVENT 6: role: 'EDT Worker' is not a role (lower-case letters, digits, _ : -)",
    ]


def test_a_feed_without_a_role_anywhere_asks_for_one(in_tmp: Path) -> None:
    text = feed(
        "UID:a\nDTSTART:20261105T170000Z\nDTEND:20261106T090000Z\nX-HANDOVER-PERSON:edt-amy"
    )
    with pytest.raises(RotaImportError) as caught:
        read_feed(in_tmp, text)
    assert [str(p) for p in caught.value.problems] == [
        "oncall.ics:EVENT 1: X-HANDOVER-ROLE: no role: give the event (or the calendar) "
        "X-HANDOVER-ROLE, or import with --ical-role ROLE"
    ]


def test_attendees_are_matched_against_stored_people_when_no_people_file_is_given(
    in_tmp: Path,
) -> None:
    path = in_tmp / "oncall.ics"
    path.write_text(
        feed("UID:a\nDTSTART:20261105T170000Z\nDTEND:20261106T090000Z\nATTENDEE:mailto:Jo@X.org"),
        encoding="utf-8",
    )
    known = KnownIds(
        teams=frozenset({"hv-north"}),
        people=frozenset({"hv-jsmith"}),
        emails={"jo@x.org": ("hv-jsmith",)},
    )
    batch = read_rota_files(["oncall.ics"], LONDON, known=known, ical_role="duty:hv-north", now=NOW)
    assert [(s.person_id, s.role) for s in batch.shifts] == [("hv-jsmith", "duty:hv-north")]
    shared = replace(known, people=frozenset({"a", "b"}), emails={"jo@x.org": ("a", "b")})
    with pytest.raises(RotaImportError) as caught:
        read_rota_files(["oncall.ics"], LONDON, known=shared, ical_role="duty:hv-north", now=NOW)
    assert [str(p) for p in caught.value.problems] == [
        "oncall.ics:EVENT 1: ATTENDEE: the attendees are several people of the rota (a, b); "
        "give X-HANDOVER-PERSON"
    ]


def test_an_exported_calendar_imports_back_to_the_same_shifts(in_tmp: Path) -> None:
    (in_tmp / "export.ics").write_bytes(export())
    known = KnownIds(people=frozenset({"edt-mgr", "edt-sue"}))
    batch = read_rota_files(["export.ics"], LONDON, known=known, now=NOW)
    assert [(s.person_id, s.role, s.start_at, s.end_at) for s in batch.shifts] == [
        (s.person_id, s.role, s.start_at, s.end_at) for s in SHIFTS
    ]


def test_a_file_that_is_not_a_calendar_is_named(in_tmp: Path) -> None:
    (in_tmp / "oncall.ics").write_text("person_id,role,start,end\n", encoding="utf-8")
    with pytest.raises(RotaImportError) as caught:
        read_rota_files(["oncall.ics"], LONDON, now=NOW)
    (problem,) = caught.value.problems
    assert str(problem).startswith("oncall.ics:1: -: not an iCalendar file (")


def test_a_feed_beside_a_shifts_file_adds_to_it_and_both_replace_every_shift(
    in_tmp: Path,
) -> None:
    write_rota(
        in_tmp / "rota",
        teams=TEAMS,
        people=PEOPLE,
        shifts="person_id,role,start,end\nedt-amy,edt_worker,2026-11-05T17:00,2026-11-06T09:00\n",
    )
    (in_tmp / "oncall.ics").write_text(
        feed("UID:a\nDTSTART:20261105T170000Z\nDTEND:20261106T090000Z\nX-HANDOVER-PERSON:edt-amy"),
        encoding="utf-8",
    )
    batch = read_rota_files(["rota", "oncall.ics"], LONDON, ical_role="edt_manager", now=NOW)
    assert [(s.person_id, s.role) for s in batch.shifts] == [
        ("edt-amy", "edt_worker"),
        ("edt-amy", "edt_manager"),
    ]
    assert batch.shift_roles is None
    with pytest.raises(RotaImportError) as caught:
        read_rota_files(["rota", "oncall.ics"], LONDON, ical_role="edt_worker", now=NOW)
    assert [str(p) for p in caught.value.problems] == [
        "oncall.ics:EVENT 1: -: duplicates the shift on line 2 of rota/shifts.csv (the same "
        "person and role)"
    ]
