"""The rota importer: each kind of bad row, the optional columns, clock changes, the sample."""

from __future__ import annotations

import importlib.util
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from rota.apply import apply_rota, load_known_ids
from rota.hours import HoursSyntaxError, parse_hours
from rota.importer import (
    KINDS,
    KnownIds,
    Problem,
    RotaImportError,
    local_to_utc,
    read_rota_files,
)
from rota.models import Absence, Closure, Person, RotaVersion, Shift, Team

LONDON = ZoneInfo("Europe/London")
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
SAMPLE = Path(__file__).resolve().parents[2] / "rota" / "sample"

TEAMS = """\
team_id,name,agency,agency_type,region,hours,manager,channel
edt,Emergency Duty Team,Wexcombe County Council,social_care,england,none,edt-mgr,C0EDTCARDS
hv-north,Health Visiting North,Wexcombe NHS,health,england,Mon-Fri 09:00-17:00,hv-mgr,
"""
PEOPLE = """\
person_id,name,slack_user,email,team_id,role,hours,deputy,permissions
edt-mgr,Raj Malhotra,U0EDTRAJ01,raj.malhotra@wexcombe.example,edt,EDT manager,none,,referrer;manager
edt-amy,Amy Carter,U0EDTAMY01,amy.carter@wexcombe.example,edt,EDT social worker,none,,referrer
hv-mgr,Morgan Lee,U0HVMLEE01,morgan.lee@wexcombe.example,hv-north,team leader,,,manager
hv-jsmith,Jo Smith,,jo.smith@wexcombe.example,hv-north,health visitor,Mon-Wed 09:00-17:00,hv-kpatel,
hv-kpatel,Kiran Patel,U0HVKPAT01,,hv-north,health visitor,,,
"""
SHIFTS = """\
person_id,role,start,end
edt-mgr,edt_manager,2026-12-24T17:00,2026-12-29T09:00
edt-amy,edt_worker,2026-12-26T09:00,2026-12-26T17:00
hv-kpatel,duty:hv-north,2026-12-29T09:00,2026-12-29T17:00
"""
ABSENCES = """\
person_id,start,end,reason
hv-jsmith,2026-12-21,2027-01-08,annual leave
"""
CLOSURES = """\
date,applies_to,from,to,reason
2026-12-24,all,12:00,,Christmas Eve afternoon
2026-12-31,hv-north,13:00,17:00,close-down
2027-01-04,england,,,
"""
BASE = {
    "teams": TEAMS,
    "people": PEOPLE,
    "shifts": SHIFTS,
    "absences": ABSENCES,
    "closures": CLOSURES,
}


