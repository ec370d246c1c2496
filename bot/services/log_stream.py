"""The escalation log read for `handover log` at a million rows (docs/reference/commands.md).

`iter_log` hands out rows whose values SQLAlchemy has already converted, and `log_record` turns
each into a dict: at 1,000,000 rows the per-row conversions were most of the command's time.
Here the rows come as the database stores them, and the two conversions every row needs are
made cheaper, with the same functions the straightforward path uses:

- `InstantText`: the stored instant (SQLite's text, PostgreSQL's naive UTC datetime) to its
  local ISO 8601 text or terminal label, once for a run of rows at one instant (the log is in
  order of time, and a referral's events often share one), and within a UTC hour of one
  whole-hour offset by putting the stored minutes and seconds after the hour's local text.
- `detail_json`: the stored detail text to the JSON text `log` prints, which is
  `json.dumps(detail_value(text), ensure_ascii=False)` without building an encoder a row, and
  without reading at all a flat object as the log's writer prints it (it prints as itself).

The output is byte-for-byte what `log_record` and `json.dumps` give (tests/bot/log_oracle.py).
"""

from __future__ import annotations

import json
import json.encoder
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.db import driver_query
from bot.models import AuditEvent
from bot.services.logbook import LogWindow, detail_value

# Rows a fetch from the database (on PostgreSQL, from its server-side cursor).
LOG_BATCH = 2000
_NOTHING = object()  # before the first row: equal to no stored value


def iter_log_stored(session: Session, window: LogWindow) -> Iterator[tuple[Any, ...]]:
    """The window's audit rows by time then id, streamed, as (at, referral_id, event, actor,
    recipient, target, detail) tuples with `at` as stored: read it through `InstantText`.

    The rows come from the driver's own cursor, a batch a fetch: the columns need none of
    SQLAlchemy's conversions, and its rows, a row at a time, cost about a tenth of `log`'s CPU
    at a million rows. On PostgreSQL the cursor is a server-side one, so the rows are never
    all in memory; the caller closes it (`contextlib.closing`) while the connection is open."""
    columns = AuditEvent.__table__.c
    statement = select(
        columns.at,
        columns.referral_id,
        columns.event,
        columns.actor,
        columns.recipient,
        columns.target,
        columns.detail,
    )
    statement = window.apply(statement).order_by(columns.at, columns.id)
    connection = session.connection()
    sql, parameters = driver_query(connection, statement)
    driver = connection.connection.driver_connection
    assert driver is not None
    server_side = connection.dialect.name == "postgresql"
    cursor = driver.cursor(name="handover_log") if server_side else driver.cursor()
    try:
        cursor.execute(sql, parameters)
        while rows := cursor.fetchmany(LOG_BATCH):
            yield from rows
    finally:
        cursor.close()


def local_time_label(instant: datetime, tz: ZoneInfo) -> str:
    """An instant as '2026-11-14 10:30:00 GMT' in the service's time zone."""
    local = instant.astimezone(tz)
    if local.year < 1000:  # strftime's %Y does not pad such a year to four digits
        return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"
    # `isoformat` is a third of strftime's cost; its first 19 characters are the same text.
    return f"{local.isoformat(' ', 'seconds')[:19]} {local.tzname()}"


def local_iso(instant: datetime, tz: ZoneInfo) -> str:
    """An instant as ISO 8601 text in the service's time zone, as `log --format jsonl` has it."""
    return instant.astimezone(tz).isoformat()


_HOUR = timedelta(hours=1)
_LAST_MICROSECOND = _HOUR - timedelta(microseconds=1)
# SQLAlchemy's storage format for a datetime on SQLite: '2026-11-14 10:30:00.000000'.
_SQLITE_TEXT = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")


