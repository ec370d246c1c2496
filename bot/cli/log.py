"""`handover log` and `handover report`: the escalation log and its figures.

The commands are docs/reference/commands.md's.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from itertools import chain, islice
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.cli.plan import text_argument
from bot.db import BATCH_TIMEOUTS, create_db_engine, make_session_factory
from bot.errors import InputError, UsageError
from bot.migrate import require_migrated
from bot.models import AuditEvent, Referral
from bot.services.audit import verify_chain
from bot.services.coverage import COVERAGE_WORDS, STRATEGY_AGENCIES, CoverageState
from bot.services.log_stream import (
    LOG_BATCH,
    InstantText,
    detail_json,
    iter_log_stored,
    json_text,
    local_time_label,
    stored_detail_value,
)
from bot.services.logbook import (
    LOG_FIELDS,
    LogWindow,
    parse_window,
)
from bot.services.reports import GroupFigures, Report, build_report, report_json
from bot.settings import Settings
from rota.models import Person

EXIT_OK = 0
EXIT_BROKEN = 1
LOG_FORMATS = ("table", "csv", "jsonl")
# Column widths of the table are fitted to the first rows; later, longer values overflow.
TABLE_FIT_ROWS = 1000
TABLE_HEADERS = ("time", "referral", "event", "actor", "recipient", "target", "detail")
AGENCY_NAMES = {
    "social_care": "social care",
    "police": "police",
    "health": "health",
    "probation": "probation",
    "education": "education",
    "other": "other",
    "unknown": "unknown (not in the rota)",
}


@contextmanager
def database_session(settings: Settings) -> Iterator[Session]:
    """A session on DATABASE_URL for one command (batch timeouts); the engine is disposed.

    A database not at the code's revision is a service unavailable (exit 3), said before any
    query meets a missing table (docs/reference/commands.md, exit codes)."""
    engine = create_db_engine(settings.database_url, timeouts=BATCH_TIMEOUTS)
    try:
        with engine.connect() as connection:
            require_migrated(connection)
        with make_session_factory(engine)() as session:
            yield session
    finally:
        engine.dispose()


def detail_text(detail: Any) -> str:
    """A detail value for the terminal: `key=value, ...` for an object, else the value."""
    if detail is None:
        return ""
    if isinstance(detail, dict):
        return ", ".join(
            f"{k}={v if isinstance(v, str) else json_text(v)}" for k, v in detail.items()
        )
    return detail if isinstance(detail, str) else json_text(detail)


# A spreadsheet reads a cell starting with one of these as a formula (docs/reference/commands.md).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str) -> str:
    """A CSV cell no spreadsheet runs as a formula: such a cell is prefixed with `'`."""
    return f"'{value}" if value.startswith(FORMULA_PREFIXES) else value


def safe_row(cells: Iterable[str]) -> list[str]:
    """Every cell of a CSV row made safe."""
    return [safe_cell(cell) for cell in cells]


class PersonLabels:
    """People's names from the rota, to show beside their IDs (one lookup a person)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._known: dict[str, str | None] = {}

    def label(self, value: str | None) -> str:
        """'edt-amy (Amy Shah)' for a person of the rota; anything else as it is."""
        if not value:
            return ""
        if value not in self._known:
            person = self.session.get(Person, value)
            self._known[value] = person.name if person is not None else None
        name = self._known[value]
        return f"{value} ({name})" if name else value


def _table_rows(
    rows: Iterable[tuple[Any, ...]], label: InstantText, names: PersonLabels
) -> Iterator[list[str]]:
    for at, referral_id, event, actor, recipient, target, detail in rows:
        target_cell = target or ""
        kind, _, ref = target_cell.partition(":")
        yield [
            label(at),
            referral_id or "",
            event,
            names.label(actor),
            names.label(recipient),
            f"person:{names.label(ref)}" if kind == "person" else target_cell,
            "" if detail is None else detail_text(stored_detail_value(detail)),
        ]


