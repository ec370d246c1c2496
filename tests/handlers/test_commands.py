"""`/handover` subcommands through signed slash commands over real HTTP (SQLite and PostgreSQL)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.models import AuditEvent, OutboxMessage, Referral, Target
from handlers.commands import HELP_TEXT
from tests.handlers.slack_payloads import (
    SAMPLE_KEYS,
    Harness,
    Scenario,
    slack_user,
    slash_command,
)

REASON = "Duplicate of LCS-2026-000122; child NARRATIVE-REASON-88 already allocated"


def audit_rows(session: Session) -> list[AuditEvent]:
    return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))


def test_command_shape_follows_the_slack_sample() -> None:
    assert set(slash_command("U1", "help", response_url="http://x")) <= SAMPLE_KEYS["slash_command"]


def test_close_by_a_referrer(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    answer = bot.command_answer(slack_user("edt-amy"), f"close ho-test01 {REASON}")

    assert answer["response_type"] == "ephemeral"
    assert answer["text"] == (
        "Referral HO-TEST01 is closed. Cancelled 1 prompt(s) still held and 2 other pending "
        "message(s). The reason is kept with the referral (never in Slack or the log)."
    )
    with session_factory() as session:
        referral = session.get(Referral, scenario.referral_id)
        assert (referral.status, referral.closed_by, referral.close_reason) == (
            "closed",
            "edt-amy",
            REASON,
        )
        assert referral.closed_at == bot.clock.now()
        assert session.get(OutboxMessage, scenario.held_prompt_id).state == "cancelled"
        for row_id in scenario.escalation_ids:
            assert session.get(OutboxMessage, row_id).state == "cancelled"
        assert session.get(OutboxMessage, scenario.prompt_id).state == "sent"
        assert session.get(Target, scenario.held_target_id).state == "cancelled"
        assert session.get(Target, scenario.target_id).state == "cancelled"
        events = audit_rows(session)
        assert [(e.event, e.target) for e in events] == [
            ("prompt_cancelled", "team:gp-northgate"),
            ("referral_closed", None),
        ]
        # Free text a person typed stays out of the log, whose rows are never erased.
        assert json.loads(events[1].detail) == {"cancelled_outbox_rows": 3, "cancelled_prompts": 1}
        assert REASON not in "".join(e.detail or "" for e in events)
        assert events[1].actor == "edt-amy"
        pending_cards = session.scalars(
            select(OutboxMessage).where(
                OutboxMessage.kind == "card", OutboxMessage.state == "pending"
            )
        ).all()
        assert len(pending_cards) == 1
    # What a person typed stays in the log: not in any Slack call, not even in the private answer.
    for typed in (REASON, "NARRATIVE-REASON-88"):
        assert typed not in bot.standin.all_text()
        assert typed not in json.dumps(bot.catcher.posts)
    assert bot.wakes

    again = bot.command_answer(slack_user("edt-mgr"), f"close HO-TEST01 {REASON}")
    assert again["text"] == "Referral HO-TEST01 is already closed."


@pytest.mark.parametrize(
    ("who", "text", "expected"),
    [
        ("edt-bob", "close HO-TEST01 duplicate", "Only its referrer, a manager"),
        ("U0STRANGER", "close HO-TEST01 duplicate", "Only its referrer, a manager"),
        ("edt-amy", "close HO-TEST01", "Give a reason: `/handover close HO-TEST01 REASON`"),
        ("edt-amy", "close HO-ZZZZ99 duplicate", "There is no referral HO-ZZZZ99."),
        ("edt-amy", "close HO-NOPE99 duplicate", "No referral with that ID."),
        ("edt-amy", "close", "Usage: `/handover close REFERRAL_ID REASON`"),
    ],
    ids=["no-permission", "not-in-rota", "missing-reason", "unknown-id", "malformed-id", "usage"],
)
def test_close_refusals_change_nothing(
    bot: Harness,
    scenario: Scenario,
    session_factory: sessionmaker[Session],
    who: str,
    text: str,
    expected: str,
) -> None:
    user = who if who.startswith("U0") else slack_user(who)
    answer = bot.command_answer(user, text)
    assert answer["response_type"] == "ephemeral"
    assert answer["text"].startswith(expected)
    with session_factory() as session:
        assert session.get(Referral, scenario.referral_id).status == "open"
        assert session.get(OutboxMessage, scenario.held_prompt_id).state == "pending"
        assert audit_rows(session) == []


def test_oncall_lists_the_holders(bot: Harness, scenario: Scenario) -> None:
    answer = bot.command_answer(slack_user("hv-jones"), "oncall")
    assert answer["response_type"] == "ephemeral"
    # Everyone on call now: the alert role first, then every other role with a shift now.
    assert answer["text"].splitlines() == [
        "*On call at Mon 16 Nov 2026 09:12 GMT*",
        "• `edt_manager`: Edt Mgr (`edt-mgr`, <@UEDTMGR>) until Mon 16 Nov 2026 17:12 GMT",
        "• `police_dau`: Pc Jones (`pc-jones`, <@UPCJONES>) until Mon 16 Nov 2026 15:12 GMT",
    ]

    police = bot.command_answer(slack_user("hv-jones"), "oncall police_dau")
    assert "`police_dau`: Pc Jones (`pc-jones`" in police["text"]
    assert "edt_manager" not in police["text"]

    unknown = bot.command_answer(slack_user("hv-jones"), "oncall astronaut")
    assert unknown["text"] == "No shift in the rota names the role `astronaut`."


def test_oncall_says_when_nobody_holds_the_role(bot: Harness, scenario: Scenario) -> None:
    bot.clock.set(bot.clock.now().replace(hour=22))
    answer = bot.command_answer(slack_user("hv-jones"), "oncall")
    assert "`edt_manager`: nobody on shift" in answer["text"]


@pytest.mark.parametrize("text", ["help", "frobnicate now"])
def test_help_and_unknown_subcommands(bot: Harness, text: str) -> None:
    answer = bot.command_answer("U0ANYONE", text)
    assert answer == {"path": answer["path"], "text": HELP_TEXT, "response_type": "ephemeral"}


def test_log_is_wired_to_the_log_surface(bot: Harness, scenario: Scenario) -> None:
    answer = bot.command_answer(slack_user("edt-bob"), "log")
    assert answer["response_type"] == "ephemeral"
    assert answer["text"] != HELP_TEXT