class InstantText:
    """Stored instants of the audit log as local text, `local_iso`'s or `local_time_label`'s.

    The instant is converted by the column type's own processor for the dialect (UTCDateTime
    over SQLite's text or PostgreSQL's timestamp), exactly as SQLAlchemy converts it for
    `iter_log`, and rendered by the function; that costs ~1.5 µs, most of `log`'s time at a
    million rows. So within a UTC hour whose local offset is one whole number of hours (in
    London, every hour: its clocks change on the hour), the local text is the hour's local
    text with the stored minutes, seconds and fraction; other instants take the long way.
    A run of equal instants is rendered once.
    """

    def __init__(self, session: Session, tz: ZoneInfo, *, label: bool = False) -> None:
        dialect = session.get_bind().dialect
        at_type = AuditEvent.__table__.c.at.type.dialect_impl(dialect)
        self._to_instant: Callable[[Any], datetime] = at_type.result_processor(dialect, None) or (
            lambda value: value
        )
        self._tz = tz
        self._label = label
        self._stored: object = _NOTHING
        self._text = ""
        # The UTC hour being read, as the stored text's first 13 characters (SQLite) or as
        # stored datetimes [start, end) (PostgreSQL), and its local text around the stored part.
        self._hour: object = _NOTHING
        self._start: Any = None
        self._end: Any = None
        self._shift = timedelta(0)
        self._prefix = ""
        self._suffix = ""

    def render(self, instant: datetime) -> str:
        """The text of an aware instant, the long way."""
        if self._label:
            return local_time_label(instant, self._tz)
        return local_iso(instant, self._tz)

    def __call__(self, stored: object) -> str:
        """The text of a stored instant."""
        if stored == self._stored:
            return self._text
        self._stored = stored
        if type(stored) is str:
            self._text = text = self._from_text(stored)
        elif type(stored) is datetime and stored.tzinfo is None:
            self._text = text = self._from_naive(stored)
        else:
            self._text = text = self.render(self._to_instant(stored))
        return text

    def _from_text(self, stored: str) -> str:
        if stored[:13] != self._hour or len(stored) != 26:  # 26: _SQLITE_TEXT's length
            if not self._enter_hour(stored):
                return self.render(self._to_instant(stored))
            self._hour = stored[:13]
        if self._label:
            return f"{self._prefix}{stored[13:19]}{self._suffix}"
        fraction = "" if stored.endswith(".000000") else stored[19:]  # as isoformat omits it
        return f"{self._prefix}{stored[13:19]}{fraction}{self._suffix}"

    def _from_naive(self, stored: datetime) -> str:
        in_hour = self._start is not None and self._start <= stored < self._end
        if not in_hour and not self._enter_hour(stored):
            return self.render(self._to_instant(stored))
        local = stored + self._shift
        if self._label:
            return f"{local.isoformat(' ', 'seconds')}{self._suffix}"
        return f"{local.isoformat()}{self._suffix}"

    def _enter_hour(self, stored: Any) -> bool:
        """Take the stored instant's UTC hour as the one being read; False when the short way
        would not give `render`'s text for it (an offset that is not whole hours, or changes
        within the hour, or a year before 1000, or text not in SQLAlchemy's format)."""
        self._hour = _NOTHING
        self._start = None
        if type(stored) is str and not _SQLITE_TEXT.fullmatch(stored):
            return False
        instant = self._to_instant(stored)
        start = instant.replace(minute=0, second=0, microsecond=0)
        try:
            first, last = (
                start.astimezone(self._tz),
                (start + _LAST_MICROSECOND).astimezone(self._tz),
            )
        except OverflowError:
            return False
        offset = first.utcoffset()
        if (
            offset is None
            or offset != last.utcoffset()
            or first.tzname() != last.tzname()
            or offset % _HOUR
            or first.year < 1000
        ):
            return False
        if self._label:
            text = local_time_label(start, self._tz)
            self._prefix, self._suffix = text[:13], text[19:]
        else:
            text = first.isoformat()
            self._prefix, self._suffix = text[:13], text[19:]
        naive_start = start.replace(tzinfo=None)
        self._start, self._end = naive_start, naive_start + _HOUR
        self._shift = offset
        return True


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
        # The scalars as the encoder writes them, without its set-up (the table's details).
        kind = type(value)
        if kind is bool:
            return "true" if value else "false"
        if kind is int:
            return int.__repr__(value)
        if value is None:
            return "null"
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


# A flat object as `json.dumps(a dict, ensure_ascii=False)` writes it (bot/services/audit.py),
# of keys and strings with nothing to escape, integers (no "-0": it reads as 0; at most 100
# digits: Python reads no more than 4300) and true, false, null. Such text, its keys distinct
# (json.loads keeps the last of two), reads and prints again as itself.
_PLAIN_STRING = r'"[^"\\\x00-\x1f]*"'
_PLAIN_MEMBER = rf"{_PLAIN_STRING}: (?:{_PLAIN_STRING}|0|-?[1-9][0-9]{{0,99}}|true|false|null)"
_PRINTS_AS_ITSELF = re.compile(rf"\{{(?:{_PLAIN_MEMBER}(?:, {_PLAIN_MEMBER})*)?\}}")
# A key of such text: in it, `": ` ends a key and nothing else (a string holds no quote).
_PLAIN_KEY = re.compile(r'"([^"]*)": ')


def detail_json(stored: str | None) -> str | None:
    """`json.dumps(detail_value(stored), ensure_ascii=False)`, or None for a null detail.

    The audit log's details are nearly all flat objects its writer printed, which print again
    as they are stored: those are recognised by their text (a quarter of the cost of reading
    and printing them, a fifth of `log`'s CPU), the rest read and printed."""
    if stored is None:
        return None
    if _PRINTS_AS_ITSELF.fullmatch(stored):
        if stored.count('": ') < 2:  # in such text, one a key
            return stored
        keys = _PLAIN_KEY.findall(stored)
        if len(set(keys)) == len(keys):
            return stored
    value = stored_detail_value(stored)
    return None if value is None else json_text(value)