def column_widths(header: list[str], rows: Iterable[list[str]]) -> list[int]:
    """Each column's width: its longest cell, header included."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    return widths


def write_table(rows: Iterable[list[str]], out: TextIO, headers: Iterable[str]) -> int:
    """Write rows as aligned columns, fitting widths to the first rows; returns the row count.

    Each cell but the last is left-aligned to its column's width (longer ones overflow), two
    spaces apart, and the line's trailing spaces are dropped."""
    iterator = iter(rows)
    header = list(headers)
    first = list(islice(iterator, TABLE_FIT_ROWS))
    widths = column_widths(header, first)
    # One format call a line: `str.ljust` a cell and a join cost three times as much.
    padded = "  ".join([*(f"{{:<{width}}}" for width in widths[:-1]), "{}"]).format

    out.write(padded(*header).rstrip() + "\n")
    out.write(padded(*["-" * w for w in widths]).rstrip() + "\n")
    count = 0
    for batch in _batches(chain(first, iterator)):
        out.write("".join([padded(*row).rstrip() + "\n" for row in batch]))
        count += len(batch)
    return count


def _jsonl_lines(rows: Iterable[tuple[Any, ...]], iso: InstantText) -> Iterator[str]:
    """Each row as `json.dumps(log_record(row, tz), ensure_ascii=False)` gives it, and a newline:
    the keys are fixed, so the line is joined from the values' JSON texts."""
    string = json.encoder.encode_basestring
    for at, referral_id, event, actor, recipient, target, detail in rows:
        printed_detail = detail_json(detail)
        yield (
            f'{{"at": "{iso(at)}", '
            f'"referral_id": {"null" if referral_id is None else string(referral_id)}, '
            f'"event": {string(event)}, '
            f'"actor": {"null" if actor is None else string(actor)}, '
            f'"recipient": {"null" if recipient is None else string(recipient)}, '
            f'"target": {"null" if target is None else string(target)}, '
            f'"detail": {"null" if printed_detail is None else printed_detail}}}\n'
        )


def csv_cell(cell: str) -> str:
    """A cell as `csv.writer(out, lineterminator="\\n")` writes it: quoted, its quotes doubled,
    when it holds a comma, a quote or a newline (tests/bot/services/test_log_stream.py holds the two
    equal, character by character)."""
    if '"' in cell or "," in cell or "\n" in cell:
        return '"' + cell.replace('"', '""') + '"'
    return cell


def _csv_lines(rows: Iterable[tuple[Any, ...]], iso: InstantText) -> Iterator[str]:
    """Each row as the CSV's line: the jsonl values, null as an empty cell, all made safe.

    The line is joined here rather than by csv.writer, which looks each character of a cell up
    in the line terminator, twice (Python 3.11): 10 to 30% of the command's CPU at 1,000,000 rows.
    A detail, being JSON, is nearly always quoted."""
    # safe_cell written out: a call a cell was a fifth of the command's time. A null is "".
    formula = FORMULA_PREFIXES
    for at, referral_id, event, actor, recipient, target, detail in rows:
        cells = (
            iso(at),  # digits first: never a formula
            ""
            if referral_id is None
            else ("'" + referral_id if referral_id.startswith(formula) else referral_id),
            "'" + event if event.startswith(formula) else event,
            "" if actor is None else ("'" + actor if actor.startswith(formula) else actor),
            ""
            if recipient is None
            else ("'" + recipient if recipient.startswith(formula) else recipient),
            "" if target is None else ("'" + target if target.startswith(formula) else target),
        )
        line = ",".join(cells)
        if line.count(",") != 5 or '"' in line or "\n" in line:  # a cell needs quotes
            line = ",".join([csv_cell(cell) for cell in cells])
        printed_detail = detail_json(detail)
        if printed_detail is None:
            yield f"{line},\n"
        else:
            if printed_detail.startswith(formula):
                printed_detail = "'" + printed_detail
            yield f"{line},{csv_cell(printed_detail)}\n"


def _batches(items: Iterable[Any]) -> Iterator[list[Any]]:
    iterator = iter(items)
    while batch := list(islice(iterator, LOG_BATCH)):
        yield batch


