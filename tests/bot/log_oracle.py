"""`handover log`'s output the straightforward way, row by row: the oracle of the fast path.

Each row is read through SQLAlchemy's conversions (`iter_log`), rendered by `log_record`, and
printed with `json.dumps` and `csv.writer` a row at a time, as `write_log` did before it read
the rows as stored (bot/services/log_stream.py); times with strftime, and cells made safe
and padded a call a cell, as `local_time_label` and `write_table` did before they were made
faster. tests/bot/services/test_log_stream.py compares the two byte for byte.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from datetime import datetime
from itertools import islice
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import Row
from sqlalchemy.orm import Session

from bot.cli.log import FORMULA_PREFIXES, TABLE_FIT_ROWS, TABLE_HEADERS, PersonLabels, column_widths
from bot.services.logbook import LOG_FIELDS, LogWindow, detail_value, iter_log, log_record


def local_time_label(instant: datetime, tz: ZoneInfo) -> str:
    """'2026-11-14 10:30:00 GMT', with strftime."""
    local = instant.astimezone(tz)
    return f"{local:%Y-%m-%d %H:%M:%S} {local.tzname()}"


def safe_row(cells: Iterable[str]) -> list[str]:
    """Each cell starting as a formula would prefixed with `'`, a call a cell."""
    return [f"'{cell}" if cell.startswith(FORMULA_PREFIXES) else cell for cell in cells]


def write_table(rows: Iterable[list[str]], out: TextIO, headers: Iterable[str]) -> int:
    """The table a line at a time, each cell padded with `str.ljust` (widths from the first
    TABLE_FIT_ROWS rows)."""
    iterator = iter(rows)
    header = list(headers)
    first = list(islice(iterator, TABLE_FIT_ROWS))
    widths = column_widths(header, first)

    def line(cells: list[str]) -> str:
        padded = [cell.ljust(width) for cell, width in zip(cells[:-1], widths, strict=False)]
        return "  ".join([*padded, cells[-1]]).rstrip()

    out.write(line(header) + "\n")
    out.write(line(["-" * w for w in widths]) + "\n")
    count = 0
    for row in [*first, *iterator]:
        out.write(line(row) + "\n")
        count += 1
    return count


def _detail_text(detail: Any) -> str:
    if detail is None:
        return ""
    if isinstance(detail, dict):
        return ", ".join(
            f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
            for k, v in detail.items()
        )
    return detail if isinstance(detail, str) else json.dumps(detail, ensure_ascii=False)


def _table_row(row: Row, tz: ZoneInfo, names: PersonLabels) -> list[str]:
    target = row.target or ""
    kind, _, ref = target.partition(":")
    return [
        local_time_label(row.at, tz),
        row.referral_id or "",
        row.event,
        names.label(row.actor),
        names.label(row.recipient),
        f"person:{names.label(ref)}" if kind == "person" else target,
        _detail_text(detail_value(row.detail)),
    ]


def reference_log(session: Session, window: LogWindow, fmt: str, tz: ZoneInfo) -> str:
    """The whole output of `handover log --format FMT` for the window, one row at a time."""
    out = io.StringIO()
    rows = list(iter_log(session, window))
    if fmt == "jsonl":
        for row in rows:
            out.write(json.dumps(log_record(row, tz), ensure_ascii=False) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(LOG_FIELDS)
        for row in rows:
            record = log_record(row, tz)
            detail = record["detail"]
            writer.writerow(
                safe_row(
                    [
                        *(record[f] if record[f] is not None else "" for f in LOG_FIELDS[:-1]),
                        "" if detail is None else json.dumps(detail, ensure_ascii=False),
                    ]
                )
            )
    else:
        names = PersonLabels(session)
        count = write_table((_table_row(row, tz, names) for row in rows), out, TABLE_HEADERS)
        if count == 0:
            out.write("(no events)\n")
    return out.getvalue()
