"""What a process imports before it does its work: `serve` knows the code's revision without
Alembic, `--version` needs no database code, and the reading commands no Slack OAuth or
encryption code. Each costs tens of milliseconds of CPU at every start (bench_startup.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def modules_after(code: str) -> set[str]:
    """The top-level packages a fresh interpreter has imported after running `code`."""
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(result.stdout.split())


def test_serves_web_layer_knows_the_revision_without_alembic() -> None:
    loaded = modules_after(
        "import bot.web.http, bot.web.server\nfrom bot.migrate import code_revision\n"
        "assert code_revision()"
    )
    assert "bot" in loaded and "flask" in loaded
    assert "alembic" not in loaded
    assert "mako" not in loaded


def test_the_version_and_help_need_no_database_code() -> None:
    loaded = modules_after(
        "from bot.cli import build_parser, main\nbuild_parser()\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass"
    )
    assert "bot" in loaded
    assert "sqlalchemy" not in loaded
    assert "alembic" not in loaded


def test_the_log_and_plan_commands_load_no_oauth_store_or_cipher() -> None:
    loaded = modules_after("import bot.cli.log, bot.cli.plan, bot.models")
    assert "sqlalchemy" in loaded and "rota" in loaded
    assert "slack_sdk" not in loaded
    assert "cryptography" not in loaded


def test_the_migrations_still_see_the_oauth_stores_tables(tmp_path: Path) -> None:
    # `alembic check` in a fresh interpreter: without the stores' tables on the metadata that
    # migrations/env.py gives Alembic, it would propose to drop them.
    url = f"sqlite:///{tmp_path / 'check.db'}"
    check = (
        "from alembic import command\n"
        "from bot.migrate import alembic_config, upgrade\n"
        f"upgrade({url!r})\n"
        f"command.check(alembic_config({url!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "No new upgrade operations detected." in result.stdout + result.stderr
