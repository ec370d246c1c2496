"""The only place that reads the wall clock; everything else takes `now` as an argument."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current instant, timezone-aware (UTC)."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A settable clock for tests and the demo's simulated weekend."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, instant: datetime) -> None:
        if instant.tzinfo is None:
            raise ValueError("FixedClock needs an aware datetime")
        with self._lock:
            self._now = instant.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        with self._lock:
            self._now += delta


class FileClock:
    """A clock whose instant is read from a file on every call.

    Used by end-to-end tests and the demo to move several processes through a simulated
    weekend together (`HANDOVER_CLOCK_FILE`); production never sets it.
    """

    def __init__(self, path: str) -> None:
        self._path = path

    def now(self) -> datetime:
        with open(self._path, encoding="utf-8") as handle:
            text = handle.read().strip()
        instant = datetime.fromisoformat(text)
        if instant.tzinfo is None:
            raise ValueError(f"clock file {self._path} must hold an instant with an offset")
        return instant.astimezone(UTC)


def clock_from_env(environ: dict[str, str] | None = None) -> Clock:
    """The system clock, or a file clock when HANDOVER_CLOCK_FILE is set (tests, demo)."""
    env = os.environ if environ is None else environ
    path = env.get("HANDOVER_CLOCK_FILE", "").strip()
    return FileClock(path) if path else SystemClock()
