"""`GET /healthz`: is the database reachable and at the code's revision, answered in time.

The probe runs in a thread of its own and the answer waits for it at most DEADLINE_SECONDS:
a database that stops answering makes the check say so (503) instead of holding the caller.
One probe at a time: while one is stuck, later checks wait on it rather than start more.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bot.migrate import database_revision

logger = logging.getLogger(__name__)

DEADLINE_SECONDS = 1.5  # the contract allows 2 s; the rest is for HTTP


@dataclass(frozen=True)
class Health:
    status: int
    body: dict[str, Any]


def probe_database(session_factory: sessionmaker[Session], expected_revision: str) -> Health:
    """Ask the database for its Alembic revision and compare it with the code's."""
    try:
        with session_factory() as session:
            revision = database_revision(session.connection())
    except SQLAlchemyError:
        logger.exception("health check: database unreachable")
        return Health(503, {"status": "unavailable", "database": "unreachable"})
    if revision != expected_revision:
        logger.error(
            "health check: database is at revision %s, the code needs %s (run `handover db "
            "upgrade`)",
            revision,
            expected_revision,
        )
        return Health(
            503,
            {
                "status": "unavailable",
                "database": "not migrated",
                "revision": revision,
                "expected": expected_revision,
            },
        )
    return Health(200, {"status": "ok"})


class HealthCheck:
    """Runs `probe_database` with a deadline, one probe at a time."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        expected_revision: str,
        deadline: float = DEADLINE_SECONDS,
    ) -> None:
        self._session_factory = session_factory
        self._expected = expected_revision
        self._deadline = deadline
        self._lock = threading.Lock()
        self._probe: Future[Health] | None = None

    def check(self) -> Health:
        """The database's health, or 503 `not answering` once the deadline passes."""
        with self._lock:
            probe = self._probe
            if probe is None or probe.done():
                probe = self._probe = Future()
                threading.Thread(
                    target=self._run, args=(probe,), name="healthz-probe", daemon=True
                ).start()
        try:
            return probe.result(timeout=self._deadline)
        except TimeoutError:
            logger.error("health check: database did not answer within %.1f s", self._deadline)
            return Health(503, {"status": "unavailable", "database": "not answering"})

    def _run(self, probe: Future[Health]) -> None:
        try:
            health = probe_database(self._session_factory, self._expected)
        except Exception:
            logger.exception("health check failed")
            health = Health(503, {"status": "unavailable", "database": "unreachable"})
        probe.set_result(health)
