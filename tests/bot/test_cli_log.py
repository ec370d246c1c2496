"""`handover log` and `handover report` through `bot.cli.main`, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bot.cli import main
from bot.cli.log import safe_cell
from bot.services import audit
from bot.services.audit import record
from tests.bot.services.test_logbook import EXPECTED_MINUTES, build_scenario, figures_from_log, utc

FIRST_REFERRAL_LINE = (
    '{"at": "2026-11-12T16:40:00+00:00", "referral_id": "HO-R4", "event": "referral_received", '
    '"actor": "edt-amy", "recipient": null, "target": null, '
    '"detail": {"external_ref": "LCS-HO-R4", "category": "domestic_abuse"}}'
)


@pytest.fixture
def cli_db(
    db_url: str,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> str:
    """The scenario's database as DATABASE_URL, run from a folder without a .env file."""
    build_scenario(session_factory)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.delenv("HANDOVER_TIMEZONE", raising=False)
    return db_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_log_jsonl_prints_one_contract_object_a_line(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "log", "--format", "jsonl")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 33
    assert lines[0] == (
        '{"at": "2026-06-01T13:00:00+01:00", "referral_id": null, "event": "response_refused", '
        '"actor": "sw-sam", "recipient": null, "target": null, "detail": "not in chain"}'
    )
    assert lines[1] == FIRST_REFERRAL_LINE
    for line in lines:
        assert list(json.loads(line)) == [
            "at",
            "referral_id",
            "event",
            "actor",
            "recipient",
            "target",
            "detail",
        ]
    ats = [json.loads(line)["at"] for line in lines]
    assert ats == sorted(ats)


def test_log_filters_referral_and_dates(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "log", "--referral", "HO-R4", "--format", "jsonl")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert {r["referral_id"] for r in records} == {"HO-R4"}
    assert out.splitlines()[0] == FIRST_REFERRAL_LINE
    assert records[-1]["event"] == "referral_closed"

    code, out, _ = run(
        capsys, "log", "--since", "2026-11-16", "--until", "2026-11-16", "--format", "jsonl"
    )
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["at"], r["referral_id"], r["event"]) for r in records] == [
        ("2026-11-16T09:20:00+00:00", "HO-R2", "prompt_sent_late"),
        ("2026-11-16T09:30:00+00:00", "HO-R1", "has_information"),
        ("2026-11-16T17:00:00+00:00", "HO-R2", "breach"),
    ]
    assert records[2]["detail"] == "no response by the end of the working day"

    code, out, _ = run(
        capsys,
        "log",
        "--since",
        "2026-11-16T09:25",
        "--until",
        "2026-11-16T09:30",
        "--format",
        "jsonl",
    )
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["has_information"]


def test_log_csv_has_a_header_and_json_detail(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "log", "--referral", "HO-R3", "--format", "csv")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["at", "referral_id", "event", "actor", "recipient", "target", "detail"]
    assert rows[1] == [
        "2026-11-15T10:00:00+00:00",
        "HO-R3",
        "referral_received",
        "edt-amy",
        "",
        "",
        '{"external_ref": "LCS-HO-R3", "category": "domestic_abuse"}',
    ]
    assert [r[2] for r in rows[1:]] == [
        "referral_received",
        "prompt_scheduled",
        "unroutable",
        "long_gap_alert",
    ]


