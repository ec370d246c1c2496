"""Nobody is silently dropped (docs/reference/slack.md, "Failures"), on both databases, against
the Slack stand-in: a recipient no channel reaches is passed over at once to the next in the
chain at work, the on-call holders are alerted, the clock runs for the new recipient; with
nobody left the target is unroutable; an escalation that cannot reach someone says so."""

from __future__ import annotations

import dataclasses
import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.delivery import outbox
from bot.delivery.kinds import OutboxKind, RowState
from bot.models import AuditEvent, OutboxMessage, Target
from bot.services.logbook import coverage_for_referrals
from rota.models import Person
from tests.bot.delivery import test_escalation as escalation_tests
from tests.bot.delivery.test_escalation import (
    MONDAY_9,
    REFERRAL_ID,
    at,
    make_dispatcher,
    run_due,
    sent_prompt,
    slack_id,
)
from tests.bot.factories import new_referral, new_target
from tests.rota.factories import add_person, add_shift, add_team

# The escalation tests' rota, stand-in, clock and settings.
clock = escalation_tests.clock
standin = escalation_tests.standin
client = escalation_tests.client
settings = escalation_tests.settings
rota = escalation_tests.rota


def held_prompt(factory: sessionmaker[Session], target: str = "person:hv-jsmith") -> int:
    """A referral whose one target's prompt is due at Monday 09:00; returns the prompt's id."""
    with factory.begin() as session:
        session.add(
            new_referral(
                REFERRAL_ID,
                external_ref="LCS-2026-000777",
                received_at=MONDAY_9,
                summary="SUMMARY-MARKER",
            )
        )
        session.flush()
        row = new_target(REFERRAL_ID, target, "hv-jsmith", MONDAY_9)
        session.add(row)
        session.flush()
        prompt = outbox.enqueue_prompt(session, row, MONDAY_9, planned_via="self")
        return prompt.id


def on_call(factory: sessionmaker[Session], standin, person_id: str = "edt-raj") -> None:
    """An EDT manager on shift (HANDOVER_ALERT_ROLES is edt_manager) all Monday."""
    standin.add_users([{"id": slack_id(person_id), "name": person_id}])
    with factory.begin() as session:
        add_team(session, "edt", hours="none", agency_type="social_care")
        add_person(session, person_id, "edt", permissions="manager")
        add_shift(session, person_id, "edt_manager", at(2026, 11, 16, 0), at(2026, 11, 17, 0))


def unknown_to_slack(factory: sessionmaker[Session], *people: str) -> None:
    """No Slack user in the rota, and no email to look one up by."""
    with factory.begin() as session:
        for person_id in people:
            person = session.get(Person, person_id)
            person.slack_user, person.email = None, None


def events(factory: sessionmaker[Session], *names: str) -> list[AuditEvent]:
    with factory() as session:
        query = select(AuditEvent).where(AuditEvent.event.in_(names)).order_by(AuditEvent.id)
        return list(session.scalars(query))


def kinds(messages: list[dict]) -> list[str]:
    return [
        m["metadata"]["event_payload"].get("kind")
        or m["metadata"]["event_payload"].get("step")
        or m["metadata"]["event_type"]
        for m in messages
    ]


def rows(factory: sessionmaker[Session], kind: str) -> list[OutboxMessage]:
    with factory() as session:
        query = select(OutboxMessage).where(OutboxMessage.kind == kind).order_by(OutboxMessage.id)
        return list(session.scalars(query))


