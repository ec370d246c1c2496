"""Prompt buttons and response modals through signed Slack requests over real HTTP.

Each test runs on SQLite and PostgreSQL; the bot talks to the Slack stand-in.
"""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.models import AuditEvent, OutboxMessage, Response, Target
from handlers import ids
from handlers.blocks.response import (
    ACTION_COLLEAGUE,
    ACTION_CONTACT_BY,
    BLOCK_COLLEAGUE,
    BLOCK_CONTACT_BY,
)
from tests.handlers.slack_payloads import (
    NOW,
    SAMPLE_KEYS,
    SUMMARY,
    Harness,
    Scenario,
    block_actions,
    block_suggestion,
    has_info_values,
    redirect_values,
    sign,
    slack_user,
    view_submission,
    wait_for,
)


def click(bot: Harness, scenario: Scenario, person_id: str, action: str) -> None:
    answer = bot.send_payload(
        block_actions(
            slack_user(person_id),
            action,
            str(scenario.prompt_id),
            channel_id=scenario.dm_channel,
            message_ts=scenario.dm_ts,
        )
    )
    assert answer.status == 200


def events(session: Session, event: str) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).where(AuditEvent.event == event)))


def responses(session: Session) -> list[Response]:
    return list(session.scalars(select(Response).order_by(Response.id)))


def thread_replies(bot: Harness, scenario: Scenario) -> list[dict]:
    return [
        c.args for c in bot.calls("chat.postMessage") if c.args.get("thread_ts") == scenario.card_ts
    ]


def reply_detail(reply: dict) -> str:
    """The thread reply's detail, shown in its blocks (its notification text names the referral)."""
    assert reply["text"] == "Handover referral HO-TEST01: response recorded"
    [block] = reply["blocks"]
    return block["text"]["text"]


def test_payloads_follow_slack_sample_shapes() -> None:
    clicked = block_actions("U1", ids.ACK, "1", channel_id="D1", message_ts="1.2")
    submitted = view_submission("U1", ids.HAS_INFO_MODAL, private_metadata="{}", values={})
    assert set(clicked) <= SAMPLE_KEYS["block_actions"]
    assert set(submitted) <= SAMPLE_KEYS["view_submission"]


def test_recipient_acknowledges(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    click(bot, scenario, "hv-kpatel", ids.ACK)

    updates = wait_for(lambda: bot.calls("chat.update"))
    assert updates[0].args["channel"] == scenario.dm_channel
    assert updates[0].args["ts"] == scenario.dm_ts
    dm = bot.standin.messages(scenario.dm_channel)[0]
    shown = json.dumps(dm["blocks"])
    assert "Acknowledged" in shown and f"<@{slack_user('hv-kpatel')}>" in shown
    assert ids.ACK not in shown  # the buttons are gone
    assert dm["text"] == "Handover referral HO-TEST01: acknowledged"

    reply = wait_for(lambda: thread_replies(bot, scenario))[0]
    assert reply_detail(reply) == "hv-kpatel acknowledged at 09:12"
    assert reply["channel"] == "C0EDTCARDS"

    with session_factory() as session:
        [response] = responses(session)
        assert (response.kind, response.responder_id, response.on_behalf_of) == (
            "acknowledged",
            "hv-kpatel",
            None,
        )
        assert response.at == NOW and response.prompt_id == scenario.prompt_id
        [event] = events(session, "acknowledged")
        assert (event.actor, event.recipient, event.target) == (
            "hv-kpatel",
            "hv-kpatel",
            "person:hv-kpatel",
        )
        assert session.get(Target, scenario.target_id).state == "acknowledged"
        for row_id in scenario.escalation_ids:
            assert session.get(OutboxMessage, row_id).state == "cancelled"
        # Other targets' rows are untouched; the card is asked to refresh.
        assert session.get(OutboxMessage, scenario.held_prompt_id).state == "pending"
        cards = session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.kind == "card", OutboxMessage.state == "pending"
            )
        ).all()
        assert len(cards) == 1
    assert bot.wakes
    assert SUMMARY not in bot.standin.all_text()


