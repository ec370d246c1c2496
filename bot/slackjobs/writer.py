"""The web process's side of the slack_jobs table: write the jobs its listeners hand over.

A listener acks, then hands its click's job here (`submit`), which costs it no database work.
One thread writes what has gathered in one transaction, one multi-row INSERT whose conflicts
on the request's signature are the replay check (queue.add_jobs), so a burst of clicks costs
a few transactions rather than one each: the thread waits LINGER_SECONDS after the first job of a
batch so that a burst's jobs gather (a transaction of one job costs about 0.3 ms of CPU on
SQLite, most of it the INSERT's compilation, which SQLAlchemy does not cache for an ON CONFLICT
statement, and the BEGIN and COMMIT; twenty in one cost under 0.05 ms each). Until its
transaction commits a job is only in this process's memory (LINGER_SECONDS and as long as the
database takes to answer); once committed it survives any crash and a runner does it
(bot/slackjobs/runner.py).

When the database cannot take a batch after WRITE_ATTEMPTS tries, each job's `refused` is
called (its listener tells the user nothing was recorded); when CAPACITY jobs wait unwritten,
`submit` refuses at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from bot.clock import Clock, SystemClock
from bot.slackjobs.queue import NewJob, add_jobs

logger = logging.getLogger(__name__)

CAPACITY = 2000  # jobs waiting to be written, as the in-memory queue's bound was
MAX_BATCH = 200  # jobs in one INSERT
WRITE_ATTEMPTS = 3
RETRY_PAUSE_SECONDS = 0.5
# How long the first job of a batch waits for others. Short beside what follows a job's write
# (a runner starts it in a pause of Slack's requests of 20 ms, bot/web/work.py).
LINGER_SECONDS = 0.02


@dataclass(frozen=True)
class _Pending:
    job: NewJob
    refused: Callable[[], None]


class JobWriter:
    """Writes submitted jobs in batches on a thread of its own; `on_written` is called after
    each commit that added a job (a runner in the same process is woken without the watch)."""

    def __init__(
        self,
        engine: Engine,
        *,
        on_written: Callable[[], None] | None = None,
        capacity: int = CAPACITY,
        wall_clock: Clock | None = None,
        linger: float = LINGER_SECONDS,
    ) -> None:
        self._engine = engine
        self._linger = linger
        self.on_written = on_written
        self._capacity = capacity
        self._wall = wall_clock or SystemClock()
        self._pending: deque[_Pending] = deque()
        self._changed = threading.Condition()
        self._writing = 0  # jobs taken from `_pending`, not yet written
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="handover-job-writer", daemon=True)
        self._thread.start()

    def submit(self, job: NewJob, *, refused: Callable[[], None]) -> bool:
        """Queue `job` for the next batch; False (nothing queued) when CAPACITY are waiting."""
        with self._changed:
            if self._stopping or len(self._pending) + self._writing >= self._capacity:
                logger.warning("slack job writer full: a job was refused")
                return False
            self._pending.append(_Pending(job, refused))
            self._changed.notify_all()
        return True

    def drain(self, timeout: float) -> bool:
        """Wait until every job submitted so far is written (or refused); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending or self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def shutdown(self, timeout: float = 10.0) -> None:
        """Write what was submitted (within `timeout`), then stop."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._pending and not self._stopping:
                    self._changed.wait()
                if not self._pending:
                    return
                gather = not self._stopping and len(self._pending) < MAX_BATCH
            if gather:
                time.sleep(self._linger)  # outside the lock: submit() does not wait for it
            with self._changed:
                batch = [self._pending.popleft() for _ in range(min(MAX_BATCH, len(self._pending)))]
                self._writing = len(batch)
            try:
                self._write(batch)
            finally:
                with self._changed:
                    self._writing = 0
                    self._changed.notify_all()

    def _write(self, batch: list[_Pending]) -> None:
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self._engine.begin() as connection:
                    added = add_jobs(connection, [p.job for p in batch], now=self._wall.now())
            except SQLAlchemyError as exc:
                logger.warning(
                    "could not write %d slack job(s), attempt %d (%s)",
                    len(batch),
                    attempt,
                    type(exc).__name__,
                )
                if attempt < WRITE_ATTEMPTS:
                    time.sleep(RETRY_PAUSE_SECONDS)
                continue
            replays = len(batch) - len(added)
            if replays:
                logger.warning("slack request replayed: %d ignored", replays)
            if added and self.on_written is not None:
                self.on_written()
            return
        logger.error("the database refused %d slack job(s): their users are told", len(batch))
        for pending in batch:
            try:
                pending.refused()
            except Exception:
                logger.exception("could not tell a user their click was not recorded")
