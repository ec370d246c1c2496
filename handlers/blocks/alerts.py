"""Block Kit for alerts: on call, long gap, unroutable target, a person nobody could reach, and
a message that failed to go."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.delivery.kinds import AlertKind
from handlers.blocks.parts import actions_block, button, fields_block, header_block, section_block
from handlers.blocks.prompt import (
    ReferralFacts,
    format_local,
    mention_or_id,
    mrkdwn_escape,
    notification_text,
    referral_fields,
)
from handlers.ids import ONCALL_ACK

ALERT_KINDS = tuple(AlertKind)

_HEADLINES = {
    AlertKind.ON_CALL: "New referral: you are on call",
    AlertKind.LONG_GAP: "Long gap before a target can be reached",
    AlertKind.UNROUTABLE: "Nobody to reach for a target",
    AlertKind.DELIVERY_FAILURE: "A prompt could not be delivered",
    AlertKind.UNREACHABLE: "Someone could not be reached",
    AlertKind.SLACK_AUTH: "Slack refused the bot's credentials",
    AlertKind.ONCALL_UNANSWERED: "An on-call alert was not acknowledged",
}

_NOTIFICATIONS = {
    AlertKind.ON_CALL: "new referral (on call)",
    AlertKind.LONG_GAP: "long gap alert",
    AlertKind.UNROUTABLE: "unroutable target",
    AlertKind.DELIVERY_FAILURE: "prompt not delivered",
    AlertKind.UNREACHABLE: "someone could not be reached",
    AlertKind.SLACK_AUTH: "Slack credentials refused",
    AlertKind.ONCALL_UNANSWERED: "on-call alert not acknowledged",
}
# What the EDT-channel post calls an alert nobody acknowledged (other kinds: their name).
_ABOUT = {
    AlertKind.ON_CALL: "a new referral, to the on-call holders",
    AlertKind.LONG_GAP: "a long gap before a target can be reached",
    AlertKind.UNROUTABLE: "a target with nobody to reach",
    AlertKind.UNREACHABLE: "someone who could not be reached",
}
ACK_BUTTON_LABEL = "Acknowledge"
REPAGE_PREFIX = "Not yet acknowledged: "


# What a failed post was (an outbox kind), as a delivery-failure alert names it.
_WHAT = {
    "card": "The referral's card",
    "step_message": "An escalation post",
    "on_call": "An on-call alert",
    "long_gap": "A long-gap alert",
    "unroutable": "An unroutable alert",
}


def _code(text: str) -> str:
    return f"`{mrkdwn_escape(text)}`"


# How an alert names the channels that failed (`channel`: outbox channel names, joined by ","
# when several were tried in turn; the last one's reason is shown).
_CHANNEL_WORDS = {"slack": ("Slack", "Slack said"), "email": ("email", "The mail relay said")}


def _channel_words(channel: str | None) -> tuple[str, str]:
    names = [name for name in (channel or "slack").split(",") if name] or ["slack"]
    words = [_CHANNEL_WORDS.get(name, (name, f"{name} said")) for name in names]
    return " or ".join(by for by, _ in words), words[-1][1]


def _body(
    kind: str,
    *,
    target: str | None,
    recipient: str | None,
    detail: str | None,
    reason: str | None,
    channel: str | None = None,
    instead: str | None = None,
    what: str | None = None,
) -> str:
    if kind == AlertKind.ON_CALL:
        role = target.removeprefix("role:") if target else "on call"
        text = f"A referral was received while you are on call as {_code(role)}."
    elif kind == AlertKind.LONG_GAP:
        text = f"Target {_code(target or '?')} cannot be reached for more than 48 hours."
    elif kind == AlertKind.UNROUTABLE:
        text = f"Nobody in the chain of {_code(target or '?')} is at work within 7 days."
    elif kind == AlertKind.DELIVERY_FAILURE and what == "copy":
        about = f" (target {_code(target)})" if target else ""
        by = _channel_words(channel)[0]
        text = (
            f"The copy by {by} for {_code(recipient or '?')}{about} could not be delivered; "
            "they have the message by their first channel."
        )
    elif kind == AlertKind.DELIVERY_FAILURE and what not in (None, "prompt"):
        where = f" in {_code(recipient)}" if recipient else ""
        about = f" (target {_code(target)})" if target else ""
        by = _channel_words(channel)[0]
        text = f"{_WHAT.get(what, 'A message')}{where}{about} could not be delivered by {by}."
        text += " Please check the channel and the bot's place in it."
    elif kind == AlertKind.DELIVERY_FAILURE:
        who = f" to {_code(recipient)}" if recipient else ""
        by = _channel_words(channel)[0]
        text = f"The prompt for {_code(target or '?')}{who} could not be delivered by {by}."
        text += " Please contact them by phone or another route."
    elif kind == AlertKind.ONCALL_UNANSWERED:
        text = "Nobody on call acknowledged an alert about this referral."
    elif kind == AlertKind.UNREACHABLE:
        by = _channel_words(channel)[0]
        text = (
            f"{_code(recipient or '?')} could not be reached by {by} for target "
            f"{_code(target or '?')}."
        )
        if instead == "unroutable":
            text += " Nobody else in its chain can be reached: please find someone to ask."
        elif instead:
            text += f" The prompt went to {_code(instead)} instead."
        else:
            text += " Please contact them by phone or another route."
    elif channel not in (None, "slack"):
        text = (
            f"Messages by {_channel_words(channel)[0]} are held and retried until the mail "
            "relay accepts Handover again; nothing is dropped."
        )
    else:
        text = "Prompts are held and retried until the token is fixed; nothing is dropped."
    if detail:
        text += f"\n{mrkdwn_escape(detail)}"
    if reason:
        text += f"\n{_channel_words(channel)[1]}: {_code(reason)}"
    return text


def build_alert_message(
    kind: str,
    referral: Any,
    *,
    tz: ZoneInfo,
    target: str | None = None,
    recipient: str | None = None,
    detail: str | None = None,
    reason: str | None = None,
    channel: str | None = None,
    instead: str | None = None,
    what: str | None = None,
    ack_row_id: int | None = None,
    repage: bool = False,
    acknowledged: tuple[str, datetime] | None = None,
) -> dict[str, Any]:
    """An alert about a referral (`kind` one of ALERT_KINDS); `detail` is planner text only.

    `target` is a notify target (`role:NAME` for on_call), `recipient` a person_id, `reason` a
    channel's error code (`channel` names it; Slack when None), `instead` whom the target went
    to in their place (a person_id, or "unroutable"), `what` the kind of message that failed (a
    prompt when None): none of them is free text a person typed. An on-call DM carries the
    `handover_oncall_ack` button valued `ack_row_id` (its alert's first row); `repage` marks it
    sent again; once `acknowledged` (who, as a mention or a person_id, and when) the button
    gives way to who took it.
    """
    if kind not in ALERT_KINDS:
        raise ValueError(f"unknown alert kind {kind!r}")
    facts = ReferralFacts.of(referral)
    headline = _HEADLINES[kind]
    if kind == AlertKind.SLACK_AUTH and channel not in (None, "slack"):
        headline = "The mail relay refused Handover"
    notification = _NOTIFICATIONS[kind]
    if kind == AlertKind.DELIVERY_FAILURE and what not in (None, "prompt"):
        headline, notification = "A message could not be delivered", "message not delivered"
    if repage:
        headline = REPAGE_PREFIX + headline
        notification += " (not yet acknowledged)"
    body = _body(
        kind,
        target=target,
        recipient=recipient,
        detail=detail,
        reason=reason,
        channel=channel,
        instead=instead,
        what=what,
    )
    blocks = [header_block(headline), section_block(body), fields_block(referral_fields(facts, tz))]
    if acknowledged is not None:
        blocks.append(acknowledged_block(*acknowledged, tz=tz))
    elif ack_row_id is not None:
        blocks.append(ack_button_block(ack_row_id))
    return {"text": notification_text(facts.referral_id, notification), "blocks": blocks}


def ack_button_block(ack_row_id: int) -> dict[str, Any]:
    """The actions block of an on-call DM: one button, valued with its alert's row id."""
    return actions_block([button(ONCALL_ACK, ACK_BUTTON_LABEL, str(ack_row_id), "primary")])


def acknowledged_block(who: str, at: datetime, *, tz: ZoneInfo) -> dict[str, Any]:
    """Who acknowledged an on-call alert, and when (in place of its button)."""
    text = f":white_check_mark: *Acknowledged* by {mention_or_id(who)} at {format_local(at, tz)}."
    return section_block(text)


def build_unanswered_message(
    kind: str,
    referral: Any,
    *,
    tz: ZoneInfo,
    target: str | None,
    holders: Sequence[str],
    sent_at: datetime,
) -> dict[str, Any]:
    """The EDT-channel post for an on-call alert nobody acknowledged: which alert, since when,
    and who did not answer (`holders`: mentions or person_ids)."""
    facts = ReferralFacts.of(referral)
    about = _ABOUT.get(kind, kind.replace("_", " "))
    if target:
        about += f" ({_code(target)})"
    who = ", ".join(mention_or_id(h) for h in holders) or "nobody could be reached"
    text = (
        f"An on-call alert was sent at {format_local(sent_at, tz)} and sent again, and nobody "
        f"has acknowledged it: {about}.\n*Did not answer:* {who}\n"
        "Please make sure someone on call picks this referral up."
    )
    blocks = [
        header_block(_HEADLINES[AlertKind.ONCALL_UNANSWERED]),
        section_block(text),
        fields_block(referral_fields(facts, tz)),
    ]
    what = _NOTIFICATIONS[AlertKind.ONCALL_UNANSWERED]
    return {"text": notification_text(facts.referral_id, what), "blocks": blocks}
