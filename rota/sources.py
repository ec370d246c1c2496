"""Rota tables read from CSV files and Excel workbooks: rows of text, each with its place.

The rules a coordinator meets (docs/rota-files.md):
- A CSV file is UTF-8 (a byte order mark is fine). A file that is not is refused, naming each
  line and how it reads in Windows-1252 (what Excel's "CSV (Comma delimited)" writes); with
  `cp1252=True` (`--cp1252`) it is read as Windows-1252. Guessing silently could turn a name
  into another name (Mac Roman's `é` is Windows-1252's `Ž`), so the fallback is asked for.
- The delimiter is `,`. A file whose header row has no comma but a `;`, or that starts with
  Excel's `sep=;` line, is read with `;` (Excel's CSV where the decimal separator is a comma).
- A workbook (`.xlsx`) has one sheet per kind, named like the files; date and time cells are
  taken as the dates and times they show.
- No cell may hold a control character (NUL, a tab, a line break inside a value, ...): they
  cannot be shown to anyone and PostgreSQL refuses NUL.
"""

from __future__ import annotations

import codecs
import csv
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from rota.problems import ProblemLog

KINDS = ("teams", "people", "shifts", "absences", "closures")
COLUMNS: dict[str, tuple[str, ...]] = {
    "teams": ("team_id", "name", "agency", "agency_type", "region", "hours", "manager", "channel"),
    "people": (
        "person_id",
        "name",
        "slack_user",
        "email",
        "team_id",
        "role",
        "hours",
        "deputy",
        "permissions",
    ),
    "shifts": ("person_id", "role", "start", "end"),
    "absences": ("person_id", "start", "end", "reason"),
    "closures": ("date", "applies_to", "from", "to", "reason"),
}
# Columns a file may leave out (a file without them stays valid); an absent one reads as empty.
OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "teams": ("workspace",),
    "people": ("contact", "phone"),
}
# Columns holding dates, date-times and times of day: how a workbook's date cells are read.
DATE_COLUMNS = frozenset({("absences", "start"), ("absences", "end"), ("closures", "date")})
DATETIME_COLUMNS = frozenset({("shifts", "start"), ("shifts", "end")})
TIME_COLUMNS = frozenset({("closures", "from"), ("closures", "to")})

CSV_SUFFIX = ".csv"
WORKBOOK_SUFFIXES = (".xlsx", ".xlsm")
ICAL_SUFFIX = ".ics"
_OTHER_SPREADSHEETS = {
    ".xls": "an Excel 97-2003 workbook: save it as an Excel Workbook (.xlsx)",
    ".ods": "an OpenDocument spreadsheet: save it as an Excel Workbook (.xlsx)",
    ".numbers": "a Numbers spreadsheet: export it as an Excel Workbook (.xlsx)",
}

# A person or team id, and a role (docs/reference/rota-files.md).
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
ROLE_RE = re.compile(r"^[a-z0-9_:-]+$")
_CONTROL_RE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The same in a file's bytes (UTF-8; in Windows-1252 0x80-0x9F are letters), line breaks apart.
_CONTROL_BYTES_RE = re.compile(
    rb"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\xa8\xa9]"
)
# Every byte but the C0 controls (line breaks apart) and DEL: deleting them leaves the suspects.
_PLAIN_BYTES = bytes(b for b in range(256) if b in (0x0A, 0x0D) or 0x20 <= b < 0x7F or b > 0x7F)
_NOT_CP1252_RE = re.compile(rb"[\x81\x8d\x8f\x90\x9d]")  # bytes Windows-1252 leaves undefined
_SCAN_CHUNK = 1 << 20
_HEAD_CHARS = 1 << 16  # enough of a file to find its header and delimiter
_CONTROL_NAMES = {
    0x00: "NUL",
    0x09: "a tab",
    0x0A: "a line break",
    0x0D: "a carriage return",
    0x1B: "ESC",
    0x7F: "DEL",
    0x2028: "a line separator",
    0x2029: "a paragraph separator",
}
_SEP_LINE_RE = re.compile(r"^sep=(.)$")
# Excel shows these in a cell whose formula failed; a cached formula result is a string.
_EXCEL_ERRORS = frozenset(
    {"#NULL!", "#DIV/0!", "#VALUE!", "#REF!", "#NAME?", "#NUM!", "#N/A", "#SPILL!", "#CALC!"}
)
# A workbook stores a character XML cannot hold (a control character) as _xHHHH_.
_XML_ESCAPE_RE = re.compile(r"_x([0-9A-Fa-f]{4})_")
# Excel counts days from 30 December 1899: a time-of-day cell is a date-time on that day.
_EXCEL_EPOCHS = (date(1899, 12, 30), date(1899, 12, 31), date(1900, 1, 1))