def write_log(session: Session, window: LogWindow, fmt: str, tz: ZoneInfo, out: TextIO) -> int:
    """Stream the log in `fmt` (table, csv or jsonl) to `out`; returns the number of rows.

    The rows are read as stored (bot/services/log_stream.py) and written a batch at a time;
    their cursor is closed here, on the session's connection, even when writing fails (a
    reader that has gone: the caller disposes of the engine)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {fmt!r}")
    with closing(iter_log_stored(session, window)) as rows:
        if fmt == "table":
            label = InstantText(session, tz, label=True)
            count = write_table(_table_rows(rows, label, PersonLabels(session)), out, TABLE_HEADERS)
            if count == 0:
                out.write("(no events)\n")
            return count
        iso = InstantText(session, tz)
        count = 0
        lines = _jsonl_lines(rows, iso) if fmt == "jsonl" else _csv_lines(rows, iso)
        if fmt == "csv":
            out.write(",".join(LOG_FIELDS) + "\n")
        for batch in _batches(lines):
            out.write("".join(batch))
            count += len(batch)
        return count


def referral_known(session: Session, referral_id: str) -> bool:
    """Whether the referral exists, or existed: a purged one keeps its rows in the log."""
    if session.get(Referral, referral_id) is not None:
        return True
    logged = select(AuditEvent.id).where(AuditEvent.referral_id == referral_id).limit(1)
    return session.scalar(logged) is not None


def log_command(args: argparse.Namespace, settings: Settings) -> int:
    """`handover log`: print the escalation log, filtered, in order of time."""
    tz = settings.timezone
    referral_id = text_argument("--referral", args.referral) if args.referral is not None else None
    window = parse_window(args.since, args.until, tz, referral_id=referral_id)
    with database_session(settings) as session:
        if referral_id is not None and not referral_known(session, referral_id):
            raise InputError(f"--referral: no referral {referral_id or '(empty)'}")
        write_log(session, window, args.format, tz, sys.stdout)
    return EXIT_OK


def verify_command(args: argparse.Namespace, settings: Settings) -> int:
    """`handover log verify`: check the hash chain; exit 1 naming the first broken row."""
    given = [f"--{name}" for name in ("referral", "since", "until") if getattr(args, name)]
    if given or args.format != "table":
        raise UsageError(f"`handover log verify` takes no {', '.join(given) or '--format'}")
    with database_session(settings) as session:
        check = verify_chain(session)
    if not check.intact:
        print(f"handover: audit log broken: {check.problem}", file=sys.stderr)
        print(f"(checked {check.rows} rows before it)", file=sys.stderr)
        return EXIT_BROKEN
    if check.last_id is None:
        print("audit log intact: no rows yet")
    else:
        print(
            f"audit log intact: {check.rows} rows, the last is row {check.last_id} with hash "
            f"{check.last_hash}"
        )
    return EXIT_OK


def _minutes(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _window_label(window: LogWindow, tz: ZoneInfo) -> str:
    start = local_time_label(window.since, tz) if window.since else "the beginning"
    end_at = window.before or window.until
    end = local_time_label(end_at, tz) if end_at else "now"
    return f"from {start} to {end}"


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def report_rows(report: Report) -> list[tuple[str, str, str]]:
    """The report as (figure, group, value) rows, as its CSV holds them: the group is an
    agency type, or `team:ID` for a team's figures."""
    rows: list[tuple[str, str, str]] = [
        ("referrals_received", "", str(report.referrals_received)),
        ("prompts_sent", "", str(report.prompts_sent)),
        ("prompts_sent_late", "", str(report.prompts_late)),
        ("responses", "", str(report.responses_total)),
    ]
    rows += [(f"responses_{kind}", "", str(n)) for kind, n in report.responses.items()]
    rows += [
        ("breaches", "", str(report.breaches)),
        ("unroutables", "", str(report.unroutables)),
        ("long_gaps", "", str(report.long_gaps)),
        ("coverage_complete", "", str(report.coverage_complete)),
        ("coverage_rate", "", _rate(report.coverage_rate)),
    ]
    for agency in STRATEGY_AGENCIES:
        for state, n in report.coverage.by_agency[agency].items():
            rows.append((f"coverage_{state}", agency, str(n)))
    for times in report.response_times:
        rows += [
            ("time_to_answer_count", times.agency_type, str(times.count)),
            ("time_to_answer_median_minutes", times.agency_type, _minutes(times.median_minutes)),
            ("time_to_answer_p90_minutes", times.agency_type, _minutes(times.p90_minutes)),
        ]
    groups = [(g.key, g) for g in report.by_agency] + [(f"team:{g.key}", g) for g in report.by_team]
    for name, g in groups:
        rows += [
            ("asked", name, str(g.asked)),
            ("answered", name, str(g.answered)),
            ("response_rate", name, _rate(g.response_rate)),
            ("breaches", name, str(g.breaches)),
            ("unroutables", name, str(g.unroutables)),
        ]
    return rows


def _group_row(g: GroupFigures) -> list[str]:
    rate = "" if g.response_rate is None else f"{g.response_rate:.0%}"
    return [g.label, str(g.asked), str(g.answered), rate, str(g.breaches), str(g.unroutables)]


