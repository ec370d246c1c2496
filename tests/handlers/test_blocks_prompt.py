"""Block Kit builders for prompts, cards and alerts: pure functions, checked without mocks."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.models import Referral, Target
from handlers.blocks.alerts import ALERT_KINDS, build_alert_message
from handlers.blocks.card import build_card
from handlers.blocks.prompt import (
    PROMPT_ACTIONS_BLOCK,
    build_prompt_message,
    build_prompt_response_message,
    format_local,
)
from handlers.ids import ACK, HAS_INFO, NOT_KNOWN, REDIRECT

LONDON = ZoneInfo("Europe/London")
SUMMARY = "Mother Jane Example assaulted at 12 Acacia Avenue holding baby Sam, DOB 01/10/2026"


def referral(**overrides: Any) -> Referral:
    values: dict[str, Any] = {
        "referral_id": "HO-K7M3QX",
        "external_ref": "LCS-2026-000123",
        "category": "domestic_abuse",
        "urgency": "urgent",
        "referred_at": datetime(2026, 12, 26, 2, 10, tzinfo=UTC),
        "received_at": datetime(2026, 12, 26, 2, 14, tzinfo=UTC),
        "referrer_id": "edt-amy",
        "summary": SUMMARY,
        "source": "api",
        "request_hash": "0" * 64,
        "rota_version": 1,
        "plan_json": "{}",
        "status": "open",
    }
    values.update(overrides)
    return Referral(**values)


def walk(value: Any):
    """Every dict inside a Block Kit structure."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk(item)


def check_block_kit_limits(message: dict[str, Any]) -> None:
    """The limits Slack enforces on a message (Slack's Block Kit limits)."""
    assert isinstance(message["text"], str) and message["text"]
    blocks = message["blocks"]
    assert 0 < len(blocks) <= 50
    for block in blocks:
        if block["type"] == "section":
            if "text" in block:
                assert 0 < len(block["text"]["text"]) <= 3000
            for item in block.get("fields", []):
                assert 0 < len(item["text"]) <= 2000
            assert len(block.get("fields", [])) <= 10
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= 150
        if block["type"] == "actions":
            assert len(block["elements"]) <= 25
        if "block_id" in block:
            assert len(block["block_id"]) <= 255
    for node in walk(blocks):
        if node.get("type") == "button":
            assert 0 < len(node["text"]["text"]) <= 75
            assert len(node["value"]) <= 2000
            assert len(node["action_id"]) <= 255


def assert_minimal(message: dict[str, Any], ref: Referral) -> None:
    """No summary anywhere; the notification text names the referral ID only."""
    dumped = json.dumps(message)
    assert SUMMARY not in dumped
    assert "Acacia" not in dumped and "Jane" not in dumped
    text = message["text"]
    assert ref.referral_id in text
    assert ref.external_ref not in text
    assert "domestic" not in text.lower() and "abuse" not in text.lower()
    assert ref.urgency not in text.lower()


DUE = datetime(2027, 1, 11, 9, 0, tzinfo=UTC)
RESPOND_BY = datetime(2027, 1, 11, 17, 0, tzinfo=UTC)


def test_prompt_message_has_the_facts_the_question_and_four_buttons() -> None:
    ref = referral()
    message = build_prompt_message(ref, 42, due_at=DUE, respond_by=RESPOND_BY, tz=LONDON)

    assert message["text"] == "Handover referral HO-K7M3QX: please respond"
    dumped = json.dumps(message)
    for fact in ("HO-K7M3QX", "LCS-2026-000123", "Domestic abuse", "URGENT"):
        assert fact in dumped
    assert "Sat 26 Dec 2026 02:10 GMT" in dumped  # referred at, local time
    assert "Mon 11 Jan 2027 09:00 GMT" in dumped  # due
    assert "Do you hold information about this child or family?" in dumped
    assert "Please respond by *Mon 11 Jan 2027 17:00 GMT*" in dumped
    actions = [b for b in message["blocks"] if b["type"] == "actions"]
    assert len(actions) == 1 and actions[0]["block_id"] == PROMPT_ACTIONS_BLOCK
    buttons = actions[0]["elements"]
    assert [b["action_id"] for b in buttons] == [ACK, HAS_INFO, NOT_KNOWN, REDIRECT]
    assert {b["value"] for b in buttons} == {"42"}
    check_block_kit_limits(message)
    assert_minimal(message, ref)


