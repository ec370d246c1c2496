"""What routing reads of the rota (RotaStore.load_targets, read_window), on both databases:
exact holders and start instants, and a statement count that does not grow with the number
of targets."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from rota.models import Person
from rota.planner import plan_referral
from rota.queries import NEXT_STARTS, ChainPerson, ChainTeam, ShiftSpan
from rota.store import RoleShifts, RotaStore
from tests.rota.factories import (
    LONDON,
    add_absence,
    add_closure,
    add_person,
    add_shift,
    add_team,
    add_version,
    local,
    new_person,
)

HOUR = timedelta(hours=1)
T = datetime(2027, 1, 6, 12, tzinfo=UTC)  # a Wednesday


@contextmanager
def statements(session: Session) -> Iterator[list[str]]:
    """The SQL statements the session's connection runs inside the block."""
    seen: list[str] = []
    engine = session.get_bind()

    def count(_conn, _cursor, statement, *_args) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


# RoleShifts, the value ----------------------------------------------------------------------


def span(person: str, start: datetime, hours: int) -> ShiftSpan:
    return ShiftSpan(person, "police_dau", start, start + hours * HOUR)


def test_role_holder_at_the_start_is_the_earliest_started_shift_then_person() -> None:
    shifts = RoleShifts(
        T, T + 7 * 24 * HOUR, (span("b", T - 2 * HOUR, 4), span("a", T - HOUR, 8)), None, ()
    )
    assert shifts.holder(T) == "b"
    assert shifts.holder(T + 2 * HOUR) == "a"  # b's shift has ended
    assert shifts.holder(T + 7 * HOUR) is None
    assert shifts.next_held(T + HOUR) == T


def test_role_holder_after_the_start_is_whoever_starts_first() -> None:
    later = T + 5 * HOUR
    shifts = RoleShifts(T, T + 7 * 24 * HOUR, (), later, (span("c", later, 4), span("d", later, 4)))
    assert shifts.holder(T) is None
    assert shifts.holder(later - timedelta(seconds=1)) is None
    assert shifts.holder(later) == "c"
    assert shifts.next_held(later) == later
    assert shifts.next_held(later - timedelta(seconds=1)) is None


def test_role_holder_beyond_what_was_read_is_refused() -> None:
    later = T + 5 * HOUR
    shifts = RoleShifts(T, T + 7 * 24 * HOUR, (), later, (span("c", later, 4),))
    with pytest.raises(ValueError, match="outside"):
        shifts.holder(later + timedelta(seconds=1))
    with pytest.raises(ValueError, match="outside"):
        shifts.holder(T - timedelta(seconds=1))
    nobody = RoleShifts(T, T + HOUR)
    assert nobody.holder(T + HOUR) is None and nobody.next_held(T + HOUR) is None
    with pytest.raises(ValueError, match="outside"):
        nobody.holder(T + 2 * HOUR)


# read_window on the database ----------------------------------------------------------------


def near(session: Session, people: list[str], roles: list[str], start: datetime, until: datetime):
    """The people's shifts and who holds the roles from `start` (no calendar asked for)."""
    days = (start.date(), until.date())
    window = RotaStore(session).read_window(people, roles, [], start, until, days)
    return window.shifts, window.roles


@pytest.fixture
def desk(session: Session) -> Session:
    """A police desk of six officers, two of whom have left (inactive)."""
    add_team(session, "police-dau", hours="none")
    for officer in ("pc-a", "pc-b", "pc-c", "pc-d"):
        add_person(session, officer, "police-dau")
    for officer in ("pc-gone-1", "pc-gone-2"):
        add_person(session, officer, "police-dau", active=False)
    add_version(session, 1)
    return session