def control_character(value: str) -> str | None:
    """A problem message when `value` holds a control character, else None."""
    match = _CONTROL_RE.search(value)
    if match is None:
        return None
    code = ord(match.group())
    name = _CONTROL_NAMES.get(code, "a control character")
    return (
        f"{name} (U+{code:04X}) at character {match.start() + 1}; "
        "control characters are not allowed in rota files"
    )


@dataclass
class Table:
    """One rota table: a CSV file or a sheet of a workbook, its header and its rows."""

    kind: str
    file: str  # the path as given (or found in a folder)
    sheet: str | None  # the sheet's name, for a workbook
    header_line: int
    columns: list[str]  # the header's names, stripped and lower-cased
    rows: Iterator[tuple[int, list[str]]]  # (line or row, values as wide as the header)
    total_lines: int | None  # for progress: the lines or rows of the whole table
    broken: bool = False  # reading stopped at a problem that makes the rest unreadable
    event_numbers: bool = False  # rows are numbered by the events of a calendar
    close: Callable[[], None] = field(default=lambda: None)  # releases the file
    # Rows yielded although a cell has a problem already reported (a control character, an
    # Excel error): line -> those columns. The row is checked for its ids, then left out.
    flagged: dict[int, set[str]] = field(default_factory=dict)

    @property
    def display(self) -> str:
        """The table as named in messages and in the rota version: FILE or FILE:SHEET."""
        return self.file if self.sheet is None else f"{self.file}:{self.sheet}"


@dataclass(frozen=True)
class SourceFile:
    """A file named on the command line (or found in a folder), and how to read it."""

    display: str
    path: Path
    format: str  # csv | workbook | ical
    kind: str | None = None  # for a CSV file: the kind its name gives


@dataclass
class _Place:
    """Where rows come from, for reporting problems."""

    problems: ProblemLog
    file: str
    sheet: str | None = None
    flagged: dict[int, set[str]] = field(default_factory=dict)  # line -> columns with a problem

    def bad(self, line: int, column: str, message: str) -> None:
        self.problems.add(self.file, line, column, message, sheet=self.sheet)
        self.flagged.setdefault(line, set()).add(column)


# --- files and folders ------------------------------------------------------------------------


def source_files(paths: Sequence[str | Path], problems: ProblemLog) -> Iterator[SourceFile]:
    """The files named, folders expanded into their CSV files; problems for the others."""
    for given in paths:
        display = str(given)
        path = Path(given)
        problems.place_order(display)
        if path.is_dir():
            # Any case, as a file named on the command line: TEAMS.CSV from a Windows share is a
            # rota file, not one to pass over silently.
            files = sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() == CSV_SUFFIX
            )
            if not files:
                problems.add(display, 1, "-", "no rota CSV files in this folder")
            for file in files:
                file_display = str(path / file.name)
                problems.place_order(file_display)
                source = _classify(file, file_display, problems)
                if source is not None:
                    yield source
        elif path.is_file():
            source = _classify(path, display, problems)
            if source is not None:
                yield source
        elif path.exists():  # a device, a pipe or a socket, such as /dev/null
            problems.add(display, 1, "-", "not a regular file or a folder of CSV files")
        else:
            problems.add(display, 1, "-", "no such file or folder")