def test_prompt_times_follow_summer_time() -> None:
    ref = referral(referred_at=datetime(2027, 7, 3, 23, 30, tzinfo=UTC))
    message = build_prompt_message(
        ref,
        1,
        due_at=datetime(2027, 7, 5, 8, 0, tzinfo=UTC),
        respond_by=datetime(2027, 7, 5, 16, 0, tzinfo=UTC),
        tz=LONDON,
    )
    dumped = json.dumps(message)
    assert "Sun 4 Jul 2027 00:30 BST" in dumped
    assert "Mon 5 Jul 2027 09:00 BST" in dumped
    assert "Mon 5 Jul 2027 17:00 BST" in dumped


def test_prompt_says_why_a_deputy_receives_it() -> None:
    message = build_prompt_message(
        referral(),
        7,
        due_at=DUE,
        respond_by=RESPOND_BY,
        tz=LONDON,
        via="deputy",
        target="person:hv-jsmith",
    )
    assert "You receive this as deputy for `person:hv-jsmith`" in json.dumps(message)


def test_case_reference_is_escaped_for_mrkdwn() -> None:
    message = build_prompt_message(
        referral(external_ref="A<B>&C"), 1, due_at=DUE, respond_by=RESPOND_BY, tz=LONDON
    )
    assert "A&lt;B&gt;&amp;C" in json.dumps(message)


@pytest.mark.parametrize(
    ("response", "label"),
    [
        ("acknowledged", "Acknowledged"),
        ("has_information", "Holds information"),
        ("not_known", "Not known"),
        ("redirected", "Redirected"),
    ],
)
def test_response_message_shows_who_what_when_without_buttons(response: str, label: str) -> None:
    ref = referral()
    message = build_prompt_response_message(
        ref,
        response=response,
        responder="<@U0HV1>",
        responded_at=datetime(2027, 1, 11, 9, 12, tzinfo=UTC),
        tz=LONDON,
        redirected_to="person:gp-lee" if response == "redirected" else None,
    )
    dumped = json.dumps(message)
    assert f"*{label}* by <@U0HV1> at Mon 11 Jan 2027 09:12 GMT" in dumped
    assert not [b for b in message["blocks"] if b["type"] == "actions"]
    if response == "redirected":
        assert "`person:gp-lee`" in dumped
    check_block_kit_limits(message)
    assert_minimal(message, ref)


def target(position: int, name: str, state: str, due_at: datetime | None = DUE) -> Target:
    return Target(
        id=position + 1,
        referral_id="HO-K7M3QX",
        position=position,
        spec=name,
        planned_via="self",
        planned_recipient=None,
        due_at=due_at,
        state=state,
    )


def test_card_lists_each_target_with_its_live_state() -> None:
    ref = referral()
    targets = [
        target(1, "team:gp-northgate", "prompted"),
        target(0, "person:hv-jsmith", "held"),
        target(2, "role:police_dau", "acknowledged"),
        target(3, "person:pr-old", "unroutable", None),
    ]
    card = build_card(
        ref,
        targets,
        tz=LONDON,
        recipients={2: "<#C0GP>", 3: "<@U0POL>"},
        updated_at=datetime(2027, 1, 11, 9, 1, tzinfo=UTC),
    )
    lines = "\n".join(
        b["text"]["text"] for b in card["blocks"] if b["type"] == "section" and "text" in b
    )
    assert lines.splitlines() == [
        ":hourglass_flowing_sand: `person:hv-jsmith`: held until Mon 11 Jan 2027 09:00 GMT",
        ":envelope: `team:gp-northgate`: prompted <#C0GP>",
        ":white_check_mark: `role:police_dau`: acknowledged (<@U0POL>)",
        ":warning: `person:pr-old`: unroutable: nobody to reach within 7 days",
    ]
    assert card["text"] == "Handover referral HO-K7M3QX: referral card"
    dumped = json.dumps(card)
    assert "LCS-2026-000123" in dumped and "Updated Mon 11 Jan 2027 09:01 GMT" in dumped
    check_block_kit_limits(card)
    assert_minimal(card, ref)


def test_card_with_fifty_long_targets_stays_within_limits() -> None:
    targets = [target(i, f"person:{'x' * 120}-{i}", "held") for i in range(50)]
    card = build_card(referral(), targets, tz=LONDON)
    check_block_kit_limits(card)
    joined = "\n".join(b["text"]["text"] for b in card["blocks"] if "text" in b)
    assert all(f"-{i}`" in joined for i in range(50))


@pytest.mark.parametrize("kind", ALERT_KINDS)
def test_alerts_name_the_referral_and_never_the_summary(kind: str) -> None:
    ref = referral()
    message = build_alert_message(
        kind,
        ref,
        tz=LONDON,
        target="role:edt_manager" if kind == "on_call" else "person:hv-jsmith",
        recipient="hv-jsmith" if kind == "delivery_failure" else None,
        detail="next reachable Tue 29 Dec 09:00 (78 h 50 min after receipt)",
        reason="user_not_found" if kind == "delivery_failure" else None,
    )
    check_block_kit_limits(message)
    assert_minimal(message, ref)
    dumped = json.dumps(message)
    assert "HO-K7M3QX" in dumped and "LCS-2026-000123" in dumped
    if kind == "delivery_failure":
        assert "`hv-jsmith`" in dumped and "`user_not_found`" in dumped
    if kind == "on_call":
        assert "`edt_manager`" in dumped


