"""The routing planner against a real database (SQLite and PostgreSQL), with exact instants."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import pytest
from sqlalchemy.orm import Session

from rota.plan import Alert, PlanEntry, TargetError
from rota.planner import (
    ChainLink,
    chain_for,
    format_gap,
    is_at_work,
    next_at_work,
    parse_target,
    plan_referral,
    resolve_recipient,
    resolve_recipients,
    validate_targets,
)
from rota.store import RotaStore
from rota.worktime import working_time_for_recipient
from tests.rota.factories import (
    LONDON,
    add_absence,
    add_closure,
    add_person,
    add_shift,
    add_team,
    add_version,
    local,
)
from tests.rota.test_store_routing import statements


def iso(t: datetime | None) -> str | None:
    return t.astimezone(LONDON).isoformat() if t is not None else None


def plan(session: Session, targets: list[str], t0: datetime, roles: tuple[str, ...] = ()):
    return plan_referral(RotaStore(session), targets, t0, alert_roles=roles, tz=LONDON)


def one(session: Session, target: str, t0: datetime) -> PlanEntry:
    return plan(session, [target], t0).entries[0]


@pytest.fixture
def rota(session: Session) -> Session:
    """Health visitors in England, a GP practice with a duty doctor, and the EDT."""
    add_team(session, "hv-north", manager="hv-manager", channel="CHVNORTH")
    add_person(session, "hv-manager", "hv-north")
    add_person(session, "hv-cover", "hv-north")
    add_person(session, "hv-jsmith", "hv-north", hours="Mon-Wed 09:00-17:00", deputy="hv-cover")
    add_person(session, "hv-alone", "hv-north")
    add_team(session, "gp-northgate", manager="gp-manager", agency_type="health")
    add_person(session, "gp-manager", "gp-northgate")
    add_person(session, "gp-duty", "gp-northgate", hours="none")
    add_person(session, "gp-smith", "gp-northgate")
    add_team(session, "edt", hours="none", agency_type="social_care")
    add_person(session, "edt-amy", "edt", permissions="referrer")
    add_person(session, "edt-manager", "edt", permissions="manager")
    add_team(session, "hv-scot", region="scotland")
    add_person(session, "hv-scot-1", "hv-scot")
    add_team(session, "hv-ni", region="northern_ireland")
    add_person(session, "hv-ni-1", "hv-ni")
    add_team(session, "hv-wales", region="wales")
    add_person(session, "hv-wales-1", "hv-wales")
    add_version(session, 1)
    add_version(session, 3)
    session.commit()
    return session


# Christmas -------------------------------------------------------------------------------


def test_christmas_eve_referral_waits_for_tuesday_29th_with_long_gap_alert(rota: Session) -> None:
    add_shift(rota, "edt-manager", "edt_manager", local(2026, 12, 24, 17), local(2026, 12, 25, 9))
    t0 = local(2026, 12, 24, 18)
    result = plan(rota, ["person:hv-alone"], t0, roles=("edt_manager",))
    assert result.to_json(LONDON) == {
        "at": "2026-12-24T18:00:00+00:00",
        "rota_version": 3,
        "plan": [
            {
                "target": "person:hv-alone",
                "recipient": "hv-alone",
                "via": "self",
                "due_at": "2026-12-29T09:00:00+00:00",
                "immediate": False,
            }
        ],
        "alerts": [
            {
                "kind": "on_call",
                "target": "role:edt_manager",
                "recipient": "edt-manager",
                "detail": "on call as edt_manager: referral received Thu 24 Dec 18:00",
            },
            {
                "kind": "long_gap",
                "target": "person:hv-alone",
                "recipient": "edt-manager",
                "detail": "next reachable Tue 29 Dec 09:00 (111 h after receipt)",
            },
        ],
    }


def test_christmas_eve_afternoon_closure(rota: Session) -> None:
    add_closure(rota, date(2026, 12, 24), "all", time(12), None)
    assert one(rota, "person:hv-alone", local(2026, 12, 24, 11)).immediate
    entry = one(rota, "person:hv-alone", local(2026, 12, 24, 12))
    assert (entry.recipient, iso(entry.due_at)) == ("hv-alone", "2026-12-29T09:00:00+00:00")
    assert not entry.immediate


def test_regional_closure_applies_only_to_that_region(rota: Session) -> None:
    add_closure(rota, date(2027, 1, 6), "scotland")
    t0 = local(2027, 1, 6, 10)
    assert iso(one(rota, "person:hv-scot-1", t0).due_at) == "2027-01-07T09:00:00+00:00"
    assert one(rota, "person:hv-alone", t0).immediate


# Bank holidays of each nation ------------------------------------------------------------


def test_easter_2027_scotland_monday_england_tuesday_after_clocks_go_forward(
    rota: Session,
) -> None:
    t0 = local(2027, 3, 25, 18)
    assert iso(t0) == "2027-03-25T18:00:00+00:00"
    result = plan(rota, ["person:hv-scot-1", "person:hv-alone", "person:hv-wales-1"], t0)
    assert [(e.recipient, iso(e.due_at)) for e in result.entries] == [
        ("hv-scot-1", "2027-03-29T09:00:00+01:00"),
        ("hv-alone", "2027-03-30T09:00:00+01:00"),
        ("hv-wales-1", "2027-03-30T09:00:00+01:00"),
    ]


def test_twelfth_of_july_is_a_holiday_only_in_northern_ireland(rota: Session) -> None:
    t0 = local(2027, 7, 9, 18)
    result = plan(rota, ["person:hv-ni-1", "person:hv-alone", "person:hv-scot-1"], t0)
    assert [iso(e.due_at) for e in result.entries] == [
        "2027-07-13T09:00:00+01:00",
        "2027-07-12T09:00:00+01:00",
        "2027-07-12T09:00:00+01:00",
    ]


def test_scottish_second_of_january_substitute(rota: Session) -> None:
    t0 = local(2026, 12, 31, 18)
    result = plan(rota, ["person:hv-scot-1", "person:hv-alone"], t0)
    assert [iso(e.due_at) for e in result.entries] == [
        "2027-01-05T09:00:00+00:00",
        "2027-01-04T09:00:00+00:00",
    ]


# Clock changes and boundaries -------------------------------------------------------------


def test_october_clock_change(rota: Session) -> None:
    t0 = local(2026, 10, 24, 22)
    assert iso(t0) == "2026-10-24T22:00:00+01:00"
    entry = one(rota, "person:hv-alone", t0)
    assert iso(entry.due_at) == "2026-10-26T09:00:00+00:00"
    assert entry.due_at - t0 == timedelta(hours=36)


def test_seventeen_hundred_is_exclusive(rota: Session) -> None:
    before = one(rota, "person:hv-alone", local(2027, 1, 5, 16, 59))
    assert before.immediate and iso(before.due_at) == "2027-01-05T16:59:00+00:00"
    at_five = one(rota, "person:hv-alone", local(2027, 1, 5, 17))
    assert not at_five.immediate and iso(at_five.due_at) == "2027-01-06T09:00:00+00:00"
    at_nine = one(rota, "person:hv-alone", local(2027, 1, 6, 9))
    assert at_nine.immediate


# Chains ----------------------------------------------------------------------------------


def test_part_time_professional_falls_to_deputy_on_thursday(rota: Session) -> None:
    entry = one(rota, "person:hv-jsmith", local(2027, 1, 6, 18))  # Wednesday
    assert (entry.recipient, entry.via, iso(entry.due_at)) == (
        "hv-cover",
        "deputy",
        "2027-01-07T09:00:00+00:00",
    )


def test_part_time_professional_reached_herself_on_monday(rota: Session) -> None:
    add_absence(rota, "hv-cover", date(2027, 1, 7), date(2027, 1, 8))
    add_absence(rota, "hv-manager", date(2027, 1, 7), date(2027, 1, 8))
    entry = one(rota, "person:hv-jsmith", local(2027, 1, 6, 18))
    assert (entry.recipient, entry.via, iso(entry.due_at)) == (
        "hv-jsmith",
        "self",
        "2027-01-11T09:00:00+00:00",
    )


def test_absence_without_deputy_falls_through_to_manager(rota: Session) -> None:
    add_absence(rota, "hv-alone", date(2027, 1, 4), date(2027, 1, 8))
    entry = one(rota, "person:hv-alone", local(2027, 1, 4, 10))
    assert (entry.recipient, entry.via, entry.immediate) == ("hv-manager", "manager", True)


def test_absent_person_with_a_shift_is_at_work(rota: Session) -> None:
    add_absence(rota, "hv-alone", date(2027, 1, 4), date(2027, 1, 8))
    add_shift(rota, "hv-alone", "clinic", local(2027, 1, 4, 9), local(2027, 1, 4, 13))
    entry = one(rota, "person:hv-alone", local(2027, 1, 4, 10))
    assert (entry.recipient, entry.via, entry.immediate) == ("hv-alone", "self", True)


def test_team_duty_shift_holder_reached_via_duty(rota: Session) -> None:
    add_shift(rota, "gp-duty", "duty:gp-northgate", local(2027, 1, 2, 9), local(2027, 1, 2, 13))
    t0 = local(2027, 1, 2, 8)  # Saturday morning
    result = plan(rota, ["team:gp-northgate", "person:gp-smith"], t0)
    assert [(e.recipient, e.via, iso(e.due_at)) for e in result.entries] == [
        ("gp-duty", "duty", "2027-01-02T09:00:00+00:00"),
        ("gp-duty", "duty", "2027-01-02T09:00:00+00:00"),
    ]


def test_inactive_duty_holder_and_deputy_are_skipped(rota: Session) -> None:
    add_person(rota, "gp-gone", "gp-northgate", active=False)
    add_shift(rota, "gp-gone", "duty:gp-northgate", local(2027, 1, 2, 9), local(2027, 1, 2, 13))
    add_person(rota, "hv-part", "hv-north", hours="Mon 09:00-17:00", deputy="gp-gone")
    entry = one(rota, "team:gp-northgate", local(2027, 1, 2, 8))
    assert (entry.recipient, entry.via, iso(entry.due_at)) == (
        "gp-manager",
        "manager",
        "2027-01-04T09:00:00+00:00",
    )
    chain = chain_for(RotaStore(rota), "person:hv-part", local(2027, 1, 2, 10))
    assert chain == [ChainLink("hv-part", "self"), ChainLink("hv-manager", "manager")]


def test_team_channel_when_duty_and_manager_are_unavailable(rota: Session) -> None:
    add_absence(rota, "hv-manager", date(2027, 1, 1), date(2027, 1, 31))
    entry = one(rota, "team:hv-north", local(2027, 1, 8, 18))  # Friday evening
    assert (entry.recipient, entry.via, iso(entry.due_at)) == (
        "CHVNORTH",
        "channel",
        "2027-01-11T09:00:00+00:00",
    )


def test_school_closed_for_half_term(rota: Session) -> None:
    add_team(rota, "school-oak", agency_type="education", manager="oak-head")
    add_person(rota, "oak-dsl", "school-oak")
    add_person(rota, "oak-head", "school-oak")
    for day in range(19, 22):
        add_closure(rota, date(2026, 10, day), "school-oak")
    t0 = local(2026, 10, 16, 18)  # Friday before half term
    result = plan(rota, ["person:oak-dsl", "person:hv-alone"], t0, roles=())
    assert [(e.recipient, iso(e.due_at)) for e in result.entries] == [
        ("oak-dsl", "2026-10-22T09:00:00+01:00"),
        ("hv-alone", "2026-10-19T09:00:00+01:00"),
    ]
    assert [(a.kind, a.target, a.recipient, a.detail) for a in result.alerts] == [
        (
            "long_gap",
            "person:oak-dsl",
            None,
            "next reachable Thu 22 Oct 09:00 (135 h after receipt)",
        ),
        (
            "long_gap",
            "person:hv-alone",
            None,
            "next reachable Mon 19 Oct 09:00 (63 h after receipt)",
        ),
    ]


# Roles and alerts ------------------------------------------------------------------------


def test_role_target_current_and_next_shift(rota: Session) -> None:
    add_team(rota, "police", hours="none", agency_type="police")
    add_person(rota, "pc-one", "police")
    add_person(rota, "pc-two", "police")
    add_shift(rota, "pc-one", "police_dau", local(2027, 1, 2, 8), local(2027, 1, 2, 20))
    add_shift(rota, "pc-two", "police_dau", local(2027, 1, 2, 20), local(2027, 1, 3, 8))
    now = one(rota, "role:police_dau", local(2027, 1, 2, 19))
    assert (now.recipient, now.via, now.immediate) == ("pc-one", "shift", True)
    later = one(rota, "role:police_dau", local(2027, 1, 2, 7))
    assert (later.recipient, iso(later.due_at), later.immediate) == (
        "pc-one",
        "2027-01-02T08:00:00+00:00",
        False,
    )
    at_handover = one(rota, "role:police_dau", local(2027, 1, 2, 20))
    assert at_handover.recipient == "pc-two"


def test_known_role_with_nobody_within_seven_days_is_unroutable(rota: Session) -> None:
    add_shift(rota, "edt-amy", "paediatrician", local(2026, 1, 2, 8), local(2026, 1, 2, 20))
    add_shift(rota, "edt-manager", "edt_manager", local(2027, 1, 2, 8), local(2027, 1, 2, 20))
    result = plan(rota, ["role:paediatrician"], local(2027, 1, 2, 9), roles=("edt_manager",))
    assert result.entries == (PlanEntry("role:paediatrician", None, "unroutable", None, False),)
    assert result.alerts[1:] == (
        Alert(
            "unroutable",
            "role:paediatrician",
            "edt-manager",
            "nobody in the chain is at work within 7 days",
        ),
    )
    assert result.to_json(LONDON)["plan"][0] == {
        "target": "role:paediatrician",
        "recipient": None,
        "via": "unroutable",
        "due_at": None,
        "immediate": False,
    }


def test_role_shift_just_inside_seven_days_is_routable(rota: Session) -> None:
    t0 = local(2027, 1, 2, 9)
    add_shift(rota, "edt-amy", "paediatrician", t0 + timedelta(days=7), t0 + timedelta(days=8))
    assert one(rota, "role:paediatrician", t0).due_at == t0 + timedelta(days=7)
    rota.rollback()
    add_shift(
        rota, "edt-amy", "paediatrician", t0 + timedelta(days=7, minutes=1), t0 + timedelta(days=8)
    )
    assert one(rota, "role:paediatrician", t0).via == "unroutable"


@pytest.mark.parametrize(
    ("hour", "alerted"),
    [(10, False), (9, False), (8, True)],  # 47 h, 48 h (not more), 49 h
)
def test_long_gap_threshold_is_strictly_more_than_48_hours(
    rota: Session, hour: int, alerted: bool
) -> None:
    t0 = local(2026, 10, 3, hour)  # Saturday; due Monday 5 Oct 09:00
    result = plan(rota, ["person:hv-alone"], t0)
    assert iso(result.entries[0].due_at) == "2026-10-05T09:00:00+01:00"
    kinds = [a.kind for a in result.alerts]
    assert kinds == (["long_gap"] if alerted else [])
    if alerted:
        assert result.alerts[0] == Alert(
            "long_gap",
            "person:hv-alone",
            None,
            "next reachable Mon 5 Oct 09:00 (49 h after receipt)",
        )


def test_alert_roles_with_two_holders_and_a_role_without_holder(rota: Session) -> None:
    start, end = local(2027, 1, 1, 17), local(2027, 1, 2, 9)
    add_shift(rota, "edt-manager", "edt_manager", start, end)
    add_shift(rota, "edt-amy", "edt_manager", start, end)
    add_shift(rota, "gp-manager", "police_dau", start, end)
    t0 = local(2027, 1, 1, 18)  # New Year's Day
    result = plan(rota, ["person:hv-alone"], t0, roles=("edt_manager", "paediatrician"))
    assert [(a.kind, a.target, a.recipient) for a in result.alerts] == [
        ("on_call", "role:edt_manager", "edt-amy"),
        ("on_call", "role:edt_manager", "edt-manager"),
        ("long_gap", "person:hv-alone", "edt-amy"),
        ("long_gap", "person:hv-alone", "edt-manager"),
    ]


def test_no_alert_for_immediate_targets_and_no_on_call_holder(rota: Session) -> None:
    result = plan(rota, ["person:hv-alone"], local(2027, 1, 5, 10), roles=("edt_manager",))
    assert result.alerts == ()
    assert result.entries[0].immediate


# Errors ----------------------------------------------------------------------------------


def test_unknown_targets_are_reported_all_at_once(rota: Session) -> None:
    add_person(rota, "hv-left", "hv-north", active=False)
    add_shift(rota, "edt-amy", "police_dau", local(2027, 1, 2, 8), local(2027, 1, 2, 20))
    store = RotaStore(rota)
    targets = [
        "person:hv-alone",
        "team:gp-x",
        "person:hv-x",
        "role:nobody",
        "person:hv-left",
        "pager:99",
        "role:police_dau",
        "team:",
    ]
    assert validate_targets(store, targets) == [
        (1, "unknown team gp-x"),
        (2, "unknown person hv-x"),
        (3, "unknown role nobody"),
        (4, "person hv-left is inactive"),
        (5, "malformed target 'pager:99': use person:ID, team:ID or role:NAME"),
        (7, "malformed target 'team:': use person:ID, team:ID or role:NAME"),
    ]
    with pytest.raises(TargetError, match="unknown team gp-x; unknown person hv-x"):
        plan(rota, targets, local(2027, 1, 4, 10))


def test_parse_target() -> None:
    assert parse_target("role:duty:gp-northgate") == ("role", "duty:gp-northgate")
    assert parse_target(" person:hv-jsmith ") == ("person", "hv-jsmith")
    with pytest.raises(TargetError, match="malformed target"):
        parse_target("hv-jsmith")


# Send-time helpers -----------------------------------------------------------------------


def test_resolve_recipient_and_person_helpers(rota: Session) -> None:
    store = RotaStore(rota)
    thursday = local(2027, 1, 7, 10)
    assert resolve_recipient(store, "person:hv-jsmith", thursday, LONDON) == ChainLink(
        "hv-cover", "deputy"
    )
    assert resolve_recipient(store, "person:hv-jsmith", local(2027, 1, 9, 10), LONDON) is None
    assert is_at_work(store, "hv-jsmith", local(2027, 1, 6, 16, 59), LONDON)
    assert not is_at_work(store, "hv-jsmith", thursday, LONDON)
    assert iso(next_at_work(store, "hv-jsmith", thursday, LONDON, timedelta(days=7))) == (
        "2027-01-11T09:00:00+00:00"
    )
    assert next_at_work(store, "hv-jsmith", thursday, LONDON, timedelta(days=2)) is None
    assert chain_for(store, "team:hv-north", thursday) == [
        ChainLink("hv-manager", "manager"),
        ChainLink("CHVNORTH", "channel"),
    ]


def test_store_listings(rota: Session) -> None:
    add_shift(rota, "edt-amy", "edt_worker", local(2027, 1, 4, 8), local(2027, 1, 4, 20))
    add_absence(rota, "hv-cover", date(2027, 1, 4), date(2027, 1, 4))
    store = RotaStore(rota)
    monday = local(2027, 1, 4, 10)
    at_work = {a.person.person_id: a.why for a in store.people_at_work(monday, LONDON)}
    assert at_work["edt-amy"] == "shift edt_worker"
    assert at_work["hv-jsmith"] == "hours Mon-Wed 09:00-17:00"
    assert at_work["hv-alone"] == "hours Mon-Fri 09:00-17:00"
    assert "hv-cover" not in at_work  # absent
    assert "hv-scot-1" not in at_work  # 4 January is a Scottish holiday
    assert "gp-duty" not in at_work  # hours none, no shift
    assert [p.person_id for p, _ in store.people_on_shift(monday, "edt_worker")] == ["edt-amy"]
    assert store.role_known("edt_worker") and not store.role_known("nothing")
    assert store.current_rota_version() == 3


# Working time for the escalation engine -----------------------------------------------------


def test_working_minutes_roll_over_the_weekend(rota: Session) -> None:
    worktime = working_time_for_recipient(RotaStore(rota), "hv-alone", LONDON)
    sent = local(2027, 1, 8, 16, 30)  # Friday
    assert iso(worktime.add_working_minutes(sent, 60)) == "2027-01-11T09:30:00+00:00"
    assert iso(worktime.add_working_minutes(sent, 30)) == "2027-01-08T17:00:00+00:00"
    assert iso(worktime.end_of_working_day(sent)) == "2027-01-08T17:00:00+00:00"
    assert iso(worktime.end_of_working_day(local(2027, 1, 8, 18))) == "2027-01-11T17:00:00+00:00"


def test_working_minutes_skip_bank_holidays_and_team_closures(rota: Session) -> None:
    add_closure(rota, date(2026, 12, 29), "hv-north")
    worktime = working_time_for_recipient(RotaStore(rota), "hv-jsmith", LONDON)
    sent = local(2026, 12, 24, 16)
    # Team hours, not hv-jsmith's own part-time days: Wed 30 Dec is the next working day.
    assert iso(worktime.add_working_minutes(sent, 120)) == "2026-12-30T10:00:00+00:00"


def test_working_minutes_across_the_spring_clock_change(rota: Session) -> None:
    worktime = working_time_for_recipient(RotaStore(rota), "hv-alone", LONDON)
    sent = local(2027, 3, 31, 16, 30)  # Wednesday after Easter
    assert iso(worktime.add_working_minutes(sent, 240)) == "2027-04-01T12:30:00+01:00"


def test_shift_only_recipient_counts_wall_clock(rota: Session) -> None:
    add_shift(rota, "gp-duty", "duty:gp-northgate", local(2027, 1, 2, 9), local(2027, 1, 2, 13))
    add_shift(rota, "gp-duty", "duty:gp-northgate", local(2027, 1, 2, 13), local(2027, 1, 2, 18))
    worktime = working_time_for_recipient(RotaStore(rota), "gp-duty", LONDON)
    sent = local(2027, 1, 2, 10)
    assert worktime.wall_clock
    assert iso(worktime.add_working_minutes(sent, 120)) == "2027-01-02T12:00:00+00:00"
    assert iso(worktime.end_of_working_day(sent)) == "2027-01-02T18:00:00+00:00"
    off = local(2027, 1, 3, 10)
    assert worktime.end_of_working_day(off) == off + timedelta(hours=24)


def test_format_gap() -> None:
    assert format_gap(timedelta(hours=78, minutes=50)) == "78 h 50 min"
    assert format_gap(timedelta(hours=49)) == "49 h"


def test_resolving_a_batch_s_targets_at_once_reads_the_rota_once_and_agrees_with_each_alone(
    rota: Session,
) -> None:
    monday = local(2027, 1, 4, 10)
    add_shift(rota, "gp-duty", "duty:gp-northgate", local(2027, 1, 4, 8), local(2027, 1, 4, 18))
    add_absence(rota, "hv-alone", date(2027, 1, 4), date(2027, 1, 4))
    targets = [
        "person:hv-jsmith",
        "person:hv-alone",
        "team:gp-northgate",
        "role:duty:gp-northgate",
        "person:hv-scot-1",
        "person:nobody",  # unknown: left out, resolving it alone says why
    ]
    rota.flush()
    with statements(rota) as seen:
        together = resolve_recipients(RotaStore(rota), targets, monday, LONDON)
    assert len(seen) == 2  # the targets with their chains, then the window
    assert together == {
        "person:hv-jsmith": ChainLink("hv-jsmith", "self"),
        "person:hv-alone": ChainLink("hv-manager", "manager"),  # absent, no deputy, no duty
        "team:gp-northgate": ChainLink("gp-duty", "duty"),
        "role:duty:gp-northgate": ChainLink("gp-duty", "shift"),
        "person:hv-scot-1": None,  # Scotland's 2 January holiday, moved to Monday the 4th
    }
    for target, link in together.items():
        assert resolve_recipient(RotaStore(rota), target, monday, LONDON) == link
    with pytest.raises(TargetError, match="unknown person nobody"):
        resolve_recipient(RotaStore(rota), "person:nobody", monday, LONDON)


def test_resolve_recipient_passes_over_those_nobody_could_reach(rota: Session) -> None:
    store = RotaStore(rota)
    monday = local(2027, 1, 4, 10)
    add_shift(rota, "gp-duty", "duty:gp-northgate", local(2027, 1, 4, 8), local(2027, 1, 4, 18))
    add_shift(rota, "gp-smith", "duty:gp-northgate", local(2027, 1, 4, 9), local(2027, 1, 4, 18))
    assert resolve_recipient(store, "person:hv-jsmith", monday, LONDON) == ChainLink(
        "hv-jsmith", "self"
    )
    assert resolve_recipient(
        store, "person:hv-jsmith", monday, LONDON, excluding={"hv-jsmith"}
    ) == ChainLink("hv-cover", "deputy")
    assert resolve_recipient(
        store, "person:hv-jsmith", monday, LONDON, excluding={"hv-jsmith", "hv-cover"}
    ) == ChainLink("hv-manager", "manager")
    # A role's next holder at the time, when its first holder is passed over.
    assert resolve_recipient(store, "role:duty:gp-northgate", monday, LONDON) == ChainLink(
        "gp-duty", "shift"
    )
    assert resolve_recipient(
        store, "role:duty:gp-northgate", monday, LONDON, excluding={"gp-duty"}
    ) == ChainLink("gp-smith", "shift")
    assert (
        resolve_recipient(
            store, "role:duty:gp-northgate", monday, LONDON, excluding={"gp-duty", "gp-smith"}
        )
        is None
    )
    # A team: its duty holders, its manager, then its channel.
    assert resolve_recipient(
        store, "team:gp-northgate", monday, LONDON, excluding={"gp-duty"}
    ) == ChainLink("gp-smith", "duty")
    everyone = {"gp-duty", "gp-smith", "gp-manager"}
    assert resolve_recipient(store, "team:gp-northgate", monday, LONDON, excluding=everyone) is None
