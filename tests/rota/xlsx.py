"""Workbooks written with openpyxl the way Excel saves a coordinator's rota."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time
from pathlib import Path

import openpyxl
from openpyxl.styles import Font

# How Excel (UK) formats the cells it recognises as dates and times.
UK_DATETIME = "dd/mm/yyyy hh:mm"
UK_DATE = "dd/mm/yyyy"
TIME = "hh:mm"


def excel_value(kind: str, column: str, text: str) -> object:
    """A CSV value as Excel holds it once typed: dates and times as such, numbers as numbers."""
    if not text:
        return None
    if kind == "shifts" and column in ("start", "end"):
        return datetime.fromisoformat(text)
    if (kind, column) in (("absences", "start"), ("absences", "end"), ("closures", "date")):
        return date.fromisoformat(text)
    if kind == "closures" and column in ("from", "to"):
        return time.fromisoformat(text)
    if text.isdigit():
        return int(text)
    return text


def write_workbook(path: Path, sheets: dict[str, str], *, titles: dict[str, str] | None = None):
    """A workbook with one sheet per kind from CSV texts, saved as Excel would save it.

    Header row in bold; date, date-time and time cells with UK formats; digits as numbers;
    and a formatted but empty row after the data, as Excel keeps one.
    """
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for kind, content in sheets.items():
        sheet = workbook.create_sheet((titles or {}).get(kind, kind))
        rows = list(csv.reader(io.StringIO(content)))
        header = rows[0]
        sheet.append(header)
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for row in rows[1:]:
            sheet.append([excel_value(kind, c, v) for c, v in zip(header, row, strict=True)])
            for cell in sheet[sheet.max_row]:
                if isinstance(cell.value, datetime):
                    cell.number_format = UK_DATETIME
                elif isinstance(cell.value, date):
                    cell.number_format = UK_DATE
                elif isinstance(cell.value, time):
                    cell.number_format = TIME
        trailing = sheet.max_row + 1
        for column in range(1, len(header) + 1):
            sheet.cell(row=trailing, column=column).font = Font(italic=True)
    workbook.save(path)
    return path
