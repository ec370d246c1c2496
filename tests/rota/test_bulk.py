"""Shifts in bulk: the spill, the first import that builds its indexes after, the staged diff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, sessionmaker

from rota.apply import apply_rota
from rota.bulk import ShiftSpill, location, stored_text
from rota.importer import read_rota_files
from rota.models import Shift
from tests.rota.test_importer import BASE, LONDON, NOW, import_folder, snapshot, write_rota


def shift_indexes(factory: sessionmaker[Session]) -> list[tuple[str, list[str]]]:
    with factory() as session:
        found = inspect(session.connection()).get_indexes("shifts")
    return sorted((index["name"], index["column_names"]) for index in found)


EXPECTED_INDEXES = [
    ("ix_shifts_person_start", ["person_id", "start_at"]),
    ("ix_shifts_role_start", ["role", "start_at", "end_at", "person_id"]),
    ("ix_shifts_start", ["start_at"]),
]


def many_shifts(count: int) -> str:
    first = datetime(2027, 1, 1, 17)
    rows = (
        f"edt-amy,edt_worker,{first + timedelta(days=n):%Y-%m-%dT%H:%M},"
        f"{first + timedelta(days=n, hours=16):%Y-%m-%dT%H:%M}\n"
        for n in range(count)
    )
    return "person_id,role,start,end\n" + "".join(rows)


def test_a_first_import_builds_the_indexes_after_loading(
    tmp_path: Path, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rota.bulk._INDEX_AFTER_ROWS", 0)
    assert shift_indexes(session_factory) == EXPECTED_INDEXES
    result = import_folder(
        session_factory, [write_rota(tmp_path / "rota", **{**BASE, "shifts": many_shifts(400)})]
    )
    assert result.counts["shifts"] == {"added": 400, "removed": 0, "unchanged": 0}
    assert shift_indexes(session_factory) == EXPECTED_INDEXES
    with session_factory() as session:
        starts = list(session.scalars(select(Shift.start_at).order_by(Shift.id).limit(2)))
    assert starts == [datetime(2027, 1, 1, 17, tzinfo=UTC), datetime(2027, 1, 2, 17, tzinfo=UTC)]


def test_a_first_import_that_fails_leaves_the_indexes_as_they_were(
    tmp_path: Path, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rota.bulk._INDEX_AFTER_ROWS", 0)
    before = snapshot(session_factory)
    batch = read_rota_files(
        [write_rota(tmp_path / "rota", **{**BASE, "shifts": many_shifts(50)})], LONDON
    )
    with pytest.raises(RuntimeError), session_factory.begin() as session:
        apply_rota(session, batch, NOW)
        raise RuntimeError("the transaction fails after the load")
    assert snapshot(session_factory) == before
    assert shift_indexes(session_factory) == EXPECTED_INDEXES


def test_the_spill_keeps_rows_in_order_and_reports_overlaps_out_of_order() -> None:
    spill = ShiftSpill()
    base = int(datetime(2027, 1, 1, tzinfo=UTC).timestamp())
    hour = 3600
    rows = [  # (line, start, end) of one person and role, not in date order
        (2, base + 10 * hour, base + 20 * hour),
        (3, base, base + 8 * hour),
        (4, base + 7 * hour, base + 9 * hour),  # overlaps line 3
        (5, base + 10 * hour, base + 20 * hour),  # duplicates line 2
    ]
    for line, start, end in rows:
        start_at = datetime.fromtimestamp(start, UTC)
        end_at = datetime.fromtimestamp(end, UTC)
        spill.add(
            "p", "r", start, end, location(0, line), stored_text(start_at), stored_text(end_at)
        )
    assert spill.count == 4
    assert [row[2] for row in spill.rows()] == [
        "2027-01-01 10:00:00.000000",
        "2027-01-01 00:00:00.000000",
        "2027-01-01 07:00:00.000000",
        "2027-01-01 10:00:00.000000",
    ]
    assert sorted(spill.overlaps()) == [
        (location(0, 2), location(0, 5), True),
        (location(0, 3), location(0, 4), False),
    ]
    spill.close()
