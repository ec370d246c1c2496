"""`handover purge [--before DATE] [--dry-run]` through `bot.cli.main` (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.cli import main
from bot.models import Referral
from tests.bot.services.test_retention import NOW, build_referrals


@pytest.fixture
def referrals(session_factory: sessionmaker[Session]) -> dict[str, str]:
    return build_referrals(session_factory)


@pytest.fixture
def cli(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clock = tmp_path / "clock"
    clock.write_text(NOW.isoformat(), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    for name in ("HANDOVER_TIMEZONE", "HANDOVER_RETENTION_DAYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setenv("HANDOVER_CLOCK_FILE", str(clock))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def purged(factory: sessionmaker[Session]) -> list[str]:
    with factory() as session:
        return list(
            session.scalars(select(Referral.external_ref).where(Referral.purged_at.is_not(None)))
        )


def test_purge_before_a_date_and_its_dry_run(
    cli: None,
    session_factory: sessionmaker[Session],
    referrals: dict[str, str],
    capsys,
) -> None:
    old = referrals["OLD"]
    code, out, err = run(capsys, "purge", "--before", "2026-10-01", "--dry-run")
    assert (code, err) == (0, "")
    assert out == (
        "would purge 1 referral(s) closed before 2026-10-01 00:00:00 BST\n"
        f"  {old}  closed 2026-08-08 10:12:00 BST\n"
        "dry run: nothing was changed\n"
    )
    assert purged(session_factory) == []
    code, out, _ = run(capsys, "purge", "--before", "2026-10-01")
    assert code == 0
    assert out == (
        "purged 1 referral(s) closed before 2026-10-01 00:00:00 BST\n"
        f"  {old}  closed 2026-08-08 10:12:00 BST\n"
        "erased from each: summary, close reason, request hash; each purge is logged as "
        "referral_purged\n"
        "pruned 0 Slack event id(s) and 0 Slack request signature(s)\n"
    )
    assert purged(session_factory) == ["LCS-OLD"]
    code, out, _ = run(capsys, "log", "verify")
    assert code == 0 and out.startswith("audit log intact: ")


def test_purge_defaults_to_the_retention_period(
    cli: None, session_factory, referrals: dict[str, str], monkeypatch, capsys
) -> None:
    code, _, err = run(capsys, "purge")
    assert (code, err) == (2, "handover: give --before DATE, or set HANDOVER_RETENTION_DAYS\n")
    monkeypatch.setenv("HANDOVER_RETENTION_DAYS", "5")
    code, out, _ = run(capsys, "purge")
    assert code == 0
    assert out.startswith("purged 2 referral(s) closed before 2026-11-11 09:12:00 GMT\n")
    assert sorted(purged(session_factory)) == ["LCS-OLD", "LCS-RECENT"]


@pytest.mark.parametrize(
    ("before", "message"),
    [
        ("2026-12-01", "handover: --before '2026-12-01' is in the future: nothing closed yet\n"),
        (
            "last tuesday",
            "handover: --before: 'last tuesday' is not a date (2026-11-14) or "
            "date-time (2026-11-14T09:00)\n",
        ),
        ("1066-10-14", "handover: --before '1066-10-14' is before the year 2000\n"),
    ],
)
def test_a_bad_date_is_an_input_error_and_changes_nothing(
    cli: None, session_factory, referrals: dict[str, str], capsys, before: str, message: str
) -> None:
    code, out, err = run(capsys, "purge", "--before", before)
    assert (code, out, err) == (1, "", message)
    assert purged(session_factory) == []
