"""The command line's own basics: `--version`, the `.env` of the working directory, and a
missing SQLite file refused rather than created (docs/reference/commands.md)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from bot.cli import main


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
