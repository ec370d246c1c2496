"""Closing the loop end to end through the Slack stand-in, on SQLite and PostgreSQL: a health
visitor offers information by 10:00 by phone; the referrer and the MASH duty holder are told
with her name, team and phone; at 10:30 they are asked whether the call happened; "missed"
reaches the health visitor and her manager (docs/closing-the-loop.md).

The answers go through signed Slack requests to the running bot; the dispatcher runs its real
passes at each instant, at the default settings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery.dispatcher import Dispatcher
from bot.models import AuditEvent, ContactFollowup, OutboxMessage
from handlers import ids
from handlers.home import build_home_view
from handlers.log_command import handle_log
from rota.models import Person, Shift, Team
from tests.bot.workspaces.installs import save_installation
from tests.handlers.slack_payloads import (
    SUMMARY,
    Harness,
    Scenario,
    block_actions,
    build_scenario,
    has_info_values,
    running_bot,
    slack_user,
    wait_for,
)

PHONE = "01603 223344"


def utc(hour: int, minute: int = 0, day: int = 16) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)  # November: London is UTC


@pytest.fixture
def bot(session_factory: sessionmaker[Session]) -> Iterator[Harness]:
    with running_bot(session_factory, owner_team="mash") as harness:
        yield harness


@pytest.fixture
def scenario(bot: Harness, session_factory: sessionmaker[Session]) -> Scenario:
    return build_mash_scenario(bot, session_factory)


def build_mash_scenario(bot: Harness, session_factory: sessionmaker[Session]) -> Scenario:
    """The scenario, with the MASH as the daytime owner team: its duty holder on shift until
    18:00, its manager, a safeguarding lead with oversight; hv-kpatel's work phone."""
    built = build_scenario(session_factory, bot.client)
    with session_factory.begin() as session:
        session.add(
            Team(team_id="mash", name="MASH", agency="Council", agency_type="social_care",
                 region="england", hours=None, manager_id="mash-mgr")
        )  # fmt: skip
        session.flush()
        for pid, perms in (("mash-duty", ""), ("mash-mgr", "manager"), ("sg-lead", "oversight")):
            session.add(
                Person(person_id=pid, name=pid.replace("-", " ").title(),
                       slack_user=slack_user(pid), email=f"{pid}@example.org",
                       team_id="mash" if pid != "sg-lead" else "edt", role="social worker",
                       permissions=perms)
            )  # fmt: skip
        session.flush()
        session.add(Shift(person_id="mash-duty", role="duty:mash", start_at=utc(8), end_at=utc(18)))
        hv = session.get(Person, "hv-kpatel")
        assert hv is not None
        hv.phone = PHONE
    return built


def dispatch(bot: Harness, session_factory: sessionmaker[Session], at: datetime) -> None:
    bot.clock.set(at)
    Dispatcher(
        bot.services.settings, session_factory, bot.client, bot.clock, instance_id="t"
    ).run_once()


def loop_messages(bot: Harness, person_id: str, kind: str | None = None) -> list[dict]:
    channel = bot.standin.dm_channel_for(slack_user(person_id))
    if channel is None:
        return []
    return [
        m
        for m in bot.standin.messages(channel)
        if (m.get("metadata") or {}).get("event_type") == "handover_loop"
        and (kind is None or m["metadata"]["event_payload"]["kind"] == kind)
    ]


def text_of(message: dict) -> str:
    return json.dumps(message["blocks"], ensure_ascii=False) + message.get("text", "")


def events(session_factory: sessionmaker[Session], *names: str) -> list[AuditEvent]:
    with session_factory() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.event.in_(names)).order_by(AuditEvent.id)
            )
        )


def offer_information_by_10_by_phone(
    bot: Harness, scenario: Scenario, contact_by: str = "2026-11-16T10:00:00+00:00"
) -> None:
    """hv-kpatel clicks "I hold information" and submits 10:00 (or `contact_by`), by phone."""
    answer = bot.send_payload(
        block_actions(
            slack_user("hv-kpatel"),
            ids.HAS_INFO,
            str(scenario.prompt_id),
            channel_id=scenario.dm_channel,
            message_ts=scenario.dm_ts,
        )
    )
    assert answer.status == 200
    [opened] = wait_for(lambda: bot.calls("views.open"))
    view = opened.args["view"]
    submitted = bot.submit_view(slack_user("hv-kpatel"), view, has_info_values(contact_by))
    assert submitted.status == 200
    assert submitted.body in (b"", b"{}") or "errors" not in submitted.json


