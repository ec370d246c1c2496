"""`handover rota check`, `rota ical` and who is away in `rota who`, through the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from icalendar import Calendar
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.cli import main
from bot.models import AuditEvent
from rota.models import Shift
from tests.rota.test_importer import BASE, write_rota

TEAMS = """\
team_id,name,agency,agency_type,region,hours,manager,channel
edt,Emergency Duty Team,Wexcombe County Council,social_care,england,none,edt-raj,C0EDTCARDS
hv-north,Health Visiting North,Wexcombe NHS,health,england,,hv-lee,C0HVNORTH1
school,Oakfield Primary,Oakfield,education,england,Mon-Fri 08:30-16:00,,
"""
PEOPLE = """\
person_id,name,slack_user,email,team_id,role,hours,deputy,permissions
edt-raj,Raj Malhotra,U0EDTRAJ01,,edt,EDT manager,none,,referrer;manager
edt-sue,Sue Whitfield,U0EDTSUE01,,edt,EDT manager,none,,referrer;manager
hv-lee,Morgan Lee,U0HVMLEE01,,hv-north,team leader,,,manager
hv-jsmith,Jo Smith,U0HVJSMI01,,hv-north,health visitor,Mon-Wed 09:00-17:00,hv-kpatel,
hv-kpatel,Kiran Patel,U0HVKPAT01,,hv-north,health visitor,,,
sch-moore,Hannah Moore,U0SCHMOO01,,school,DSL,,,
"""
# The on-call managers cover the whole fortnight from Sunday 20 December, Christmas included.
CHRISTMAS = "edt-raj,edt_manager,2026-12-24T09:00,2026-12-29T09:00\n"
SHIFTS = (
    "person_id,role,start,end\n"
    "edt-sue,edt_manager,2026-12-18T17:00,2026-12-24T09:00\n"
    + CHRISTMAS
    + "edt-sue,edt_manager,2026-12-29T09:00,2027-01-04T09:00\n"
    "hv-kpatel,duty:hv-north,2026-12-29T09:00,2026-12-29T17:00\n"
)
ABSENCES = "person_id,start,end,reason\nhv-jsmith,21/12/2026,08/01/2027,annual leave\n"
CLOSURES = "date,applies_to,from,to,reason\n2026-12-23,school,12:00,,end of term\n"
ROTA = {
    "teams": TEAMS,
    "people": PEOPLE,
    "shifts": SHIFTS,
    "absences": ABSENCES,
    "closures": CLOSURES,
}


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI on the test database, in tmp_path, its clock at Sunday 20 December 10:00."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    for name in ("HANDOVER_TIMEZONE", "HANDOVER_ALERT_ROLES"):
        monkeypatch.delenv(name, raising=False)
    clock = tmp_path / "clock.txt"
    clock.write_text("2026-12-20T10:00:00+00:00\n", encoding="utf-8")
    monkeypatch.setenv("HANDOVER_CLOCK_FILE", str(clock))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def imported(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    write_rota(cli_env / "rota", **ROTA)
    code, _, err = run(capsys, "rota", "import", "rota")
    assert (code, err) == (0, "")
    return cli_env


# --- rota check ---------------------------------------------------------------------------------


def test_a_deleted_christmas_shift_of_the_only_on_call_manager_shows_up(
    imported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "rota", "check")
    assert (code, out, err) == (
        0,
        "no gaps: edt_manager covered from Sun 20 Dec 2026 10:00 to Sun 03 Jan 2027 10:00\n",
        "",
    )
    write_rota(imported / "next", shifts=SHIFTS.replace(CHRISTMAS, ""))
    gap = "edt_manager: nobody on shift from Thu 24 Dec 2026 09:00 to Tue 29 Dec 2026 09:00 (120 h)"
    # The dry run and the import both say so, after their counts.
    code, out, err = run(capsys, "rota", "import", "--dry-run", "next")
    assert code == 0
    assert out.splitlines()[-1] == "dry run: nothing written; would become rota version 2"
    assert err.splitlines() == [
        f"warning: {gap}",
        "warning: 1 gap(s) in the on-call cover in the next 14 days; `handover rota check` "
        "lists them",
    ]
    code, out, err = run(capsys, "rota", "import", "next")
    assert (code, out.splitlines()[-1]) == (0, "rota version 2")
    assert err.splitlines()[0] == f"warning: {gap}"
    code, out, err = run(capsys, "rota", "check")
    assert (code, out) == (1, gap + "\n")
    assert err == (
        "handover: 1 gap(s) in the cover of edt_manager from Sun 20 Dec 2026 10:00 to "
        "Sun 03 Jan 2027 10:00\n"
    )


def test_check_takes_a_window_and_every_alert_role(
    imported: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HANDOVER_ALERT_ROLES", "edt_manager,police_dau")
    code, out, err = run(capsys, "rota", "check", "--from", "2027-01-03T12:00", "--days", "2")
    assert code == 1
    assert out.splitlines() == [
        "edt_manager: nobody on shift from Mon 04 Jan 2027 09:00 to Tue 05 Jan 2027 12:00 (27 h)",
        "police_dau: nobody on shift from Sun 03 Jan 2027 12:00 to Tue 05 Jan 2027 12:00 (48 h)",
    ]
    assert err.splitlines()[0] == (
        "note: no shift in the rota names the role police_dau (HANDOVER_ALERT_ROLES)"
    )


@pytest.mark.parametrize("days", ["0", "-1", "x", "10000"])
def test_check_refuses_a_bad_number_of_days_as_a_usage_error(
    imported: Path, capsys: pytest.CaptureFixture[str], days: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["rota", "check", "--days", days])
    assert exited.value.code == 2
    assert "is not a number of days from 1 to 732" in capsys.readouterr().err


def test_check_refuses_a_bad_time(imported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "rota", "check", "--from", "Christmas")
    assert (code, out) == (1, "")
    assert err == ("handover: --from 'Christmas' is not an ISO 8601 time (e.g. 2026-12-24T18:00)\n")


# --- rota ical ----------------------------------------------------------------------------------


def events_of(ics: str) -> list[tuple[str, datetime, datetime, str]]:
    calendar = Calendar.from_ical(ics)
    return [
        (str(e["SUMMARY"]), e.start.astimezone(UTC), e.end.astimezone(UTC), str(e["UID"]))
        for e in calendar.walk("VEVENT")
    ]


def test_ical_of_a_role_and_of_a_person(imported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "rota", "ical", "--role", "edt_manager", "--days", "7")
    assert (code, err) == (0, "")
    assert out.startswith("BEGIN:VCALENDAR\r\n")
    role_events = events_of(out)
    assert [(s, a, b) for s, a, b, _ in role_events] == [
        (
            "edt_manager: Sue Whitfield",
            datetime(2026, 12, 18, 17, tzinfo=UTC),
            datetime(2026, 12, 24, 9, tzinfo=UTC),
        ),
        (
            "edt_manager: Raj Malhotra",
            datetime(2026, 12, 24, 9, tzinfo=UTC),
            datetime(2026, 12, 29, 9, tzinfo=UTC),
        ),
    ]
    code, out, _ = run(
        capsys, "rota", "ical", "--person", "edt-raj", "--from", "24/12/2026", "--days", "1"
    )
    assert code == 0
    person_events = events_of(out)
    assert person_events == role_events[1:]  # the same shift, the same UID
    assert Calendar.from_ical(out)["X-WR-CALNAME"] == "Handover: Raj Malhotra"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--role", "nobody"), "handover: unknown role nobody: no shift in the rota names it\n"),
        (("--person", "ghost"), "handover: unknown person ghost\n"),
        (
            ("--role", "edt_manager", "--from", "31/02/2027"),
            "handover: --from '31/02/2027' is not a date like 2026-12-21 or 21/12/2026\n",
        ),
    ],
)
def test_ical_of_nothing_known_is_exit_1(
    imported: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    assert run(capsys, "rota", "ical", *argv) == (1, "", message)


def test_ical_needs_a_role_or_a_person(imported: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["rota", "ical"])
    assert exited.value.code == 2
    assert "one of the arguments --role --person is required" in capsys.readouterr().err


# --- rota ical exports imported back: only the shifts of their scope are replaced -------------

# Raj holds on-call shifts before, in and after the 90 days from Sunday 20 December, and a duty
# shift of his team; Sue and Kiran hold shifts of the same days.
SCOPED_SHIFTS = (
    "person_id,role,start,end\n"
    "edt-raj,edt_manager,2026-12-10T09:00,2026-12-11T09:00\n"
    "edt-sue,edt_manager,2026-12-18T17:00,2026-12-24T09:00\n"
    + CHRISTMAS
    + "edt-sue,edt_manager,2026-12-29T09:00,2027-01-04T09:00\n"
    "hv-kpatel,duty:hv-north,2026-12-29T09:00,2026-12-29T17:00\n"
    "edt-raj,duty:edt,2026-12-30T09:00,2026-12-30T17:00\n"
    "edt-raj,edt_manager,2027-06-01T09:00,2027-06-02T09:00\n"
)


def stored_shifts(factory: sessionmaker[Session]) -> list[tuple[int, str, str, datetime, datetime]]:
    with factory() as session:
        return [
            (
                r.id,
                r.person_id,
                r.role,
                r.start_at.replace(tzinfo=UTC),
                r.end_at.replace(tzinfo=UTC),
            )
            for r in session.execute(
                select(
                    Shift.id, Shift.person_id, Shift.role, Shift.start_at, Shift.end_at
                ).order_by(Shift.id)
            )
        ]


@pytest.fixture
def scoped(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    write_rota(cli_env / "rota", **{**ROTA, "shifts": SCOPED_SHIFTS})
    code, _, err = run(capsys, "rota", "import", "rota")
    assert (code, err) == (0, "")
    return cli_env


def export(capsys: pytest.CaptureFixture[str], name: str, *argv: str) -> str:
    code, out, err = run(capsys, "rota", "ical", *argv)
    assert (code, err) == (0, "")
    Path(name).write_text(out, encoding="utf-8", newline="")
    return out


def test_an_export_of_a_person_imports_back_removing_nobody_elses_shifts(
    scoped: Path, capsys: pytest.CaptureFixture[str], session_factory: sessionmaker[Session]
) -> None:
    before = stored_shifts(session_factory)
    ics = export(capsys, "raj.ics", "--person", "edt-raj")
    calendar = Calendar.from_ical(ics)
    assert [
        str(calendar[name]) for name in ("X-HANDOVER-SCOPE-PERSON", "X-HANDOVER-SCOPE-FROM")
    ] == [
        "edt-raj",
        "20261220T000000Z",
    ]
    assert str(calendar["X-HANDOVER-SCOPE-TO"]) == "20270320T000000Z"
    assert "X-HANDOVER-SCOPE-ROLE" not in calendar
    assert run(capsys, "rota", "import", "raj.ics") == (
        0,
        "shifts of every role (edt-raj, 20/12/2026 to 19/03/2027): 0 added, 0 removed, "
        "2 unchanged\nno changes; rota version 1\n",
        "",
    )
    assert stored_shifts(session_factory) == before
    detail = audit_details(session_factory)[-1]
    assert detail["shift_roles"] == []
    assert detail["shift_scopes"] == [
        {
            "roles": None,
            "person_id": "edt-raj",
            "from": "2026-12-20T00:00:00+00:00",
            "to": "2027-03-20T00:00:00+00:00",
        }
    ]


def test_an_export_of_a_window_imports_back_keeping_the_shifts_before_and_after(
    scoped: Path, capsys: pytest.CaptureFixture[str], session_factory: sessionmaker[Session]
) -> None:
    before = stored_shifts(session_factory)
    ics = export(
        capsys, "oncall.ics", "--role", "edt_manager", "--from", "24/12/2026", "--days", "7"
    )
    assert len(events_of(ics)) == 3  # Sue's shift ending on the 24th is in: it overlaps the window
    assert run(capsys, "rota", "import", "oncall.ics") == (
        0,
        "shifts of edt_manager (24/12/2026 to 30/12/2026): 0 added, 0 removed, 3 unchanged\n"
        "no changes; rota version 1\n",
        "",
    )
    assert stored_shifts(session_factory) == before
    assert audit_details(session_factory)[-1]["shift_scopes"] == [
        {
            "roles": ["edt_manager"],
            "person_id": None,
            "from": "2026-12-24T00:00:00+00:00",
            "to": "2026-12-31T00:00:00+00:00",
        }
    ]


def test_an_edited_export_changes_exactly_the_shift_moved(
    scoped: Path, capsys: pytest.CaptureFixture[str], session_factory: sessionmaker[Session]
) -> None:
    before = stored_shifts(session_factory)
    ics = export(capsys, "raj.ics", "--person", "edt-raj", "--from", "20/12/2026", "--days", "31")
    assert ics.count("DTSTART;TZID=Europe/London:20261224T090000") == 1
    Path("raj.ics").write_text(
        ics.replace(
            "DTSTART;TZID=Europe/London:20261224T090000",
            "DTSTART;TZID=Europe/London:20261224T080000",
        ),
        encoding="utf-8",
        newline="",
    )
    assert run(capsys, "rota", "import", "raj.ics") == (
        0,
        "shifts of every role (edt-raj, 20/12/2026 to 19/01/2027): 1 added, 1 removed, "
        "1 unchanged\nrota version 2\n",
        "",
    )
    moved = [s for s in before if s[1:4] == ("edt-raj", "edt_manager", CHRISTMAS_START)]
    assert len(moved) == 1
    after = stored_shifts(session_factory)
    assert after[:-1] == [s for s in before if s is not moved[0]]
    assert after[-1][1:] == (
        "edt-raj",
        "edt_manager",
        datetime(2026, 12, 24, 8, tzinfo=UTC),
        datetime(2026, 12, 29, 9, tzinfo=UTC),
    )


CHRISTMAS_START = datetime(2026, 12, 24, 9, tzinfo=UTC)


def test_an_export_of_a_role_keeps_the_shifts_of_inactive_holders_it_leaves_out(
    scoped: Path, capsys: pytest.CaptureFixture[str], session_factory: sessionmaker[Session]
) -> None:
    people = "".join(line for line in PEOPLE.splitlines(True) if not line.startswith("edt-sue,"))
    write_rota(scoped / "left", people=people)
    code, _, _ = run(capsys, "rota", "import", "left/people.csv")
    assert code == 0
    before = stored_shifts(session_factory)
    ics = export(
        capsys, "oncall.ics", "--role", "edt_manager", "--from", "24/12/2026", "--days", "7"
    )
    assert [summary for summary, *_ in events_of(ics)] == ["edt_manager: Raj Malhotra"]
    code, out, _ = run(capsys, "rota", "import", "oncall.ics")
    assert (code, out) == (
        0,
        "shifts of edt_manager (24/12/2026 to 30/12/2026): 0 added, 0 removed, 1 unchanged\n"
        "no changes; rota version 2\n",
    )
    assert stored_shifts(session_factory) == before


def test_an_export_with_a_shifts_file_replaces_the_whole_set_as_before(
    scoped: Path, capsys: pytest.CaptureFixture[str], session_factory: sessionmaker[Session]
) -> None:
    export(capsys, "raj.ics", "--person", "edt-raj")
    write_rota(
        scoped / "day", shifts="person_id,role,start,end\n" + SCOPED_SHIFTS.splitlines()[5] + "\n"
    )
    code, out, err = run(capsys, "rota", "import", "day/shifts.csv", "raj.ics")
    assert (code, out) == (0, "shifts: 0 added, 4 removed, 3 unchanged\nrota version 2\n")
    assert err.endswith(
        "warning: 2 gap(s) in the on-call cover in the next 14 days; "
        "`handover rota check` lists them\n"
    )  # Sue's shifts went too
    assert [s[1:3] for s in stored_shifts(session_factory)] == [
        ("edt-raj", "edt_manager"),
        ("hv-kpatel", "duty:hv-north"),
        ("edt-raj", "duty:edt"),
    ]
    assert "shift_scopes" not in audit_details(session_factory)[-1]


@pytest.mark.parametrize(
    ("find", "put", "problem"),
    [
        (
            "X-HANDOVER-SCOPE-FROM:20261220T000000Z",
            "X-HANDOVER-SCOPE-FROM:tomorrow",
            "raj.ics:1: X-HANDOVER-SCOPE-FROM: 'tomorrow' is not a date-time with an offset or "
            "in UTC (like 20270101T000000Z)",
        ),
        (
            "X-HANDOVER-SCOPE-FROM:20261220T000000Z",
            "X-HANDOVER-SCOPE-FROM:2026-12-20T00:00",
            "raj.ics:1: X-HANDOVER-SCOPE-FROM: '2026-12-20T00:00' is not a date-time with an "
            "offset or in UTC (like 20270101T000000Z)",
        ),
        (
            "X-HANDOVER-SCOPE-TO:20270120T000000Z\r\n",
            "",
            "raj.ics:1: X-HANDOVER-SCOPE-TO: missing: a window needs both X-HANDOVER-SCOPE-FROM "
            "and X-HANDOVER-SCOPE-TO (X-HANDOVER-SCOPE-FROM is given)",
        ),
        (
            "X-HANDOVER-SCOPE-TO:20270120T000000Z",
            "X-HANDOVER-SCOPE-TO:20261201T000000Z",
            "raj.ics:1: X-HANDOVER-SCOPE-TO: 20261201T000000Z is not after "
            "X-HANDOVER-SCOPE-FROM 20261220T000000Z",
        ),
        (
            "X-HANDOVER-SCOPE-PERSON:edt-raj",
            "X-HANDOVER-SCOPE-PERSON:edt-raj\r\nX-HANDOVER-SCOPE-PERSON:edt-sue",
            "raj.ics:1: X-HANDOVER-SCOPE-PERSON: given more than once",
        ),
        (
            "X-HANDOVER-SCOPE-PERSON:edt-raj",
            "X-HANDOVER-SCOPE-PERSON:edt-raj\r\nX-HANDOVER-SCOPE-ROLE:EDT Manager",
            "raj.ics:1: X-HANDOVER-SCOPE-ROLE: 'EDT Manager' is not a role or roles separated "
            "by commas",
        ),
        (
            "X-HANDOVER-SCOPE-PERSON:edt-raj",
            "X-HANDOVER-SCOPE-PERSON:edt-sue",
            "raj.ics:EVENT 1: X-HANDOVER-PERSON: person edt-raj is not X-HANDOVER-SCOPE-PERSON "
            "edt-sue: the calendar replaces only the shifts of its scope (every role (edt-sue, "
            "20/12/2026 to 19/01/2027))",
        ),
    ],
    ids=[
        "from-not-a-time",
        "from-without-offset",
        "to-missing",
        "to-before-from",
        "person-twice",
        "role-not-a-role",
        "event-outside-scope",
    ],
)
def test_a_malformed_scope_is_refused_and_changes_nothing(
    scoped: Path,
    capsys: pytest.CaptureFixture[str],
    session_factory: sessionmaker[Session],
    find: str,
    put: str,
    problem: str,
) -> None:
    before = stored_shifts(session_factory)
    ics = export(capsys, "raj.ics", "--person", "edt-raj", "--from", "20/12/2026", "--days", "31")
    assert ics.count(find) == 1
    Path("raj.ics").write_text(ics.replace(find, put), encoding="utf-8", newline="")
    code, out, err = run(capsys, "rota", "import", "raj.ics")
    assert (code, out) == (1, "")
    assert err.splitlines()[0] == problem
    assert err.splitlines()[-1].startswith("handover: rota not imported: ")
    assert stored_shifts(session_factory) == before


def audit_details(factory: sessionmaker[Session]) -> list[dict[str, Any]]:
    with factory() as session:
        return [
            json.loads(row.detail)
            for row in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
            if row.event == "rota_imported"
        ]


# --- rota who: who is away and why --------------------------------------------------------------


def test_who_says_who_is_away_within_their_hours_and_why(
    imported: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "rota", "who", "--at", "2026-12-23T14:00")
    assert code == 0
    assert out.splitlines() == [
        "at work Wed 23 Dec 2026 14:00 (2026-12-23T14:00:00+00:00)",
        "PERSON     NAME           TEAM      WHY",
        "edt-sue    Sue Whitfield  edt       shift edt_manager",
        "hv-kpatel  Kiran Patel    hv-north  hours Mon-Fri 09:00-17:00",
        "hv-lee     Morgan Lee     hv-north  hours Mon-Fri 09:00-17:00",
        "",
        "away within their hours",
        "PERSON     NAME          TEAM      WHY",
        "hv-jsmith  Jo Smith      hv-north  absent: annual leave (21 Dec 2026 to 08 Jan 2027)",
        "sch-moore  Hannah Moore  school    closed: end of term (school)",
    ]
    # Monday 28 December is the substitute day for Boxing Day; the duty holder of the 29th is
    # not needed yet, and Jo's leave goes on.
    code, out, _ = run(capsys, "rota", "who", "--at", "2026-12-28T10:00", "--format", "json")
    assert code == 0
    away = json.loads(out)["away"]
    assert [(a["person_id"], a["why"]) for a in away] == [
        ("hv-jsmith", "absent: annual leave (21 Dec 2026 to 08 Jan 2027)"),
        ("hv-kpatel", "bank holiday: Boxing Day (substitute day)"),
        ("hv-lee", "bank holiday: Boxing Day (substitute day)"),
        ("sch-moore", "bank holiday: Boxing Day (substitute day)"),
    ]


def test_nobody_is_away_outside_their_hours_and_a_shift_beats_the_calendar(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shifts = SHIFTS + "hv-jsmith,duty:hv-north,2026-12-28T09:00,2026-12-28T17:00\n"
    write_rota(cli_env / "rota", **{**ROTA, "shifts": shifts})
    assert run(capsys, "rota", "import", "rota")[0] == 0
    code, out, _ = run(capsys, "rota", "who", "--at", "2026-12-28T10:00", "--format", "json")
    body = json.loads(out)
    assert ("hv-jsmith", "shift duty:hv-north") in [
        (p["person_id"], p["why"]) for p in body["people"]
    ]
    assert "hv-jsmith" not in [a["person_id"] for a in body["away"]]
    code, out, _ = run(capsys, "rota", "who", "--at", "2026-12-23T18:00", "--format", "json")
    assert (code, json.loads(out)["away"]) == (0, [])


def test_who_of_base_rota_still_works(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_rota(cli_env / "rota", **BASE)
    assert run(capsys, "rota", "import", "rota")[0] == 0
    code, out, _ = run(capsys, "rota", "who", "--at", "2026-12-31T14:00")
    assert code == 0
    assert "hv-kpatel  Kiran Patel  hv-north  closed: close-down (hv-north)" in out
