"""Database fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL comes from HANDOVER_TEST_PG_URL (default: the local server's `test` database);
each pytest-xdist worker gets a database of its own, migrated once and emptied between tests.
Under CI=true an unreachable PostgreSQL fails the run instead of skipping.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

# Every table of the schema on the metadata, for emptying them between tests: the models', and
# the OAuth stores' (which bot/models.py leaves to the code that uses them).
import bot.models
import bot.workspaces.store  # noqa: F401
from bot.db import create_db_engine, make_session_factory
from bot.migrate import upgrade
from rota.models import Base

PG_URL = os.environ.get("HANDOVER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Property tests draw the same examples on every run: a test that fails by chance blocks every
# landing. (Hypothesis's database of failing examples still replays new finds locally.)
hypothesis_settings.register_profile("handover", derandomize=True)
hypothesis_settings.load_profile("handover")


def pytest_configure(config: pytest.Config) -> None:
    """The processes the tests start keep their compiled bytecode, when the environment says
    not to write it (PYTHONDONTWRITEBYTECODE): in a cache outside the source tree, so that the
    hundreds of `handover` processes of a run compile the project's modules once, not each
    (tens of milliseconds of CPU a process: benchmarks/bench_startup.py --bytecode-cache)."""
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None):
        os.environ.setdefault("PYTHONPYCACHEPREFIX", str(BYTECODE_CACHE))


BYTECODE_CACHE = Path(tempfile.gettempdir()) / f"handover-tests-bytecode-{os.getuid()}"

# The longest files (minutes on the 2-core machine), longest first; then the other slow tests.
LONGEST_FIRST = (
    "tests/e2e/test_oncall_repage.py",
    "tests/e2e/test_partner_workspaces.py",
    "tests/e2e/test_multi_instance.py",
    "tests/e2e/test_core_loop.py",
    "tests/e2e/test_scenarios.py",
    "tests/e2e/test_timing.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests (those that start processes: the `slow` mark) first, the longest files
    first among them; the rest in their usual order.

    With `-n 2` pyproject's `--dist worksteal` splits the run in two and lets an idle worker take
    tests still queued on the other: a long end-to-end test started last would leave one worker
    finishing it alone, while short tests at the end are shared out to the second."""

    def order(item: pytest.Item) -> tuple[int, int]:
        path = item.nodeid.partition("::")[0]
        rank = LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)
        return (item.get_closest_marker("slow") is None, rank)

    items.sort(key=order)


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test."""
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@contextmanager
def postgres_database(name: str, template: str | None = None) -> Iterator[str]:
    """The URL of a new PostgreSQL database `name`, dropped afterwards: empty, or a copy of the
    database `template` (which nothing may be connected to).

    Under CI=true an unreachable server fails the test; elsewhere it skips it.
    """
    base = make_url(PG_URL)
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    copy = f' TEMPLATE "{template}"' if template else ""
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    except Exception as exc:
        admin.dispose()
        message = f"PostgreSQL at {base.render_as_string(hide_password=True)} unreachable: {exc}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A migrated PostgreSQL database of this worker's own."""
    # The pid keeps concurrent pytest runs (several developers, xdist workers) apart.
    name = f"{make_url(PG_URL).database}_handover_{_worker()}_{os.getpid()}"
    with postgres_database(name) as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def pg_template_database() -> Iterator[str]:
    """The name of a migrated PostgreSQL database of this worker's that nothing connects to:
    end-to-end deployments are copied from it (CREATE DATABASE ... TEMPLATE, a file copy)
    rather than each migrating a database of its own with `handover db upgrade`."""
    name = f"{make_url(PG_URL).database}_template_{_worker()}_{os.getpid()}"
    with postgres_database(name) as url:
        upgrade(url)  # its engine is disposed: no connection is left to the template
        yield name


@pytest.fixture(scope="session")
def deployed_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """Databases with the sample rota imported at a given instant, made once per worker and
    copied by each end-to-end deployment starting at that instant (tests/e2e/harness.py)."""
    from tests.e2e.harness import DatabaseTemplates

    templates = DatabaseTemplates(tmp_path_factory.mktemp("deployed-templates"))
    yield templates
    templates.close()


@pytest.fixture
def new_deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """`new_deployment(backend, start)`: a deployed rota, stand-in and clock; stopped after.

    Each deployment's database is a copy of one made once per worker (and only for the backends
    and instants tests ask for): migrated, and with the sample rota imported at `start` unless
    the test imports its own, as `handover db upgrade` and `handover rota import` would leave it.
    """
    from tests.e2e.harness import deployments

    def template(backend: str, start: datetime | None) -> str:
        if backend == "sqlite":
            migrated = str(request.getfixturevalue("sqlite_template"))
        else:
            migrated = request.getfixturevalue("pg_template_database")
        if start is None:
            return migrated
        return request.getfixturevalue("deployed_templates").with_rota(backend, start, migrated)

    with deployments(tmp_path, template) as make:
        yield make


@functools.cache
def _admin_engine(url: str) -> Engine:
    """One engine a database for emptying it between tests (disposed at exit by the pool)."""
    return create_engine(url, pool_size=1)


def _empty_postgres(url: str) -> None:
    """Every table emptied and every sequence restarted, as TRUNCATE ... RESTART IDENTITY would.

    DELETE rather than TRUNCATE: the tables a test fills are small, and TRUNCATE of every table
    (a new file for each, and its fsync) cost 0.2-0.4 s a test where DELETE costs milliseconds.
    """
    tables = [f'"{t.name}"' for t in Base.metadata.sorted_tables]
    with _admin_engine(url).begin() as conn:
        # Tests may empty the append-only log; the triggers (and the foreign keys' triggers, so
        # the order does not matter) fire only for ordinary sessions.
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        # TRUNCATE's lock, without its cost: a transaction still open from the last test (a
        # listener thread finishing) ends before anything is deleted, and none starts meanwhile,
        # so no audit row outlives the chain head it was written against.
        conn.execute(text(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE"))
        for table in tables:
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(
            text(
                "SELECT setval(format('%I.%I', schemaname, sequencename), start_value, false) "
                "FROM pg_sequences WHERE schemaname = 'public'"
            )
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of an empty, migrated database; the test runs once per backend."""
    if request.param == "sqlite":
        path = tmp_path / "handover.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = request.getfixturevalue("pg_database_url")
    _empty_postgres(url)
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session in a transaction that the test may commit; the database is discarded after."""
    with session_factory() as session:
        yield session


@pytest.fixture(autouse=True)
def _dispatchers_are_shut_down(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every Dispatcher a test makes is shut down after it, before the fixtures it was given
    are torn down: otherwise its App Home redraws (paced at views.publish's tier) go on in the
    background, against a stand-in and a database that are gone. (A finalizer added to the
    test once its fixtures are set up runs before theirs.)"""
    from bot.delivery.dispatcher import Dispatcher

    original = Dispatcher.__init__

    @functools.wraps(original)
    def recording(self: Dispatcher, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)
        request.node.addfinalizer(self.shutdown)

    monkeypatch.setattr(Dispatcher, "__init__", recording)
