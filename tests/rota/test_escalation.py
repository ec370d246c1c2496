"""Escalation decisions at exact instants, in the recipient team's working time (docs/timing.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from bot.settings import EscalationPolicy
from rota.escalation import (
    BREACH,
    ESCALATE,
    ESCALATE_CHANNEL,
    REMIND,
    STEPS,
    EscalationState,
    decide,
    escalation_schedule,
)
from rota.hours import parse_hours
from rota.models import Closure, Team
from rota.worktime import WorkingTime

LONDON = ZoneInfo("Europe/London")
POLICY = EscalationPolicy()


def at(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """An aware Europe/London instant."""
    return datetime(year, month, day, hour, minute, tzinfo=LONDON)


@dataclass
class FakeShift:
    start_at: datetime
    end_at: datetime


class FakeStore:
    """The few RotaStore queries WorkingTime makes, answered from lists (no database)."""

    def __init__(
        self, closures: list[Closure] | None = None, shifts: list[FakeShift] | None = None
    ) -> None:
        self.closures = closures or []
        self.shifts = shifts or []

    def closures_between(self, first: date, last: date, applies_to: set[str]) -> list[Closure]:
        return [c for c in self.closures if first <= c.date <= last and c.applies_to in applies_to]

    def shifts_for_person(self, person_id: str, start: datetime, end: datetime) -> list[FakeShift]:
        return [s for s in self.shifts if s.start_at < end and s.end_at > start]


def office_hours(store: FakeStore | None = None, hours: str = "Mon-Fri 09:00-17:00") -> WorkingTime:
    """The working time of a member of an English team with these hours."""
    team = Team(team_id="hv-north", region="england", hours=hours)
    return WorkingTime(
        tz=LONDON,
        hours=parse_hours(hours),
        region="england",
        team=team,
        store=store,  # type: ignore[arg-type]
    )


def schedule(sent_at: datetime, working_time: WorkingTime, policy=POLICY) -> list[tuple[str, str]]:
    """The schedule as (step, local ISO time with offset), easy to compare exactly."""
    return [
        (step, instant.astimezone(LONDON).isoformat())
        for step, instant in escalation_schedule(sent_at, working_time, policy)
    ]


# The schedule ---------------------------------------------------------------------------------


def test_sent_monday_morning_steps_fall_the_same_day() -> None:
    assert schedule(at(2026, 11, 16, 9), office_hours()) == [
        (REMIND, "2026-11-16T10:00:00+00:00"),
        (ESCALATE, "2026-11-16T11:00:00+00:00"),
        (ESCALATE_CHANNEL, "2026-11-16T13:00:00+00:00"),
        (BREACH, "2026-11-16T17:00:00+00:00"),
    ]


def test_sent_friday_afternoon_before_a_bank_holiday_reminds_on_tuesday() -> None:
    # Mon 30 Aug 2027 is the English late summer bank holiday: 30 minutes of Friday count,
    # the rest runs from Tuesday 09:00, not from 17:30 on Friday.
    assert schedule(at(2027, 8, 27, 16, 30), office_hours()) == [
        (REMIND, "2027-08-31T09:30:00+01:00"),
        (ESCALATE, "2027-08-31T10:30:00+01:00"),
        (ESCALATE_CHANNEL, "2027-08-31T12:30:00+01:00"),
        (BREACH, "2027-08-31T17:00:00+01:00"),
    ]


def test_sent_friday_afternoon_reminds_next_working_morning() -> None:
    assert schedule(at(2026, 11, 13, 16, 30), office_hours())[0] == (
        REMIND,
        "2026-11-16T09:30:00+00:00",
    )


def test_steps_across_the_october_clock_change() -> None:
    sent = datetime.fromisoformat("2026-10-23T16:30:00+01:00")
    assert schedule(sent, office_hours()) == [
        (REMIND, "2026-10-26T09:30:00+00:00"),
        (ESCALATE, "2026-10-26T10:30:00+00:00"),
        (ESCALATE_CHANNEL, "2026-10-26T12:30:00+00:00"),
        (BREACH, "2026-10-26T17:00:00+00:00"),
    ]


def test_a_part_day_closure_is_not_working_time() -> None:
    closure = Closure(
        date=date(2026, 11, 16), applies_to="all", from_time=time(10, 30), to_time=time(12)
    )
    assert schedule(at(2026, 11, 16, 9), office_hours(FakeStore([closure]))) == [
        (REMIND, "2026-11-16T10:00:00+00:00"),
        (ESCALATE, "2026-11-16T12:30:00+00:00"),  # 90 min before the closure, 30 after
        (ESCALATE_CHANNEL, "2026-11-16T14:30:00+00:00"),
        (BREACH, "2026-11-16T17:00:00+00:00"),
    ]


def test_christmas_eve_afternoon_closure_moves_steps_past_the_bank_holidays() -> None:
    # Closed from 14:00 on Thu 24 Dec 2026; Fri 25 is Christmas Day; Boxing Day falls on a
    # Saturday, so Mon 28 Dec is its substitute: the next working day is Tue 29 Dec.
    closure = Closure(
        date=date(2026, 12, 24), applies_to="england", from_time=time(14), to_time=None
    )
    assert schedule(at(2026, 12, 24, 13), office_hours(FakeStore([closure]))) == [
        (REMIND, "2026-12-24T14:00:00+00:00"),
        (ESCALATE, "2026-12-29T10:00:00+00:00"),
        (ESCALATE_CHANNEL, "2026-12-29T12:00:00+00:00"),
        (BREACH, "2026-12-29T17:00:00+00:00"),
    ]


def test_a_channel_step_at_closing_time_breaches_at_once_that_day() -> None:
    # Sent 13:00: the 240th working minute ends at 17:00, the end of Monday's working day.
    assert schedule(at(2026, 11, 16, 13), office_hours())[2:] == [
        (ESCALATE_CHANNEL, "2026-11-16T17:00:00+00:00"),
        (BREACH, "2026-11-16T17:00:00+00:00"),
    ]


def test_a_closure_ending_the_day_early_brings_the_breach_forward() -> None:
    closure = Closure(
        date=date(2026, 11, 16), applies_to="hv-north", from_time=time(15), to_time=None
    )
    assert schedule(at(2026, 11, 16, 9), office_hours(FakeStore([closure])))[3] == (
        BREACH,
        "2026-11-16T15:00:00+00:00",
    )


def test_shift_only_recipient_counts_wall_clock_minutes_and_breaches_at_shift_end() -> None:
    shift = FakeShift(at(2026, 11, 13, 20), at(2026, 11, 14, 8))
    wall = WorkingTime(tz=LONDON, store=FakeStore(shifts=[shift]), person_id="pc-jones")  # type: ignore[arg-type]
    assert schedule(at(2026, 11, 14, 2), wall) == [
        (REMIND, "2026-11-14T03:00:00+00:00"),
        (ESCALATE, "2026-11-14T04:00:00+00:00"),
        (ESCALATE_CHANNEL, "2026-11-14T06:00:00+00:00"),
        (BREACH, "2026-11-14T08:00:00+00:00"),
    ]


def test_shift_only_minutes_are_real_minutes_across_the_spring_clock_change() -> None:
    # 00:30 GMT on Sun 29 Mar 2026; clocks go forward at 01:00 GMT, so an hour later is 02:30 BST.
    wall = WorkingTime(tz=LONDON)
    steps = schedule(datetime.fromisoformat("2026-03-29T00:30:00+00:00"), wall)
    assert steps[0] == (REMIND, "2026-03-29T02:30:00+01:00")
    assert steps[2] == (ESCALATE_CHANNEL, "2026-03-29T05:30:00+01:00")


def test_offsets_come_from_the_policy() -> None:
    policy = EscalationPolicy(reminder_minutes=30, escalate_minutes=90, channel_minutes=180)
    assert [s for _, s in schedule(at(2026, 11, 16, 9), office_hours(), policy)] == [
        "2026-11-16T09:30:00+00:00",
        "2026-11-16T10:30:00+00:00",
        "2026-11-16T12:00:00+00:00",
        "2026-11-16T17:00:00+00:00",
    ]


# Decisions ------------------------------------------------------------------------------------


def test_waits_until_the_reminder_then_reminds_on_time() -> None:
    state = EscalationState(sent_at=at(2026, 11, 16, 9))
    wt = office_hours()
    before = decide(state, now=at(2026, 11, 16, 9, 59), working_time=wt, policy=POLICY)
    assert (before.action, before.step, before.next_check) == ("wait", REMIND, at(2026, 11, 16, 10))
    on_time = decide(state, now=at(2026, 11, 16, 10), working_time=wt, policy=POLICY)
    assert (on_time.action, on_time.due_at, on_time.late) == (REMIND, at(2026, 11, 16, 10), False)
    assert on_time.next_check == at(2026, 11, 16, 11)


def test_each_step_in_turn_at_its_instant() -> None:
    wt = office_hours()
    state = EscalationState(sent_at=at(2026, 11, 16, 9))
    performed = []
    for hour in (10, 11, 13, 17):
        decision = decide(state, now=at(2026, 11, 16, hour), working_time=wt, policy=POLICY)
        assert decision.performs and not decision.late
        performed.append((decision.step, decision.due_at))
        state = state.with_done(decision.step)
    assert performed == [
        (REMIND, at(2026, 11, 16, 10)),
        (ESCALATE, at(2026, 11, 16, 11)),
        (ESCALATE_CHANNEL, at(2026, 11, 16, 13)),
        (BREACH, at(2026, 11, 16, 17)),
    ]
    final = decide(state, now=at(2026, 11, 16, 18), working_time=wt, policy=POLICY)
    assert (final.action, final.reason, final.next_check) == ("stop", "finished", None)


def test_catch_up_after_downtime_performs_each_missed_step_once_in_order() -> None:
    # Down from 09:30 to 18:00: every step is due; each is returned once, earliest first, late.
    wt = office_hours()
    state = EscalationState(sent_at=at(2026, 11, 16, 9))
    now = at(2026, 11, 16, 18)
    performed = []
    while (decision := decide(state, now=now, working_time=wt, policy=POLICY)).performs:
        assert decision.late
        performed.append(decision.step)
        state = state.with_done(decision.step)
    assert performed == list(STEPS)
    assert decision.reason == "finished"


def test_catch_up_stops_at_the_first_step_not_yet_due() -> None:
    wt = office_hours()
    state = EscalationState(sent_at=at(2026, 11, 16, 9))
    now = at(2026, 11, 16, 12)
    first = decide(state, now=now, working_time=wt, policy=POLICY)
    assert (first.step, first.late, first.next_check) == (REMIND, True, at(2026, 11, 16, 11))
    second = decide(state.with_done(REMIND), now=now, working_time=wt, policy=POLICY)
    assert (second.step, second.late) == (ESCALATE, True)
    third = decide(
        state.with_done(REMIND).with_done(ESCALATE), now=now, working_time=wt, policy=POLICY
    )
    assert (third.action, third.step, third.due_at) == (
        "wait",
        ESCALATE_CHANNEL,
        at(2026, 11, 16, 13),
    )


def test_a_few_seconds_after_the_instant_is_not_late() -> None:
    state = EscalationState(sent_at=at(2026, 11, 16, 9))
    decision = decide(
        state,
        now=at(2026, 11, 16, 10) + timedelta(seconds=20),
        working_time=office_hours(),
        policy=POLICY,
    )
    assert decision.step == REMIND and not decision.late


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (EscalationState(sent_at=at(2026, 11, 16, 9), responded=True), "responded"),
        (EscalationState(sent_at=at(2026, 11, 16, 9), referral_closed=True), "referral_closed"),
        (EscalationState(sent_at=at(2026, 11, 16, 9), target_cancelled=True), "target_cancelled"),
    ],
)
def test_stops_when_responded_closed_or_cancelled(state: EscalationState, reason: str) -> None:
    decision = decide(state, now=at(2026, 11, 16, 18), working_time=office_hours(), policy=POLICY)
    assert (decision.action, decision.step, decision.reason, decision.next_check) == (
        "stop",
        None,
        reason,
        None,
    )


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError):
        decide(
            EscalationState(sent_at=at(2026, 11, 16, 9)),
            now=datetime(2026, 11, 16, 10),  # deliberately naive
            working_time=office_hours(),
            policy=POLICY,
        )
