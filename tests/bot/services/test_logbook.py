"""The logbook's queries and the report's figures, on a weekend of referrals built with the models.

Europe/London in November is GMT (UTC+00:00). Thu 12 Nov 2026 to Tue 17 Nov 2026:

- HO-R4 (received Thu 16:40, closed Fri 12:00): hv-jo (health) 16:50 -> acknowledged Fri 09:40
  (10 + 40 = 50 working minutes); team:mash (social care, sw-sam) 16:45 -> not known 16:55 (10);
  role:police_dau (pc-pat, shift-only) 16:45 -> acknowledged 17:15 (30 wall-clock minutes).
- HO-R1 (received Fri 16:00): hv-jo 16:30 -> has information Mon 09:30 (30 + 30 = 60 working
  minutes, not 64 hours); police 16:05 -> acknowledged 16:25 (20); mash 16:10 -> not known 16:40
  (30).
- HO-R2 (received Sat 02:00): police sent 02:05 -> redirected 03:05 (60 wall-clock minutes);
  hv-jo held to Mon 09:00, sent late Mon 09:20, never answered; breach Mon 17:00.
  No social care target: a gap.
- HO-R3 (received Sun 10:00): hv-jo held to Mon 09:00 and still pending (the dispatcher was
  down); role:paediatrician unroutable; a long-gap alert.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery.kinds import RowState
from bot.errors import InputError
from bot.models import OutboxMessage, Referral, ReferralStatus, Response, Target
from bot.services import audit
from bot.services.coverage import coverage_for_referrals
from bot.services.logbook import (
    LogWindow,
    count_open_referrals,
    iter_log,
    log_record,
    open_prompts_for_person,
    open_referrals,
    overdue_prompts,
    parse_window,
    referral_history,
    working_minutes_between,
)
from bot.services.reports import build_report, median, percentile
from bot.settings import Settings
from rota.models import Person, RotaVersion, Shift, Team
from rota.store import RotaStore
from rota.worktime import working_time_for_recipient
from tests.bot.factories import new_referral

LONDON = ZoneInfo("Europe/London")
SUMMARY = "Mother assaulted NARRATIVE-SECRET-4471 while holding the baby"
NOW = datetime(2026, 11, 17, 10, 0, tzinfo=UTC)  # Tue
RESPONSE_EVENTS = ("acknowledged", "has_information", "not_known", "redirected")
ANSWER_EVENTS = ("has_information", "not_known")


def utc(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@dataclass
class Scenario:
    prompts: dict[str, int] = field(default_factory=dict)  # "R2 hv" -> prompt id


def build_rota(session: Session) -> None:
    """Teams, people and shifts of the scenario."""
    session.add(RotaVersion(version=1, imported_at=utc(1, 12), files="teams.csv", summary="{}"))
    teams = [
        ("edt", "social_care", "none"),
        ("mash", "social_care", None),
        ("hv-north", "health", None),
        ("police-dau", "police", "none"),
        ("paediatrics", "health", None),
        ("school", "education", None),
    ]
    for team_id, agency_type, hours in teams:
        session.add(
            Team(
                team_id=team_id,
                name=team_id.title(),
                agency="Agency",
                agency_type=agency_type,
                region="england",
                hours=hours,
                manager_id=None,
                channel=None,
            )
        )
    session.flush()
    people = [
        ("edt-amy", "edt", "referrer", "UAMY"),
        ("mgr-mia", "edt", "referrer;manager;oversight", "UMIA"),  # the EDT manager sees all
        ("head-sue", "school", "manager", "UHEADSUE"),  # a school head: no referral concerns her
        ("hv-lee", "hv-north", "manager", "UHVLEE"),  # manages the health visitors
        ("hv-jo", "hv-north", "", "UHVJO"),
        ("pc-pat", "police-dau", "", "UPAT"),
        ("sw-sam", "mash", "", "USAM"),
        ("paed-1", "paediatrics", "", "UPAED"),
    ]
    for person_id, team_id, permissions, slack in people:
        session.add(
            Person(
                person_id=person_id,
                name=person_id.title(),
                slack_user=slack,
                email=f"{person_id}@example.org",
                team_id=team_id,
                role="professional",
                permissions=permissions,
            )
        )
    session.flush()
    session.add(
        Shift(person_id="pc-pat", role="police_dau", start_at=utc(12, 8), end_at=utc(16, 8))
    )
    session.add(
        Shift(
            person_id="paed-1",
            role="paediatrician",
            start_at=utc(5, 9, month=1),
            end_at=utc(5, 17, month=1),
        )
    )


def add_referral(
    session: Session, referral_id: str, received: datetime, *, status: str = ReferralStatus.OPEN
) -> Referral:
    referral = new_referral(
        referral_id,
        received,
        external_ref=f"LCS-{referral_id}",
        urgency="urgent" if referral_id.endswith("1") else "standard",
        referred_at=received - timedelta(minutes=10),
        summary=SUMMARY,
        request_hash=referral_id.ljust(64, "0"),
        status=status,
    )
    session.add(referral)
    session.flush()
    audit.record(
        session,
        "referral_received",
        at=received,
        referral_id=referral_id,
        actor="edt-amy",
        detail={"external_ref": f"LCS-{referral_id}", "category": "domestic_abuse"},
        rota_version=1,
    )
    return referral


def add_target(
    session: Session,
    referral: Referral,
    position: int,
    target: str,
    recipient: str | None,
    due: datetime | None,
    state: str,
) -> Target:
    row = Target(
        referral_id=referral.referral_id,
        position=position,
        spec=target,
        planned_via="self" if target.startswith("person") else "duty",
        planned_recipient=recipient,
        due_at=due,
        state=state,
    )
    session.add(row)
    session.flush()
    if due is None:
        audit.record(
            session,
            "unroutable",
            at=referral.received_at,
            referral_id=referral.referral_id,
            target=target,
            detail={"reason": "nobody to reach within 7 days"},
        )
    else:
        audit.record(
            session,
            "prompt_scheduled",
            at=referral.received_at,
            referral_id=referral.referral_id,
            target=target,
            recipient=recipient,
            detail={"due_at": due.astimezone(LONDON).isoformat()},
        )
    return row


def add_prompt(
    session: Session,
    target: Target,
    recipient: str,
    due: datetime,
    sent: datetime | None,
    *,
    late: bool = False,
) -> OutboxMessage:
    prompt = OutboxMessage(
        referral_id=target.referral_id,
        target_id=target.id,
        kind="prompt",
        recipient_id=recipient,
        due_at=due,
        state=RowState.SENT if sent else RowState.PENDING,
        sent_at=sent,
        late=late,
    )
    session.add(prompt)
    session.flush()
    if sent is not None:
        audit.record(
            session,
            "prompt_sent_late" if late else "prompt_sent",
            at=sent,
            referral_id=target.referral_id,
            target=target.spec,
            recipient=recipient,
            detail={"prompt_id": prompt.id},
        )
    return prompt


def add_response(
    session: Session, target: Target, prompt: OutboxMessage, kind: str, by: str, at: datetime
) -> None:
    session.add(
        Response(
            referral_id=target.referral_id,
            target_id=target.id,
            prompt_id=prompt.id,
            kind=kind,
            responder_id=by,
            at=at,
        )
    )
    target.state = kind
    audit.record(
        session,
        kind,
        at=at,
        referral_id=target.referral_id,
        actor=by,
        target=target.spec,
        detail={"prompt_id": prompt.id},
    )


def build_scenario(session_factory: sessionmaker[Session]) -> Scenario:
    """Write the rota, the four referrals and their audit rows, committed."""
    scenario = Scenario()
    with session_factory.begin() as session:
        build_rota(session)

        r4 = add_referral(session, "HO-R4", utc(12, 16, 40))
        hv = add_target(session, r4, 0, "person:hv-jo", "hv-jo", utc(12, 16, 50), "prompted")
        mash = add_target(session, r4, 1, "team:mash", "sw-sam", utc(12, 16, 45), "prompted")
        police = add_target(
            session, r4, 2, "role:police_dau", "pc-pat", utc(12, 16, 45), "prompted"
        )
        p = add_prompt(session, mash, "sw-sam", utc(12, 16, 45), utc(12, 16, 45))
        add_response(session, mash, p, "not_known", "sw-sam", utc(12, 16, 55))
        p = add_prompt(session, police, "pc-pat", utc(12, 16, 45), utc(12, 16, 45))
        add_response(session, police, p, "acknowledged", "pc-pat", utc(12, 17, 15))
        p = add_prompt(session, hv, "hv-jo", utc(12, 16, 50), utc(12, 16, 50))
        add_response(session, hv, p, "acknowledged", "hv-jo", utc(13, 9, 40))
        r4.status = ReferralStatus.CLOSED
        r4.closed_at = utc(13, 12)
        audit.record(
            session, "referral_closed", at=utc(13, 12), referral_id="HO-R4", actor="mgr-mia"
        )

        r1 = add_referral(session, "HO-R1", utc(13, 16))
        hv = add_target(session, r1, 0, "person:hv-jo", "hv-jo", utc(13, 16), "prompted")
        police = add_target(session, r1, 1, "role:police_dau", "pc-pat", utc(13, 16), "prompted")
        mash = add_target(session, r1, 2, "team:mash", "sw-sam", utc(13, 16), "prompted")
        p = add_prompt(session, police, "pc-pat", utc(13, 16), utc(13, 16, 5))
        add_response(session, police, p, "acknowledged", "pc-pat", utc(13, 16, 25))
        p = add_prompt(session, mash, "sw-sam", utc(13, 16), utc(13, 16, 10))
        add_response(session, mash, p, "not_known", "sw-sam", utc(13, 16, 40))
        p = add_prompt(session, hv, "hv-jo", utc(13, 16), utc(13, 16, 30))
        scenario.prompts["R1 hv"] = p.id
        add_response(session, hv, p, "has_information", "hv-jo", utc(16, 9, 30))

        r2 = add_referral(session, "HO-R2", utc(14, 2))
        police = add_target(session, r2, 0, "role:police_dau", "pc-pat", utc(14, 2), "prompted")
        hv = add_target(session, r2, 1, "person:hv-jo", "hv-jo", utc(16, 9), "prompted")
        p = add_prompt(session, police, "pc-pat", utc(14, 2), utc(14, 2, 5))
        add_response(session, police, p, "redirected", "pc-pat", utc(14, 3, 5))
        p = add_prompt(session, hv, "hv-jo", utc(16, 9), utc(16, 9, 20), late=True)
        scenario.prompts["R2 hv"] = p.id
        audit.record(
            session,
            "breach",
            at=utc(16, 17),
            referral_id="HO-R2",
            target="person:hv-jo",
            recipient="hv-jo",
            detail="no response by the end of the working day",
        )

        r3 = add_referral(session, "HO-R3", utc(15, 10))
        hv = add_target(session, r3, 0, "person:hv-jo", "hv-jo", utc(16, 9), "held")
        add_target(session, r3, 1, "role:paediatrician", None, None, "unroutable")
        p = add_prompt(session, hv, "hv-jo", utc(16, 9), None)
        scenario.prompts["R3 hv"] = p.id
        audit.record(
            session,
            "long_gap_alert",
            at=utc(15, 10),
            referral_id="HO-R3",
            target="person:hv-jo",
            detail={"gap_minutes": 1380},
        )
        # An event outside any referral, in summer time (BST, +01:00).
        audit.record(
            session,
            "response_refused",
            at=utc(1, 12, month=6),
            actor="sw-sam",
            detail="not in chain",
        )
    return scenario


@pytest.fixture
def scenario(session_factory: sessionmaker[Session]) -> Scenario:
    return build_scenario(session_factory)


# ----- the log ---------------------------------------------------------------------------------


def test_iter_log_orders_by_time_then_id_and_renders_the_contract_object(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    with session_factory() as session:
        rows = list(iter_log(session))
        records = [log_record(row, LONDON) for row in rows]
    assert [(r.at, r.id) for r in rows] == sorted((r.at, r.id) for r in rows)
    assert records[0] == {
        "at": "2026-06-01T13:00:00+01:00",
        "referral_id": None,
        "event": "response_refused",
        "actor": "sw-sam",
        "recipient": None,
        "target": None,
        "detail": "not in chain",
    }
    assert records[1] == {
        "at": "2026-11-12T16:40:00+00:00",
        "referral_id": "HO-R4",
        "event": "referral_received",
        "actor": "edt-amy",
        "recipient": None,
        "target": None,
        "detail": {"external_ref": "LCS-HO-R4", "category": "domestic_abuse"},
    }
    assert len(records) == 33


def test_log_filters_by_referral_and_local_dates(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    with session_factory() as session:
        r2 = [r.event for r in iter_log(session, LogWindow(referral_id="HO-R2"))]
        friday = list(iter_log(session, parse_window("2026-11-13", "2026-11-13", LONDON)))
        until_time = list(iter_log(session, parse_window(None, "2026-11-13T16:25", LONDON)))
    assert r2 == [
        "referral_received",
        "prompt_scheduled",
        "prompt_scheduled",
        "prompt_sent",
        "redirected",
        "prompt_sent_late",
        "breach",
    ]
    # An --until date includes the whole of that day.
    assert {r.at.date().isoformat() for r in friday} == {"2026-11-13"}
    assert [r.event for r in friday][:3] == ["acknowledged", "referral_closed", "referral_received"]
    assert friday[-1].at == utc(13, 16, 40)
    # An --until date-time includes events at that instant.
    assert until_time[-1].at == utc(13, 16, 25)
    assert until_time[-1].event == "acknowledged"


def test_an_until_time_equal_to_since_is_the_events_of_that_instant(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    # Both bounds are inclusive (docs/reference/commands.md), so the window is one instant.
    window = parse_window("2026-11-13T16:25", "2026-11-13T16:25", LONDON)
    assert window.since == window.until == utc(13, 16, 25)
    with session_factory() as session:
        rows = list(iter_log(session, window))
    assert [(r.at, r.event) for r in rows] == [(utc(13, 16, 25), "acknowledged")]
    with pytest.raises(InputError, match="before --since"):
        parse_window("2026-11-13T16:25", "2026-11-13T16:24", LONDON)
    with pytest.raises(InputError, match="before --since"):
        parse_window("2026-11-14T00:00", "2026-11-13", LONDON)


def test_parse_window_uses_local_time_across_the_clock_change() -> None:
    summer = parse_window("2026-06-01", "2026-06-01", LONDON)
    assert summer.since == datetime(2026, 5, 31, 23, 0, tzinfo=UTC)
    assert summer.before == datetime(2026, 6, 1, 23, 0, tzinfo=UTC)
    # 25 Oct 2026 is 25 hours long: the clocks go back.
    autumn = parse_window("2026-10-25", "2026-10-25", LONDON)
    assert autumn.before - autumn.since == timedelta(hours=25)
    offset = parse_window("2026-06-01T09:00+00:00", None, LONDON)
    assert offset.since == datetime(2026, 6, 1, 9, tzinfo=UTC)
    with pytest.raises(InputError, match="--since"):
        parse_window("yesterday", None, LONDON)
    with pytest.raises(InputError, match="before --since"):
        parse_window("2026-06-02", "2026-06-01", LONDON)


# ----- working time ----------------------------------------------------------------------------


def test_working_minutes_skip_the_weekend_and_shift_workers_count_the_clock(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    with session_factory() as session:
        store = RotaStore(session)
        health = working_time_for_recipient(store, "hv-jo", LONDON)
        police = working_time_for_recipient(store, "pc-pat", LONDON)
        assert working_minutes_between(health, utc(13, 16, 30), utc(16, 9, 30)) == 60.0
        assert working_minutes_between(health, utc(12, 16, 50), utc(13, 9, 40)) == 50.0
        assert working_minutes_between(health, utc(14, 2), utc(15, 23)) == 0.0
        assert working_minutes_between(police, utc(14, 2, 5), utc(14, 3, 5)) == 60.0
        assert working_minutes_between(police, utc(13, 16, 30), utc(16, 9, 30)) == 3900.0


# ----- live state ------------------------------------------------------------------------------


def test_open_referrals_newest_first(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    with session_factory() as session:
        assert count_open_referrals(session) == 3
        assert [r.referral_id for r in open_referrals(session)] == ["HO-R3", "HO-R2", "HO-R1"]
        assert [r.referral_id for r in open_referrals(session, offset=1, limit=1)] == ["HO-R2"]


def test_overdue_prompts_held_past_due_or_prompted_past_the_reminder(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    policy = Settings()
    with session_factory() as session:
        overdue = overdue_prompts(session, NOW, policy, LONDON)
        before_reminder = overdue_prompts(session, utc(16, 10, 19), policy, LONDON)
        at_reminder = overdue_prompts(session, utc(16, 10, 20), policy, LONDON)
    assert [(o.referral_id, o.target, o.state, o.since, o.prompt_id) for o in overdue] == [
        ("HO-R3", "person:hv-jo", "held", utc(16, 9), scenario.prompts["R3 hv"]),
        ("HO-R2", "person:hv-jo", "prompted", utc(16, 10, 20), scenario.prompts["R2 hv"]),
    ]
    assert [o.referral_id for o in before_reminder] == ["HO-R3"]
    assert [o.referral_id for o in at_reminder] == ["HO-R3", "HO-R2"]


def test_coverage_is_covered_pending_missed_or_not_asked(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    with session_factory() as session:
        coverage = coverage_for_referrals(session, ["HO-R1", "HO-R2", "HO-R3", "HO-R4"], LONDON)
    states = {r: {a: str(s) for a, s in c.states.items()} for r, c in coverage.items()}
    # The referrer works in the EDT (social care): social care is covered by the referral itself.
    # An acknowledgement is not an answer: police stay pending.
    assert states["HO-R1"] == {"social_care": "covered", "police": "pending", "health": "covered"}
    assert not coverage["HO-R1"].complete
    # A redirect hands the question on (here to nobody of police); the health visitor breached.
    assert states["HO-R2"] == {"social_care": "covered", "police": "missed", "health": "missed"}
    assert coverage["HO-R2"].gaps == ["police", "health"]
    # The health visitor is held for Monday: pending; police were never asked.
    assert states["HO-R3"] == {
        "social_care": "covered",
        "police": "not_asked",
        "health": "pending",
    }
    assert states["HO-R4"] == {"social_care": "covered", "police": "pending", "health": "pending"}


def test_referral_history_who_was_asked_who_answered_who_never_did(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    with session_factory() as session:
        history = referral_history(session, "HO-R2", LONDON)
        assert referral_history(session, "HO-NOPE", LONDON) is None
    assert history is not None
    police, hv = history.targets
    assert police.target == "role:police_dau"
    assert [(a.recipient_id, a.sent_at, a.late) for a in police.asked] == [
        ("pc-pat", utc(14, 2, 5), False)
    ]
    assert [(r.kind, r.responder_id, r.at) for r in police.answers] == [
        ("redirected", "pc-pat", utc(14, 3, 5))
    ]
    assert not police.never_answered
    assert [(a.recipient_id, a.sent_at, a.late) for a in hv.asked] == [
        ("hv-jo", utc(16, 9, 20), True)
    ]
    assert hv.answers == []
    assert hv.never_answered


def test_open_prompts_for_person_only_unanswered_sent_prompts(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    with session_factory() as session:
        prompts = open_prompts_for_person(session, "hv-jo")
        police = open_prompts_for_person(session, "pc-pat")
    assert [(p.prompt_id, p.target, p.referral.referral_id) for p in prompts] == [
        (scenario.prompts["R2 hv"], "person:hv-jo", "HO-R2")
    ]
    # Police only acknowledged R1: still to be answered (R4's acknowledgement is closed).
    assert [(p.referral.referral_id, p.acknowledged) for p in police] == [("HO-R1", True)]


# ----- the report ------------------------------------------------------------------------------


def figures_from_log(records: list[dict]) -> dict:
    """Recompute the report's counts and send/response pairs from log records alone."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r["event"]] = counts.get(r["event"], 0) + 1
    sends: dict[tuple, str] = {}
    pairs: dict[tuple, tuple[str, str]] = {}
    for r in records:
        key = (r["referral_id"], r["target"])
        if r["event"] in ("prompt_sent", "prompt_sent_late"):
            sends.setdefault(key, r["at"])
        elif r["event"] in ANSWER_EVENTS and key in sends and key not in pairs:
            pairs[key] = (sends[key], r["at"])
    return {
        "referrals": counts.get("referral_received", 0),
        "sent": counts.get("prompt_sent", 0) + counts.get("prompt_sent_late", 0),
        "late": counts.get("prompt_sent_late", 0),
        "responses": {k: counts.get(k, 0) for k in RESPONSE_EVENTS},
        "breaches": counts.get("breach", 0),
        "unroutables": counts.get("unroutable", 0),
        "long_gaps": counts.get("long_gap_alert", 0),
        "pairs": pairs,
    }


