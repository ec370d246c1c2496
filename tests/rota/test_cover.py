"""Gaps in the alert roles' cover: pure intervals, and from the store on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from rota.cover import CoverGap, cover_gaps, find_cover_gaps
from rota.store import RotaStore
from tests.rota.factories import LONDON, add_person, add_shift, add_team, local


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_a_window_without_shifts_is_one_gap_per_role() -> None:
    start, end = utc(2026, 12, 20, 10), utc(2027, 1, 3, 10)
    assert cover_gaps({}, ["edt_manager", "police_dau"], start, end) == [
        CoverGap("edt_manager", start, end),
        CoverGap("police_dau", start, end),
    ]


def test_touching_and_overlapping_shifts_leave_only_the_real_holes() -> None:
    shifts = {
        "edt_manager": [
            (utc(2026, 12, 18, 17), utc(2026, 12, 21, 9)),  # began before the window
            (utc(2026, 12, 21, 17), utc(2026, 12, 22, 9)),
            (utc(2026, 12, 22, 9), utc(2026, 12, 22, 17)),  # touches both neighbours
            (utc(2026, 12, 22, 17), utc(2026, 12, 23, 9)),
            (utc(2026, 12, 22, 20), utc(2026, 12, 23, 8)),  # inside another
            (utc(2026, 12, 24, 12), utc(2026, 12, 29, 9)),  # runs past the window
        ]
    }
    start, end = utc(2026, 12, 20, 10), utc(2026, 12, 27, 10)
    assert cover_gaps(shifts, ["edt_manager", "edt_manager"], start, end) == [
        CoverGap("edt_manager", utc(2026, 12, 21, 9), utc(2026, 12, 21, 17)),
        CoverGap("edt_manager", utc(2026, 12, 23, 9), utc(2026, 12, 24, 12)),
    ]


def test_a_gap_reads_in_local_time_across_the_clock_change() -> None:
    gap = CoverGap("edt_manager", local(2026, 10, 24, 19), local(2026, 10, 25, 7))
    assert gap.length == timedelta(hours=13)
    assert gap.describe(LONDON) == (
        "edt_manager: nobody on shift from Sat 24 Oct 2026 19:00 to Sun 25 Oct 2026 07:00 (13 h)"
    )


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        cover_gaps({}, ["edt_manager"], datetime(2026, 12, 20), utc(2026, 12, 21))


def test_the_store_counts_only_active_holders_of_the_alert_roles(session: Session) -> None:
    add_team(session, "edt", hours="none", agency_type="social_care")
    add_person(session, "edt-raj", "edt")
    add_person(session, "edt-gone", "edt", active=False)
    add_shift(session, "edt-raj", "edt_manager", local(2026, 12, 21, 17), local(2026, 12, 24, 9))
    add_shift(session, "edt-gone", "edt_manager", local(2026, 12, 24, 9), local(2026, 12, 24, 17))
    add_shift(session, "edt-raj", "edt_manager", local(2026, 12, 24, 17), local(2026, 12, 29, 9))
    add_shift(session, "edt-raj", "edt_worker", local(2026, 12, 24, 9), local(2026, 12, 24, 17))
    session.commit()
    gaps = find_cover_gaps(
        RotaStore(session), ["edt_manager"], local(2026, 12, 22, 12), local(2026, 12, 28, 12)
    )
    assert gaps == [CoverGap("edt_manager", local(2026, 12, 24, 9), local(2026, 12, 24, 17))]
