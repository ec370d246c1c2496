"""A plan made after `handover rota import` sees the new rota, in the same process.

Planning caches only what cannot change with the rota (parsed hours texts, the working periods
of a day for given hours and nation); this shows that nothing read from the rota outlives an
import: hours, regions, shifts, closures and the version all change between two plans.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.cli import main

TEAMS = "team_id,name,agency,agency_type,region,hours,manager,channel\n"
PEOPLE = "person_id,name,slack_user,email,team_id,role,hours,deputy,permissions\n"
SHIFTS = "person_id,role,start,end\n"
CLOSURES = "date,applies_to,from,to,reason\n"
POLICE = "police,Police,Police,police,england,none,,\n"
STAFF = (
    "hv-a,A,U0HVA,a@example.org,hv-north,health visitor,,,\n"
    "pc-a,PC A,U0PCA,pc.a@example.org,police,constable,,,\n"
    "pc-b,PC B,U0PCB,pc.b@example.org,police,constable,,,\n"
)


def write(folder: Path, **files: str) -> Path:
    folder.mkdir()
    for kind, text in files.items():
        (folder / f"{kind}.csv").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DATABASE_URL", db_url)
    for name in ("HANDOVER_TIMEZONE", "HANDOVER_ALERT_ROLES"):
        monkeypatch.delenv(name, raising=False)
    clock = tmp_path / "clock.txt"
    clock.write_text("2026-12-01T10:00:00+00:00\n", encoding="utf-8")
    monkeypatch.setenv("HANDOVER_CLOCK_FILE", str(clock))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def plan(capsys: pytest.CaptureFixture[str]) -> dict:
    # Monday 4 January 2027, 08:00: a bank holiday in Scotland only (2 January substitute).
    argv = ["plan", "--notify", "person:hv-a", "--notify", "role:police_dau"]
    assert main([*argv, "--at", "2027-01-04T08:00", "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def due(result: dict) -> list[tuple[str, str | None]]:
    return [(entry["recipient"], entry["due_at"]) for entry in result["plan"]]


def test_a_plan_after_an_import_sees_the_new_rota(
    cli: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write(
        cli / "first",
        teams=TEAMS
        + "hv-north,Health Visiting North,NHS,health,england,Mon-Fri 09:00-17:00,,\n"
        + POLICE,
        people=PEOPLE + STAFF,
        shifts=SHIFTS + "pc-a,police_dau,2027-01-04T07:00,2027-01-04T19:00\n",
        closures=CLOSURES,
    )
    assert main(["rota", "import", str(first)]) == 0
    capsys.readouterr()
    before = plan(capsys)
    assert before["rota_version"] == 1
    assert due(before) == [
        ("hv-a", "2027-01-04T09:00:00+00:00"),
        ("pc-a", "2027-01-04T08:00:00+00:00"),
    ]

    # The team moves to Scotland and opens at 08:30; the desk's morning shift changes hands
    # and starts later; Tuesday is closed for training.
    second = write(
        cli / "second",
        teams=TEAMS
        + "hv-north,Health Visiting North,NHS,health,scotland,Mon-Fri 08:30-16:30,,\n"
        + POLICE,
        people=PEOPLE + STAFF,
        shifts=SHIFTS + "pc-b,police_dau,2027-01-04T10:00,2027-01-04T22:00\n",
        closures=CLOSURES + "2027-01-05,hv-north,,,training\n",
    )
    assert main(["rota", "import", str(second)]) == 0
    capsys.readouterr()
    after = plan(capsys)
    assert after["rota_version"] == 2
    assert due(after) == [
        ("hv-a", "2027-01-06T08:30:00+00:00"),
        ("pc-b", "2027-01-04T10:00:00+00:00"),
    ]


def test_a_role_stays_known_when_a_new_shifts_file_drops_it(
    cli: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A role no shift has ever named is unknown input; a known role with nobody on shift is
    # unroutable (CONTRACT §3, docs/reference/http.md). Next month's shifts.csv without the
    # police desk must not turn a referral naming it into an error.
    teams = TEAMS + "hv-north,Health Visiting North,NHS,health,england,,,\n" + POLICE
    first = write(
        cli / "first",
        teams=teams,
        people=PEOPLE + STAFF,
        shifts=SHIFTS + "pc-a,police_dau,2026-12-04T07:00,2026-12-04T19:00\n",
    )
    assert main(["rota", "import", str(first)]) == 0
    second = write(
        cli / "second", shifts=SHIFTS + "hv-a,duty:hv-north,2027-01-04T09:00,2027-01-04T17:00\n"
    )
    assert main(["rota", "import", str(second)]) == 0
    capsys.readouterr()

    result = plan(capsys)
    assert result["plan"][1] == {
        "target": "role:police_dau",
        "recipient": None,
        "via": "unroutable",
        "due_at": None,
        "immediate": False,
    }
    assert [(a["kind"], a["target"]) for a in result["alerts"]] == [
        ("unroutable", "role:police_dau")
    ]
    # A role no shift ever named is still unknown.
    assert main(["plan", "--notify", "role:police_dua", "--at", "2027-01-04T08:00"]) == 1
    assert "unknown role police_dua" in capsys.readouterr().err