def section_text(message: dict[str, Any]) -> str:
    return message["blocks"][1]["text"]["text"]


@pytest.mark.parametrize(
    ("instead", "says"),
    [
        ("hv-kpatel", "The prompt went to `hv-kpatel` instead."),
        ("unroutable", "Nobody else in its chain can be reached: please find someone to ask."),
        (None, "Please contact them by phone or another route."),
    ],
)
def test_an_unreachable_alert_names_the_person_the_target_and_what_became_of_it(
    instead: str | None, says: str
) -> None:
    message = build_alert_message(
        "unreachable",
        referral(),
        tz=LONDON,
        target="person:hv-jsmith",
        recipient="hv-jsmith",
        reason="smtp:550",
        channel="slack,email",
        instead=instead,
    )
    assert message["text"] == "Handover referral HO-K7M3QX: someone could not be reached"
    assert message["blocks"][0]["text"]["text"] == "Someone could not be reached"
    assert section_text(message) == (
        "`hv-jsmith` could not be reached by Slack or email for target `person:hv-jsmith`. "
        f"{says}\nThe mail relay said: `smtp:550`"
    )


def test_a_failed_post_is_named_for_what_it_was() -> None:
    message = build_alert_message(
        "delivery_failure",
        referral(),
        tz=LONDON,
        recipient="C0EDTCARDS",
        reason="channel_not_found",
        what="card",
    )
    assert message["text"] == "Handover referral HO-K7M3QX: message not delivered"
    assert message["blocks"][0]["text"]["text"] == "A message could not be delivered"
    assert section_text(message) == (
        "The referral's card in `C0EDTCARDS` could not be delivered by Slack. Please check the "
        "channel and the bot's place in it.\nSlack said: `channel_not_found`"
    )


def test_unknown_alert_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown alert kind"):
        build_alert_message("gossip", referral(), tz=LONDON)


def test_format_local_uses_the_service_time_zone() -> None:
    instant = datetime(2027, 3, 28, 1, 30, tzinfo=UTC)  # just after the spring change
    assert format_local(instant, LONDON) == "Sun 28 Mar 2027 02:30 BST"


@pytest.mark.parametrize(
    ("urgency", "offsets", "words"),
    [
        ("urgent", (15, 30, 60), "on the urgent offsets: a reminder at +15, "),
        ("standard", (60, 120, 240), "on the standard offsets: a reminder at +60, "),
    ],
)
def test_card_names_the_referrals_escalation_offsets(
    urgency: str, offsets: tuple[int, int, int], words: str
) -> None:
    card = build_card(referral(urgency=urgency), [], tz=LONDON, offsets=offsets)
    [context] = [b for b in card["blocks"] if b["type"] == "context"]
    _, escalate, channel = offsets
    assert context["elements"][0]["text"] == (
        f"Unanswered prompts escalate {words}the chain and team manager at +{escalate}, "
        f"the escalation channel at +{channel} working minutes; breach at the end of the "
        "recipient's own working day."
    )
    check_block_kit_limits(card)


def test_prompt_lists_the_steps_that_follow_and_marks_urgent() -> None:
    steps = [
        ("remind", datetime(2027, 1, 11, 9, 15, tzinfo=UTC)),
        ("escalate", datetime(2027, 1, 11, 9, 30, tzinfo=UTC)),
        ("escalate_channel", datetime(2027, 1, 11, 10, 0, tzinfo=UTC)),
        ("breach", datetime(2027, 1, 11, 16, 0, tzinfo=UTC)),
    ]
    message = build_prompt_message(
        referral(urgency="urgent"), 42, due_at=DUE, respond_by=steps[0][1], tz=LONDON, steps=steps
    )
    assert message["blocks"][1]["text"]["text"] == (
        "*Do you hold information about this child or family?*\n"
        "Please respond by *Mon 11 Jan 2027 09:15 GMT*.\n"
        "If nobody responds: a reminder at Mon 11 Jan 2027 09:15 GMT, your chain and team "
        "manager at Mon 11 Jan 2027 09:30 GMT, the escalation channel at Mon 11 Jan 2027 "
        "10:00 GMT, breach at Mon 11 Jan 2027 16:00 GMT (urgent)."
    )
    check_block_kit_limits(message)
