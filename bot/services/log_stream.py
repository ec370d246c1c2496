"""The escalation log read for `handover log` at a million rows (docs/reference/commands.md).

`iter_log` hands out rows whose values SQLAlchemy has already converted, and `log_record` turns
each into a dict: at 1,000,000 rows the per-row conversions were most of the command's time.
Here the rows come as the database stores them, and the two conversions every row needs are
made cheaper, with the same functions the straightforward path uses:

- `InstantText`: the stored instant (SQLite's text, PostgreSQL's naive UTC datetime) to its
  local ISO 8601 text or terminal label, once for a run of rows at one instant (the log is in
  order of time, and a referral's events often share one).
- `detail_json`: the stored detail text to the JSON text `log` prints, which is
  `json.dumps(detail_value(text), ensure_ascii=False)` without building an encoder a row.

The output is byte-for-byte what `log_record` and `json.dumps` give (tests/bot/log_oracle.py).
"""

from __future__ import annotations

import json
import json.encoder
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, type_coerce
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from bot.models import AuditEvent
from bot.services.logbook import LogWindow, detail_value

# Rows a fetch from the database (on PostgreSQL, from its server-side cursor).
LOG_BATCH = 2000
_NOTHING = object()  # before the first row: equal to no stored value


def iter_log_stored(session: Session, window: LogWindow) -> Iterator[Row]:
    """The window's audit rows by time then id, streamed, as (at, referral_id, event, actor,
    recipient, target, detail) with `at` as stored: read it through `InstantText`."""
    columns = AuditEvent.__table__.c
    statement = select(
        # NullType: no conversion of a row's instant here; InstantText converts each one once.
        type_coerce(columns.at, NullType()).label("at"),
        columns.referral_id,
        columns.event,
        columns.actor,
        columns.recipient,
        columns.target,
        columns.detail,
    )
    statement = window.apply(statement).order_by(columns.at, columns.id)
    connection = session.connection()
    yield from connection.execute(statement.execution_options(yield_per=LOG_BATCH))


class InstantText:
    """Stored instants of the audit log as text, rendered once for a run of equal ones.

    `render` takes the aware UTC instant, converted by the column type's own processor for
    the dialect (UTCDateTime over SQLite's text or PostgreSQL's timestamp), exactly as
    SQLAlchemy converts it for `iter_log`.
    """

    def __init__(self, session: Session, render: Callable[[datetime], str]) -> None:
        dialect = session.get_bind().dialect
        at_type = AuditEvent.__table__.c.at.type.dialect_impl(dialect)
        self._to_instant: Callable[[Any], datetime] = at_type.result_processor(dialect, None) or (
            lambda value: value
        )
        self._render = render
        self._stored: object = _NOTHING
        self._text = ""

    def __call__(self, stored: object) -> str:
        """The text of a stored instant."""
        if stored != self._stored:
            self._text = self._render(self._to_instant(stored))
            self._stored = stored
        return self._text


def _json_encoder() -> Callable[[Any], str]:
    """`json.dumps(value, ensure_ascii=False)` for a decoded JSON value, with one encoder.

    `json.dumps` builds a new encoder on every call, which costs as much as the encoding of a
    small detail. The C encoder `json.dumps` itself uses is made once here (no circular check:
    a decoded JSON value cannot hold itself); without it, JSONEncoder's own `encode`.
    """
    plain = json.JSONEncoder(ensure_ascii=False, check_circular=False)
    make = json.encoder.c_make_encoder
    if make is None:
        return plain.encode
    encode_string = json.encoder.encode_basestring
    chunks = make(None, plain.default, encode_string, None, ": ", ", ", False, False, True)

    def encode(value: Any) -> str:
        if isinstance(value, str):
            return encode_string(value)
        return "".join(chunks(value, 0))

    return encode


# json.dumps(value, ensure_ascii=False) of a value json.loads gave.
json_text = _json_encoder()


_decode_json = json.JSONDecoder().raw_decode


def stored_detail_value(stored: str) -> Any:
    """`detail_value(stored)`: the JSON value, or the text when it is not JSON."""
    try:
        value, end = _decode_json(stored)
    except (ValueError, TypeError):  # not JSON, or not text: json.loads decides
        return detail_value(stored)
    # Whitespace around the document, or more after it: json.loads decides.
    return value if end == len(stored) else detail_value(stored)


def detail_json(stored: str | None) -> str | None:
    """`json.dumps(detail_value(stored), ensure_ascii=False)`, or None for a null detail."""
    if stored is None:
        return None
    value = stored_detail_value(stored)
    return None if value is None else json_text(value)
