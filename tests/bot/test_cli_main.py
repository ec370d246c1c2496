"""The command line's own basics: `--version`, the `.env` of the working directory, a missing
SQLite file refused rather than created, and an unmigrated database an exit 3
(docs/reference/commands.md)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from importlib import metadata
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from bot.cli import main
from bot.migrate import code_revision
from tests.conftest import PG_URL, postgres_database


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Run from an empty folder with no DATABASE_URL in the environment; whatever a `.env`
    puts into the environment is taken out again after the test."""
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "HANDOVER_TIMEZONE", "LOG_LEVEL"):
        monkeypatch.setenv(name, "")  # recorded, so the teardown restores (or removes) it
        monkeypatch.delenv(name)
    return tmp_path


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"handover {metadata.version('handover')}\n"
    assert metadata.version("handover") == "0.1.0"


def test_the_env_file_of_the_working_directory_is_read(
    bare_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (bare_env / ".env").write_text("DATABASE_URL=sqlite:///from-dotenv.db\n", encoding="utf-8")
    assert main(["db", "upgrade"]) == 0
    assert capsys.readouterr().out == "database is at the latest schema\n"
    assert sorted(p.name for p in bare_env.glob("*.db")) == ["from-dotenv.db"]


def test_the_environment_wins_over_the_env_file(
    bare_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (bare_env / ".env").write_text("DATABASE_URL=sqlite:///from-dotenv.db\n", encoding="utf-8")
    monkeypatch.setenv("DATABASE_URL", "sqlite:///from-environment.db")
    assert main(["db", "upgrade"]) == 0
    assert sorted(p.name for p in bare_env.glob("*.db")) == ["from-environment.db"]


@pytest.mark.parametrize(
    "argv",
    [
        ("log",),
        ("log", "--referral", "HO-X"),
        ("log", "verify"),
        ("report",),
        ("rota", "who"),
        ("serve",),
        ("dispatch", "--once"),
    ],
)
def test_a_missing_sqlite_file_is_refused_not_created(
    bare_env: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    assert main(list(argv)) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"handover: database unavailable: the SQLite file {bare_env / 'handover.db'} does not "
        "exist (check DATABASE_URL and the working directory, or create it with `handover db "
        "upgrade`)\n"
    )
    assert list(bare_env.iterdir()) == []


@pytest.fixture(params=["sqlite", "postgresql"])
def unmigrated_url(
    request: pytest.FixtureRequest, bare_env: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """DATABASE_URL of a database that exists but was never migrated: an empty SQLite file, or
    an empty PostgreSQL database."""
    if request.param == "sqlite":
        (bare_env / "handover.db").touch()
        url = f"sqlite:///{bare_env / 'handover.db'}"
        monkeypatch.setenv("DATABASE_URL", url)
        yield url
        return
    name = f"{make_url(PG_URL).database}_unmigrated_{os.getpid()}"
    with postgres_database(name) as url:
        monkeypatch.setenv("DATABASE_URL", url)
        yield url


UNMIGRATED = (
    "handover: database not migrated: it has no Handover tables; run `handover db upgrade`\n"
)


@pytest.mark.parametrize(
    "argv",
    [
        ("log",),
        ("log", "--format", "jsonl"),
        ("log", "--format", "csv"),
        ("log", "--referral", "HO-X"),
        ("log", "verify"),
        ("report",),
        ("report", "--format", "json"),
        ("purge", "--dry-run", "--before", "2026-01-01"),
        ("dispatch", "--once"),
    ],
)
def test_an_unmigrated_database_is_a_service_unavailable(
    unmigrated_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
) -> None:
    # Exit 3, "the database ... not migrated" (docs/reference/commands.md), said before any
    # query meets a missing table: not a traceback and exit 1.
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-never-used")
    assert main(list(argv)) == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == UNMIGRATED


def test_a_database_at_another_revision_is_a_service_unavailable(
    bare_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = bare_env / "handover.db"
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        connection.execute("INSERT INTO alembic_version VALUES ('0000older000')")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
    assert main(["log"]) == 3
    assert capsys.readouterr().err == (
        "handover: database not migrated: it is at revision 0000older000, this version of "
        f"Handover needs {code_revision()}; run `handover db upgrade`\n"
    )