def _classify(path: Path, display: str, problems: ProblemLog) -> SourceFile | None:
    suffix = path.suffix.lower()
    if suffix in WORKBOOK_SUFFIXES:
        return SourceFile(display, path, "workbook")
    if suffix == ICAL_SUFFIX:
        return SourceFile(display, path, "ical")
    if suffix in _OTHER_SPREADSHEETS:
        problems.add(display, 1, "-", f"{_OTHER_SPREADSHEETS[suffix]}, or as CSV files")
        return None
    kind = path.stem.lower() if suffix == CSV_SUFFIX else None
    if kind in KINDS:
        return SourceFile(display, path, "csv", kind)
    expected = ", ".join(f"{k}.csv" for k in KINDS)
    problems.add(
        display,
        1,
        "-",
        f"unknown rota file name {path.name!r} (expected {expected}, "
        "an .xlsx workbook or an .ics calendar)",
    )
    return None


# --- CSV --------------------------------------------------------------------------------------


class _MalformedCsv(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


def read_csv_table(source: SourceFile, problems: ProblemLog, *, cp1252: bool) -> Table:
    """The CSV file as a table read as it goes; broken (with problems) when it cannot be read.

    A first pass over the bytes decides the encoding, counts the lines and looks for control
    characters, so that the rows are then read one at a time: a million rows in little memory.
    """
    assert source.kind is not None
    place = _Place(problems, source.display)
    try:
        scan = _scan(source.path)
    except OSError as exc:
        place.bad(1, "-", f"cannot read the file: {exc.strerror}")
        return broken_table(source.kind, place.file)
    if scan.utf16:
        place.bad(
            1,
            "-",
            'a UTF-16 file (Excel\'s "Unicode Text"); save it as "CSV UTF-8 (Comma delimited)"',
        )
        return broken_table(source.kind, place.file)
    if scan.utf8:
        encoding = "utf-8-sig"
    elif cp1252 and scan.cp1252:
        encoding = "cp1252"
    else:
        _name_undecodable_lines(source.path.read_bytes(), place, cp1252)
        return broken_table(source.kind, place.file)
    handle = open(source.path, encoding=encoding, newline="")  # noqa: SIM115 - closed by Table
    try:
        delimiter, skip = _dialect(handle.read(_HEAD_CHARS))
        handle.seek(0)
        records = _CsvRecords(handle, delimiter)
        header = records.header(skip)
    except _MalformedCsv as exc:
        handle.close()
        place.bad(exc.line, "-", f"malformed CSV: {exc}")
        return broken_table(source.kind, place.file)
    if header is None:
        handle.close()
        return _empty_table(source.kind, place)
    header_line, names = header
    for value in names:
        message = control_character(value)
        if message:
            handle.close()
            place.bad(header_line, "header", message)
            return broken_table(source.kind, place.file)
    table = Table(
        kind=source.kind,
        file=source.display,
        sheet=None,
        header_line=header_line,
        columns=[name.strip().lower() for name in names],
        rows=iter(()),
        total_lines=scan.lines,
        flagged=place.flagged,
        close=handle.close,
    )
    # Without any control character but line breaks in the file, only a value spanning
    # lines (quoted) can hold one: checking every value of a million rows would be waste.
    table.rows = records.rows(table, place, scan.controls)
    return table


@dataclass
class _Scan:
    """What one pass over a file's bytes tells."""

    utf8: bool = True
    cp1252: bool = True  # every byte is defined in Windows-1252
    utf16: bool = False
    controls: bool = False  # a control character other than a line break somewhere
    newlines: int = 0
    last_byte: bytes = b""

    @property
    def lines(self) -> int:
        return self.newlines + (self.last_byte not in (b"", b"\n"))


def _may_hold_control(data: bytes) -> bool:
    """Whether the bytes hold a control character other than a line break (UTF-8 or 1252)."""
    if data.translate(None, _PLAIN_BYTES):
        return True
    # C1 controls and the Unicode line and paragraph separators, encoded in UTF-8.
    return (b"\xc2" in data or b"\xe2\x80" in data) and bool(_CONTROL_BYTES_RE.search(data))


def _scan(path: Path) -> _Scan:
    scan = _Scan()
    decoder = codecs.getincrementaldecoder("utf-8")()
    tail = b""
    with open(path, "rb") as handle:
        first = True
        while chunk := handle.read(_SCAN_CHUNK):
            if first and chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                scan.utf16 = True
                return scan
            first = False
            if scan.utf8:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    scan.utf8 = False
            if scan.cp1252 and _NOT_CP1252_RE.search(chunk):
                scan.cp1252 = False
            if not scan.controls and _may_hold_control(tail + chunk):
                scan.controls = True
            tail = chunk[-2:]  # a character's bytes may straddle two chunks
            scan.newlines += chunk.count(b"\n")
            scan.last_byte = chunk[-1:]
    if scan.utf8:
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            scan.utf8 = False
    return scan


def _empty_table(kind: str, place: _Place) -> Table:
    return Table(kind, place.file, place.sheet, 1, [], iter(()), 0)


def broken_table(kind: str, file: str, sheet: str | None = None) -> Table:
    """A table that could not be read (its problems are reported): its kind's ids are unknown."""
    return Table(kind, file, sheet, 1, [], iter(()), 0, broken=True)


def _name_undecodable_lines(data: bytes, place: _Place, cp1252: bool) -> None:
    """Report each line that is not UTF-8, with how it reads in Windows-1252, and the fix."""
    # Name every offending line; 0x0A never occurs inside a UTF-8 multi-byte sequence.
    readable = True
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            byte = raw[exc.start]
            as_cp1252 = _cp1252_cell(raw, exc.start)
            if as_cp1252 is None:
                readable = False
                shown = "; not Windows-1252 either"
            else:
                shown = f"; in Windows-1252 this value reads {as_cp1252!r}"
            place.bad(
                number, "-", f"not UTF-8: byte 0x{byte:02X} at position {exc.start + 1}{shown}"
            )
    if readable and not cp1252:
        fix = (
            'save it from Excel as "CSV UTF-8 (Comma delimited)", or, if the values below '
            "read right, import it with --cp1252"
        )
    else:
        fix = 'save it from Excel as "CSV UTF-8 (Comma delimited)"'
    place.bad(1, "-", f"the file is not UTF-8: {fix}")


def _cp1252_cell(raw: bytes, position: int) -> str | None:
    """The value around `position` of a line read as Windows-1252, or None if it is not."""
    try:
        line = raw.rstrip(b"\r").decode("cp1252")
    except UnicodeDecodeError:
        return None
    # Windows-1252 is one byte a character: the byte position is the character position.
    cut = [i for i, char in enumerate(line) if char in ",;"]
    start = max((i + 1 for i in cut if i < position), default=0)
    end = min((i for i in cut if i > position), default=len(line))
    return line[start:end].strip().strip('"')


def _dialect(content: str) -> tuple[str, bool]:
    """The delimiter, and whether the first non-blank line is Excel's `sep=` line to skip."""
    position = 0
    while position <= len(content):
        end = content.find("\n", position)
        end = len(content) if end < 0 else end
        line = content[position:end].strip()
        position = end + 1
        if not line:
            continue
        sep = _SEP_LINE_RE.match(line)
        if sep:
            return sep.group(1), True
        if "," not in line and ";" in line:
            return ";", False
        return ",", False
    return ",", False


class _CsvRecords:
    """A CSV reader that knows the physical line each record starts on (values may span)."""

    def __init__(self, lines: Iterable[str], delimiter: str) -> None:
        self.reader = csv.reader(lines, delimiter=delimiter, strict=True)
        self.previous = 0  # the last physical line read

    def header(self, skip_sep_line: bool) -> tuple[int, list[str]] | None:
        """The first record with a value (after Excel's `sep=` line), and its line."""
        for record in self._records():
            if _is_blank(record):
                continue
            if skip_sep_line:
                skip_sep_line = False
                continue
            return self.previous_start, record
        return None

    def _records(self) -> Iterator[list[str]]:
        reader = self.reader
        while True:
            start = self.previous + 1
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise _MalformedCsv(start, str(exc)) from exc
            self.previous_start, self.previous = start, reader.line_num
            yield record

    def rows(
        self, table: Table, place: _Place, check_every_value: bool
    ) -> Iterator[tuple[int, list[str]]]:
        """The records after the header as (line, values), with row problems reported."""
        reader, columns = self.reader, table.columns
        width = len(columns)
        previous = self.previous
        try:
            for record in reader:
                line = previous + 1
                previous = reader.line_num
                if not record or (not record[0].strip() and not "".join(record).strip()):
                    continue  # a blank line, or one of empty cells (,,,) as spreadsheets write
                if len(record) != width:
                    place.bad(line, "-", f"{len(record)} values, expected {width} (as the header)")
                    continue
                if check_every_value or previous != line:
                    _check_controls(line, record, columns, place)
                yield line, record
        except csv.Error as exc:
            place.bad(previous + 1, "-", f"malformed CSV: {exc}")
            table.broken = True


def _is_blank(record: Sequence[str]) -> bool:
    return not record or all(not value.strip() for value in record)


def _check_controls(
    line: int, values: Sequence[str], columns: Sequence[str], place: _Place
) -> None:
    for column, value in zip(columns, values, strict=False):
        message = control_character(value)
        if message:
            place.bad(line, column or "-", message)


# --- workbooks --------------------------------------------------------------------------------


def read_workbook_tables(
    source: SourceFile, problems: ProblemLog
) -> tuple[list[Table], Callable[[], None]]:
    """The workbook's sheets as tables, one per kind, and how to close the workbook after."""
    # Imported here: a large package that only workbooks need.
    import openpyxl
    from openpyxl.utils.exceptions import InvalidFileException

    place = _Place(problems, source.display)
    try:
        workbook = openpyxl.load_workbook(source.path, read_only=True, data_only=True)
    except (OSError, zipfile.BadZipFile, InvalidFileException, KeyError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        place.bad(1, "-", f"cannot read the workbook ({reason}); save it again as .xlsx")
        return [], lambda: None
    expected = ", ".join(KINDS)
    if not workbook.worksheets:
        place.bad(1, "-", f"no sheets; expected sheets named {expected}")
    tables: list[Table] = []
    for sheet in workbook.worksheets:
        kind = sheet.title.strip().lower()
        if kind not in KINDS:
            place.bad(
                1,
                "-",
                f"unknown sheet {sheet.title!r} (expected sheets named {expected}); "
                "remove or rename it",
            )
            continue
        problems.place_order(source.display, sheet.title)
        tables.append(_sheet_table(kind, source.display, sheet, problems))
    return tables, workbook.close


def _sheet_table(kind: str, file: str, sheet: Any, problems: ProblemLog) -> Table:
    place = _Place(problems, file, sheet.title)
    rows = enumerate(sheet.iter_rows(min_row=1, values_only=True), start=1)
    for row_number, cells in rows:  # noqa: B007 - the header is the first row with a value
        if any(_cell_text(cell).strip() for cell in cells):
            break
    else:
        return _empty_table(kind, place)
    names = [_cell_text(cell) for cell in cells]
    while names and not names[-1].strip():
        names.pop()  # cells right of the header that only hold formatting
    for name in names:
        message = control_character(name)
        if message:
            place.bad(row_number, "header", message)
            return broken_table(kind, file, sheet.title)
    columns = [name.strip().lower() for name in names]
    total = sheet.max_row if isinstance(sheet.max_row, int) else None
    table = Table(kind, file, sheet.title, row_number, columns, iter(()), total)
    table.flagged = place.flagged
    converters = [_cell_converter(kind, column) for column in columns]
    table.rows = _sheet_rows(rows, converters, columns, place)
    return table


def _sheet_rows(
    rows: Iterator[tuple[int, tuple[Any, ...]]],
    converters: list[Callable[[Any], tuple[str, str | None]]],
    columns: list[str],
    place: _Place,
) -> Iterator[tuple[int, list[str]]]:
    width = len(columns)
    for row_number, cells in rows:
        values: list[str] = []
        for index, cell in enumerate(cells):
            if cell is None:
                if index < width:
                    values.append("")
                continue
            if index >= width:
                if _cell_text(cell).strip():
                    message = f"a value in column {index + 1}, right of the header"
                    place.bad(row_number, "-", message)
                continue
            text, problem = converters[index](cell)
            problem = problem or control_character(text)
            if problem:
                place.bad(row_number, columns[index] or "-", problem)
            values.append(text)
        values.extend("" for _ in range(width - len(values)))
        if any(value.strip() for value in values) or row_number in place.flagged:
            yield row_number, values  # an empty row is skipped: Excel keeps formatted ones


def _cell_text(cell: Any) -> str:
    """Any cell's value as text, for headers and emptiness."""
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell)


def _cell_converter(kind: str, column: str) -> Callable[[Any], tuple[str, str | None]]:
    """How a cell of this column becomes the text the row checks read, with a problem if any."""
    if (kind, column) in DATETIME_COLUMNS:
        return _datetime_cell
    if (kind, column) in DATE_COLUMNS:
        return _date_cell
    if (kind, column) in TIME_COLUMNS:
        return _time_cell
    return _text_cell


def _excel_error(cell: Any) -> str | None:
    if isinstance(cell, str) and cell.strip() in _EXCEL_ERRORS:
        return f"the cell shows Excel's error {cell.strip()}; fix the formula or type the value"
    return None


def _text_cell(cell: Any) -> tuple[str, str | None]:
    if isinstance(cell, datetime | date | time | timedelta):
        # Excel turned what was typed (an id like 1-2, say) into a date.
        return str(cell), "Excel stored a date or time here; format the column as Text"
    if isinstance(cell, bool):
        return ("TRUE" if cell else "FALSE"), None
    if isinstance(cell, str) and "_x" in cell:
        cell = _XML_ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), cell)
    return _cell_text(cell), _excel_error(cell)


