"""The work a Slack listener starts after its ack: a bounded queue served by a few threads.

A click or a slash command is acknowledged before any database work (docs/reference/slack.md,
"Acknowledging"): Slack gives up at 3 seconds, and a listener that records a response, updates
messages and redraws a Home holds its thread for much longer under load. Bolt's own listener
threads therefore only ack; what follows runs here, at most `workers` at a time (so the
database pool is not overrun), with at most `capacity` jobs waiting. Beyond that a job is
refused and its listener tells the user, rather than letting the wait grow without bound.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

logger = logging.getLogger(__name__)

WORKERS = 8
SQLITE_WORKERS = 2
CAPACITY = 2000


class WorkQueue:
    """Runs jobs on `workers` threads; `submit` refuses a job when `capacity` are queued."""

    def __init__(self, workers: int = WORKERS, capacity: int = CAPACITY) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="slack-work")
        self._room = threading.BoundedSemaphore(capacity)

    def submit(self, job: Callable[[], None]) -> bool:
        """Queue `job`; False (and nothing queued) when the queue is full."""
        if not self._room.acquire(blocking=False):
            logger.warning("slack work queue full: a job was refused")
            return False
        try:
            self._executor.submit(self._run, job)
        except RuntimeError:  # shutting down
            self._room.release()
            return False
        return True

    def _run(self, job: Callable[[], None]) -> None:
        try:
            job()
        except Exception:
            logger.exception("a Slack job failed after its ack")
        finally:
            self._room.release()

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs; with `wait`, finish those queued."""
        self._executor.shutdown(wait=wait)