def test_only_the_first_start_with_an_active_holder_counts(desk: Session) -> None:
    # Three start instants after T are held only by people who left; the fourth has one
    # who left and two who are active.
    for n in range(NEXT_STARTS):
        add_shift(desk, "pc-gone-1", "police_dau", T + (n + 1) * HOUR, T + (n + 2) * HOUR)
    fourth = T + (NEXT_STARTS + 1) * HOUR
    for officer in ("pc-gone-2", "pc-d", "pc-c"):
        add_shift(desk, officer, "police_dau", fourth, fourth + 8 * HOUR)
    add_shift(desk, "pc-a", "police_dau", fourth + HOUR, fourth + 9 * HOUR)
    _, roles = near(desk, [], ["police_dau"], T, T + 7 * 24 * HOUR)
    held = roles["police_dau"]
    assert held.at_start == ()
    assert held.next_start == fourth
    assert [s.person_id for s in held.at_next] == ["pc-c", "pc-d"]
    entry = plan_referral(
        RotaStore(desk), ["role:police_dau"], T, alert_roles=(), tz=LONDON
    ).entries[0]
    assert (entry.recipient, entry.due_at) == ("pc-c", fourth)


def test_a_role_held_only_by_people_who_left_is_unroutable(desk: Session) -> None:
    for n in range(NEXT_STARTS + 2):
        add_shift(desk, "pc-gone-1", "police_dau", T + n * 24 * HOUR, T + (n * 24 + 8) * HOUR)
    _, roles = near(desk, [], ["police_dau"], T, T + 7 * 24 * HOUR)
    assert roles["police_dau"] == RoleShifts(T, T + 7 * 24 * HOUR)
    entry = plan_referral(
        RotaStore(desk), ["role:police_dau"], T, alert_roles=(), tz=LONDON
    ).entries[0]
    assert (entry.recipient, entry.via, entry.due_at) == (None, "unroutable", None)


def test_holders_at_the_start_and_shifts_ending_exactly_at_the_window_end(desk: Session) -> None:
    until = T + 7 * 24 * HOUR
    add_shift(desk, "pc-b", "police_dau", T - 3 * HOUR, T + 5 * HOUR)
    add_shift(desk, "pc-a", "police_dau", T - 3 * HOUR, T + HOUR)
    add_shift(desk, "pc-gone-1", "police_dau", T - 4 * HOUR, T + HOUR)
    add_shift(desk, "pc-c", "police_dau", T - 2 * HOUR, T)  # ends at T: not holding at T
    add_shift(desk, "pc-d", "clinic", until - HOUR, until)  # ends exactly at the window end
    add_shift(desk, "pc-d", "clinic", until + HOUR, until + 2 * HOUR)
    people, roles = near(desk, ["pc-d"], ["police_dau"], T, until)
    assert [(s.person_id, s.start_at) for s in roles["police_dau"].at_start] == [
        ("pc-a", T - 3 * HOUR),
        ("pc-b", T - 3 * HOUR),
    ]
    assert [s.start_at for s in people["pc-d"]] == [until - HOUR]


# load_targets and calendar ------------------------------------------------------------------


def test_a_deputy_or_manager_named_but_missing_is_known_to_be_missing(session: Session) -> None:
    add_team(session, "hv-north", manager="left-long-ago")
    add_person(session, "hv-a", "hv-north", deputy="nobody-here")
    add_version(session, 1)
    store = RotaStore(session)
    with statements(session) as seen:
        store.load_targets(["hv-a", "ghost"], ["hv-north", "no-team"], ["clinic"])
        assert store.chain_person("nobody-here") is None
        assert store.chain_person("left-long-ago") is None
        assert store.chain_person("ghost") is None
        assert store.chain_team("no-team") is None
        assert store.known_roles(["clinic"]) == set()
    assert len([s for s in seen if not s.startswith("BEGIN")]) == 1
    assert store.chain_person("hv-a") == ChainPerson("hv-a", "hv-north", None, "nobody-here", True)
    assert store.chain_team("hv-north") == ChainTeam(
        "hv-north", "england", None, "left-long-ago", None, True
    )