def click_check(
    bot: Harness, person_id: str, action: str, message: dict, *, shown_to: str | None = None
) -> None:
    """`person_id` clicks `action` on `message`, in the DM of `shown_to` (their own)."""
    channel = bot.standin.dm_channel_for(slack_user(shown_to or person_id))
    assert channel is not None
    value = str(message["metadata"]["event_payload"]["followup_id"])
    answer = bot.send_payload(
        block_actions(
            slack_user(person_id), action, value, channel_id=channel, message_ts=message["ts"]
        )
    )
    assert answer.status == 200


def test_information_offered_reaches_the_referrer_and_the_mash_then_a_missed_call_escalates(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    offer_information_by_10_by_phone(bot, scenario)
    dispatch(bot, session_factory, utc(9, 12))

    # At once: the referrer (DM) and the MASH duty holder, with name, role, team, mention, phone.
    for person_id in ("edt-amy", "mash-duty"):
        [notice] = loop_messages(bot, person_id, "info_notice")
        text = text_of(notice)
        assert "Hv Kpatel holds information" in text
        assert "by phone by *Mon 16 Nov 2026 10:00 GMT*" in text
        assert "Team: Health Visiting North" in text
        assert "Role: worker" in text
        assert f"<@{slack_user('hv-kpatel')}>" in text
        assert f"Phone: {PHONE}" in text
        assert SUMMARY not in text
        assert notice["text"] == f"Handover referral {scenario.referral_id}: information offered"
    # The EDT card's thread names her work phone too.
    wait_for(  # posted once the modal's submission is answered
        lambda: [
            c
            for c in bot.calls("chat.postMessage")
            if c.args.get("thread_ts") and f"; phone {PHONE}" in json.dumps(c.args["blocks"])
        ]
    )
    sent = events(session_factory, "information_notice_sent")
    assert [(e.recipient, e.target, e.actor) for e in sent] == [
        ("edt-amy", "person:hv-kpatel", "dispatcher"),
        ("mash-duty", "person:hv-kpatel", "dispatcher"),
    ]
    detail = json.loads(sent[0].detail)
    assert (detail["professional"], detail["method"], detail["contact_by"]) == (
        "hv-kpatel",
        "phone",
        "2026-11-16T10:00:00+00:00",
    )

    # The referrer's Home shows her referral, each target's state and who offered information.
    with session_factory() as session:
        home = build_home_view(session, slack_user("edt-amy"), utc(9, 13), bot.services.settings)
    mine = next(
        b["text"]["text"] for b in home["blocks"] if b.get("block_id") == "home_mine_HO-TEST01"
    )
    assert "• `person:hv-kpatel`: holds information" in mine
    assert (
        "*Hv Kpatel* offered information, phone by Mon 16 Nov 2026 10:00 GMT "
        "(contact not yet confirmed)"
    ) in mine

    # Not before 10:30; at 10:30 both are asked, with the two buttons.
    dispatch(bot, session_factory, utc(10, 29))
    assert loop_messages(bot, "mash-duty", "contact_check") == []
    dispatch(bot, session_factory, utc(10, 30))
    checks = {p: loop_messages(bot, p, "contact_check") for p in ("edt-amy", "mash-duty")}
    assert all(len(found) == 1 for found in checks.values())
    check = checks["mash-duty"][0]
    buttons = [
        e["action_id"] for b in check["blocks"] if b["type"] == "actions" for e in b["elements"]
    ]
    assert buttons == ["handover_contact_made", "handover_contact_missed"]  # the contract's ids

    # Someone with no part in it is refused, privately, and nothing changes.
    click_check(bot, "hv-jones", ids.CONTACT_MADE, check, shown_to="mash-duty")
    wait_for(lambda: events(session_factory, "response_refused"))
    assert events(session_factory, "contact_confirmed", "contact_missed") == []

    # The MASH duty holder says the call did not come.
    bot.clock.set(utc(10, 40))
    click_check(bot, "mash-duty", ids.CONTACT_MISSED, check)
    [missed] = wait_for(lambda: events(session_factory, "contact_missed"))
    assert (missed.actor, missed.recipient, missed.target) == (
        "mash-duty",
        "hv-kpatel",
        "person:hv-kpatel",
    )
    assert json.loads(missed.detail)["reason"] == "answered"
    updated = wait_for(
        lambda: [c for c in bot.calls("chat.update") if c.args.get("ts") == check["ts"]]
    )
    assert "Contact missed" in json.dumps(updated[-1].args["blocks"])
    with session_factory() as session:
        [followup] = session.scalars(select(ContactFollowup)).all()
        assert (followup.state, followup.answered_by) == ("missed", "mash-duty")

    # The MASH manager's log of the referral names the offer and what came of it.
    respond = []
    handle_log(
        bot.services, {"user_id": slack_user("sg-lead")}, [scenario.referral_id],
        lambda **kw: respond.append(kw),
    )  # fmt: skip
    assert (
        "`hv-kpatel` offered information, phone by Mon 16 Nov 2026 10:00 GMT: contact missed "
        "(said by `mash-duty`)"
    ) in json.dumps(respond[0]["blocks"], ensure_ascii=False)

    # A second answer changes nothing.
    click_check(bot, "edt-amy", ids.CONTACT_MADE, checks["edt-amy"][0])
    wait_for(lambda: len(bot.calls("chat.postEphemeral")) >= 2)
    assert events(session_factory, "contact_confirmed") == []

    # "Missed" reaches the health visitor and her manager; the day's end finds nothing to do.
    dispatch(bot, session_factory, utc(10, 41))
    [to_hv] = loop_messages(bot, "hv-kpatel", "contact_missed")
    [to_lead] = loop_messages(bot, "hv-lead", "contact_missed")
    assert "Please call the daytime social-care team now" in text_of(to_hv)
    assert "Hv Kpatel* (your team) offered information" in text_of(to_lead)
    dispatch(bot, session_factory, utc(17))
    assert len(events(session_factory, "contact_missed")) == 1
    with session_factory() as session:
        deadline = session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "contact_deadline")
        ).one()
        assert deadline.state == "cancelled"


