"""`handover rota import`: exit codes, what it prints, and that a refusal changes nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.cli import main
from rota.models import Person, RotaVersion, Shift, Team
from tests.rota.test_importer import BASE, PEOPLE, SAMPLE, SHIFTS, snapshot, write_rota


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
    assert f"no database at {missing}" in capsys.readouterr().err
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
