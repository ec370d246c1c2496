"""Applying the Alembic migrations from inside the installed package."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import ServiceUnavailable

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at `database_url` to `revision`."""
    from alembic import command

    command.upgrade(alembic_config(database_url), revision)


@cache
def code_revision() -> str:
    """The Alembic head this code expects the database to be at."""
    return head_revision(MIGRATIONS_DIR / "versions")


def database_revision(connection: Connection) -> str | None:
    """The Alembic revision the database is at; None when it was never migrated."""
    from sqlalchemy import inspect, text

    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def require_migrated(connection: Connection) -> None:
    """Raise ServiceUnavailable unless the database is at the code's Alembic revision."""
    revision = database_revision(connection)
    if revision is None:
        raise ServiceUnavailable(
            "database not migrated: it has no Handover tables; run `handover db upgrade`"
        )
    if revision != code_revision():
        raise ServiceUnavailable(
            f"database not migrated: it is at revision {revision}, this version of Handover "
            f"needs {code_revision()}; run `handover db upgrade`"
        )


def head_revision(versions: Path) -> str:
    """The one revision no other names as its `down_revision`, read from the scripts' text.

    Alembic's `ScriptDirectory.get_current_head()` gives the same answer (a test holds them
    equal) but imports Alembic and executes every migration script, which cost `serve` a tenth
    of a second of CPU at each start for a string the scripts state literally.
    """
    revisions: dict[str, tuple[str, ...]] = {}
    for script in sorted(versions.glob("*.py")):
        identifiers = _identifiers(script)
        if "revision" in identifiers:
            revisions[identifiers["revision"][0]] = identifiers.get("down_revision", ())
    if not revisions:
        raise RuntimeError(f"no Alembic revisions in {versions}")
    parents = {parent for downs in revisions.values() for parent in downs}
    heads = sorted(set(revisions) - parents)
    if len(heads) != 1:
        raise RuntimeError(f"the Alembic revisions in {versions} have {len(heads)} heads: {heads}")
    return heads[0]


def _identifiers(script: Path) -> dict[str, tuple[str, ...]]:
    """A script's module-level `revision` and `down_revision`, as tuples of revision ids."""
    found: dict[str, tuple[str, ...]] = {}
    for node in ast.parse(script.read_bytes(), str(script)).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
            literal = ast.literal_eval(value)
            if literal is None:
                found[target.id] = ()
            elif isinstance(literal, str):
                found[target.id] = (literal,)
            else:
                found[target.id] = tuple(literal)
    return found
