"""Slack's mrkdwn read for an email: pure functions, no mail server."""

from __future__ import annotations

from bot.channels.email_render import read_blocks, read_mrkdwn, render_email

NAMES = {"U0HVKPAT01": "Kiran Patel"}.get


def test_mrkdwn_becomes_plain_text_and_escaped_html() -> None:
    rich = read_mrkdwn(
        "*Reminder:* <@U0HVKPAT01> asked `person:hv-jsmith` _today_ &lt;b&gt; &amp; "
        "<https://example.org/a?b=1&c=2|the guide> in <#C0EDTCARDS|edt-referrals>\nnext",
        NAMES,
    )
    assert rich.text == (
        "Reminder: Kiran Patel asked person:hv-jsmith today <b> & the guide in #edt-referrals\nnext"
    )
    assert str(rich.html) == (
        "<strong>Reminder:</strong> Kiran Patel asked <code>person:hv-jsmith</code> "
        "<em>today</em> &lt;b&gt; &amp; "
        '<a href="https://example.org/a?b=1&amp;c=2">the guide</a> in #edt-referrals<br>\nnext'
    )


def test_unknown_people_and_unsafe_links_are_never_shown_as_ids_or_links() -> None:
    rich = read_mrkdwn("<@U0NOBODY1> <javascript:alert(1)|click> <#C0X> <!here>", NAMES)
    assert rich.text == "a colleague click a team channel in Slack @here"
    assert "href" not in str(rich.html) and "U0NOBODY1" not in str(rich.html)


def test_buttons_become_links_or_are_named_as_slack_only() -> None:
    blocks = [
        {
            "type": "actions",
            "elements": [
                {"type": "button", "action_id": "a", "text": {"text": "Go"}, "value": "1"},
                {"type": "button", "action_id": "b", "text": {"text": "Ack in Slack"}},
            ],
        }
    ]
    [part] = read_blocks(
        blocks, lambda action, value: "https://x/1" if action == "a" else None, NAMES
    )
    assert [(link.label, link.url) for link in part.links] == [("Go", "https://x/1")]
    assert list(part.slack_only) == ["Ack in Slack"]


def test_html_from_a_message_cannot_inject_markup() -> None:
    email = render_email(
        "Handover referral HO-1: <script>",
        [{"type": "section", "text": {"type": "plain_text", "text": "<img src=x onerror=1>"}}],
        link_for=lambda *_: None,
        name_of=NAMES,
    )
    assert "<img" not in email.html and "&lt;img src=x onerror=1&gt;" in email.html
    assert "<script>" not in email.html
    assert "<img src=x onerror=1>" in email.text
