"""`handover plan` and `handover rota who` through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from bot.cli import main
from tests.rota.factories import (
    add_absence,
    add_person,
    add_shift,
    add_team,
    add_version,
    local,
)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A clean environment: no .env from the working directory, London time, edt_manager."""
    monkeypatch.chdir(tmp_path)
    for name in ("HANDOVER_TIMEZONE", "HANDOVER_CLOCK_FILE", "HANDOVER_ALERT_ROLES"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def cli_rota(session: Session, db_url: str, cli_env: pytest.MonkeyPatch) -> Session:
    add_team(session, "hv-north", manager="hv-manager")
    add_person(session, "hv-manager", "hv-north")
    add_person(session, "hv-jsmith", "hv-north", hours="Mon-Wed 09:00-17:00", deputy="hv-cover")
    add_person(session, "hv-cover", "hv-north")
    add_team(session, "hv-ni", region="northern_ireland")
    add_person(session, "hv-ni-1", "hv-ni")
    add_team(session, "edt", hours="none", agency_type="social_care")
    add_person(session, "edt-manager", "edt")
    add_person(session, "edt-amy", "edt")
    add_shift(
        session, "edt-manager", "edt_manager", local(2026, 12, 24, 17), local(2026, 12, 25, 9)
    )
    add_shift(session, "edt-amy", "edt_worker", local(2026, 12, 24, 17), local(2026, 12, 25, 9))
    add_version(session, 2)
    session.commit()
    cli_env.setenv("DATABASE_URL", db_url)
    return session


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plan_json_christmas_eve(cli_rota: Session, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "plan",
        "--notify",
        "person:hv-jsmith",
        "--notify",
        "person:hv-manager",
        "--at",
        "2026-12-24T18:00",
        "--format",
        "json",
    )
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "at": "2026-12-24T18:00:00+00:00",
        "rota_version": 2,
        "plan": [
            {
                "target": "person:hv-jsmith",
                "recipient": "hv-jsmith",
                "via": "self",
                "due_at": "2026-12-29T09:00:00+00:00",
                "immediate": False,
            },
            {
                "target": "person:hv-manager",
                "recipient": "hv-manager",
                "via": "self",
                "due_at": "2026-12-29T09:00:00+00:00",
                "immediate": False,
            },
        ],
        "alerts": [
            {
                "kind": "on_call",
                "target": "role:edt_manager",
                "recipient": "edt-manager",
                "detail": "on call as edt_manager: referral received Thu 24 Dec 18:00",
            },
            {
                "kind": "long_gap",
                "target": "person:hv-jsmith",
                "recipient": "edt-manager",
                "detail": "next reachable Tue 29 Dec 09:00 (111 h after receipt)",
            },
            {
                "kind": "long_gap",
                "target": "person:hv-manager",
                "recipient": "edt-manager",
                "detail": "next reachable Tue 29 Dec 09:00 (111 h after receipt)",
            },
        ],
    }


def test_plan_json_summer_offset_and_explicit_offset(
    cli_rota: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "plan",
        "--notify",
        "person:hv-ni-1",
        "--at",
        "2027-07-09T17:00Z",
        "--format",
        "json",
    )
    assert code == 0
    assert json.loads(out) == {
        "at": "2027-07-09T18:00:00+01:00",
        "rota_version": 2,
        "plan": [
            {
                "target": "person:hv-ni-1",
                "recipient": "hv-ni-1",
                "via": "self",
                "due_at": "2027-07-13T09:00:00+01:00",
                "immediate": False,
            }
        ],
        "alerts": [
            {
                "kind": "long_gap",
                "target": "person:hv-ni-1",
                "recipient": None,
                "detail": "next reachable Tue 13 Jul 09:00 (87 h after receipt)",
            }
        ],
    }


