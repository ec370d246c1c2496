"""The sample rota with control characters put in: an error or an import, never a traceback.

Each example starts from an empty database with the sample imported, puts control characters
into the files, and runs `rota import --dry-run` then `rota import` through the command line,
on SQLite and PostgreSQL. What must hold: both exit 0 or both exit 1 (a dry run accepts
exactly what an import accepts); a refusal prints only `FILE:LINE: column: message` lines and
changes nothing; an import leaves the store equal to the files (importing them again changes
nothing) with no control character stored.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from bot.cli import main
from bot.db import create_db_engine, make_session_factory, sqlite_path
from rota.models import Person, Team
from tests.bot.test_cli_rota_import import cli_env  # noqa: F401 - a fixture
from tests.conftest import _empty_postgres
from tests.rota.test_importer import SAMPLE, snapshot

KINDS = ("teams", "people", "shifts", "absences", "closures")
SHIFT_LINES = 120  # of the sample's shifts: enough rows, fast examples
CONTROLS = ["\x00", "\x01", "\t", "\n", "\r", "\x0b", "\x1b", "\x7f", "\x85", "\u2028"]
PROBLEM = re.compile(
    r"^rota/(teams|people|shifts|absences|closures)\.csv:\d+: ([a-z_]+|header|-): ."
)


def sample_files() -> dict[str, str]:
    files = {kind: (SAMPLE / f"{kind}.csv").read_text(encoding="utf-8") for kind in KINDS}
    files["shifts"] = "".join(files["shifts"].splitlines(True)[:SHIFT_LINES])
    return files


SAMPLE_FILES = sample_files()

mutations = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(min_value=0, max_value=10**6),
        st.sampled_from(CONTROLS),
        st.booleans(),  # replace the character there, or insert before it
    ),
    min_size=1,
    max_size=4,
)


def mutate(files: dict[str, str], changes: list[tuple[str, int, str, bool]]) -> dict[str, str]:
    result = dict(files)
    for kind, position, char, replace in changes:
        text = result[kind]
        at = position % (len(text) + 1)
        result[kind] = text[:at] + char + text[at + (1 if replace else 0) :]
    return result


@pytest.fixture
def reset_database(db_url: str, request: pytest.FixtureRequest):
    """Empties the test's database again: the state each Hypothesis example starts from."""

    def reset() -> None:
        path = sqlite_path(db_url)
        if path is not None:
            shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        else:
            _empty_postgres(db_url)

    return reset


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(changes=mutations)
def test_control_characters_give_an_error_or_an_import_never_a_traceback(
    cli_env: str,  # noqa: F811 - the fixture imported above
    reset_database,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    changes: list[tuple[str, int, str, bool]],
) -> None:
    db_url = cli_env
    reset_database()
    good, rota = tmp_path / "good", tmp_path / "rota"
    for folder, files in ((good, SAMPLE_FILES), (rota, mutate(SAMPLE_FILES, changes))):
        folder.mkdir(exist_ok=True)
        for kind, text in files.items():
            (folder / f"{kind}.csv").write_bytes(text.encode("utf-8"))
    assert main(["rota", "import", "good"]) == 0
    engine = create_db_engine(db_url)
    factory = make_session_factory(engine)
    before = snapshot(factory)
    capsys.readouterr()

    dry_run = main(["rota", "import", "--dry-run", "rota"])
    dry = capsys.readouterr()
    assert snapshot(factory) == before
    code = main(["rota", "import", "rota"])
    real = capsys.readouterr()
    assert (dry_run, code) in ((0, 0), (1, 1)), (dry.err, real.err)
    event(f"exit {code}")
    if code == 1:
        assert real.out == ""
        lines = real.err.splitlines()
        assert lines[-1].startswith("handover: rota not imported: ")
        assert all(PROBLEM.match(line) for line in lines[:-1]), lines
        assert dry.err == real.err
        assert snapshot(factory) == before
    else:
        # All of it was written: the same files again change nothing.
        assert main(["rota", "import", "rota"]) == 0
        assert capsys.readouterr().out.splitlines()[-1].startswith("no changes; rota version ")
        with factory() as session:
            texts = [*session.scalars(select(Person.name)), *session.scalars(select(Team.name))]
        assert not [t for t in texts if re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029]", t)]
    engine.dispose()