@pytest.mark.usefixtures("rota")
def test_someone_slack_does_not_know_is_passed_over_to_the_deputy_at_once(
    session_factory, client, clock, standin, settings
) -> None:
    on_call(session_factory, standin)
    unknown_to_slack(session_factory, "hv-jsmith")
    prompt_id = held_prompt(session_factory)

    clock.set(MONDAY_9)
    make_dispatcher(session_factory, client, clock, settings).run_once()

    # The deputy has the prompt now, in the same pass.
    [prompt] = standin.messages(standin.dm_channel_for(slack_id("hv-cover")))
    assert prompt["metadata"]["event_payload"] == {
        "referral_id": REFERRAL_ID,
        "prompt_id": prompt_id,
    }
    assert "You receive this as deputy for `person:hv-jsmith`." in json.dumps(prompt)
    [rerouted] = events(session_factory, "prompt_rerouted")
    assert (rerouted.recipient, rerouted.target, rerouted.at) == (
        "hv-cover",
        "person:hv-jsmith",
        MONDAY_9,
    )
    assert json.loads(rerouted.detail) == {
        "from": "hv-jsmith",
        "reason": "hv-jsmith could not be reached (no_slack_user)",
        "error": "no_slack_user",
        "via": "deputy",
        "prompt_id": prompt_id,
    }
    [sent] = events(session_factory, "prompt_sent")
    assert (sent.recipient, sent.at) == ("hv-cover", MONDAY_9)
    assert json.loads(sent.detail)["passed_over"] == ["hv-jsmith"]

    # The on-call manager is told at once, by DM, naming the person and the target.
    [unreachable] = events(session_factory, "unreachable")
    assert (unreachable.recipient, unreachable.at) == ("hv-jsmith", MONDAY_9)
    assert json.loads(unreachable.detail)["alerted"] == ["edt-raj"]
    [alert] = standin.messages(standin.dm_channel_for(slack_id("edt-raj")))
    assert alert["text"] == f"Handover referral {REFERRAL_ID}: someone could not be reached"
    assert alert["metadata"]["event_payload"]["kind"] == "unreachable"
    body = json.dumps(alert)
    assert "`hv-jsmith` could not be reached by Slack for target `person:hv-jsmith`." in body
    assert "The prompt went to `hv-cover` instead." in body
    assert "Slack said: `no_slack_user`" in body
    assert "SUMMARY-MARKER" not in standin.all_text()

    # Health was asked all along: the target never shows as "not asked".
    with session_factory() as session:
        coverage = coverage_for_referrals(session, [REFERRAL_ID], settings.timezone)
        assert coverage[REFERRAL_ID].states["health"] == "pending"

    # The clock runs for the deputy: their reminder at +60 working minutes.
    with session_factory() as session:
        assert session.get(Target, prompt_row_target(session, prompt_id)).state == "prompted"
    [step] = rows(session_factory, OutboxKind.ESCALATION)
    assert (step.recipient_id, step.due_at) == ("hv-cover", at(2026, 11, 16, 10))
    run_due(session_factory, client, clock, at(2026, 11, 16, 10), settings)
    dm = standin.messages(standin.dm_channel_for(slack_id("hv-cover")))
    assert kinds(dm) == ["handover_prompt", "remind"]


def prompt_row_target(session: Session, prompt_id: int) -> int:
    row = session.get(OutboxMessage, prompt_id)
    assert row is not None and row.target_id is not None
    return row.target_id


@pytest.mark.usefixtures("rota")
def test_a_deactivated_account_and_a_refused_dm_pass_on_down_the_chain(
    session_factory, client, clock, standin, settings
) -> None:
    # hv-jsmith's account is deactivated, hv-cover refuses DMs from apps: hv-duty is asked.
    standin.add_users([{"id": slack_id("hv-jsmith"), "name": "hv-jsmith", "deleted": True}])
    prompt_id = held_prompt(session_factory)
    clock.set(MONDAY_9)
    standin.fail_with_error("chat.postMessage", "user_disabled")  # the first post: hv-jsmith
    standin.fail_with_error("chat.postMessage", "messages_tab_disabled")  # then hv-cover
    make_dispatcher(session_factory, client, clock, settings).run_once()

    rerouted = events(session_factory, "prompt_rerouted")
    assert [(e.recipient, json.loads(e.detail)["error"]) for e in rerouted] == [
        ("hv-cover", "user_disabled"),
        ("hv-duty", "messages_tab_disabled"),
    ]
    assert [json.loads(e.detail)["via"] for e in rerouted] == ["deputy", "duty"]
    [prompt] = standin.messages(standin.dm_channel_for(slack_id("hv-duty")))
    assert prompt["metadata"]["event_payload"]["prompt_id"] == prompt_id
    with session_factory() as session:
        row = session.get(OutboxMessage, prompt_id)
        assert (row.state, row.recipient_id) == (RowState.SENT, "hv-duty")
        assert outbox.passed_over(row) == {
            "hv-jsmith": "user_disabled",
            "hv-cover": "messages_tab_disabled",
        }
    # Nobody on call: each alert goes to the EDT channel.
    alerts = [m for m in standin.messages("C0EDT") if kinds([m]) == ["unreachable"]]
    assert len(alerts) == 2
    assert [json.loads(e.detail)["alerted"] for e in events(session_factory, "unreachable")] == [
        ["C0EDT"],
        ["C0EDT"],
    ]


