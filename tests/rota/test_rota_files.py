"""Rota files as spreadsheets really save them: workbooks, UK dates, Windows-1252, `;`, controls."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from pathlib import Path

import openpyxl
import pytest

from rota.importer import RotaImportError, read_rota_files
from tests.rota.test_importer import (
    ABSENCES,
    BASE,
    CLOSURES,
    LONDON,
    PEOPLE,
    SHIFTS,
    TEAMS,
    problems_of,
    write_rota,
)
from tests.rota.xlsx import write_workbook

CONTROL = "control characters are not allowed in rota files"


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in tmp_path so that file names in problems are short and exact."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- UK dates ---------------------------------------------------------------------------------


def test_uk_dates_and_date_times_are_read_in_every_date_column(in_tmp: Path) -> None:
    write_rota(
        in_tmp / "rota",
        shifts="person_id,role,start,end\n"
        "edt-amy,edt_worker,26/12/2026 09:00,26/12/2026 17:00\n"
        # British Summer Time: 17:00 local is 16:00 UTC; one-digit day and month, seconds.
        "edt-amy,edt_worker,1/7/2027 17:00:30,2/7/2027 09:00\n",
        absences="person_id,start,end,reason\nhv-jsmith,21/12/2026,08/01/2027,annual leave\n",
        closures="date,applies_to,from,to,reason\n24/12/2026,all,12:00,,Christmas Eve\n",
    )
    batch = read_rota_files(["rota"], LONDON)
    assert [(s.start_at, s.end_at) for s in batch.shifts] == [
        (datetime(2026, 12, 26, 9, 0, tzinfo=UTC), datetime(2026, 12, 26, 17, 0, tzinfo=UTC)),
        (datetime(2027, 7, 1, 16, 0, 30, tzinfo=UTC), datetime(2027, 7, 2, 8, 0, tzinfo=UTC)),
    ]
    assert [(a.start_date, a.end_date) for a in batch.absences] == [
        (date(2026, 12, 21), date(2027, 1, 8))
    ]
    assert [(c.date, c.from_time) for c in batch.closures] == [(date(2026, 12, 24), time(12, 0))]


# --- CSV as Excel saves it ----------------------------------------------------------------------


def test_a_semicolon_file_is_read_with_its_quoted_values(in_tmp: Path) -> None:
    people = (
        "person_id;name;slack_user;email;team_id;role;hours;deputy;permissions\r\n"
        'edt-mgr;Raj Malhotra;U0EDTRAJ01;;edt;EDT manager;none;;"referrer;manager"\r\n'
        "hv-jsmith;Jo Smith;;jo@wexcombe.example;hv-north;health visitor;"
        '"Mon-Thu 08:30-16:30; Fri 08:30-16:00";;\r\n'
    )
    write_rota(in_tmp / "rota", teams=TEAMS.replace(",hv-mgr,", ",,"), people=people)
    batch = read_rota_files(["rota"], LONDON)
    assert [(p.person_id, p.hours, p.permissions) for p in batch.people] == [
        ("edt-mgr", "none", "referrer;manager"),
        ("hv-jsmith", "Mon-Thu 08:30-16:30; Fri 08:30-16:00", ""),
    ]


def test_excels_sep_line_sets_the_delimiter(in_tmp: Path) -> None:
    write_rota(in_tmp / "rota", absences="sep=;\n" + ABSENCES.replace(",", ";"))
    batch = read_rota_files(["rota/absences.csv"], LONDON)
    assert [(a.person_id, a.line) for a in batch.absences] == [("hv-jsmith", 3)]


def test_a_windows_1252_file_is_refused_naming_each_line_and_how_it_would_read(
    in_tmp: Path,
) -> None:
    people = PEOPLE + "x-1,Zoë Renée,U0X00001,,edt,worker,,,\nx-2,Anaïs,U0X00002,,edt,worker,,,\n"
    write_rota(in_tmp / "rota", teams=TEAMS, people=people.encode("cp1252"))
    assert problems_of(["rota"]) == [
        "rota/people.csv:1: -: the file is not UTF-8: save it from Excel as "
        '"CSV UTF-8 (Comma delimited)", or, if the values below read right, import it '
        "with --cp1252",
        "rota/people.csv:7: -: not UTF-8: byte 0xEB at position 7; in Windows-1252 this "
        "value reads 'Zoë Renée'",
        "rota/people.csv:8: -: not UTF-8: byte 0xEF at position 8; in Windows-1252 this "
        "value reads 'Anaïs'",
    ]


def test_with_cp1252_a_bom_less_windows_1252_file_is_read(in_tmp: Path) -> None:
    people = PEOPLE + "x-1,Zoë Renée,U0X00001,,edt,worker,,,\n"
    closures = CLOSURES + "2027-02-01,all,,,staff day (£ cost centre é)\n"
    write_rota(
        in_tmp / "rota",
        teams=TEAMS,
        people=people.encode("cp1252"),
        closures=closures.encode("cp1252"),
    )
    batch = read_rota_files(["rota"], LONDON, cp1252=True)
    assert batch.people[-1].name == "Zoë Renée"
    assert batch.closures[-1].reason == "staff day (£ cost centre é)"
    # A UTF-8 file in the same import is still read as UTF-8.
    write_rota(in_tmp / "rota", teams=TEAMS.replace("Wexcombe NHS", "Wexcombe NHS \u2013 Nord"))
    batch = read_rota_files(["rota"], LONDON, cp1252=True)
    assert batch.teams[1].agency == "Wexcombe NHS \u2013 Nord"


def test_bytes_that_are_not_windows_1252_either_are_refused_even_with_cp1252(
    in_tmp: Path,
) -> None:
    write_rota(
        in_tmp / "rota", absences=ABSENCES.encode() + b"hv-kpatel,2027-02-01,2027-02-02,\x81\n"
    )
    expected = [
        "rota/absences.csv:1: -: the file is not UTF-8: save it from Excel as "
        '"CSV UTF-8 (Comma delimited)"',
        "rota/absences.csv:3: -: not UTF-8: byte 0x81 at position 33; not Windows-1252 either",
    ]
    assert problems_of(["rota"]) == expected
    with pytest.raises(RotaImportError) as caught:
        read_rota_files(["rota"], LONDON, cp1252=True)
    assert [str(p) for p in caught.value.problems] == expected


def test_a_utf16_file_is_named_with_the_fix(in_tmp: Path) -> None:
    write_rota(in_tmp / "rota", absences=ABSENCES.encode("utf-16"))
    assert problems_of(["rota"]) == [
        'rota/absences.csv:1: -: a UTF-16 file (Excel\'s "Unicode Text"); save it as '
        '"CSV UTF-8 (Comma delimited)"'
    ]


def test_rows_of_empty_cells_as_spreadsheets_write_them_are_skipped(in_tmp: Path) -> None:
    write_rota(in_tmp / "rota", absences=ABSENCES + ",,,\n , ,,\n,,,\n")
    batch = read_rota_files(["rota/absences.csv"], LONDON)
    assert len(batch.absences) == 1


# --- control characters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("char", "name"),
    [
        ("\x00", "NUL (U+0000)"),
        ("\t", "a tab (U+0009)"),
        ("\x1b", "ESC (U+001B)"),
        ("\x7f", "DEL (U+007F)"),
        ("\x85", "a control character (U+0085)"),
        ("\u2028", "a line separator (U+2028)"),
    ],
)
def test_a_control_character_in_any_cell_is_refused_with_its_place(
    in_tmp: Path, char: str, name: str
) -> None:
    people = PEOPLE.replace("Amy Carter", f"Amy{char}Carter")
    shifts = SHIFTS.replace("edt_worker", f"edt_{char}worker")
    write_rota(in_tmp / "rota", teams=TEAMS, people=people, shifts=shifts)
    assert problems_of(["rota"]) == [
        f"rota/people.csv:3: name: {name} at character 4; {CONTROL}",
        f"rota/shifts.csv:3: role: {name} at character 5; {CONTROL}",
    ]


def test_a_control_character_in_the_header_or_an_unused_cell_is_refused(in_tmp: Path) -> None:
    write_rota(in_tmp / "a", absences="person_id,start,end,reason\x00\n")
    assert problems_of(["a"]) == [
        f"a/absences.csv:1: header: NUL (U+0000) at character 7; {CONTROL}"
    ]
    write_rota(in_tmp / "b", absences=ABSENCES + 'hv-kpatel,2027-02-01,2027-02-02,"a\r\nb"\n')
    assert problems_of(["b"]) == [
        f"b/absences.csv:3: reason: a carriage return (U+000D) at character 2; {CONTROL}"
    ]


# --- workbooks ----------------------------------------------------------------------------------


def test_a_workbook_saved_by_excel_reads_as_its_csv_files(in_tmp: Path) -> None:
    write_rota(in_tmp / "rota", **BASE)
    write_workbook(in_tmp / "rota.xlsx", BASE, titles={"teams": "Teams", "shifts": " shifts "})
    from_csv = read_rota_files(["rota"], LONDON)
    from_workbook = read_rota_files(["rota.xlsx"], LONDON)
    for kind in ("teams", "people", "shifts", "absences", "closures"):
        assert [r[1:-1] for r in getattr(from_workbook, kind)] == [
            r[1:-1] for r in getattr(from_csv, kind)
        ], kind
    assert from_workbook.displays() == (
        "rota.xlsx:Teams",
        "rota.xlsx:people",
        "rota.xlsx: shifts ",
        "rota.xlsx:absences",
        "rota.xlsx:closures",
    )


def test_workbook_problems_name_file_sheet_and_row(in_tmp: Path) -> None:
    path = write_workbook(in_tmp / "rota.xlsx", {"teams": TEAMS, "people": PEOPLE})
    workbook = openpyxl.load_workbook(path)
    people = workbook["people"]
    people["C3"] = "#N/A"  # a failed lookup formula's cached result
    people["B4"] = datetime(2026, 1, 2)  # Excel took an entry for a date
    people["J5"] = "stray"  # right of the header
    people["B6"] = "Kiran_x0000_Patel"  # how a workbook stores a character XML cannot hold
    workbook.create_sheet("Notes")
    workbook.save(path)
    assert problems_of(["rota.xlsx"]) == [
        "rota.xlsx:1: -: unknown sheet 'Notes' (expected sheets named teams, people, shifts, "
        "absences, closures); remove or rename it",
        "rota.xlsx:people:3: slack_user: the cell shows Excel's error #N/A; fix the formula or "
        "type the value",
        "rota.xlsx:people:4: name: Excel stored a date or time here; format the column as Text",
        "rota.xlsx:people:5: -: a value in column 10, right of the header",
        f"rota.xlsx:people:6: name: NUL (U+0000) at character 6; {CONTROL}",
    ]


def test_workbook_date_cells_and_text_dates_both_read(in_tmp: Path) -> None:
    path = write_workbook(in_tmp / "rota.xlsx", {"shifts": SHIFTS, "absences": ABSENCES})
    workbook = openpyxl.load_workbook(path)
    workbook["shifts"]["C3"] = "27/12/2026 09:00"  # typed as text in a UK sheet
    workbook["shifts"]["D3"] = "2026-12-27T17:00"
    workbook["absences"]["B2"] = datetime(2026, 12, 21, 9, 30)
    workbook.save(path)
    with pytest.raises(RotaImportError) as caught:
        read_rota_files(["rota.xlsx"], LONDON)
    assert [str(p) for p in caught.value.problems] == [
        "rota.xlsx:absences:2: start: a date and time; give the date alone"
    ]
    workbook["absences"]["B2"] = datetime(2026, 12, 21)
    workbook.save(path)
    batch = read_rota_files(["rota.xlsx"], LONDON)
    assert batch.shifts[1].start_at == datetime(2026, 12, 27, 9, 0, tzinfo=UTC)
    assert batch.absences[0].start_date == date(2026, 12, 21)


def test_a_kind_in_a_workbook_and_a_csv_file_is_given_twice(in_tmp: Path) -> None:
    write_rota(in_tmp / "rota", teams=TEAMS)
    write_workbook(in_tmp / "rota.xlsx", {"teams": TEAMS})
    assert problems_of(["rota.xlsx", "rota"]) == [
        "rota/teams.csv:1: -: the teams are given twice (also rota.xlsx:teams); give each kind once"
    ]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("rota.xlsx", b"not a zip", "cannot read the workbook (File is not a zip file); save "
         "it again as .xlsx"),
        ("rota.xls", b"\xd0\xcf\x11\xe0", "an Excel 97-2003 workbook: save it as an Excel "
         "Workbook (.xlsx), or as CSV files"),
        ("rota.ods", b"PK", "an OpenDocument spreadsheet: save it as an Excel Workbook "
         "(.xlsx), or as CSV files"),
    ],
)  # fmt: skip
def test_files_that_are_not_workbooks_are_named_with_the_fix(
    in_tmp: Path, name: str, content: bytes, message: str
) -> None:
    (in_tmp / name).write_bytes(content)
    assert problems_of([name]) == [f"{name}:1: -: {message}"]