def _datetime_cell(cell: Any) -> tuple[str, str | None]:
    if isinstance(cell, datetime):
        return cell.replace(microsecond=0).isoformat(), None
    if isinstance(cell, date):
        return f"{cell.isoformat()}T00:00", None
    if isinstance(cell, time | timedelta):
        return str(cell), "a time without a date; give the date and time"
    return _text_cell(cell)


def _date_cell(cell: Any) -> tuple[str, str | None]:
    if isinstance(cell, datetime):
        if cell.time() != time(0):
            return cell.isoformat(), "a date and time; give the date alone"
        return cell.date().isoformat(), None
    if isinstance(cell, date):
        return cell.isoformat(), None
    if isinstance(cell, time | timedelta):
        return str(cell), "a time, not a date"
    return _text_cell(cell)


def _time_cell(cell: Any) -> tuple[str, str | None]:
    if isinstance(cell, datetime) and cell.date() in _EXCEL_EPOCHS:
        return cell.time().isoformat(timespec="minutes"), None
    if isinstance(cell, time):
        return cell.isoformat(timespec="minutes"), None
    if isinstance(cell, timedelta) and timedelta(0) <= cell < timedelta(days=1):
        minutes = int(cell.total_seconds() // 60)
        return f"{minutes // 60:02d}:{minutes % 60:02d}", None
    if isinstance(cell, datetime | date | timedelta):
        return str(cell), "a date, not a time of day"
    return _text_cell(cell)
