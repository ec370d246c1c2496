"""The working-time calendar on plain values: bank holidays, closures, clock changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rota.calendar import (
    Availability,
    ClosureWindow,
    bank_holidays,
    closures_by_day,
    is_bank_holiday,
    is_working_day,
    local_instant,
    merge,
    subtract,
    working_periods,
)
from rota.hours import parse_hours

LONDON = ZoneInfo("Europe/London")
OFFICE = parse_hours("")


def iso(t: datetime) -> str:
    return t.astimezone(LONDON).isoformat()


def periods_iso(periods: list[tuple[datetime, datetime]]) -> list[tuple[str, str]]:
    return [(iso(s), iso(e)) for s, e in periods]


@pytest.mark.parametrize(
    ("day", "region", "holiday"),
    [
        (date(2026, 12, 25), "england", True),
        (date(2026, 12, 28), "england", True),  # Boxing Day substitute
        (date(2027, 3, 26), "scotland", True),  # Good Friday
        (date(2027, 3, 29), "england", True),  # Easter Monday
        (date(2027, 3, 29), "wales", True),
        (date(2027, 3, 29), "northern_ireland", True),
        (date(2027, 3, 29), "scotland", False),
        (date(2027, 7, 12), "northern_ireland", True),
        (date(2027, 7, 12), "england", False),
        (date(2027, 7, 12), "scotland", False),
        (date(2027, 1, 4), "scotland", True),  # 2 January substitute
        (date(2027, 1, 4), "england", False),
        (date(2026, 11, 30), "scotland", True),  # St Andrew's Day
        (date(2027, 3, 17), "northern_ireland", True),
        (date(2027, 3, 17), "england", False),
    ],
)
def test_bank_holidays_of_each_nation(day: date, region: str, holiday: bool) -> None:
    assert is_bank_holiday(day, region) is holiday
    assert is_working_day(day, region) is (not holiday)


def test_bank_holidays_are_cached_per_region_and_year() -> None:
    assert bank_holidays("england", 2026) is bank_holidays("england", 2026)


def test_unknown_region_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown region"):
        is_bank_holiday(date(2026, 1, 1), "mars")


def test_weekends_are_not_working_days() -> None:
    assert not is_working_day(date(2026, 10, 24), "england")  # Saturday
    assert not is_working_day(date(2026, 10, 25), "england")  # Sunday
    assert is_working_day(date(2026, 10, 26), "england")


def test_local_instant_winter_and_summer_offsets() -> None:
    assert iso(local_instant(date(2026, 12, 29), time(9), LONDON)) == "2026-12-29T09:00:00+00:00"
    assert iso(local_instant(date(2027, 3, 29), time(9), LONDON)) == "2027-03-29T09:00:00+01:00"


def test_local_instant_skipped_time_moves_forward_to_the_end_of_the_gap() -> None:
    # 01:30 does not exist on Sun 28 Mar 2027: the first existing wall time is 02:00 BST.
    moved = local_instant(date(2027, 3, 28), time(1, 30), LONDON)
    assert moved == datetime(2027, 3, 28, 1, 0, tzinfo=UTC)
    assert iso(moved) == "2027-03-28T02:00:00+01:00"


def test_local_instant_ambiguous_time_is_the_first_occurrence() -> None:
    first = local_instant(date(2026, 10, 25), time(1, 30), LONDON)
    assert first == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_local_instant_end_of_day() -> None:
    assert local_instant(date(2026, 10, 24), None, LONDON) == datetime(
        2026, 10, 24, 23, 0, tzinfo=UTC
    )
    assert local_instant(date(2026, 10, 24), time.max, LONDON) == local_instant(
        date(2026, 10, 25), time(0), LONDON
    )


def test_working_periods_office_day() -> None:
    periods = working_periods(date(2026, 12, 29), OFFICE, "england", [], False, LONDON)
    assert periods_iso(periods) == [("2026-12-29T09:00:00+00:00", "2026-12-29T17:00:00+00:00")]


def test_working_periods_none_on_holidays_weekends_and_absence() -> None:
    assert working_periods(date(2026, 12, 28), OFFICE, "england", [], False, LONDON) == []
    assert working_periods(date(2026, 12, 26), OFFICE, "england", [], False, LONDON) == []
    assert working_periods(date(2026, 12, 29), OFFICE, "england", [], True, LONDON) == []
    assert (
        working_periods(date(2026, 12, 29), parse_hours("none"), "england", [], False, LONDON) == []
    )


def test_part_day_closure_removes_only_its_hours() -> None:
    eve = date(2026, 12, 24)
    closures = [ClosureWindow(eve, time(12), None)]
    periods = working_periods(eve, OFFICE, "england", closures, False, LONDON)
    assert periods_iso(periods) == [("2026-12-24T09:00:00+00:00", "2026-12-24T12:00:00+00:00")]
    middle = [ClosureWindow(eve, time(12), time(13))]
    periods = working_periods(eve, OFFICE, "england", middle, False, LONDON)
    assert periods_iso(periods) == [
        ("2026-12-24T09:00:00+00:00", "2026-12-24T12:00:00+00:00"),
        ("2026-12-24T13:00:00+00:00", "2026-12-24T17:00:00+00:00"),
    ]
    morning = [ClosureWindow(eve, None, time(10, 30))]
    periods = working_periods(eve, OFFICE, "england", morning, False, LONDON)
    assert periods_iso(periods) == [("2026-12-24T10:30:00+00:00", "2026-12-24T17:00:00+00:00")]
    whole = [ClosureWindow(eve)]
    assert working_periods(eve, OFFICE, "england", whole, False, LONDON) == []


def test_split_hours_and_per_day_hours() -> None:
    hours = parse_hours("Mon-Thu 08:30-16:30; Fri 08:30-16:00")
    friday = working_periods(date(2027, 1, 8), hours, "england", [], False, LONDON)
    assert periods_iso(friday) == [("2027-01-08T08:30:00+00:00", "2027-01-08T16:00:00+00:00")]


def test_merge_and_subtract() -> None:
    a = datetime(2026, 1, 1, 9, tzinfo=UTC)
    h = timedelta(hours=1)
    assert merge([(a + 2 * h, a + 3 * h), (a, a + h), (a + h, a + 2 * h)]) == [(a, a + 3 * h)]
    assert subtract([(a, a + 4 * h)], [(a + h, a + 2 * h)]) == [(a, a + h), (a + 2 * h, a + 4 * h)]
    assert subtract([(a, a + h)], [(a - h, a + 2 * h)]) == []


def test_seventeen_hundred_is_an_exclusive_end() -> None:
    availability = Availability(hours=OFFICE, region="england")
    five = datetime(2026, 12, 29, 17, tzinfo=UTC)
    assert availability.is_at_work(five - timedelta(microseconds=1), LONDON)
    assert not availability.is_at_work(five, LONDON)
    assert availability.next_at_work(five, five + timedelta(days=7), LONDON) == datetime(
        2026, 12, 30, 9, tzinfo=UTC
    )


def test_next_at_work_across_the_october_clock_change() -> None:
    availability = Availability(hours=OFFICE, region="england")
    saturday = datetime(2026, 10, 24, 22, tzinfo=LONDON)
    assert iso(saturday) == "2026-10-24T22:00:00+01:00"
    due = availability.next_at_work(saturday, saturday + timedelta(days=7), LONDON)
    assert due is not None and iso(due) == "2026-10-26T09:00:00+00:00"


def test_next_at_work_across_the_march_clock_change() -> None:
    availability = Availability(hours=OFFICE, region="england")
    friday = datetime(2026, 3, 27, 18, tzinfo=LONDON)
    due = availability.next_at_work(friday, friday + timedelta(days=7), LONDON)
    assert due is not None and iso(due) == "2026-03-30T09:00:00+01:00"


def test_next_at_work_respects_the_horizon_inclusively() -> None:
    availability = Availability(hours=OFFICE, region="england")
    t = datetime(2026, 12, 24, 18, tzinfo=UTC)
    due = datetime(2026, 12, 29, 9, tzinfo=UTC)
    assert availability.next_at_work(t, due, LONDON) == due
    assert availability.next_at_work(t, due - timedelta(seconds=1), LONDON) is None


def test_shifts_override_calendar_and_absence() -> None:
    start = datetime(2026, 12, 25, 10, tzinfo=UTC)
    availability = Availability(
        hours=OFFICE,
        region="england",
        absences=[(date(2026, 12, 20), date(2027, 1, 10))],
        shifts=[(start, start + timedelta(hours=2))],
    )
    assert availability.is_at_work(start, LONDON)
    assert not availability.is_at_work(datetime(2026, 12, 29, 10, tzinfo=UTC), LONDON)


def test_closures_by_day_groups_windows() -> None:
    a = ClosureWindow(date(2026, 8, 3))
    b = ClosureWindow(date(2026, 8, 3), time(9), time(10))
    assert closures_by_day([a, b]) == {date(2026, 8, 3): [a, b]}


# The fast paths of Availability against its plain definition -----------------------------

_HOURS_TEXTS = ["", "none", "Mon-Wed 09:00-17:00", "Sat-Sun 00:00-24:00", "Mon-Fri 01:00-02:30"]
_QUARTER = timedelta(minutes=15)
_BASES = [(3, 27), (10, 23), (12, 22)]  # both clock changes of 2026 and Christmas


def _reference_next_at_work(
    availability: Availability, t: datetime, until: datetime
) -> datetime | None:
    """The first merged period ending after t, as the calendar defines it."""
    for start, end in availability.periods(t, until + timedelta(minutes=1), LONDON):
        if end > t:
            candidate = max(start, t)
            return candidate if candidate <= until else None
    return None


@st.composite
def _availabilities(draw: st.DrawFn) -> tuple[Availability, datetime]:
    # Quarter hours of UTC over six days after a base date.
    base = draw(st.sampled_from([datetime(2026, m, d, tzinfo=UTC) for m, d in _BASES]))
    t = base + _QUARTER * draw(st.integers(0, 4 * 24 * 6))
    day = t.date()
    closures = closures_by_day(
        ClosureWindow(day + timedelta(days=draw(st.integers(-1, 6))), *window)
        for window in draw(
            st.lists(
                st.sampled_from([(None, None), (time(12), None), (time(1), time(10))]),
                max_size=3,
            )
        )
    )
    absences = [
        (first, first + timedelta(days=draw(st.integers(0, 3))))
        for first in draw(
            st.lists(st.integers(-2, 7).map(lambda n: day + timedelta(days=n)), max_size=2)
        )
    ]
    shifts = []
    for _ in range(draw(st.integers(0, 3))):
        start = t + _QUARTER * draw(st.integers(-40, 7 * 96))
        shifts.append((start, start + _QUARTER * draw(st.integers(0, 60))))
    availability = Availability(
        hours=parse_hours(draw(st.sampled_from(_HOURS_TEXTS))),
        region=draw(st.sampled_from(["england", "scotland", "northern_ireland"])),
        closures=closures,
        absences=absences,
        shifts=shifts,
    )
    return availability, t


@settings(max_examples=300, deadline=None)
@given(case=_availabilities(), days=st.integers(0, 7), offset=st.integers(-2, 2))
def test_next_at_work_and_is_at_work_agree_with_the_merged_periods(
    case: tuple[Availability, datetime], days: int, offset: int
) -> None:
    availability, t = case
    until = t + timedelta(days=days) + _QUARTER * offset
    assert availability.next_at_work(t, until, LONDON) == _reference_next_at_work(
        availability, t, until
    )
    covered = any(s <= t < e for s, e in availability.periods(t, t + _QUARTER, LONDON))
    assert availability.is_at_work(t, LONDON) is covered


def test_a_day_already_worked_out_still_loses_its_closed_hours() -> None:
    eve = date(2026, 12, 24)
    assert periods_iso(working_periods(eve, OFFICE, "england", [], False, LONDON)) == [
        ("2026-12-24T09:00:00+00:00", "2026-12-24T17:00:00+00:00")
    ]
    closed = [ClosureWindow(eve, time(12), None)]
    assert periods_iso(working_periods(eve, OFFICE, "england", closed, False, LONDON)) == [
        ("2026-12-24T09:00:00+00:00", "2026-12-24T12:00:00+00:00")
    ]
    assert working_periods(eve, OFFICE, "england", [], True, LONDON) == []
    # And the open day is unchanged for the next caller.
    assert len(working_periods(eve, OFFICE, "england", [], False, LONDON)) == 1