# Working minutes of each send/answer pair, worked out by hand from the rota (see the top):
# acknowledgements and redirects are not answers.
EXPECTED_MINUTES = {
    ("HO-R4", "team:mash"): ("social_care", 10.0),
    ("HO-R1", "team:mash"): ("social_care", 30.0),
    ("HO-R1", "person:hv-jo"): ("health", 60.0),
}


def test_report_figures_match_the_log(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    with session_factory() as session:
        records = [log_record(r, LONDON) for r in iter_log(session)]
        report = build_report(session, LogWindow(), LONDON)
    expected = figures_from_log(records)
    assert report.referrals_received == expected["referrals"] == 4
    assert report.prompts_sent == expected["sent"] == 8
    assert report.prompts_late == expected["late"] == 1
    assert (
        report.responses
        == expected["responses"]
        == {
            "acknowledged": 3,
            "has_information": 1,
            "not_known": 2,
            "redirected": 1,
        }
    )
    assert report.breaches == expected["breaches"] == 1
    assert report.unroutables == expected["unroutables"] == 1
    assert report.long_gaps == expected["long_gaps"] == 1
    assert set(expected["pairs"]) == set(EXPECTED_MINUTES)
    by_agency: dict[str, list[float]] = {}
    for agency, minutes in EXPECTED_MINUTES.values():
        by_agency.setdefault(agency, []).append(minutes)
    assert {a: sorted(m) for a, m in report.minutes_by_agency.items()} == {
        a: sorted(m) for a, m in by_agency.items()
    }
    times = {
        t.agency_type: (t.count, t.median_minutes, t.p90_minutes) for t in report.response_times
    }
    assert times == {"social_care": (2, 20.0, 30.0), "health": (1, 60.0, 60.0)}
    assert [t.agency_type for t in report.response_times] == ["social_care", "health"]
    # The same rule as the live views (test_coverage_is_covered_pending_missed_or_not_asked).
    assert report.coverage.by_agency == {
        "social_care": {"covered": 4, "pending": 0, "missed": 0, "not_asked": 0},
        "police": {"covered": 0, "pending": 2, "missed": 1, "not_asked": 1},
        "health": {"covered": 1, "pending": 2, "missed": 1, "not_asked": 0},
    }
    assert report.coverage_complete == 0
    assert report.coverage_rate == 0.0
    groups = {
        g.key: (g.asked, g.answered, g.responded, g.breaches, g.unroutables)
        for g in report.by_agency
    }
    # Police breaches and asks appear though police never answered.
    assert groups == {
        "social_care": (2, 2, 2, 0, 0),
        "police": (3, 0, 3, 0, 0),
        "health": (3, 1, 2, 1, 0),
        "unknown": (0, 0, 0, 0, 1),
    }
    teams = {g.key: (g.label, g.asked, g.answered, g.breaches) for g in report.by_team}
    assert teams == {
        "mash": ("Mash", 2, 2, 0),
        "police-dau": ("Police-Dau", 3, 0, 0),
        "hv-north": ("Hv-North", 3, 1, 1),
    }
    assert [g.key for g in report.by_team] == ["mash", "police-dau", "hv-north"]
    health = next(g for g in report.by_agency if g.key == "health")
    assert health.response_rate == 1 / 3


def test_report_of_one_day_counts_only_that_days_events(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    window = parse_window("2026-11-13", "2026-11-13", LONDON)
    with session_factory() as session:
        records = [log_record(r, LONDON) for r in iter_log(session, window)]
        report = build_report(session, window, LONDON)
    expected = figures_from_log(records)
    assert report.referrals_received == expected["referrals"] == 1
    assert report.prompts_sent == expected["sent"] == 3
    assert report.responses == expected["responses"]
    # Only R1's social care answered on Friday (police only acknowledged).
    assert set(expected["pairs"]) == {("HO-R1", "team:mash")}
    times = {t.agency_type: (t.count, t.median_minutes) for t in report.response_times}
    assert times == {"social_care": (1, 30.0)}
    assert report.coverage_complete == 0
    assert report.coverage_rate == 0.0


def test_median_and_nearest_rank_percentile() -> None:
    assert median([]) is None
    assert median([60.0, 50.0]) == 55.0
    assert percentile([20.0, 60.0, 30.0], 90) == 60.0
    assert percentile([float(n) for n in range(1, 11)], 90) == 9.0
    assert percentile([5.0], 90) == 5.0


def test_a_prompt_that_failed_is_overdue_and_asked_nobody(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    with session_factory.begin() as session:
        prompt = session.get(OutboxMessage, scenario.prompts["R3 hv"])
        assert prompt is not None
        prompt.state = "failed"
        target = session.get(Target, prompt.target_id)
        assert target is not None
        target.state = "failed"
    with session_factory() as session:
        overdue = overdue_prompts(session, NOW, Settings(), LONDON)
        coverage = coverage_for_referrals(session, ["HO-R3"], LONDON)
    assert [(o.referral_id, o.state, o.since) for o in overdue[:1]] == [
        ("HO-R3", "failed", utc(16, 9))
    ]
    # An undeliverable prompt will not be answered; the unroutable role has no agency type.
    assert coverage["HO-R3"].states["health"] == "missed"
    assert coverage["HO-R3"].gaps == ["police", "health"]


def add_step_row(
    session: Session, prompt_id: int, step: str, due: datetime, sent: datetime | None
) -> OutboxMessage:
    """An escalation step's outbox row for a prompt, as bot.delivery.escalation writes it."""
    prompt = session.get(OutboxMessage, prompt_id)
    assert prompt is not None
    row = OutboxMessage(
        referral_id=prompt.referral_id,
        target_id=prompt.target_id,
        kind="escalation",
        recipient_id=prompt.recipient_id,
        due_at=due,
        state=RowState.SENT if sent else RowState.PENDING,
        sent_at=sent,
        detail=json.dumps({"prompt_id": prompt_id, "step": step}),
    )
    session.add(row)
    session.flush()
    return row


def test_overdue_prompts_show_the_latest_escalation_step_or_the_next(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    # HO-R2's prompt to hv-jo went at Mon 09:20: reminded at 10:20, escalated at 11:20, the
    # escalation channel is next at 13:20; the log records the breach at 17:00.
    with session_factory.begin() as session:
        prompt_id = scenario.prompts["R2 hv"]
        add_step_row(session, prompt_id, "remind", utc(16, 10, 20), utc(16, 10, 20))
        add_step_row(session, prompt_id, "escalate", utc(16, 11, 20), utc(16, 11, 20))
        add_step_row(session, prompt_id, "escalate_channel", utc(16, 13, 20), None)

    def steps_at(now: datetime) -> list[tuple]:
        with session_factory() as session:
            overdue = overdue_prompts(session, now, Settings(), LONDON)
        return [
            (o.last_step, o.last_step_at, o.next_step, o.next_step_at)
            for o in overdue
            if o.referral_id == "HO-R2"
        ]

    next_step = ("escalate_channel", utc(16, 13, 20))
    assert steps_at(utc(16, 10, 20)) == [("remind", utc(16, 10, 20), *next_step)]
    assert steps_at(utc(16, 11, 19)) == [("remind", utc(16, 10, 20), *next_step)]
    assert steps_at(utc(16, 12)) == [("escalate", utc(16, 11, 20), *next_step)]
    assert steps_at(NOW) == [("breach", utc(16, 17), *next_step)]


def test_overdue_prompt_before_any_step_shows_the_next_step_due(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    with session_factory.begin() as session:
        add_step_row(session, scenario.prompts["R2 hv"], "remind", utc(16, 10, 20), None)
    with session_factory() as session:
        [overdue] = [
            o
            for o in overdue_prompts(session, utc(16, 10, 30), Settings(), LONDON)
            if o.referral_id == "HO-R2"
        ]
    assert (overdue.last_step, overdue.next_step, overdue.next_step_at) == (
        None,
        "remind",
        utc(16, 10, 20),
    )


def test_open_prompts_for_person_point_at_the_prompt_after_its_escalation(
    session_factory: sessionmaker[Session], scenario: Scenario
) -> None:
    prompt_id = scenario.prompts["R2 hv"]
    with session_factory.begin() as session:
        add_step_row(session, prompt_id, "remind", utc(16, 10, 20), utc(16, 10, 20))
        add_step_row(session, prompt_id, "breach", utc(16, 17), utc(16, 17))
    with session_factory() as session:
        prompts = open_prompts_for_person(session, "hv-jo")
    assert [(p.prompt_id, p.target, p.sent_at) for p in prompts] == [
        (prompt_id, "person:hv-jo", utc(16, 9, 20))
    ]
