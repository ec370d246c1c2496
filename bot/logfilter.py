"""A logging filter that writes a repeated error once per interval, with a count.

During a database outage every request fails the same way; one traceback a minute, saying how
many were held back, tells the operator as much as a thousand and keeps the log readable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

REPEAT_INTERVAL_SECONDS = 60.0


class RepeatedErrorFilter(logging.Filter):
    """Pass the first WARNING-or-worse record of each kind per interval; count the rest.

    Records are of one kind when they come from the same logger with the same level, message
    template and exception type (the arguments may differ: the path, a row id). The first
    record after an interval carries the count of those held back in the line
    `(N more like this in the last S s)`.
    """

    def __init__(
        self,
        interval: float = REPEAT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._kinds: dict[tuple, list[float | int]] = {}  # kind -> [window start, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        kind = (record.name, record.levelno, str(record.msg), exc_type)
        now = self._clock()
        with self._lock:
            seen = self._kinds.get(kind)
            if seen is not None and now - seen[0] < self.interval:
                seen[1] += 1
                return False
            held_back = int(seen[1]) if seen is not None else 0
            self._kinds[kind] = [now, 0]
            if len(self._kinds) > 1000:  # a flood of distinct kinds: forget the oldest
                oldest = min(self._kinds, key=lambda k: self._kinds[k][0])
                del self._kinds[oldest]
        if held_back:
            record.msg = f"{record.msg} ({held_back} more like this in the last " + (
                f"{now - float(seen[0]):.0f} s)"  # type: ignore[index]
            )
        return True


def install_repeat_filter(handlers: Iterable[logging.Handler]) -> None:
    """Give each handler a RepeatedErrorFilter of its own (once)."""
    for handler in handlers:
        if not any(isinstance(f, RepeatedErrorFilter) for f in handler.filters):
            handler.addFilter(RepeatedErrorFilter())
