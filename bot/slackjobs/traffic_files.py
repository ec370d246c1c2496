"""Slack's traffic on SQLite, where there is no NOTIFY: a file per busy web process beside the
database file.

`<database file>.traffic/<sender>` exists while web process `sender` is busy; its modification
time is its last heartbeat (bot/slackjobs/beacon.py touches it when its Slack requests begin and
every HEARTBEAT_SECONDS while they go on, and removes it when they pause or it stops). A runner
apart from it (bot/slackjobs/runner.py's JobArrivals) reads the directory with `os.scandir` and
`stat` while a job waits for a pause: no database, no port, and nothing written per request. A
file whose heartbeat is older than runner.BUSY_HOLD_SECONDS (its process was killed) holds
nothing, and the next web process to start removes it.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from sqlalchemy import URL

from bot.db import sqlite_path

SUFFIX = ".traffic"
LOOK_SECONDS = 0.05  # how often a runner waiting for a pause looks at the files again


class TrafficFiles:
    """The directory of the busy web processes' files for one SQLite database file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def beside(cls, url: URL) -> TrafficFiles | None:
        """The directory beside `url`'s database file; None for PostgreSQL or an in-memory
        SQLite (no other process can share it)."""
        path = sqlite_path(url.render_as_string(hide_password=False))
        if path is None:
            return None
        return cls(path.absolute().with_name(path.name + SUFFIX))

    def busy(self, sender: str) -> None:
        """Say `sender` is busy: create its file, or renew its heartbeat (one `utime`)."""
        file = self.directory / sender
        try:
            file.touch()
        except FileNotFoundError:
            self.directory.mkdir(parents=True, exist_ok=True)
            file.touch()

    def quiet(self, sender: str) -> None:
        """Say `sender` paused (or stopped): remove its file."""
        (self.directory / sender).unlink(missing_ok=True)

    def leave(self, sender: str) -> None:
        """`sender` stops: its file goes, and the directory if no other web process has one
        (another that is busy later makes it again)."""
        self.quiet(sender)
        with contextlib.suppress(OSError):  # not empty, or already gone
            self.directory.rmdir()

    def heartbeats(self) -> dict[str, float]:
        """Each busy web process's last heartbeat (its file's mtime, on the wall clock)."""
        beats: dict[str, float] = {}
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    with contextlib.suppress(FileNotFoundError):  # removed as we looked
                        beats[entry.name] = entry.stat().st_mtime
        except FileNotFoundError:
            pass
        return beats

    def sweep(self, older_than: float) -> None:
        """Remove the files whose heartbeat is more than `older_than` seconds old (left by a
        process that was killed: they hold nothing, but would pile up)."""
        stale = time.time() - older_than
        for sender, beat in self.heartbeats().items():
            if beat < stale:
                self.quiet(sender)