@pytest.mark.usefixtures("rota")
def test_nobody_left_to_reach_is_unroutable_and_alerted_to_the_on_call_holders(
    session_factory, client, clock, standin, settings
) -> None:
    on_call(session_factory, standin)
    unknown_to_slack(session_factory, "hv-jsmith", "hv-cover", "hv-duty", "hv-lead")
    prompt_id = held_prompt(session_factory)
    clock.set(MONDAY_9)
    make_dispatcher(session_factory, client, clock, settings).run_once()

    assert [e.recipient for e in events(session_factory, "unreachable")] == [
        "hv-jsmith",
        "hv-cover",
        "hv-duty",
        "hv-lead",
    ]
    assert [e.recipient for e in events(session_factory, "prompt_rerouted")] == [
        "hv-cover",
        "hv-duty",
        "hv-lead",
    ]
    [unroutable] = events(session_factory, "unroutable")
    assert json.loads(unroutable.detail)["reason"] == (
        "nobody else in the chain can be reached; could not reach hv-jsmith (no_slack_user), "
        "hv-cover (no_slack_user), hv-duty (no_slack_user), hv-lead (no_slack_user)"
    )
    with session_factory() as session:
        row = session.get(OutboxMessage, prompt_id)
        assert (row.state, row.last_error) == (RowState.FAILED, "unroutable")
        assert session.get(Target, row.target_id).state == "unroutable"
    dm = standin.messages(standin.dm_channel_for(slack_id("edt-raj")))
    assert kinds(dm) == ["unreachable"] * 4 + ["unroutable"]
    assert "Nobody else in its chain can be reached" in json.dumps(dm[3])


@pytest.mark.usefixtures("rota")
def test_the_escalation_post_names_who_could_not_be_reached_instead_of_claiming_it_told_them(
    session_factory, client, clock, standin, settings
) -> None:
    on_call(session_factory, standin)
    unknown_to_slack(session_factory, "hv-cover")
    sent_prompt(session_factory, client, clock, settings=settings)
    run_due(session_factory, client, clock, at(2026, 11, 16, 11), settings)

    escalated = {e.recipient: json.loads(e.detail) for e in events(session_factory, "escalated")}
    assert (escalated["hv-cover"]["delivered"], escalated["hv-cover"]["error"]) == (
        False,
        "no_slack_user",
    )
    assert escalated["hv-duty"]["delivered"] is True
    # The on-call manager hears at once that the deputy could not be told.
    [alert] = standin.messages(standin.dm_channel_for(slack_id("edt-raj")))
    assert kinds([alert]) == ["unreachable"]
    assert "`hv-cover` could not be reached by Slack" in json.dumps(alert)
    assert "Please contact them by phone or another route." in json.dumps(alert)

    run_due(session_factory, client, clock, at(2026, 11, 16, 13), settings)
    [post] = [m for m in standin.messages("C0MASH") if kinds([m]) == ["escalate_channel"]]
    text = json.dumps(post)
    assert "Escalated already to <@UHVDUTY>, <@UHVLEAD>." in text
    assert "Could not be reached: `hv-cover`. Please contact them another way." in text
    assert "<@UHVCOVER>" not in text


@pytest.mark.usefixtures("rota")
def test_a_card_the_edt_channel_refuses_is_put_before_the_on_call_holders(
    session_factory, client, clock, standin, settings
) -> None:
    on_call(session_factory, standin)
    settings = dataclasses.replace(settings, edt_channel="C0GONE")
    held_prompt(session_factory)
    before = at(2026, 11, 16, 8, 59)  # the prompt is not due yet: only the card goes
    with session_factory.begin() as session:
        outbox.enqueue_card(session, REFERRAL_ID, before, "C0GONE")
    clock.set(before)
    make_dispatcher(session_factory, client, clock, settings).run_once()

    [failed] = [e for e in events(session_factory, "prompt_failed")]
    assert json.loads(failed.detail)["kind"] == "card"
    [alert] = standin.messages(standin.dm_channel_for(slack_id("edt-raj")))
    assert alert["text"] == f"Handover referral {REFERRAL_ID}: message not delivered"
    body = json.dumps(alert)
    assert "A message could not be delivered" in body
    assert "The referral's card in `C0GONE` could not be delivered by Slack." in body
    assert "Slack said: `channel_not_found`" in body