def write_rota(folder: Path, **files: str | bytes) -> Path:
    """Write rota files into `folder` (created); bytes are written as they are."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, content in files.items():
        path = folder / f"{kind}.csv"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


def problems_of(paths: list[str]) -> list[str]:
    with pytest.raises(RotaImportError) as caught:
        read_rota_files(paths, LONDON)
    return [str(p) for p in caught.value.problems]


def hours_error(text: str) -> str:
    try:
        parse_hours(text)
    except HoursSyntaxError as exc:
        return str(exc)
    raise AssertionError(f"{text!r} parsed")


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path so that file names in problems are short and exact (rota/KIND.csv)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(factory: sessionmaker[Session]) -> dict[str, list[tuple]]:
    """Every row of every rota table, ids included, in a stable order."""
    tables = {
        "teams": (Team, Team.team_id),
        "people": (Person, Person.person_id),
        "shifts": (Shift, Shift.id),
        "absences": (Absence, Absence.id),
        "closures": (Closure, Closure.id),
        "rota_versions": (RotaVersion, RotaVersion.version),
    }
    result = {}
    with factory() as session:
        for name, (model, order) in tables.items():
            columns = list(model.__table__.columns)
            result[name] = [tuple(row) for row in session.execute(select(*columns).order_by(order))]
    return result


def import_folder(
    factory: sessionmaker[Session], paths: list[str | Path], now: datetime = NOW
) -> object:
    with factory() as session:
        known = load_known_ids(session)
    with read_rota_files(paths, LONDON, known=known) as batch, factory.begin() as session:
        return apply_rota(session, batch, now)


# --- validation: one test per kind of bad row -------------------------------------------------

BAD_ROWS = [
    # (kind, appended row, expected "column: message")
    ("teams", "t1,Team,Agency,council,england,,,", "agency_type: 'council' is not one of "
     "social_care, police, health, probation, education, other"),
    ("teams", "t1,Team,Agency,health,ireland,,,", "region: 'ireland' is not one of "
     "england, wales, scotland, northern_ireland"),
    ("teams", "t1,Team,Agency,health,england,,,#general",
     "channel: '#general' is not a Slack channel ID (like C0EDTCARDS)"),
    ("teams", "t1,Team,Agency,health,england,,nobody,", "manager: unknown person 'nobody'"),
    ("teams", "t1,,Agency,health,england,,,", "name: required but empty"),
    ("teams", "t1,Team,Agency,health,england,9 to 5,,",
     f"hours: {hours_error('9 to 5')}"),
    ("teams", "edt,Again,Agency,health,england,,,",
     "team_id: duplicate team_id 'edt' (also on line 2)"),
    ("teams", "t 1,Team,Agency,health,england,,,",
     "team_id: 't 1' is not an id (a letter or digit, then letters, digits, '.', '_', '-'; "
     "at most 64)"),
    # The first character may not be '.', '_' or '-' (docs/reference/rota-files.md, Id).
    ("teams", "-t1,Team,Agency,health,england,,,",
     "team_id: '-t1' is not an id (a letter or digit, then letters, digits, '.', '_', '-'; "
     "at most 64)"),
    ("people", "x-1,Someone,U0X00001,,nowhere,worker,,,", "team_id: unknown team 'nowhere'"),
    ("people", "x-1,,U0X00001,,edt,worker,,,", "name: required but empty"),
    ("people", "x-1,Someone,U0X00001,,,worker,,,", "team_id: required but empty"),
    ("people", "x-1,Someone,U0X00001,,edt,worker,,ghost,", "deputy: unknown person 'ghost'"),
    ("people", "x-1,Someone,U0X00001,,edt,worker,,x-1,",
     "deputy: a person cannot be their own deputy"),
    ("people", "x-1,Someone,U0X00001,,edt,worker,Mon-Fry 09:00-17:00,,",
     f"hours: {hours_error('Mon-Fry 09:00-17:00')}"),
    ("people", "x-1,Someone,U0X00001,,edt,worker,,,admin",
     "permissions: 'admin' is not a permission (referrer, manager, oversight)"),
    ("people", "x-1,Someone,u123,,edt,worker,,,",
     "slack_user: 'u123' is not a Slack user ID (like U0EDTAMY01)"),
    ("people", "x-1,Someone,,amy-at-example,edt,worker,,,",
     "email: 'amy-at-example' is not an email address"),
    ("people", "x-1,Someone,,,edt,worker,,,",
     "-: unreachable: give a slack_user or an email to look the user up by"),
    ("people", "edt-amy,Amy Again,U0EDTAMY02,,edt,worker,,,",
     "person_id: duplicate person_id 'edt-amy' (also on line 3)"),
    ("people", "x-1,Someone,U0X00001", "-: 3 values, expected 9 (as the header)"),
    ("shifts", "ghost,edt_worker,2026-12-27T09:00,2026-12-27T17:00",
     "person_id: unknown person 'ghost'"),
    ("shifts", "edt-amy,edt_worker,26.12.2026 17:00,2026-12-27T09:00",
     "start: '26.12.2026 17:00' is not a local date-time like 2026-12-26T17:00 or "
     "26/12/2026 17:00"),
    ("shifts", "edt-amy,edt_worker,2026-12-27T09:00,2026-02-30T17:00",
     "end: '2026-02-30T17:00' is not a local date-time like 2026-12-26T17:00 or "
     "26/12/2026 17:00"),
    ("shifts", "edt-amy,edt_worker,27/12/2026 09:00,30/02/2026 17:00",
     "end: '30/02/2026 17:00' is not a local date-time like 2026-12-26T17:00 or "
     "26/12/2026 17:00"),
    ("shifts", "edt-amy,edt_worker,12/27/2026 09:00,2026-12-27T17:00",
     "start: '12/27/2026 09:00' is not a local date-time like 2026-12-26T17:00 or "
     "26/12/2026 17:00"),
    ("shifts", "edt-amy,edt_worker,2026-12-27T09:00,",
     "end: required but empty"),
    ("shifts", "edt-amy,edt_worker,2026-12-27T09:00,2026-12-27T08:00",
     "end: end 2026-12-27T08:00 is not after start 2026-12-27T09:00"),
    ("shifts", "edt-amy,edt_worker,2026-12-27T09:00,2026-12-27T09:00",
     "end: end 2026-12-27T09:00 is not after start 2026-12-27T09:00"),
    ("shifts", "edt-amy,edt_worker,2027-01-01T09:00,2027-01-08T10:00",
     "end: a shift of 169 hours is longer than 168 hours"),
    ("shifts", "edt-amy,EDT Worker,2026-12-27T09:00,2026-12-27T17:00",
     "role: 'EDT Worker' is not a role (lower-case letters, digits, _ : -)"),
    ("shifts", "edt-amy,duty:gp-nowhere,2026-12-27T09:00,2026-12-27T17:00",
     "role: unknown team 'gp-nowhere' in role duty:gp-nowhere"),
    ("shifts", "edt-amy,duty:,2026-12-27T09:00,2026-12-27T17:00",
     "role: duty: needs a team id, like duty:gp-northgate"),
    ("shifts", "edt-mgr,edt_manager,2026-12-28T17:00,2026-12-30T09:00",
     "-: overlaps the shift on line 2 (the same person and role)"),
    ("shifts", "edt-amy,edt_worker,2026-12-26T09:00,2026-12-26T17:00",
     "-: duplicates the shift on line 3 (the same person and role)"),
    ("absences", "ghost,2027-02-01,2027-02-05,", "person_id: unknown person 'ghost'"),
    ("absences", "edt-amy,21-12-2026,2027-01-08,",
     "start: '21-12-2026' is not a date like 2026-12-21 or 21/12/2026"),
    ("absences", "edt-amy,21/12/26,2027-01-08,",
     "start: '21/12/26' is not a date like 2026-12-21 or 21/12/2026"),
    ("absences", "edt-amy,2027-02-05,2027-02-01,",
     "end: end 2027-02-01 is before start 2027-02-05"),
    ("absences", "hv-jsmith,2027-01-08,2027-01-10,",
     "-: overlaps the absence on line 2 (the same person)"),
    ("closures", "2027-02-01,narnia,,,", "applies_to: 'narnia' is not all, a region "
     "(england, wales, scotland, northern_ireland) or a known team"),
    ("closures", "2027-02-01,,,,", "applies_to: required but empty"),
    ("closures", "2027-02-30,all,,,",
     "date: '2027-02-30' is not a date like 2026-12-21 or 21/12/2026"),
    ("closures", "2027-02-01,all,noon,,", "from: 'noon' is not a time of day like 12:00"),
    ("closures", "2027-02-01,all,14:00,13:00,", "to: to 13:00 is not after from 14:00"),
    ("closures", "2026-12-24,all,12:00,,again", "-: duplicates the closure on line 2 "
     "(the same date and applies_to)"),
    ("closures", "2026-12-31,hv-north,16:00,,late", "-: overlaps the closure on line 3 "
     "(the same date and applies_to)"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "row", "expected"), BAD_ROWS)
def test_a_bad_row_is_reported_as_file_line_column_message(
    in_tmp: Path, kind: str, row: str, expected: str
) -> None:
    files = dict(BASE)
    files[kind] = files[kind] + row + "\n"
    write_rota(in_tmp / "rota", **files)
    line = files[kind].count("\n")
    assert problems_of(["rota"]) == [f"rota/{kind}.csv:{line}: {expected}"]


def test_every_problem_of_every_file_is_reported_in_file_order(in_tmp: Path) -> None:
    write_rota(
        in_tmp / "rota",
        teams=TEAMS + "t1,Team,Agency,council,england,,,\n",
        people=PEOPLE + "x-1,Someone,,,edt,worker,,,\n",
        shifts=SHIFTS + "ghost,edt_worker,2026-12-27T09:00,2026-12-27T17:00\n",
        absences=ABSENCES,
        closures=CLOSURES,
    )
    assert problems_of(["rota"]) == [
        "rota/people.csv:7: -: unreachable: give a slack_user or an email to look the user up by",
        "rota/shifts.csv:5: person_id: unknown person 'ghost'",
        "rota/teams.csv:4: agency_type: 'council' is not one of "
        "social_care, police, health, probation, education, other",
    ]


def test_header_problems_name_the_missing_and_unknown_columns(in_tmp: Path) -> None:
    people = PEOPLE.replace("slack_user,email,", "slack_user,mail,", 1)
    write_rota(in_tmp / "rota", people=people)
    assert problems_of(["rota/people.csv"]) == [
        "rota/people.csv:1: header: unknown column 'mail' (expected "
        "person_id,name,slack_user,email,team_id,role,hours,deputy,permissions; "
        "optional: contact,phone)",
        "rota/people.csv:1: header: missing column 'email'",
    ]


def test_an_empty_file_is_a_header_problem(in_tmp: Path) -> None:
    write_rota(in_tmp / "rota", absences="")
    assert problems_of(["rota/absences.csv"]) == [
        "rota/absences.csv:1: header: empty file; expected the header person_id,start,end,reason"
    ]


def test_malformed_csv_names_the_line(in_tmp: Path) -> None:
    write_rota(in_tmp / "rota", absences=ABSENCES + 'hv-kpatel,"2027-02-01"x,2027-02-02,\n')
    assert problems_of(["rota"]) == [
        "rota/absences.csv:3: -: malformed CSV: ',' expected after '\"'"
    ]


def test_blank_lines_before_the_header_are_skipped(in_tmp: Path) -> None:
    write_rota(in_tmp / "rota", absences="\n\n" + ABSENCES)
    batch = read_rota_files(["rota"], LONDON)
    assert [a.line for a in batch.absences] == [4]


def test_columns_may_come_in_any_order_with_spaces_around_values(in_tmp: Path) -> None:
    write_rota(
        in_tmp / "rota",
        absences="end, person_id ,reason,start\n2027-01-08 , hv-jsmith,leave,2026-12-21\n",
    )
    batch = read_rota_files(["rota/absences.csv"], LONDON)
    assert [
        (a.person_id, a.start_date.isoformat(), a.end_date.isoformat()) for a in batch.absences
    ] == [("hv-jsmith", "2026-12-21", "2027-01-08")]


def test_a_file_that_is_not_utf8_names_the_line(in_tmp: Path) -> None:
    latin1 = (PEOPLE + "x-1,Zoë Renée,U0X00001,,edt,worker,,,\n").encode("latin-1")
    write_rota(in_tmp / "rota", people=latin1)
    assert problems_of(["rota/people.csv"]) == [
        "rota/people.csv:1: -: the file is not UTF-8: save it from Excel as "
        '"CSV UTF-8 (Comma delimited)", or, if the values below read right, import it '
        "with --cp1252",
        "rota/people.csv:7: -: not UTF-8: byte 0xEB at position 7; in Windows-1252 this "
        "value reads 'Zoë Renée'",
    ]


def test_a_utf8_byte_order_mark_is_accepted(in_tmp: Path) -> None:
    write_rota(in_tmp / "rota", teams=b"\xef\xbb\xbf" + TEAMS.encode(), people=PEOPLE)
    batch = read_rota_files(["rota"], LONDON)
    assert [t.team_id for t in batch.teams] == ["edt", "hv-north"]


def test_line_numbers_are_physical_lines_across_quoted_newlines(in_tmp: Path) -> None:
    people = PEOPLE.replace("Amy Carter", '"Amy\nCarter"') + "x-1,,U0X00001,,edt,worker,,,\n"
    write_rota(in_tmp / "rota", teams=TEAMS, people=people)
    assert problems_of(["rota"]) == [
        "rota/people.csv:3: name: a line break (U+000A) at character 4; control characters are "
        "not allowed in rota files",
        "rota/people.csv:8: name: required but empty",
    ]


def test_blank_lines_are_skipped_but_counted(in_tmp: Path) -> None:
    write_rota(in_tmp / "rota", absences=ABSENCES + "\n\nghost,2027-02-01,2027-02-05,\n")
    with pytest.raises(RotaImportError) as caught:
        read_rota_files(["rota"], LONDON, known=KnownIds(people=frozenset({"hv-jsmith"})))
    assert [str(p) for p in caught.value.problems] == [
        "rota/absences.csv:5: person_id: unknown person 'ghost'"
    ]


def test_unknown_file_names_and_missing_paths_are_errors(in_tmp: Path) -> None:
    write_rota(in_tmp / "rota", teams=TEAMS)
    (in_tmp / "rota" / "staff.csv").write_text("a,b\n", encoding="utf-8")
    (in_tmp / "rota" / "README.md").write_text("not a rota file\n", encoding="utf-8")
    assert problems_of(["rota", "elsewhere/shifts.csv"]) == [
        "rota/staff.csv:1: -: unknown rota file name 'staff.csv' "
        "(expected teams.csv, people.csv, shifts.csv, absences.csv, closures.csv, an .xlsx "
        "workbook or an .ics calendar)",
        "elsewhere/shifts.csv:1: -: no such file or folder",
    ]


def test_a_path_that_is_neither_a_file_nor_a_folder_is_named_so(in_tmp: Path) -> None:
    assert problems_of([os.devnull, "absent"]) == [
        f"{os.devnull}:1: -: not a regular file or a folder of CSV files",
        "absent:1: -: no such file or folder",
    ]


def test_the_same_kind_twice_is_an_error(in_tmp: Path) -> None:
    write_rota(in_tmp / "a", teams=TEAMS)
    write_rota(in_tmp / "b", teams=TEAMS)
    assert problems_of(["a/teams.csv", "b/teams.csv"]) == [
        "b/teams.csv:1: -: the teams are given twice (also a/teams.csv); give each kind once"
    ]


def test_problem_prints_as_file_line_column_message() -> None:
    problem = Problem("rota/shifts.csv", 12, "end", "end 2026-12-27T08:00 is not after start")
    assert str(problem) == "rota/shifts.csv:12: end: end 2026-12-27T08:00 is not after start"


def test_references_to_stored_ids_use_known_and_inactive_ones_are_named(in_tmp: Path) -> None:
    write_rota(in_tmp / "rota", shifts=SHIFTS)
    known = KnownIds(
        teams=frozenset({"edt"}),
        people=frozenset({"edt-mgr", "edt-amy"}),
        inactive_teams=frozenset({"hv-north"}),
        inactive_people=frozenset({"hv-kpatel"}),
    )
    with pytest.raises(RotaImportError) as caught:
        read_rota_files(["rota"], LONDON, known=known)
    assert [str(p) for p in caught.value.problems] == [
        "rota/shifts.csv:4: person_id: unknown person 'hv-kpatel' "
        "(inactive: not in the last people.csv)",
        "rota/shifts.csv:4: role: unknown team 'hv-north' in role duty:hv-north "
        "(inactive: not in the last teams.csv)",
    ]


def test_shift_times_are_local_and_seconds_or_offsets_are_accepted(in_tmp: Path) -> None:
    shifts = (
        "person_id,role,start,end\n"
        "edt-amy,edt_worker,2026-07-01T17:00:00,2026-07-02T09:00\n"
        "edt-amy,edt_worker,2026-07-03T17:00+00:00,2026-07-04T09:00Z\n"
    )
    write_rota(in_tmp / "rota", shifts=shifts)
    batch = read_rota_files(["rota"], LONDON)
    assert [(s.start_at, s.end_at) for s in batch.shifts] == [
        (datetime(2026, 7, 1, 16, 0, tzinfo=UTC), datetime(2026, 7, 2, 8, 0, tzinfo=UTC)),
        (datetime(2026, 7, 3, 17, 0, tzinfo=UTC), datetime(2026, 7, 4, 9, 0, tzinfo=UTC)),
    ]


def test_local_times_across_both_clock_changes() -> None:
    # Spring forward, Sunday 28 March 2027: 01:30 does not exist and moves forward to 02:30 BST.
    assert local_to_utc(datetime(2027, 3, 28, 1, 30), LONDON) == datetime(
        2027, 3, 28, 1, 30, tzinfo=UTC
    )
    # Fall back, Sunday 25 October 2026: 01:30 happens twice; the first (BST) is taken.
    assert local_to_utc(datetime(2026, 10, 25, 1, 30), LONDON) == datetime(
        2026, 10, 25, 0, 30, tzinfo=UTC
    )


def test_too_many_problems_are_counted_beyond_the_kept_ones(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rota.problems.PROBLEM_LIMIT", 5)
    rows = "".join(f"p{i},,U0X00001,,edt,worker,,,\n" for i in range(12))
    teams = TEAMS.replace(",edt-mgr,", ",,").replace(",hv-mgr,", ",,")
    write_rota(in_tmp / "rota", teams=teams, people=PEOPLE.splitlines(True)[0] + rows)
    with pytest.raises(RotaImportError) as caught:
        read_rota_files(["rota"], LONDON)
    assert caught.value.total == 12
    assert len(caught.value.problems) == 5


# --- importing end to end: on SQLite and PostgreSQL ------------------------------------------


def test_the_sample_rota_imports_cleanly(session_factory: sessionmaker[Session]) -> None:
    result = import_folder(session_factory, [SAMPLE])
    assert result.changed and result.version == 1
    with session_factory() as session:
        teams = set(session.scalars(select(Team.team_id)))
        assert {"edt", "mash", "hv-north", "gp-northgate", "hv-fife", "hv-belfast"} <= teams
        jsmith = session.get(Person, "hv-jsmith")
        assert jsmith.deputy_id == "hv-kpatel" and jsmith.hours == "Mon-Wed 09:00-17:00"
        assert session.get(Team, "hv-fife").region == "scotland"
        # The optional contact column: Riverside's practice manager is on NHSmail only.
        assert session.get(Person, "gp-riv-pm-bell").contact == "email"
        assert jsmith.contact == "slack"
        version = session.get(RotaVersion, 1)
    counts = json.loads(version.summary)
    assert counts["teams"]["added"] == 11
    assert counts["shifts"]["added"] == result.counts["shifts"]["added"] > 1000
    assert version.imported_at == NOW
    assert version.files == ",".join(str(SAMPLE / f"{kind}.csv") for kind in KINDS)


def test_a_folders_csv_files_are_read_whatever_the_case_of_their_names(
    tmp_path: Path, session_factory
) -> None:
    folder = write_rota(tmp_path / "rota", **BASE)
    for file in list(folder.iterdir()):
        file.rename(folder / file.name.upper())  # TEAMS.CSV, PEOPLE.CSV, ... from a share
    result = import_folder(session_factory, [folder])
    assert {kind: counts["added"] for kind, counts in result.counts.items()} == {
        "teams": 2,
        "people": 5,
        "shifts": 3,
        "absences": 1,
        "closures": 3,
    }


def test_a_shifts_file_alone_is_checked_against_stored_people(
    tmp_path: Path, session_factory
) -> None:
    import_folder(session_factory, [write_rota(tmp_path / "v1", **BASE)])
    shifts = SHIFTS + "hv-jsmith,duty:hv-north,2026-12-30T09:00,2026-12-30T17:00\n"
    result = import_folder(session_factory, [write_rota(tmp_path / "v2", shifts=shifts)])
    assert result.counts == {"shifts": {"added": 1, "removed": 0, "unchanged": 3}}
    bad = write_rota(
        tmp_path / "v3", shifts=SHIFTS + "nobody,x,2027-01-01T09:00,2027-01-01T10:00\n"
    )
    with session_factory() as session:
        known = load_known_ids(session)
    with pytest.raises(RotaImportError) as caught:
        read_rota_files([bad], LONDON, known=known)
    assert [str(p) for p in caught.value.problems] == [
        f"{bad / 'shifts.csv'}:5: person_id: unknown person 'nobody'"
    ]


def test_shifts_across_both_clock_changes_are_stored_in_utc(
    tmp_path: Path, session_factory
) -> None:
    shifts = (
        "person_id,role,start,end\n"
        # Night shifts over the autumn change (13 hours) and the spring change (11 hours).
        "edt-amy,edt_worker,2026-10-24T19:00,2026-10-25T07:00\n"
        "edt-amy,edt_worker,2027-03-27T19:00,2027-03-28T07:00\n"
        # The ambiguous 01:30 of 25 October (first, BST) and the missing 01:30 of 28 March.
        "edt-mgr,edt_manager,2026-10-25T01:30,2026-10-25T03:00\n"
        "edt-mgr,edt_manager,2027-03-28T01:30,2027-03-28T03:00\n"
    )
    import_folder(session_factory, [write_rota(tmp_path / "rota", **{**BASE, "shifts": shifts})])
    with session_factory() as session:
        stored = session.execute(
            select(Shift.start_at, Shift.end_at).order_by(Shift.person_id, Shift.start_at)
        ).all()
    assert [(s.start_at, s.end_at) for s in stored] == [
        (datetime(2026, 10, 24, 18, 0, tzinfo=UTC), datetime(2026, 10, 25, 7, 0, tzinfo=UTC)),
        (datetime(2027, 3, 27, 19, 0, tzinfo=UTC), datetime(2027, 3, 28, 6, 0, tzinfo=UTC)),
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), datetime(2026, 10, 25, 3, 0, tzinfo=UTC)),
        (datetime(2027, 3, 28, 1, 30, tzinfo=UTC), datetime(2027, 3, 28, 2, 0, tzinfo=UTC)),
    ]
    assert [(s.end_at - s.start_at).total_seconds() / 3600 for s in stored[:2]] == [13, 11]


def test_the_sample_covers_the_dates_the_tests_use(session_factory) -> None:
    import_folder(session_factory, [SAMPLE])
    instants = [
        datetime(2026, 12, 26, 2, 10, tzinfo=UTC),  # Boxing Day night
        datetime(2027, 3, 28, 1, 30, tzinfo=UTC),  # Easter Sunday, just after spring forward
        datetime(2027, 7, 12, 20, 0, tzinfo=UTC),  # 12 July evening
    ]
    with session_factory() as session:
        for instant in instants:
            roles = set(
                session.scalars(
                    select(Shift.role).where(Shift.start_at <= instant, Shift.end_at > instant)
                )
            )
            assert {"edt_manager", "edt_worker", "police_dau"} <= roles, instant
        absent = session.scalars(select(Absence).where(Absence.person_id == "hv-jsmith")).one()
        assert (absent.start_date.isoformat(), absent.end_date.isoformat()) == (
            "2026-12-21",
            "2027-01-08",
        )
        unreachable_by_id = session.scalars(select(Person).where(Person.slack_user.is_(None))).all()
        assert unreachable_by_id and all(p.email for p in unreachable_by_id)
        managers = {t.team_id: t.manager_id for t in session.scalars(select(Team))}
        assert all(managers.values())


def test_the_sample_is_what_the_generator_writes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_rota", SAMPLE.parents[1] / "benchmarks" / "gen_rota.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    counts = module.write_sample(tmp_path)
    assert sum(counts.values()) < 5000
    for kind in KINDS:
        assert (tmp_path / f"{kind}.csv").read_bytes() == (SAMPLE / f"{kind}.csv").read_bytes()


def test_a_generated_large_rota_is_valid(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_rota", SAMPLE.parents[1] / "benchmarks" / "gen_rota.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_large(tmp_path, people=500, shifts=3000)
    batch = read_rota_files([tmp_path], LONDON)
    assert (len(batch.people), len(batch.shifts)) == (500, 3000)


# --- the optional contact column ----------------------------------------------------------------


def with_contact(contacts: dict[str, str]) -> str:
    """PEOPLE with a `contact` column, set for the people named."""
    lines = PEOPLE.splitlines()
    rows = [lines[0] + ",contact"]
    rows += [f"{line},{contacts.get(line.split(',')[0], '')}" for line in lines[1:]]
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize(
    ("contact", "problem"),
    [
        ("sms", "rota/people.csv:5: contact: 'sms' is not one of slack, email, slack+email"),
        ("email", "rota/people.csv:6: contact: 'email' needs an email address"),
    ],
)
def test_a_bad_contact_names_its_line_and_column(in_tmp: Path, contact: str, problem: str) -> None:
    # hv-jsmith is on line 5; hv-kpatel (line 6) has no email address.
    who = "hv-kpatel" if contact == "email" else "hv-jsmith"
    write_rota(in_tmp / "rota", **{**BASE, "people": with_contact({who: contact})})
    assert problems_of(["rota"]) == [problem]


def test_contact_is_read_when_given_and_slack_when_not(tmp_path: Path, session_factory) -> None:
    people = with_contact({"hv-jsmith": "email", "hv-mgr": "Slack+Email"})
    import_folder(session_factory, [write_rota(tmp_path / "v1", **{**BASE, "people": people})])
    with session_factory() as session:
        rows = session.execute(select(Person.person_id, Person.contact)).tuples()
        contacts = {person_id: contact for person_id, contact in rows}
    assert contacts == {
        "edt-mgr": "slack",
        "edt-amy": "slack",
        "hv-mgr": "slack+email",
        "hv-jsmith": "email",
        "hv-kpatel": "slack",
    }
    # A later file without the column is valid, and everyone is back to the default.
    result = import_folder(session_factory, [write_rota(tmp_path / "v2", people=PEOPLE)])
    assert result.counts["people"] == {"added": 0, "updated": 2, "deactivated": 0, "unchanged": 3}
    with session_factory() as session:
        assert set(session.scalars(select(Person.contact))) == {"slack"}


# --- the optional phone column ------------------------------------------------------------------


def with_phone(phones: dict[str, str]) -> str:
    """PEOPLE with a `phone` column (and no `contact` column), set for the people named."""
    lines = PEOPLE.splitlines()
    rows = [lines[0] + ",phone"]
    rows += [f"{line},{phones.get(line.split(',')[0], '')}" for line in lines[1:]]
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("phone", ["call me", "12345", "0" * 40])
def test_a_bad_phone_names_its_line_and_column(in_tmp: Path, phone: str) -> None:
    write_rota(in_tmp / "rota", **{**BASE, "people": with_phone({"hv-jsmith": phone})})
    assert problems_of(["rota"]) == [
        f"rota/people.csv:5: phone: '{phone}' is not a phone number (like 01603 223344)"
    ]


def test_phone_is_read_when_given_and_none_when_not(tmp_path: Path, session_factory) -> None:
    people = with_phone({"hv-jsmith": "01603  223344", "hv-mgr": "+44 (0)1603 223 345"})
    import_folder(session_factory, [write_rota(tmp_path / "v1", **{**BASE, "people": people})])
    with session_factory() as session:
        phones = dict(session.execute(select(Person.person_id, Person.phone)).tuples().all())
    assert phones == {
        "edt-mgr": None,
        "edt-amy": None,
        "hv-mgr": "+44 (0)1603 223 345",
        "hv-jsmith": "01603 223344",  # spaces folded
        "hv-kpatel": None,
    }
    # Importing the same file again changes nothing; a file without the column clears them.
    again = import_folder(
        session_factory, [write_rota(tmp_path / "v2", **{**BASE, "people": people})]
    )
    assert again.counts["people"]["unchanged"] == 5
    result = import_folder(session_factory, [write_rota(tmp_path / "v3", people=PEOPLE)])
    assert result.counts["people"]["updated"] == 2
    with session_factory() as session:
        assert set(session.scalars(select(Person.phone))) == {None}


# --- the optional workspace column of teams.csv ----------------------------------------------


def with_workspace(workspaces: dict[str, str]) -> str:
    """TEAMS with a `workspace` column, set for the teams named."""
    lines = TEAMS.splitlines()
    rows = [lines[0] + ",workspace"]
    rows += [f"{line},{workspaces.get(line.split(',')[0], '')}" for line in lines[1:]]
    return "\n".join(rows) + "\n"


@pytest.mark.parametrize("workspace", ["t0police", "C0EDTCARDS", "T0POLICE!", "T" + "0" * 40])
def test_a_bad_workspace_names_its_line_and_column(in_tmp: Path, workspace: str) -> None:
    write_rota(in_tmp / "rota", **{**BASE, "teams": with_workspace({"hv-north": workspace})})
    assert problems_of(["rota"]) == [
        f"rota/teams.csv:3: workspace: {workspace!r} is not a Slack workspace (team) ID "
        "(like T0POLICE)"
    ]


def test_workspace_is_read_when_given_and_home_when_not(tmp_path: Path, session_factory) -> None:
    teams = with_workspace({"hv-north": "T0NHSTRUST"})
    import_folder(session_factory, [write_rota(tmp_path / "v1", **{**BASE, "teams": teams})])
    with session_factory() as session:
        rows = session.execute(select(Team.team_id, Team.workspace)).tuples()
        assert {team: workspace for team, workspace in rows} == {
            "edt": None,
            "hv-north": "T0NHSTRUST",
        }
    # A later file without the column is valid: every team is back in the home workspace.
    result = import_folder(session_factory, [write_rota(tmp_path / "v2", teams=TEAMS)])
    assert result.counts["teams"] == {"added": 0, "updated": 1, "deactivated": 0, "unchanged": 1}
    with session_factory() as session:
        assert set(session.scalars(select(Team.workspace))) == {None}
