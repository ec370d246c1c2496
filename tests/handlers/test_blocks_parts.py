"""The shared Block Kit parts (handlers/blocks/parts.py): the shapes Slack takes, cut to its
limits so that a long text never makes Slack refuse a whole message."""

from __future__ import annotations

from handlers.blocks.parts import (
    actions_block,
    button,
    context_block,
    divider_block,
    fields_block,
    header_block,
    mrkdwn_text,
    option,
    plain_text,
    section_block,
)


def test_each_part_has_the_shape_block_kit_takes() -> None:
    assert header_block("Referral HO-1") == {
        "type": "header",
        "text": {"type": "plain_text", "text": "Referral HO-1"},
    }
    assert section_block("*Hi*") == {"type": "section", "text": {"type": "mrkdwn", "text": "*Hi*"}}
    assert section_block("x", block_id="home_referral_HO-1") == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "x"},
        "block_id": "home_referral_HO-1",
    }
    assert fields_block([mrkdwn_text("a")]) == {
        "type": "section",
        "fields": [{"type": "mrkdwn", "text": "a"}],
    }
    assert context_block("note") == {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": "note"}],
    }
    assert divider_block() == {"type": "divider"}
    ok = button("handover_ack", "Acknowledge", "7", "primary")
    assert ok == {
        "type": "button",
        "action_id": "handover_ack",
        "text": {"type": "plain_text", "text": "Acknowledge"},
        "style": "primary",
        "value": "7",
    }
    assert "style" not in button("handover_next", "Next", "2")
    assert actions_block([ok]) == {"type": "actions", "elements": [ok]}
    assert actions_block([ok], "b1") == {"type": "actions", "block_id": "b1", "elements": [ok]}
    assert option("phone", "Phone call") == {"text": plain_text("Phone call"), "value": "phone"}


def test_long_texts_are_cut_to_block_kits_limits() -> None:
    assert header_block("h" * 151)["text"]["text"] == "h" * 150
    assert section_block("s" * 3001)["text"]["text"] == "s" * 3000
    assert context_block("c" * 3001)["elements"][0]["text"] == "c" * 3000
    assert option("v", "o" * 76)["text"]["text"] == "o" * 75
    # Within the limits nothing is cut.
    assert header_block("h" * 150)["text"]["text"] == "h" * 150
    assert option("v", "o" * 75)["text"]["text"] == "o" * 75
