"""The web process's side of its Slack traffic as the runners apart from it hear it.

`handover dispatch` runs the clicks' jobs (bot/slackjobs/runner.py) but cannot see the Slack
requests `serve` answers, and on a machine they share, work it starts mid-burst takes the cores
the acks need. So on PostgreSQL each web process says on the jobs' NOTIFY channel when its Slack
requests begin ("busy ID") and when they pause for SlackTraffic's quiet time ("quiet ID"),
repeating "busy" every HEARTBEAT_SECONDS while they go on; the runners' `JobArrivals` start no
job while any web process is busy, and take a web process that stops repeating itself (it died,
or lost its connection) to have paused after runner.BUSY_HOLD_SECONDS. A burst of a thousand
clicks costs a handful of notifications; a lone click two.

On SQLite there is no such channel: the beacon says the same with a file beside the database
file (bot/slackjobs/traffic_files.py), created or touched for "busy", removed for "quiet" and
when it stops (with the directory, if it is then empty), which the runners apart from it read
with `stat`; its modification time lapses as a NOTIFY "busy" does. With an in-memory SQLite no
other process shares the database: it does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from typing import Any

from sqlalchemy import Engine

from bot.slackjobs.queue import NOTIFY_CHANNEL
from bot.slackjobs.runner import BUSY, BUSY_HOLD_SECONDS, QUIET
from bot.slackjobs.traffic_files import TrafficFiles

logger = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 0.25  # well within runner.BUSY_HOLD_SECONDS
LOOK_SECONDS = 1.0  # how often an idle beacon looks whether it is stopping
RECONNECT_SECONDS = 5.0  # after the connection failed, how long before trying again


class TrafficBeacon:
    """Says "busy"/"quiet" for `traffic` (bot/web/work.py's SlackTraffic) on the jobs' channel,
    or in its file beside an SQLite database, from a thread (and a connection) of its own;
    `start` and `stop` it with the process."""

    def __init__(self, engine: Engine, traffic: Any, *, sender: str | None = None) -> None:
        self._url = engine.url
        self._traffic = traffic
        self.sender = sender or uuid.uuid4().hex[:12]
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._connection: Any = None
        self._failed_at = float("-inf")
        self._files = TrafficFiles.beside(self._url)

    @property
    def enabled(self) -> bool:
        return self._url.get_backend_name() == "postgresql" or self._files is not None

    def start(self) -> None:
        if not self.enabled or self._thread is not None:
            return
        if self._files is not None:
            try:
                self._files.sweep(older_than=BUSY_HOLD_SECONDS)
            except OSError:
                logger.warning("could not remove stale traffic files from %s",
                               self._files.directory, exc_info=True)  # fmt: skip
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name="handover-traffic-beacon", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop, saying "quiet" if a burst was under way (the runners need not wait it out)."""
        self._stopping.set()
        self._traffic.wake()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)
        self._close()
        if self._files is not None:
            # Said above, unless the beacon could not write then: the file goes in any case.
            with contextlib.suppress(OSError):
                self._files.leave(self.sender)

    def _run(self) -> None:
        while not self._stopping.is_set():
            began = self._traffic.wait_for_requests(timeout=LOOK_SECONDS)
            if not began or self._stopping.is_set():
                continue
            self._say(BUSY)
            while not self._traffic.wait_for_a_pause(
                until=time.monotonic() + HEARTBEAT_SECONDS, give_up=self._stopping.is_set
            ):
                if self._stopping.is_set():
                    break
                self._say(BUSY)
            self._say(QUIET)

    def _say(self, word: str) -> None:
        if time.monotonic() - self._failed_at < RECONNECT_SECONDS:
            return  # the runners' hold lapses meanwhile: they go on as without a beacon
        try:
            if self._files is not None:
                if word == BUSY:
                    self._files.busy(self.sender)
                else:
                    self._files.quiet(self.sender)
                return
            if self._connection is None:
                self._connection = self._connect()
            self._connection.execute(
                "SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, f"{word} {self.sender}")
            )
        except Exception as exc:
            # The error's type only: a connection error can quote the conninfo.
            logger.warning(
                "could not tell the job runners about Slack's traffic (%s); trying again in %s s",
                type(exc).__name__,
                RECONNECT_SECONDS,
            )
            self._failed_at = time.monotonic()
            self._close()

    def _connect(self) -> Any:
        import psycopg

        from bot.db import SERVICE_TIMEOUTS, postgres_connect_args

        conninfo = self._url.set(drivername="postgresql").render_as_string(hide_password=False)
        return psycopg.connect(conninfo, autocommit=True, **postgres_connect_args(SERVICE_TIMEOUTS))

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                logger.debug("closing the beacon's connection failed", exc_info=True)