def test_double_click_records_one_response(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    clickers = [
        threading.Thread(target=click, args=(bot, scenario, who, ids.NOT_KNOWN))
        for who in ("hv-kpatel", "hv-kpatel", "hv-lead")
    ]
    for thread in clickers:
        thread.start()
    for thread in clickers:
        thread.join()

    ephemerals = wait_for(lambda: len(bot.standin.ephemerals()) >= 2 and bot.standin.ephemerals())
    with session_factory() as session:
        [response] = responses(session)
        assert len(events(session, "not_known")) == 1
        assert session.get(Target, scenario.target_id).state == "not_known"
    assert len(ephemerals) == 2
    for note in ephemerals:
        assert "Already answered: not known by " + response.responder_id in json.dumps(note)
    assert len(wait_for(lambda: bot.calls("chat.update"))) == 1


def test_unrelated_user_is_refused_privately(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    click(bot, scenario, "gp-mgr", ids.ACK)  # a manager, but of another team
    answer = bot.send_payload(  # someone in Slack but not in the rota
        block_actions(
            "U0STRANGER",
            ids.NOT_KNOWN,
            str(scenario.prompt_id),
            channel_id=scenario.dm_channel,
            message_ts=scenario.dm_ts,
        )
    )
    assert answer.status == 200

    notes = wait_for(lambda: len(bot.standin.ephemerals()) == 2 and bot.standin.ephemerals())
    by_user = {n["user"]: n for n in notes}
    assert "cannot respond" in by_user[slack_user("gp-mgr")]["blocks"][0]["text"]["text"]
    assert "not in the Handover rota" in by_user["U0STRANGER"]["blocks"][0]["text"]["text"]
    with session_factory() as session:
        refused = events(session, "response_refused")
        assert sorted(e.actor for e in refused) == ["U0STRANGER", "gp-mgr"]
        assert {json.loads(e.detail)["response"] for e in refused} == {"acknowledged", "not_known"}
        assert all(e.target == "person:hv-kpatel" for e in refused)
        assert responses(session) == []
        assert session.get(Target, scenario.target_id).state == "prompted"
        for row_id in scenario.escalation_ids:
            assert session.get(OutboxMessage, row_id).state == "pending"
        assert session.scalar(select(func.count()).where(OutboxMessage.kind == "card")) == 0
    assert bot.calls("chat.update") == []


def test_team_manager_responds_on_behalf(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    click(bot, scenario, "hv-senior", ids.NOT_KNOWN)

    reply = wait_for(lambda: thread_replies(bot, scenario))[0]
    assert reply_detail(reply) == (
        "hv-senior (for hv-kpatel) answered not known to their service at 09:12"
    )
    dm = bot.standin.messages(scenario.dm_channel)[0]
    assert "for `hv-kpatel`" in json.dumps(dm["blocks"])
    with session_factory() as session:
        [response] = responses(session)
        assert (response.responder_id, response.on_behalf_of) == ("hv-senior", "hv-kpatel")
        [event] = events(session, "not_known")
        assert (event.actor, event.recipient) == ("hv-senior", "hv-kpatel")


def test_role_target_manager_of_the_shift_holders_team(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    channel, ts = scenario.role_dm
    answer = bot.send_payload(
        block_actions(
            slack_user("pol-sgt"),
            ids.ACK,
            str(scenario.role_prompt_id),
            channel_id=channel,
            message_ts=ts,
        )
    )
    assert answer.status == 200
    wait_for(lambda: bot.calls("chat.update"))
    with session_factory() as session:
        [response] = responses(session)
        assert (response.responder_id, response.on_behalf_of) == ("pol-sgt", "pc-jones")
        assert session.get(Target, scenario.role_target_id).state == "acknowledged"
    # The card's thread reply: people and target in its blocks, only the referral ID in its
    # notification text.
    reply = wait_for(lambda: thread_replies(bot, scenario))[0]
    assert reply_detail(reply) == "pol-sgt (for pc-jones) acknowledged at 09:12 [role:police_dau]"


def test_has_information_modal(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    click(bot, scenario, "hv-kpatel", ids.HAS_INFO)

    [opened] = wait_for(lambda: bot.calls("views.open"))
    view = opened.args["view"]
    assert view["callback_id"] == ids.HAS_INFO_MODAL
    elements = [b.get("element", {}) for b in view["blocks"]]
    assert all(e.get("type") != "plain_text_input" for e in elements)  # no narrative field
    options = next(e for e in elements if e.get("action_id") == ACTION_CONTACT_BY)["options"]
    labels = [o["text"]["text"] for o in options]
    assert labels[:2] == ["Today 10:00", "Today 11:00"]
    assert "Tue 17 Nov 10:00" in labels
    with session_factory() as session:
        assert responses(session) == []  # nothing recorded until the modal is submitted

    def submit(slot: dict) -> None:
        answer = bot.submit_view(slack_user("hv-kpatel"), view, has_info_values(slot["value"]))
        assert answer.status == 200
        return answer

    # A slot that has passed while the modal was open is refused in the modal.
    passed = submit({"value": "2026-11-16T09:00:00+00:00"})
    assert passed.json == {
        "response_action": "errors",
        "errors": {BLOCK_CONTACT_BY: "That time has passed; choose a later one."},
    }
    accepted = submit(options[4])  # Today 14:00
    assert accepted.body in (b"", b"{}")

    reply = wait_for(lambda: thread_replies(bot, scenario))[0]
    assert reply_detail(reply) == (
        "hv-kpatel holds information at 09:12; will contact the social worker by "
        "today 14:00 (phone call)"
    )
    with session_factory() as session:
        [response] = responses(session)
        assert response.kind == "has_information"
        detail = json.loads(response.detail)
        assert detail["contact_by"] == "2026-11-16T14:00:00+00:00"
        assert detail["method"] == "phone"
        [event] = events(session, "has_information")
        assert json.loads(event.detail)["contact_by"] == "2026-11-16T14:00:00+00:00"
        assert session.get(Target, scenario.target_id).state == "has_information"


def test_redirect_to_a_colleague(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    click(bot, scenario, "hv-kpatel", ids.REDIRECT)
    [opened] = wait_for(lambda: bot.calls("views.open"))
    view = opened.args["view"]
    assert view["callback_id"] == ids.REDIRECT_MODAL

    search = bot.send_payload(
        block_suggestion(slack_user("hv-kpatel"), ACTION_COLLEAGUE, BLOCK_COLLEAGUE, "jon")
    )
    assert search.status == 200
    assert [o["value"] for o in search.json["options"]] == ["hv-jones", "pc-jones"]

    def submit(person_id: str):
        return bot.submit_view(slack_user("hv-kpatel"), view, redirect_values(person_id))

    refused = submit("hv-kpatel")
    assert refused.json["errors"] == {
        BLOCK_COLLEAGUE: "Choose someone other than the person already asked."
    }
    assert submit("hv-jones").status == 200

    reply = wait_for(lambda: thread_replies(bot, scenario))[0]
    assert reply_detail(reply) == "hv-kpatel redirected to person:hv-jones at 09:12"
    with session_factory() as session:
        new = session.scalars(select(Target).where(Target.spec == "person:hv-jones")).one()
        assert new.redirected_from_id == scenario.target_id
        assert (new.state, new.planned_recipient, new.due_at) == ("held", "hv-jones", NOW)
        assert new.position == 3
        prompt = session.scalars(
            select(OutboxMessage).where(OutboxMessage.target_id == new.id)
        ).one()
        assert (prompt.kind, prompt.state, prompt.due_at) == ("prompt", "pending", NOW)
        [event] = events(session, "redirected")
        assert json.loads(event.detail)["to"] == "person:hv-jones"
        assert event.target == "person:hv-kpatel"
        scheduled = [e for e in events(session, "prompt_scheduled")]
        assert [e.target for e in scheduled] == ["person:hv-jones"]
        assert session.get(Target, scenario.target_id).state == "redirected"
        [response] = responses(session)
        assert response.kind == "redirected"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Slack-Request-Timestamp": "1700000000", "X-Slack-Signature": "v0=00"},
        "wrong-secret",
        "stale",
    ],
    ids=["missing", "forged", "wrong-secret", "stale"],
)
def test_bad_signatures_are_refused(
    bot: Harness,
    scenario: Scenario,
    session_factory: sessionmaker[Session],
    headers: dict | str,
) -> None:
    payload = block_actions(
        slack_user("hv-kpatel"),
        ids.ACK,
        str(scenario.prompt_id),
        channel_id=scenario.dm_channel,
        message_ts=scenario.dm_ts,
    )
    body = urlencode({"payload": json.dumps(payload)}).encode()
    if headers == "wrong-secret":
        headers = sign(body, secret="not-the-secret")
    elif headers == "stale":
        headers = sign(body, timestamp=int(time.time()) - 3600)
    # The signature guard of bot/web/http.py is what is tested: over real HTTP.
    answer = bot.http.post(body, "application/x-www-form-urlencoded", headers)
    assert answer.status == 401
    command, url = bot.http.send_command(slack_user("edt-amy"), "close HO-TEST01 dup", secret="bad")
    assert command.status == 401
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 0
        assert responses(session) == []
        assert session.get(Target, scenario.target_id).state == "prompted"
    assert bot.calls("chat.update") == [] and bot.standin.ephemerals() == []
    assert bot.catcher.answers(url) == []
