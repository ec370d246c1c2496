"""Block Kit for escalation: the reminder DM, escalation DMs, the channel post and the breach.

Minimal data (docs/reference/slack.md): the referral ID, the case reference, category,
urgency, who was asked and since when, and what is asked. Builders take the referral's safe
fields through ReferralFacts, so the summary cannot slip in; the notification `text` names only
the referral ID.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from handlers.blocks.parts import (
    actions_block,
    context_block,
    fields_block,
    header_block,
    section_block,
)
from handlers.blocks.prompt import (
    NO_PERSONAL_DATA,
    PROMPT_ACTIONS_BLOCK,
    QUESTION,
    ReferralFacts,
    format_local,
    mrkdwn_escape,
    notification_text,
    referral_fields,
    response_buttons,
)

# Why an escalation DM reaches this person.
ESCALATION_ROLES = {
    "deputy": "deputy",
    "duty": "duty holder",
    "manager": "team manager",
    "self": "named on the referral",
    "shift": "on shift",
}


def recipient_label(person_id: str | None, slack_user: str | None = None) -> str:
    """Who was asked, as a Slack mention when known, else the rota's person_id."""
    if slack_user:
        return f"<@{slack_user}>"
    return f"`{mrkdwn_escape(person_id or 'unknown')}`"


def channel_label(channel_id: str) -> str:
    """A team channel that was asked, as a Slack channel link."""
    return f"<#{channel_id}>"


def _message(
    heading: str,
    body: str,
    facts: ReferralFacts,
    tz: ZoneInfo,
    notice: str,
    *,
    prompt_id: int | None = None,
) -> dict[str, Any]:
    """Heading, body, the referral's facts, the buttons (given a prompt) and the privacy note."""
    blocks = [
        header_block(f"{heading}: handover referral {facts.referral_id}"),
        section_block(body),
        fields_block(referral_fields(facts, tz)),
    ]
    if prompt_id is not None:
        # The same buttons as the prompt, valued with the original prompt's id, so whoever the
        # message reaches can answer for the target from here (permissions are checked on click).
        blocks.append(actions_block(response_buttons(prompt_id), PROMPT_ACTIONS_BLOCK))
    blocks.append(context_block(NO_PERSONAL_DATA))
    return {"text": notification_text(facts.referral_id, notice), "blocks": blocks}


def _asked_line(target: str, asked: str, sent_at: datetime, tz: ZoneInfo) -> str:
    return (
        f"{asked} was asked for `{mrkdwn_escape(target)}` at *{format_local(sent_at, tz)}* "
        "and nobody has responded yet."
    )


def build_reminder_message(
    referral: Any,
    prompt_id: int,
    *,
    sent_at: datetime,
    respond_by: datetime,
    tz: ZoneInfo,
) -> dict[str, Any]:
    """The reminder DM to the prompt's recipient: the question again, with the buttons."""
    facts = ReferralFacts.of(referral)
    body = (
        f"*Reminder: {QUESTION}*\n"
        f"You were asked at *{format_local(sent_at, tz)}* and have not responded yet. "
        f"Please respond by *{format_local(respond_by, tz)}*."
    )
    return _message("Reminder", body, facts, tz, "reminder, please respond", prompt_id=prompt_id)


def build_escalation_message(
    referral: Any,
    prompt_id: int,
    *,
    target: str,
    asked: str,
    sent_at: datetime,
    respond_by: datetime,
    via: str,
    tz: ZoneInfo,
) -> dict[str, Any]:
    """The escalation DM to someone else in the target's chain or its team manager."""
    facts = ReferralFacts.of(referral)
    role = ESCALATION_ROLES.get(via, via)
    body = (
        f"{_asked_line(target, asked, sent_at, tz)}\n"
        f"You receive this as *{mrkdwn_escape(role)}*. *{QUESTION}* "
        f"Please respond, or make sure someone does, by *{format_local(respond_by, tz)}*."
    )
    return _message(
        "Escalation", body, facts, tz, "escalated, no response yet", prompt_id=prompt_id
    )


def build_channel_escalation_message(
    referral: Any,
    *,
    target: str,
    asked: str,
    sent_at: datetime,
    escalated_to: Sequence[str],
    breach_at: datetime,
    tz: ZoneInfo,
    not_reached: Sequence[str] = (),
) -> dict[str, Any]:
    """The post in the escalation channel: still no response after the chain was asked.

    `escalated_to` are those the escalation reached; `not_reached` those it could not (named,
    never claimed as told)."""
    facts = ReferralFacts.of(referral)
    lines = [_asked_line(target, asked, sent_at, tz)]
    if escalated_to:
        lines.append("Escalated already to " + ", ".join(escalated_to) + ".")
    if not_reached:
        lines.append(
            "Could not be reached: " + ", ".join(not_reached) + ". Please contact them another way."
        )
    lines.append(
        f"*{QUESTION}* Without a response this becomes a breach at "
        f"*{format_local(breach_at, tz)}*. Please follow up, by phone if need be."
    )
    return _message("No response", "\n".join(lines), facts, tz, "escalated, no response")


def build_breach_message(
    referral: Any,
    *,
    target: str,
    asked: str,
    sent_at: datetime,
    breach_at: datetime,
    tz: ZoneInfo,
) -> dict[str, Any]:
    """The breach post (escalation channel) and DM (team manager): the working day ended."""
    facts = ReferralFacts.of(referral)
    body = (
        f"*Breach:* {asked} was asked for `{mrkdwn_escape(target)}` at "
        f"*{format_local(sent_at, tz)}* and nobody responded by the end of the working day "
        f"(*{format_local(breach_at, tz)}*).\n"
        f"*{QUESTION}* Please make sure this target is reached, by phone if need be."
    )
    return _message("Breach", body, facts, tz, "breach, no response")
