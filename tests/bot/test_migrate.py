"""The code's Alembic head, read from the migration scripts' text without Alembic."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.script import ScriptDirectory

from bot.migrate import MIGRATIONS_DIR, alembic_config, code_revision, head_revision

SCRIPT = '''"""{slug}"""
from typing import Sequence, Union

# revision identifiers, used by Alembic.
revision{annotation} = {revision!r}
down_revision{annotation} = {down!r}
branch_labels = None
'''


def write_script(versions: Path, revision: str, down: str | tuple[str, ...] | None) -> None:
    # Alembic's template annotates the identifiers; older scripts may not.
    annotation = ": str" if len(revision) % 2 else ""
    text = SCRIPT.format(slug=revision, revision=revision, down=down, annotation=annotation)
    (versions / f"20261201_{revision}_x.py").write_text(text, encoding="utf-8")


def test_the_code_revision_is_alembics_head() -> None:
    alembic_head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert code_revision() == alembic_head
    assert code_revision() == head_revision(MIGRATIONS_DIR / "versions")


def test_the_head_is_the_revision_no_script_revises(tmp_path: Path) -> None:
    write_script(tmp_path, "aaa1", None)
    write_script(tmp_path, "bbb22", "aaa1")
    write_script(tmp_path, "ccc3", "aaa1")
    write_script(tmp_path, "ddd44", ("bbb22", "ccc3"))  # a merge of two branches
    (tmp_path / "__init__.py").write_text("", encoding="utf-8")
    assert head_revision(tmp_path) == "ddd44"


def test_two_heads_are_an_error_naming_them(tmp_path: Path) -> None:
    write_script(tmp_path, "aaa1", None)
    write_script(tmp_path, "bbb22", "aaa1")
    write_script(tmp_path, "ccc3", "aaa1")
    with pytest.raises(RuntimeError) as raised:
        head_revision(tmp_path)
    assert str(raised.value) == (
        f"the Alembic revisions in {tmp_path} have 2 heads: ['bbb22', 'ccc3']"
    )


def test_no_scripts_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "__init__.py").write_text("", encoding="utf-8")
    with pytest.raises(RuntimeError) as raised:
        head_revision(tmp_path)
    assert str(raised.value) == f"no Alembic revisions in {tmp_path}"
