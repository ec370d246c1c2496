"""`handover rota import`: exit codes, what it prints, and that a refusal changes nothing."""

from __future__ import annotations

import getpass
import json
import re
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.cli import main
from bot.models import AuditEvent
from rota.importer import KINDS
from rota.models import Closure, Person, RotaVersion, Shift, Team
from tests.rota.test_importer import (
    BASE,
    CLOSURES,
    PEOPLE,
    SAMPLE,
    SHIFTS,
    snapshot,
    write_rota,
)
from tests.rota.xlsx import write_workbook


@pytest.fixture
def cli_env(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the CLI at the test database, run in tmp_path, and fix its clock."""
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("HANDOVER_TIMEZONE", raising=False)
    clock = tmp_path / "clock.txt"
    clock.write_text("2026-11-26T10:00:00+00:00\n", encoding="utf-8")
    monkeypatch.setenv("HANDOVER_CLOCK_FILE", str(clock))
    monkeypatch.chdir(tmp_path)
    return db_url


def test_import_prints_counts_and_the_new_version(
    cli_env: str, tmp_path: Path, session_factory: sessionmaker[Session], capsys
) -> None:
    write_rota(tmp_path / "rota", **BASE)
    assert main(["rota", "import", "rota"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "teams: 2 added, 0 updated, 0 deactivated, 0 unchanged",
        "people: 5 added, 0 updated, 0 deactivated, 0 unchanged",
        "shifts: 3 added, 0 removed, 0 unchanged",
        "absences: 1 added, 0 removed, 0 unchanged",
        "closures: 3 added, 0 removed, 0 unchanged",
        "rota version 1",
    ]
    with session_factory() as session:
        version = session.get(RotaVersion, 1)
    assert version.imported_at == datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    assert version.files == ",".join(
        f"rota/{kind}.csv" for kind in ("teams", "people", "shifts", "absences", "closures")
    )
    assert json.loads(version.summary)["people"]["added"] == 5


def test_importing_the_same_files_again_reports_no_changes(
    cli_env: str, tmp_path: Path, session_factory: sessionmaker[Session], capsys
) -> None:
    write_rota(tmp_path / "rota", **BASE)
    assert main(["rota", "import", "rota"]) == 0
    before = snapshot(session_factory)
    capsys.readouterr()
    assert main(["rota", "import", "rota/shifts.csv", "rota/people.csv"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "people: 0 added, 0 updated, 0 deactivated, 5 unchanged",
        "shifts: 0 added, 0 removed, 3 unchanged",
        "no changes; rota version 1",
    ]
    assert snapshot(session_factory) == before


def test_bad_rows_exit_1_with_each_problem_on_stderr_and_nothing_changed(
    cli_env: str, tmp_path: Path, session_factory: sessionmaker[Session], capsys
) -> None:
    write_rota(tmp_path / "good", **BASE)
    assert main(["rota", "import", "good"]) == 0
    before = snapshot(session_factory)
    capsys.readouterr()
    write_rota(
        tmp_path / "bad",
        people=PEOPLE + "x-1,Someone,,,edt,worker,,x-1,\n",
        shifts=SHIFTS + "ghost,edt_worker,2026-12-27T17:00,2026-12-27T09:00\n",
    )
    assert main(["rota", "import", "bad"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "bad/people.csv:7: -: unreachable: give a slack_user or an email to look the user up by",
        "bad/people.csv:7: deputy: a person cannot be their own deputy",
        "bad/shifts.csv:5: end: end 2026-12-27T09:00 is not after start 2026-12-27T17:00",
        "bad/shifts.csv:5: person_id: unknown person 'ghost'",
        "handover: rota not imported: 4 problem(s); nothing was changed",
    ]
    assert snapshot(session_factory) == before


def test_a_shifts_file_alone_is_checked_against_the_stored_people(
    cli_env: str, tmp_path: Path, session_factory: sessionmaker[Session], capsys
) -> None:
    write_rota(tmp_path / "rota", **BASE)
    assert main(["rota", "import", "rota"]) == 0
    capsys.readouterr()
    write_rota(
        tmp_path / "next", shifts=SHIFTS + "edt-mgr,edt_worker,2027-01-02T09:00,2027-01-02T17:00\n"
    )
    assert main(["rota", "import", "next/shifts.csv"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "shifts: 1 added, 0 removed, 3 unchanged",
        "rota version 2",
    ]
    write_rota(
        tmp_path / "wrong",
        shifts="person_id,role,start,end\nnobody,x,2027-01-02T09:00,2027-01-02T17:00\n",
    )
    assert main(["rota", "import", "wrong/shifts.csv"]) == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        "wrong/shifts.csv:2: person_id: unknown person 'nobody'"
    )


def test_a_missing_person_is_deactivated(
    cli_env: str, tmp_path: Path, session_factory: sessionmaker[Session], capsys
) -> None:
    write_rota(tmp_path / "rota", **BASE)
    assert main(["rota", "import", "rota"]) == 0
    without = "".join(line for line in PEOPLE.splitlines(True) if not line.startswith("edt-amy"))
    write_rota(tmp_path / "next", people=without)
    capsys.readouterr()
    assert main(["rota", "import", "next"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "people: 0 added, 0 updated, 1 deactivated, 4 unchanged",
        "rota version 2",
    ]
    with session_factory() as session:
        assert session.get(Person, "edt-amy").active is False


def test_dry_run_prints_what_would_change_and_writes_nothing(
    cli_env: str, tmp_path: Path, session_factory: sessionmaker[Session], capsys
) -> None:
    before = snapshot(session_factory)
    write_rota(tmp_path / "rota", **BASE)
    assert main(["rota", "import", "--dry-run", "rota"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "teams: 2 added, 0 updated, 0 deactivated, 0 unchanged"
    assert out[-1] == "dry run: nothing written; would become rota version 1"
    assert snapshot(session_factory) == before


def test_dry_run_of_bad_files_exits_1(cli_env: str, tmp_path: Path, capsys) -> None:
    write_rota(tmp_path / "rota", absences="person_id,start,end,reason\nx,2027-01-02,2027-01-01,\n")
    assert main(["rota", "import", "--dry-run", "rota"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "rota/absences.csv:2: end: end 2027-01-01 is before start 2027-01-02",
        "rota/absences.csv:2: person_id: unknown person 'x'",
        "handover: rota not imported: 2 problem(s); nothing was changed",
    ]


def test_printed_problems_are_capped(cli_env: str, tmp_path: Path, capsys) -> None:
    rows = "".join(f"p{i},,U0X00001,,edt,worker,,,\n" for i in range(250))
    teams = (
        "team_id,name,agency,agency_type,region,hours,manager,channel\n"
        "edt,EDT,,social_care,england,,,\n"
    )
    write_rota(tmp_path / "rota", teams=teams, people=PEOPLE.splitlines(True)[0] + rows)
    assert main(["rota", "import", "rota"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 202
    assert err[0] == "rota/people.csv:2: name: required but empty"
    assert err[199] == "rota/people.csv:201: name: required but empty"
    assert err[200:] == [
        "... and 50 more problems",
        "handover: rota not imported: 250 problem(s); nothing was changed",
    ]


def test_the_sample_rota_imports(
    cli_env: str, session_factory: sessionmaker[Session], capsys
) -> None:
    assert main(["rota", "import", str(SAMPLE)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "rota version 1"
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Team)) == 11
        assert session.scalar(select(func.count()).select_from(Shift)) > 1000


def test_a_database_that_is_not_migrated_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    write_rota(tmp_path / "rota", **BASE)
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{empty}")
    assert main(["rota", "import", "rota"]) == 3
    assert "has no rota tables; run `handover db upgrade` first" in capsys.readouterr().err


def test_a_missing_sqlite_file_exits_3_and_is_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    write_rota(tmp_path / "rota", **BASE)
    missing = tmp_path / "nowhere.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{missing}")
    assert main(["rota", "import", "rota"]) == 3
    err = capsys.readouterr().err
    assert f"the SQLite file {missing} does not exist" in err
    assert "`handover db upgrade`" in err
    assert not missing.exists()


def test_an_unreachable_postgresql_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    write_rota(tmp_path / "rota", **BASE)
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://handover:s3cret@127.0.0.1:1/handover")
    assert main(["rota", "import", "rota"]) == 3
    err = capsys.readouterr().err
    assert "unavailable" in err and "s3cret" not in err


def test_a_device_is_not_taken_for_a_missing_file(
    cli_env: str, session_factory: sessionmaker[Session], capsys
) -> None:
    before = snapshot(session_factory)
    assert main(["rota", "import", "/dev/null"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "/dev/null:1: -: not a regular file or a folder of CSV files",
        "handover: rota not imported: 1 problem(s); nothing was changed",
    ]
    assert snapshot(session_factory) == before


# --- the deactivation guard (docs/reference/rota-files.md) ------------------------------------


def people_rows(count: int) -> str:
    """A people.csv of the EDT team with `count` people."""
    return "person_id,name,slack_user,email,team_id,role,hours,deputy,permissions\n" + "".join(
        f"p{i:02d},Person {i},U0PERSON{i:02d},,edt,worker,,,\n" for i in range(count)
    )


def test_a_truncated_people_file_is_refused_and_changes_nothing(
    cli_env: str, session_factory: sessionmaker[Session], capsys
) -> None:
    assert main(["rota", "import", str(SAMPLE)]) == 0
    before = snapshot(session_factory)
    capsys.readouterr()
    lines = (SAMPLE / "people.csv").read_text(encoding="utf-8").splitlines(True)
    truncated = "".join(lines[:4])
    everyone = sorted(line.split(",", 1)[0] for line in lines[1:] if line.strip())
    kept = {line.split(",", 1)[0] for line in lines[1:4]}
    gone = [person for person in everyone if person not in kept]
    write_rota(Path("cut"), people=truncated)
    refusal = [
        f"cut/people.csv:1: -: this import would deactivate {len(gone)} of the {len(everyone)} "
        f"active people ({', '.join(gone[:10])} and {len(gone) - 10} more): more than 10% and "
        "more than 3. Is the file complete? If this is intended, import again with "
        "--allow-deactivate",
        "handover: rota not imported: 1 problem(s); nothing was changed",
    ]
    for dry_run in ([], ["--dry-run"]):
        assert main(["rota", "import", *dry_run, "cut"]) == 1
        captured = capsys.readouterr()
        assert (captured.out, captured.err.splitlines()) == ("", refusal)
        assert snapshot(session_factory) == before
    assert main(["rota", "import", "--allow-deactivate", "cut"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"people: 0 added, 0 updated, {len(gone)} deactivated, 3 unchanged",
        "rota version 2",
    ]


@pytest.mark.parametrize(
    ("active", "kept", "allowed"),
    [
        (28, 25, True),  # 3 deactivated: never more than 3
        (28, 24, False),  # 4 of 28: 14%
        (50, 46, True),  # 4 of 50: 8%
        (50, 44, False),  # 6 of 50: 12%
        (40, 36, True),  # 4 of 40: exactly 10% is not more than 10%
    ],
)
def test_the_guard_refuses_more_than_10_percent_and_more_than_3(
    cli_env: str, session_factory: sessionmaker[Session], capsys, active, kept, allowed
) -> None:
    teams = (
        "team_id,name,agency,agency_type,region,hours,manager,channel\n"
        "edt,EDT,Wexcombe,social_care,england,none,,\n"
    )
    write_rota(Path("v1"), teams=teams, people=people_rows(active))
    assert main(["rota", "import", "v1"]) == 0
    write_rota(Path("v2"), people=people_rows(kept))
    capsys.readouterr()
    assert main(["rota", "import", "v2"]) == (0 if allowed else 1)
    err = capsys.readouterr().err
    assert (f"would deactivate {active - kept} of the {active} active people" in err) != allowed


def test_the_guard_counts_teams_too(
    cli_env: str, session_factory: sessionmaker[Session], capsys
) -> None:
    assert main(["rota", "import", str(SAMPLE)]) == 0
    capsys.readouterr()
    lines = (SAMPLE / "teams.csv").read_text(encoding="utf-8").splitlines(True)
    active = sum(1 for line in lines[1:] if line.strip())
    write_rota(Path("cut"), teams="".join(lines[:3]))
    assert main(["rota", "import", "cut/teams.csv"]) == 1
    assert f"would deactivate {active - 2} of the {active} active teams" in capsys.readouterr().err


# --- rota_imported in the audit log -----------------------------------------------------------


def audit_rows(factory: sessionmaker[Session]) -> list[tuple]:
    with factory() as session:
        return [
            (row.event, row.rota_version, json.loads(row.detail), row.referral_id)
            for row in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        ]


def test_every_import_is_an_audit_event_with_its_version_and_counts(
    cli_env: str, tmp_path: Path, session_factory: sessionmaker[Session], capsys
) -> None:
    write_rota(tmp_path / "rota", **BASE)
    assert main(["rota", "import", "--dry-run", "rota"]) == 0
    assert audit_rows(session_factory) == []  # a dry run writes nothing, not even the log
    assert main(["rota", "import", "rota"]) == 0
    assert main(["rota", "import", "rota/shifts.csv"]) == 0  # nothing changed: still logged
    write_rota(tmp_path / "bad", shifts=SHIFTS + "ghost,x,2027-01-01T09:00,2027-01-01T10:00\n")
    assert main(["rota", "import", "bad"]) == 1  # refused: nothing imported, nothing logged
    rows = audit_rows(session_factory)
    user = getpass.getuser()
    assert rows == [
        (
            "rota_imported",
            1,
            {
                "version": 1,
                "changed": True,
                "files": [f"rota/{kind}.csv" for kind in KINDS],
                "counts": {
                    "teams": {"added": 2, "updated": 0, "deactivated": 0, "unchanged": 0},
                    "people": {"added": 5, "updated": 0, "deactivated": 0, "unchanged": 0},
                    "shifts": {"added": 3, "removed": 0, "unchanged": 0},
                    "absences": {"added": 1, "removed": 0, "unchanged": 0},
                    "closures": {"added": 3, "removed": 0, "unchanged": 0},
                },
                "user": user,
            },
            None,
        ),
        (
            "rota_imported",
            1,
            {
                "version": 1,
                "changed": False,
                "files": ["rota/shifts.csv"],
                "counts": {"shifts": {"added": 0, "removed": 0, "unchanged": 3}},
                "user": user,
            },
            None,
        ),
    ]
    capsys.readouterr()
    assert main(["log", "--format", "jsonl"]) == 0
    logged = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["event"], e["at"], e["detail"]["version"]) for e in logged] == [
        ("rota_imported", "2026-11-26T10:00:00+00:00", 1),
        ("rota_imported", "2026-11-26T10:00:00+00:00", 1),
    ]


# --- spreadsheets as coordinators save them -------------------------------------------------


def test_an_excel_workbook_imports_like_its_csv_files(
    cli_env: str, tmp_path: Path, session_factory: sessionmaker[Session], capsys
) -> None:
    kinds = ("teams", "people", "shifts", "absences", "closures")
    sheets = {kind: (SAMPLE / f"{kind}.csv").read_text(encoding="utf-8") for kind in kinds}
    write_workbook(tmp_path / "Rota 2027.xlsx", sheets)
    assert main(["rota", "import", "Rota 2027.xlsx"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "rota version 1"
    from_workbook = snapshot(session_factory)
    assert main(["rota", "import", str(SAMPLE)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no changes; rota version 1"
    assert snapshot(session_factory) == from_workbook
    with session_factory() as session:
        version = session.get(RotaVersion, 1)
        shift = session.scalars(
            select(Shift).where(Shift.start_at == datetime(2027, 7, 12, 16, tzinfo=UTC))
        ).first()
    assert version.files.split(",")[:2] == ["Rota 2027.xlsx:teams", "Rota 2027.xlsx:people"]
    assert shift is not None  # 17:00 BST on 12 July, from a date cell


def test_a_workbook_with_problems_names_sheet_and_row_and_changes_nothing(
    cli_env: str, tmp_path: Path, session_factory: sessionmaker[Session], capsys
) -> None:
    before = snapshot(session_factory)
    shifts = SHIFTS + "edt-amy,edt_worker,2026-12-27T17:00,2026-12-27T09:00\n"
    write_workbook(tmp_path / "rota.xlsx", {**BASE, "shifts": shifts})
    assert main(["rota", "import", "rota.xlsx"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "rota.xlsx:shifts:5: end: end 2026-12-27T09:00:00 is not after start 2026-12-27T17:00:00",
        "handover: rota not imported: 1 problem(s); nothing was changed",
    ]
    assert snapshot(session_factory) == before


def test_windows_1252_and_semicolon_files_saved_by_excel_import(
    cli_env: str, tmp_path: Path, session_factory: sessionmaker[Session], capsys
) -> None:
    people = PEOPLE.replace("Amy Carter", "Zoë Renée").replace(",", ";")
    people = people.replace(";referrer;manager", ';"referrer;manager"')
    closures = CLOSURES.replace("close-down", "close-down (£0 budget)")
    files = {
        **BASE,
        "people": people.replace("\n", "\r\n").encode("cp1252"),
        "closures": closures.encode("cp1252"),
        "absences": "person_id;start;end;reason\r\nhv-jsmith;21/12/2026;08/01/2027;leave\r\n",
    }
    write_rota(tmp_path / "rota", **files)
    assert main(["rota", "import", "rota"]) == 1
    err = capsys.readouterr().err
    assert (
        "rota/people.csv:3: -: not UTF-8: byte 0xEB at position 11; in Windows-1252 this "
        "value reads 'Zoë Renée'" in err
    )
    assert main(["rota", "import", "--cp1252", "rota"]) == 0
    with session_factory() as session:
        assert session.get(Person, "edt-amy").name == "Zoë Renée"
        assert session.get(Person, "edt-mgr").permissions == "referrer;manager"
        reasons = set(session.scalars(select(Closure.reason)))
        assert "close-down (£0 budget)" in reasons


# --- control characters and the dry run -------------------------------------------------------


def test_a_nul_byte_is_refused_with_its_place_on_both_databases(
    cli_env: str, tmp_path: Path, session_factory: sessionmaker[Session], capsys
) -> None:
    before = snapshot(session_factory)
    write_rota(tmp_path / "rota", **{**BASE, "people": PEOPLE.replace("Jo Smith", "Jo\x00Smith")})
    expected = [
        "rota/people.csv:5: name: NUL (U+0000) at character 3; control characters are not "
        "allowed in rota files",
        "handover: rota not imported: 1 problem(s); nothing was changed",
    ]
    for dry_run in (["--dry-run"], []):
        assert main(["rota", "import", *dry_run, "rota"]) == 1
        captured = capsys.readouterr()
        assert (captured.out, captured.err.splitlines()) == ("", expected)
    assert snapshot(session_factory) == before


# --- progress on a terminal ---------------------------------------------------------------------


def test_a_large_import_shows_a_bar_with_a_total_and_an_eta_on_a_terminal(
    cli_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    rows = [
        f"edt-amy,edt_worker,{day:%Y-%m-%d}T17:00,{day + timedelta(days=1):%Y-%m-%d}T09:00\n"
        for day in (date(2027, 1, 1) + timedelta(days=n) for n in range(12_000))
    ]
    write_rota(
        tmp_path / "rota", **{**BASE, "shifts": "person_id,role,start,end\n" + "".join(rows)}
    )
    monkeypatch.setattr("bot.cli.rota.PROGRESS_DELAY", 0)
    monkeypatch.setattr("bot.cli.rota.PROGRESS_REFRESH", 0)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["rota", "import", "rota"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"reading rota/shifts\.csv: +\d+%.*\| *\d+/12001 \[\d\d:\d\d<\d\d:\d\d", err)
    assert re.search(r"writing shifts: +\d+%.*\| *\d+/12000 \[", err)


def test_no_bar_when_stderr_is_not_a_terminal(
    cli_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr("bot.cli.rota.PROGRESS_DELAY", 0)
    write_rota(tmp_path / "rota", **BASE)
    assert main(["rota", "import", "rota"]) == 0
    assert "reading" not in capsys.readouterr().err


# --- calendar feeds -----------------------------------------------------------------------------

FEED = """\
BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//Rota tool//EN
X-HANDOVER-ROLE:edt_manager
BEGIN:VEVENT
UID:xmas@rota
DTSTART;TZID=Europe/London:20261224T170000
DTEND;TZID=Europe/London:20261229T090000
ATTENDEE;CN=Raj Malhotra:mailto:raj.malhotra@wexcombe.example
END:VEVENT
BEGIN:VEVENT
UID:ny@rota
DTSTART;TZID=Europe/London:20261231T170000
DTEND;TZID=Europe/London:20270104T090000
ATTENDEE:mailto:RAJ.MALHOTRA@wexcombe.example
END:VEVENT
END:VCALENDAR
"""


def test_a_feed_alone_replaces_the_shifts_of_its_role_and_keeps_the_others(
    cli_env: str, tmp_path: Path, session_factory: sessionmaker[Session], capsys
) -> None:
    write_rota(tmp_path / "rota", **BASE)
    assert main(["rota", "import", "rota"]) == 0
    with session_factory() as session:
        kept = {
            role: ids
            for role, ids in session.execute(select(Shift.role, Shift.id)).tuples()
            if role != "edt_manager"
        }
    (tmp_path / "oncall.ics").write_text(FEED.replace("\n", "\r\n"), encoding="utf-8")
    capsys.readouterr()
    assert main(["rota", "import", "oncall.ics"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "shifts of edt_manager: 1 added, 0 removed, 1 unchanged",
        "rota version 2",
    ]
    with session_factory() as session:
        stored = session.execute(
            select(Shift.id, Shift.person_id, Shift.role, Shift.start_at, Shift.end_at).order_by(
                Shift.start_at
            )
        ).all()
        version = session.get(RotaVersion, 2)
    assert {r.role: r.id for r in stored if r.role != "edt_manager"} == kept
    assert [(r.person_id, r.start_at, r.end_at) for r in stored if r.role == "edt_manager"] == [
        ("edt-mgr", datetime(2026, 12, 24, 17, tzinfo=UTC), datetime(2026, 12, 29, 9, tzinfo=UTC)),
        ("edt-mgr", datetime(2026, 12, 31, 17, tzinfo=UTC), datetime(2027, 1, 4, 9, tzinfo=UTC)),
    ]
    assert version.files == "oncall.ics"
    # The same feed again changes nothing; the shifts file again takes back the whole set.
    assert main(["rota", "import", "oncall.ics"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "no changes; rota version 2"
    assert main(["rota", "import", "rota/shifts.csv"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "shifts: 0 added, 1 removed, 3 unchanged",
        "rota version 3",
    ]