def test_csv_cells_never_start_a_formula(
    cli_db: str, session_factory: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    with session_factory.begin() as session:
        for n, actor in enumerate(("=HYPERLINK(1)", "+1", "-2", "@SUM(A1)", "\tx")):
            audit.record(
                session, "response_refused", at=utc(17, 9, n), referral_id="HO-R3", actor=actor
            )
    code, out, _ = run(capsys, "log", "--referral", "HO-R3", "--format", "csv")
    assert code == 0
    actors = [row[3] for row in csv.reader(io.StringIO(out)) if row[2] == "response_refused"]
    assert actors == ["'=HYPERLINK(1)", "'+1", "'-2", "'@SUM(A1)", "'\tx"]


def test_safe_cell_leaves_ordinary_text_alone() -> None:
    assert safe_cell("edt-amy") == "edt-amy"
    assert safe_cell("") == ""
    assert safe_cell("=1+1") == "'=1+1"
    assert safe_cell("\rx") == "'\rx"


def test_log_table_is_aligned_and_in_local_time(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "log", "--referral", "HO-R2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "time",
        "referral",
        "event",
        "actor",
        "recipient",
        "target",
        "detail",
    ]
    assert len(lines) == 2 + 7
    assert "2026-11-14 02:00:00 GMT  HO-R2" in lines[2]
    assert "referral_received" in lines[2]
    assert "external_ref=LCS-HO-R2" in lines[2]
    breach = lines[-1]
    assert breach.startswith("2026-11-16 17:00:00 GMT")
    assert "breach" in breach and "person:hv-jo (Hv-Jo)" in breach
    # Names beside IDs: the referrer, and the recipient of the breach.
    assert "edt-amy (Edt-Amy)" in lines[2]
    assert "hv-jo (Hv-Jo)" in breach
    # Columns line up: each event starts at the same offset.
    event_column = lines[0].index("event")
    assert all(line[event_column:].split()[0] in line for line in lines[2:])
    assert {line.index(line[event_column:].split()[0]) for line in lines[2:]} == {event_column}


@pytest.mark.parametrize("fmt", ["table", "csv", "jsonl"])
def test_log_of_an_unknown_referral_is_an_input_error(
    cli_db: str, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    assert run(capsys, "log", "--referral", "HO-NONE", "--format", fmt) == (
        1,
        "",
        "handover: --referral: no referral HO-NONE\n",
    )
    assert run(capsys, "log", "--referral", "", "--format", fmt) == (
        1,
        "",
        "handover: --referral: no referral (empty)\n",
    )


AT = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def test_log_of_a_referral_known_only_to_the_log_is_printed(
    cli_db: str, session_factory: sessionmaker[Session], capsys: pytest.CaptureFixture[str]
) -> None:
    # A referral whose row is gone (erased by hand, say) still has its history in the log.
    with session_factory.begin() as session:
        record(session, "referral_received", at=AT, referral_id="HO-GONE", actor="edt-amy")
    code, out, err = run(capsys, "log", "--referral", "HO-GONE", "--format", "jsonl")
    assert (code, err) == (0, "")
    assert [json.loads(line)["event"] for line in out.splitlines()] == ["referral_received"]


def test_log_bad_date_exits_1_with_a_message(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "log", "--since", "last tuesday")
    assert code == 1
    assert out == ""
    assert "--since" in err and "last tuesday" in err


def test_report_csv_figures_match_the_log(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "log", "--format", "jsonl")
    expected = figures_from_log([json.loads(line) for line in out.splitlines()])
    code, out, _ = run(capsys, "report", "--format", "csv")
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["figure", "agency_type", "value"]
    figures = {(f, a): v for f, a, v in rows[1:]}
    assert figures[("referrals_received", "")] == str(expected["referrals"]) == "4"
    assert figures[("prompts_sent", "")] == str(expected["sent"]) == "8"
    assert figures[("prompts_sent_late", "")] == str(expected["late"]) == "1"
    for kind, count in expected["responses"].items():
        assert figures[(f"responses_{kind}", "")] == str(count)
    assert figures[("responses", "")] == "7"
    assert figures[("breaches", "")] == str(expected["breaches"]) == "1"
    assert figures[("unroutables", "")] == str(expected["unroutables"]) == "1"
    assert figures[("long_gaps", "")] == str(expected["long_gaps"]) == "1"
    assert figures[("coverage_complete", "")] == "0"
    assert figures[("coverage_rate", "")] == "0.0000"
    assert figures[("coverage_missed", "police")] == "1"
    assert figures[("coverage_covered", "social_care")] == "4"
    assert set(expected["pairs"]) == set(EXPECTED_MINUTES)
    # Health: 60 working minutes across a weekend, not 64 hours; acknowledgements do not count.
    assert figures[("time_to_answer_count", "health")] == "1"
    assert figures[("time_to_answer_median_minutes", "health")] == "60.0"
    assert ("time_to_answer_count", "police") not in figures
    assert figures[("time_to_answer_median_minutes", "social_care")] == "20.0"
    assert figures[("time_to_answer_p90_minutes", "social_care")] == "30.0"
    # Police were asked three times and never answered; the health visitor breached.
    assert figures[("asked", "police")] == "3"
    assert figures[("response_rate", "police")] == "0.0000"
    assert figures[("breaches", "health")] == "1"
    assert figures[("breaches", "team:hv-north")] == "1"


def test_report_table_is_readable(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "report", "--since", "2026-11-12", "--until", "2026-11-17")
    assert code == 0
    assert out.startswith(
        "Handover report from 2026-11-12 00:00:00 GMT to 2026-11-18 00:00:00 GMT (Europe/London)"
    )
    lines = out.splitlines()
    assert any(line.split() == ["Referrals", "received", "4"] for line in lines)
    assert any(line.split() == ["Prompts", "sent", "8", "(late:", "1)"] for line in lines)
    assert any(
        "Strategy-discussion coverage" in line and "0 of 4 referrals (0%)" in line for line in lines
    )
    # Coverage by state, in words, and the rule stated in plain words.
    assert any(line.split() == ["police", "0", "2", "1", "1"] for line in lines)
    assert any(line.startswith("An agency is covered when") for line in lines)
    # By agency type and team: asked, answered, response rate, breaches, unroutable.
    assert any(line.split() == ["police", "3", "0", "0%", "0", "0"] for line in lines)
    assert any(line.split() == ["health", "3", "1", "33%", "1", "0"] for line in lines)
    assert any(
        line.split() == ["Hv-North", "(hv-north)", "3", "1", "33%", "1", "0"] for line in lines
    )
    # Time to answer: only has_information and not_known count.
    assert any(line.split() == ["health", "1", "60.0", "60.0"] for line in lines)
    assert any(line.split() == ["social", "care", "2", "20.0", "30.0"] for line in lines)


def test_report_json_has_coverage_and_breaches_by_agency_and_team(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "report", "--format", "json")
    assert code == 0
    report = json.loads(out)
    assert report["coverage"]["referrals"] == 4
    assert report["coverage"]["all_covered"] == 0
    assert report["coverage"]["by_agency"] == {
        "social_care": {"covered": 4, "pending": 0, "missed": 0, "not_asked": 0},
        "police": {"covered": 0, "pending": 2, "missed": 1, "not_asked": 1},
        "health": {"covered": 1, "pending": 2, "missed": 1, "not_asked": 0},
    }
    assert report["breaches"] == {
        "total": 1,
        "by_agency": {"social_care": 0, "police": 0, "health": 1, "unknown": 0},
        "by_team": {"mash": 0, "police-dau": 0, "hv-north": 1},
    }
    assert report["by_agency"]["police"]["asked"] == 3
    assert report["by_agency"]["police"]["response_rate"] == 0.0
    assert report["time_to_answer"]["health"] == {
        "count": 1,
        "median_minutes": 60.0,
        "p90_minutes": 60.0,
    }


def test_report_bad_until_exits_1(cli_db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "report", "--until", "2026-13-45")
    assert code == 1
    assert "--until" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ("log", "--until", "9999-12-31"),
            "handover: --until: '9999-12-31' is outside the years 2000 to 2999\n",
            id="log-until-9999",
        ),
        pytest.param(
            ("log", "--since", "0001-01-01"),
            "handover: --since: '0001-01-01' is outside the years 2000 to 2999\n",
            id="log-since-1",
        ),
        pytest.param(
            ("log", "--since", "0001-01-01T00:00+01:00"),
            "handover: --since: '0001-01-01T00:00+01:00' is outside the years 2000 to 2999\n",
            id="log-since-before-year-1-in-utc",
        ),
        pytest.param(
            ("log", "--since", "1999-12-31"),
            "handover: --since: '1999-12-31' is outside the years 2000 to 2999\n",
            id="log-since-1999",
        ),
        pytest.param(
            ("report", "--until", "9999-12-31"),
            "handover: --until: '9999-12-31' is outside the years 2000 to 2999\n",
            id="report-until-9999",
        ),
        pytest.param(
            ("report", "--until", "9999-12-31T23:59-01:00"),
            "handover: --until: '9999-12-31T23:59-01:00' is outside the years 2000 to 2999\n",
            id="report-until-after-9999-in-utc",
        ),
        pytest.param(
            ("log", "--referral", "\udcff"),
            "handover: --referral '\\xff' is not valid UTF-8 text\n",
            id="referral-not-utf8",
        ),
    ],
)
def test_far_dates_and_non_utf8_arguments_exit_1_with_a_message(
    cli_db: str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out, err) == (1, "", message)


def test_the_years_2000_and_2999_are_accepted(
    cli_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(
        capsys, "log", "--since", "2000-01-01", "--until", "2999-12-31", "--format", "jsonl"
    )
    assert (code, err) == (0, "")
    assert len(out.splitlines()) == 33