def test_rows_added_but_not_flushed_are_read(session: Session) -> None:
    add_team(session, "hv-north")
    session.add(new_person("hv-new", "hv-north"))  # no flush: the session flushes first
    assert RotaStore(session).chain_person("hv-new") is not None
    assert session.get(Person, "hv-new") is not None


def test_the_window_reads_shifts_absences_closures_and_the_version_at_once(
    session: Session,
) -> None:
    add_team(session, "hv-north")
    add_person(session, "hv-a", "hv-north")
    add_shift(session, "hv-a", "clinic", local(2027, 1, 5, 9), local(2027, 1, 5, 13))
    add_absence(session, "hv-a", date(2027, 1, 4), date(2027, 1, 8))
    add_absence(session, "hv-a", date(2027, 2, 1), date(2027, 2, 2))  # outside the window
    add_closure(session, date(2027, 1, 5), "hv-north", time(12))
    add_closure(session, date(2027, 1, 5), "other-team")
    add_version(session, 4)
    add_version(session, 7)
    store = RotaStore(session)
    start = local(2027, 1, 4, 10)
    with statements(session) as seen:
        window = store.read_window(
            ["hv-a"],
            [],
            ["all", "hv-north"],
            start,
            start + 7 * 24 * HOUR,
            (date(2027, 1, 3), date(2027, 1, 12)),
        )
        assert store.current_rota_version() == 7
    assert len([s for s in seen if not s.startswith("BEGIN")]) == 1
    assert window.shifts == {
        "hv-a": [ShiftSpan("hv-a", "clinic", local(2027, 1, 5, 9), local(2027, 1, 5, 13))]
    }
    assert window.absences == {"hv-a": [(date(2027, 1, 4), date(2027, 1, 8))]}
    assert [(c.applies_to, c.date, c.from_time, c.to_time) for c in window.closures] == [
        ("hv-north", date(2027, 1, 5), time(12), None)
    ]
    assert window.rota_version == 7


# The cost of a plan ---------------------------------------------------------------------------


@pytest.fixture
def county(session: Session) -> Session:
    """Ten teams with managers, deputies, duty shifts and an on-call role."""
    for t in range(10):
        team = f"team-{t}"
        add_team(session, team, manager=f"mgr-{t}", channel=f"C{t:04d}" if t % 2 else None)
        add_person(session, f"mgr-{t}", team)
        add_person(session, f"worker-{t}", team, deputy=f"worker-{(t + 1) % 10}")
        add_person(session, f"duty-{t}", team, hours="none")
        add_shift(session, f"duty-{t}", f"duty:{team}", local(2027, 1, 8, 8), local(2027, 1, 8, 20))
    add_shift(session, "duty-0", "edt_manager", local(2027, 1, 8, 17), local(2027, 1, 11, 9))
    add_closure(session, date(2027, 1, 11), "team-3")
    add_absence(session, "worker-4", date(2027, 1, 11), date(2027, 1, 12))
    add_version(session, 1)
    session.commit()
    return session


def count_plan(session: Session, targets: list[str]) -> int:
    with statements(session) as seen:
        plan = plan_referral(
            RotaStore(session),
            targets,
            local(2027, 1, 8, 18),
            alert_roles=("edt_manager",),
            tz=LONDON,
        )
    assert len(plan.entries) == len(targets)
    return len([s for s in seen if not s.startswith("BEGIN")])


def test_a_plan_takes_two_statements_whatever_the_number_of_targets(county: Session) -> None:
    one = count_plan(county, ["person:worker-1"])
    ten = count_plan(
        county,
        [f"person:worker-{t}" for t in range(4)]
        + [f"team:team-{t}" for t in range(4, 8)]
        + ["role:edt_manager", "role:duty:team-9"],
    )
    assert one == ten == 2  # people, teams and roles; then their shifts and calendar