def test_plan_alert_roles_from_the_environment(
    cli_rota: Session, cli_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env.setenv("HANDOVER_ALERT_ROLES", "edt_worker")
    code, out, _ = run(
        capsys,
        "plan",
        "--notify",
        "person:hv-cover",
        "--at",
        "2026-12-24T18:00+00:00",
        "--format",
        "json",
    )
    assert code == 0
    alerts = json.loads(out)["alerts"]
    assert [(a["kind"], a["target"], a["recipient"]) for a in alerts] == [
        ("on_call", "role:edt_worker", "edt-amy"),
        ("long_gap", "person:hv-cover", "edt-amy"),
    ]


def test_plan_table(cli_rota: Session, capsys: pytest.CaptureFixture[str]) -> None:
    add_absence(cli_rota, "hv-jsmith", date(2027, 1, 4), date(2027, 1, 4))
    cli_rota.commit()
    code, out, _ = run(capsys, "plan", "--notify", "person:hv-jsmith", "--at", "2027-01-04T10:00")
    assert code == 0
    assert out.splitlines() == [
        "referral received Mon 04 Jan 2027 10:00 (2027-01-04T10:00:00+00:00), rota version 2",
        "",
        "TARGET            RECIPIENT  VIA     DUE                        IMMEDIATE",
        "person:hv-jsmith  hv-cover   deputy  2027-01-04T10:00:00+00:00  yes",
        "",
        "no alerts",
    ]


def test_plan_reports_every_bad_target(
    cli_rota: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "plan",
        "--notify",
        "person:hv-jsmith",
        "--notify",
        "team:gp-x",
        "--notify",
        "role:nobody",
        "--notify",
        "hv-jsmith",
        "--at",
        "2027-01-04T10:00",
    )
    assert (code, out) == (1, "")
    assert "notify[1] 'team:gp-x': unknown team gp-x" in err
    assert "notify[2] 'role:nobody': unknown role nobody" in err
    assert "notify[3] 'hv-jsmith': malformed target" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # refused before any query
def test_plan_bad_time(cli_rota: Session, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "plan", "--notify", "person:hv-jsmith", "--at", "next tuesday")
    assert code == 1
    assert "--at 'next tuesday' is not an ISO 8601 time" in err


def test_plan_default_time_comes_from_the_clock(
    cli_rota: Session,
    cli_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    clock = tmp_path / "clock"
    clock.write_text("2026-10-24T22:00:00+01:00")
    cli_env.setenv("HANDOVER_CLOCK_FILE", str(clock))
    code, out, _ = run(capsys, "plan", "--notify", "person:hv-cover", "--format", "json")
    assert code == 0
    body = json.loads(out)
    assert body["at"] == "2026-10-24T22:00:00+01:00"
    assert body["plan"][0]["due_at"] == "2026-10-26T09:00:00+00:00"


def test_rota_who(cli_rota: Session, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "rota", "who", "--at", "2026-12-24T18:00", "--format", "json")
    assert code == 0
    assert json.loads(out) == {
        "at": "2026-12-24T18:00:00+00:00",
        "people": [
            {"person_id": "edt-amy", "name": "Edt Amy", "team": "edt", "why": "shift edt_worker"},
            {
                "person_id": "edt-manager",
                "name": "Edt Manager",
                "team": "edt",
                "why": "shift edt_manager",
            },
        ],
        "away": [],
    }
    code, out, _ = run(capsys, "rota", "who", "--at", "2026-12-23T10:00")
    assert code == 0
    assert out.splitlines() == [
        "at work Wed 23 Dec 2026 10:00 (2026-12-23T10:00:00+00:00)",
        "PERSON      NAME        TEAM      WHY",
        "hv-cover    Hv Cover    hv-north  hours Mon-Fri 09:00-17:00",
        "hv-jsmith   Hv Jsmith   hv-north  hours Mon-Wed 09:00-17:00",
        "hv-manager  Hv Manager  hv-north  hours Mon-Fri 09:00-17:00",
        "hv-ni-1     Hv Ni 1     hv-ni     hours Mon-Fri 09:00-17:00",
    ]
    code, out, _ = run(capsys, "rota", "who", "--at", "2026-12-24T18:00", "--role", "edt_manager")
    assert code == 0
    assert "edt-manager" in out and "edt-amy" not in out
    code, _, err = run(capsys, "rota", "who", "--role", "nobody")
    assert code == 1 and "unknown role nobody" in err


def test_missing_sqlite_database_is_a_clear_error(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "absent.db"
    cli_env.setenv("DATABASE_URL", f"sqlite:///{path}")
    code, _, err = run(capsys, "plan", "--notify", "person:x", "--at", "2027-01-04T10:00")
    assert code == 3
    assert f"the SQLite file {path} does not exist" in err
    assert "`handover db upgrade`" in err and "Traceback" not in err
    assert not path.exists()


def test_unmigrated_database_is_a_clear_error(
    cli_env: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    cli_env.setenv("DATABASE_URL", f"sqlite:///{path}")
    code, _, err = run(capsys, "rota", "who", "--at", "2027-01-04T10:00")
    assert code == 3
    assert "no rota tables" in err and "Traceback" not in err


# Bad input: a clear message and exit 1, never a traceback -----------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(
            ("plan", "--notify", "person:hv-jsmith", "--at", "0001-01-01T00:00"), id="plan-1"
        ),
        pytest.param(
            ("plan", "--notify", "person:hv-jsmith", "--at", "9999-12-31T23:00"), id="plan-9999"
        ),
        pytest.param(
            ("plan", "--notify", "person:hv-jsmith", "--at", "1999-12-31T23:59"), id="plan-1999"
        ),
        pytest.param(("rota", "who", "--at", "0001-01-01T00:00"), id="who-1"),
        pytest.param(("rota", "who", "--at", "3000-01-01T00:00+00:00"), id="who-3000"),
    ],
)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # refused before any query
def test_times_outside_2000_to_2999_are_refused(
    cli_rota: Session, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, "")
    assert err == f"handover: --at {argv[-1]!r} is outside the years 2000 to 2999\n"


def test_the_first_and_last_years_are_accepted(
    cli_rota: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    for at in ("2000-01-01T00:00", "2999-12-31T23:59"):
        code, out, err = run(capsys, "plan", "--notify", "person:hv-jsmith", "--at", at)
        assert (code, err) == (0, ""), at
        assert out.startswith("referral received ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ("plan", "--notify", "person:hv-jsmith\udcff", "--at", "2027-01-04T10:00"),
            "handover: --notify 'person:hv-jsmith\\xff' is not valid UTF-8 text\n",
            id="notify",
        ),
        pytest.param(
            ("rota", "who", "--role", "\udcff"),
            "handover: --role '\\xff' is not valid UTF-8 text\n",
            id="role",
        ),
    ],
)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # refused before any query
def test_arguments_that_are_not_utf8_are_refused(
    cli_rota: Session, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    # Python hands undecodable argv bytes (here 0xff) over as lone surrogates.
    code, out, err = run(capsys, *argv)
    assert (code, out, err) == (1, "", message)


def test_plan_refuses_a_target_given_twice(
    cli_rota: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys,
        "plan",
        "--notify",
        "person:hv-jsmith",
        "--notify",
        "person:hv-cover",
        "--notify",
        "person:hv-jsmith",
        "--at",
        "2027-01-04T10:00",
    )
    assert (code, out) == (1, "")
    assert err == (
        "handover: invalid --notify targets:\n  notify[2] 'person:hv-jsmith': repeats notify[0]\n"
    )


def test_plan_lists_repeats_among_the_other_bad_targets(
    cli_rota: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys,
        "plan",
        "--notify",
        "team:gp-x",
        "--notify",
        "team:gp-x",
        "--notify",
        "person:hv-cover",
        "--at",
        "2027-01-04T10:00",
    )
    assert code == 1
    assert err == (
        "handover: invalid --notify targets:\n"
        "  notify[0] 'team:gp-x': unknown team gp-x\n"
        "  notify[1] 'team:gp-x': repeats notify[0]\n"
    )


@pytest.mark.parametrize(
    ("clock_text", "message"),
    [
        pytest.param(
            "0001-01-01T00:00:00+00:00", "handover: date value out of range\n", id="year-1"
        ),
        pytest.param(
            "yesterday", "handover: Invalid isoformat string: 'yesterday'\n", id="not-a-time"
        ),
    ],
)
def test_errors_past_the_checks_are_a_message_and_exit_1_not_a_traceback(
    cli_rota: Session,
    cli_env: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    clock_text: str,
    message: str,
) -> None:
    clock = tmp_path / "clock"
    clock.write_text(clock_text)
    cli_env.setenv("HANDOVER_CLOCK_FILE", str(clock))
    code, out, err = run(capsys, "rota", "who")
    assert (code, out, err) == (1, "", message)


@pytest.mark.slow  # starts a process
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # refused before any query
def test_a_real_process_given_bytes_that_are_not_utf8_prints_no_traceback(
    cli_rota: Session, tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "bot", "plan", "--notify", b"person:hv-jsmith\xff"]
    done = subprocess.run(argv, capture_output=True, cwd=tmp_path, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stdout == b""
    assert b"Traceback" not in done.stderr
    assert done.stderr.endswith(
        b"handover: --notify 'person:hv-jsmith\\xff' is not valid UTF-8 text\n"
    )


@pytest.mark.parametrize(
    ("urgency", "steps"),
    [
        ("urgent", ["10:15", "10:15", "10:30", "11:00", "17:00"]),
        ("standard", ["17:00", "11:00", "12:00", "14:00", "17:00"]),
    ],
)
def test_plan_with_an_urgency_shows_its_escalation_steps(
    cli_rota: Session, capsys: pytest.CaptureFixture[str], urgency: str, steps: list[str]
) -> None:
    add_absence(cli_rota, "hv-jsmith", date(2027, 1, 4), date(2027, 1, 4))
    cli_rota.commit()
    at = ["--notify", "person:hv-jsmith", "--at", "2027-01-04T10:00", "--urgency", urgency]
    code, out, _ = run(capsys, "plan", *at)
    assert code == 0
    instants = "  ".join(f"2027-01-04T{hm}:00+00:00" for hm in steps)
    assert out.splitlines()[-3:] == [
        f"if nobody responds ({urgency} offsets):",
        "TARGET            RESPOND BY                 REMIND                     ESCALATE"
        "                   CHANNEL                    BREACH",
        f"person:hv-jsmith  {instants}",
    ]
    code, out, _ = run(capsys, "plan", *at, "--format", "json")
    body = json.loads(out)
    assert body["urgency"] == urgency
    assert body["escalation"] == [
        {
            "target": "person:hv-jsmith",
            **{
                name: f"2027-01-04T{hm}:00+00:00"
                for name, hm in zip(
                    ("respond_by", "remind", "escalate", "escalate_channel", "breach"),
                    steps,
                    strict=True,
                )
            },
        }
    ]
