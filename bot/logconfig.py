"""Logging, configured in one place for every `handover` command (`serve`, `dispatch`, the CLI).

`LOG_LEVEL` sets the level and `HANDOVER_LOG_FORMAT` the shape of a line (docs/operations.md):

- `text`: `2026-12-26 02:10:00,123 INFO bot.web.server: listening on …`, for a person reading a
  terminal;
- `json`: one JSON object a line, `{"time", "level", "logger", "message", …}`, then the record's
  structured fields (those given with `extra=`) and, for an error, `"exception"` (the traceback
  as text), for a log shipper. Times are UTC, ISO 8601 with milliseconds.

A structured field whose name says it holds a secret or a referral's free text (`summary`,
`token`, `secret`, `password`, …) is never written: it is replaced by `"[withheld]"`.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from bot.logfilter import install_repeat_filter

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
WITHHELD = "[withheld]"
# Parts of a field's name that mark it as never to be logged.
_SECRET_WORDS = ("summary", "token", "secret", "password", "authorization", "cookie", "smtp_url")
# Libraries that log every pass (APScheduler) or every plugin (Alembic) at INFO.
NOISY_LOGGERS = ("apscheduler", "alembic")
# The attributes every LogRecord has: anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def _withheld(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _plain(value: Any) -> Any:
    """A field's value as JSON can hold it (anything else as its `str`)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): WITHHELD if _withheld(str(k)) else _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, then the structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _RECORD_ATTRIBUTES or key.startswith("_") or key in entry:
                continue
            entry[key] = WITHHELD if _withheld(key) else _plain(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter of `HANDOVER_LOG_FORMAT` (`text` or `json`)."""
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)


def configure_logging(
    level: str, log_format: str, *, verbose: bool = False, stream: TextIO | None = None
) -> logging.Handler | None:
    """Send the root logger to `stream` (stderr) at `level` in `log_format`; return the handler.

    `--verbose` means DEBUG whatever LOG_LEVEL says. As `logging.basicConfig` does, it leaves
    alone a root logger that an embedding program (or pytest) already gave handlers, and
    answers None. The handler added here gets the repeated-error filter (bot/logfilter.py).
    """
    effective = logging.DEBUG if verbose else logging.getLevelNamesMapping()[level]
    # Keep APScheduler and Alembic for their warnings, unless asked for everything.
    noisy_level = effective if effective <= logging.DEBUG else max(effective, logging.WARNING)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(noisy_level)
    root = logging.getLogger()
    if root.handlers:
        return None
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    root.addHandler(handler)
    root.setLevel(effective)
    install_repeat_filter([handler])
    return handler