GROUP_HEADERS = ("asked", "answered", "response rate", "breaches", "unroutable")


def write_report_table(report: Report, tz: ZoneInfo, out: TextIO) -> None:
    """The report for a terminal."""
    rate = report.coverage_rate
    coverage = (
        "no referrals"
        if rate is None
        else f"{report.coverage_complete} of {report.referrals_received} referrals ({rate:.0%})"
    )
    figures = [
        ("Referrals received", str(report.referrals_received)),
        ("Prompts sent", f"{report.prompts_sent} (late: {report.prompts_late})"),
        ("Responses", str(report.responses_total)),
        *((f"  {kind.replace('_', ' ')}", str(n)) for kind, n in report.responses.items()),
        ("Breaches", str(report.breaches)),
        ("Unroutable targets", str(report.unroutables)),
        ("Long gaps", str(report.long_gaps)),
        ("Strategy-discussion coverage", coverage),
    ]
    out.write(f"Handover report {_window_label(report.window, tz)} ({tz.key})\n\n")
    width = max(len(label) for label, _ in figures)
    for label, value in figures:
        out.write(f"{label.ljust(width)}  {value}\n")
    out.write("  (covered by social care, police and health alike)\n\n")
    out.write("Coverage by agency type, in referrals\n")
    states = list(CoverageState)
    write_table(
        [
            [
                AGENCY_NAMES[a],
                *(str(report.coverage.by_agency[a][str(state)]) for state in states),
            ]
            for a in STRATEGY_AGENCIES
        ],
        out,
        ("agency type", *(COVERAGE_WORDS[state] for state in states)),
    )
    out.write(f"{report.coverage.rule}\n\n")
    out.write("By agency type\n")
    if report.by_agency:
        write_table([_group_row(g) for g in report.by_agency], out, ("", *GROUP_HEADERS))
    else:
        out.write("(nobody was asked)\n")
    out.write("\nBy team\n")
    if report.by_team:
        write_table(
            [[f"{g.label} ({g.key})", *_group_row(g)[1:]] for g in report.by_team],
            out,
            ("", *GROUP_HEADERS),
        )
    else:
        out.write("(nobody was asked)\n")
    out.write(
        "\nTime to answer ('I hold information' or 'not known'), in working minutes from the send\n"
    )
    if not report.response_times:
        out.write("(no answers)\n")
        return
    rows = [
        [
            AGENCY_NAMES.get(t.agency_type, t.agency_type),
            str(t.count),
            _minutes(t.median_minutes),
            _minutes(t.p90_minutes),
        ]
        for t in report.response_times
    ]
    write_table(rows, out, ("agency type", "answers", "median", "90th percentile"))


def report_channels(settings: Settings) -> dict[str, str]:
    """The configured channels by what they are for, as the report page names them."""
    channels = {}
    if settings.edt_channel:
        channels[settings.edt_channel] = "the EDT channel"
    if settings.escalation_channel:
        channels[settings.escalation_channel] = "the escalation channel"
    return channels


def write_report_html(path: Path, window: LogWindow, settings: Settings) -> int:
    """`handover report --html FILE`: the report as one self-contained page."""
    from bot.clock import clock_from_env
    from bot.pages import render_report, window_words
    from bot.services.report_page import build_report_page

    tz = settings.timezone
    with database_session(settings) as session:
        page = build_report_page(
            session, window, tz, clock_from_env().now(), channels=report_channels(settings)
        )
    html = render_report(page, window_label=f"Handover report {window_words(window, tz)}")
    try:
        path.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise InputError(f"--html {path}: {exc.strerror or exc}") from None
    print(f"report written to {path}")
    return EXIT_OK


def report_command(args: argparse.Namespace, settings: Settings) -> int:
    """`handover report`: figures for managers, as a table, CSV or JSON."""
    tz = settings.timezone
    window = parse_window(args.since, args.until, tz)
    if getattr(args, "html", None):
        return write_report_html(Path(args.html), window, settings)
    with database_session(settings) as session:
        report = build_report(session, window, tz)
    if args.format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(("figure", "agency_type", "value"))
        writer.writerows(safe_row(row) for row in report_rows(report))
    elif args.format == "json":
        print(json.dumps(report_json(report, tz), ensure_ascii=False, indent=2))
    else:
        write_report_table(report, tz, sys.stdout)
    return EXIT_OK
