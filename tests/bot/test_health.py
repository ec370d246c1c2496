"""`/healthz`: 200 at the code's revision, 503 `not migrated` behind it, 503 within its deadline
when the database does not answer (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy.orm import Session, sessionmaker

from bot.db import create_db_engine, make_session_factory
from bot.migrate import alembic_config, code_revision, upgrade
from bot.web.health import DEADLINE_SECONDS, HealthCheck
from tests.conftest import postgres_database


@contextmanager
def empty_database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'health.db'}"
        return
    with postgres_database(f"test_health_{os.getpid()}") as url:
        yield url


def health_of(url: str) -> tuple[int, dict]:
    engine = create_db_engine(url)
    try:
        answer = HealthCheck(make_session_factory(engine), code_revision()).check()
    finally:
        engine.dispose()
    return answer.status, answer.body


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_healthz_tells_whether_the_database_is_at_the_codes_revision(
    backend: str, tmp_path: Path
) -> None:
    head = code_revision()
    previous = ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(head)
    with empty_database(backend, tmp_path) as url:
        assert health_of(url) == (
            503,
            {"status": "unavailable", "database": "not migrated", "revision": None,
             "expected": head},
        )  # fmt: skip
        upgrade(url, previous.down_revision)
        assert health_of(url) == (
            503,
            {"status": "unavailable", "database": "not migrated",
             "revision": previous.down_revision, "expected": head},
        )  # fmt: skip
        upgrade(url)
        assert health_of(url) == (200, {"status": "ok"})


class StallingSessions:
    """A session factory whose sessions hang until released, like a stalled database."""

    def __init__(self, real: sessionmaker[Session]) -> None:
        self.real = real
        self.release = threading.Event()
        self.opened = 0

    def __call__(self) -> Session:
        self.opened += 1
        self.release.wait(timeout=30)
        return self.real()


def test_healthz_answers_503_within_its_deadline_and_probes_once_at_a_time(
    session_factory: sessionmaker[Session],
) -> None:
    stalling = StallingSessions(session_factory)
    health = HealthCheck(stalling, code_revision())  # type: ignore[arg-type]
    for _ in range(3):
        started = time.monotonic()
        answer = health.check()
        elapsed = time.monotonic() - started
        assert (answer.status, answer.body) == (
            503,
            {"status": "unavailable", "database": "not answering"},
        )
        assert DEADLINE_SECONDS <= elapsed < DEADLINE_SECONDS + 0.4
    assert stalling.opened == 1  # the later checks waited on the stuck probe
    stalling.release.set()
    time.sleep(0.2)
    answer = health.check()
    assert (answer.status, answer.body) == (200, {"status": "ok"})