def test_no_answer_by_the_end_of_the_working_day_is_a_missed_contact(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    offer_information_by_10_by_phone(bot, scenario)
    dispatch(bot, session_factory, utc(9, 12))
    dispatch(bot, session_factory, utc(10, 30))
    dispatch(bot, session_factory, utc(16, 59))
    assert events(session_factory, "contact_missed") == []
    dispatch(bot, session_factory, utc(17))
    [missed] = events(session_factory, "contact_missed")
    assert (missed.actor, missed.at) == ("dispatcher", utc(17))
    assert json.loads(missed.detail)["reason"] == "no answer by the end of the day"
    dispatch(bot, session_factory, utc(17, 1))
    assert len(loop_messages(bot, "hv-kpatel", "contact_missed")) == 1
    assert len(loop_messages(bot, "hv-lead", "contact_missed")) == 1


def test_a_confirmed_contact_ends_it(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    offer_information_by_10_by_phone(bot, scenario)
    dispatch(bot, session_factory, utc(9, 12))
    dispatch(bot, session_factory, utc(10, 30))
    [check] = loop_messages(bot, "edt-amy", "contact_check")
    click_check(bot, "edt-amy", ids.CONTACT_MADE, check)
    [confirmed] = wait_for(lambda: events(session_factory, "contact_confirmed"))
    assert (confirmed.actor, confirmed.recipient) == ("edt-amy", "hv-kpatel")
    dispatch(bot, session_factory, utc(17))
    assert events(session_factory, "contact_missed") == []
    assert loop_messages(bot, "hv-kpatel", "contact_missed") == []


def test_an_offer_after_hours_reaches_the_mash_at_the_start_of_its_next_working_period(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    bot.clock.set(utc(18, 30))  # the duty shift ended at 18:00; the MASH works 09:00-17:00
    offer_information_by_10_by_phone(bot, scenario, "2026-11-17T10:00:00+00:00")
    dispatch(bot, session_factory, utc(18, 30))
    assert len(loop_messages(bot, "edt-amy", "info_notice")) == 1  # the referrer, at once
    assert loop_messages(bot, "mash-duty", "info_notice") == []
    assert loop_messages(bot, "mash-mgr", "info_notice") == []
    dispatch(bot, session_factory, utc(8, 59, day=17))
    assert loop_messages(bot, "mash-mgr", "info_notice") == []
    # Tuesday 09:00: nobody holds the duty shift, so the team manager is the first at work.
    dispatch(bot, session_factory, utc(9, day=17))
    [notice] = loop_messages(bot, "mash-mgr", "info_notice")
    assert "daytime owner of this referral" in text_of(notice)
    sent = events(session_factory, "information_notice_sent")
    assert [(e.recipient, e.at) for e in sent] == [
        ("edt-amy", utc(18, 30)),
        ("mash-mgr", utc(9, day=17)),
    ]


POLICE = "T0POLICE"
POLICE_TOKEN = "xoxb-police-closing-the-loop"


@pytest.fixture
def partner_bot(session_factory: sessionmaker[Session]) -> Iterator[Harness]:
    """The bot with partner workspaces (docs/partner-workspaces.md), installed in the police's."""
    partners = {
        "slack_client_id": "1111.2222",
        "slack_client_secret": "client-secret",
        "token_keys": (Fernet.generate_key().decode(),),
        "public_url": "https://handover.example.gov.uk",
    }
    with running_bot(session_factory, owner_team="mash", **partners) as harness:
        harness.standin.add_workspace(POLICE, token=POLICE_TOKEN)
        settings, engine = harness.services.settings, session_factory.kw["bind"]
        save_installation(settings, engine, POLICE, POLICE_TOKEN, installer="U0POLADMIN")
        yield harness


def test_a_user_of_another_workspace_with_the_referrers_user_id_is_refused_and_logged(
    partner_bot: Harness, session_factory: sessionmaker[Session]
) -> None:
    bot = partner_bot
    scenario = build_mash_scenario(bot, session_factory)
    offer_information_by_10_by_phone(bot, scenario)
    dispatch(bot, session_factory, utc(9, 12))
    dispatch(bot, session_factory, utc(10, 30))
    [check] = loop_messages(bot, "edt-amy", "contact_check")
    followup_id = check["metadata"]["event_payload"]["followup_id"]

    # The referrer's Slack user ID, clicked from the police workspace: somebody else.
    amy, dm = slack_user("edt-amy"), check["channel"]
    click = block_actions(
        amy, ids.CONTACT_MADE, str(followup_id), channel_id=dm, message_ts=check["ts"], team=POLICE
    )
    assert bot.send_payload(click).status == 200
    [refused] = wait_for(lambda: events(session_factory, "response_refused"))
    assert (refused.actor, refused.recipient) == (slack_user("edt-amy"), "hv-kpatel")
    assert json.loads(refused.detail) == {
        "response": "contact_made",
        "followup_id": followup_id,
        "slack_user": slack_user("edt-amy"),
        "workspace": POLICE,
    }
    # Told privately, in the police workspace; nothing recorded, the check unchanged.
    [told] = wait_for(lambda: bot.calls("chat.postEphemeral"))
    assert (told.team_id, told.args["user"]) == (POLICE, slack_user("edt-amy"))
    assert "Only the referrer, the daytime social-care team and oversight" in json.dumps(
        told.args["blocks"]
    )
    assert [c for c in bot.calls("chat.update") if c.args.get("ts") == check["ts"]] == []
    with session_factory() as session:
        followup = session.get(ContactFollowup, followup_id)
        assert followup is not None
        assert (followup.state, followup.answered_by) == ("awaiting", None)

    # The same user ID from the council's own workspace is the referrer, and is recorded.
    click_check(bot, "edt-amy", ids.CONTACT_MADE, check)
    [confirmed] = wait_for(lambda: events(session_factory, "contact_confirmed"))
    assert (confirmed.actor, confirmed.recipient) == ("edt-amy", "hv-kpatel")
    assert len(events(session_factory, "response_refused")) == 1
