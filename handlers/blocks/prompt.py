"""Block Kit for a prompt DM and for the same DM once someone has responded.

The prompt's metadata and buttons are docs/reference/slack.md's.

Minimal data: only the referral ID, the case system's reference, category, urgency, times and
what is asked. The notification `text` (lock screens) names the referral ID and nothing else.
Builders take the referral's safe fields one by one, so the summary cannot slip in.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.delivery.kinds import ResponseKind
from bot.services.logbook import ReferralFacts
from handlers.blocks.parts import (
    actions_block,
    button,
    context_block,
    fields_block,
    header_block,
    mrkdwn_text,
    section_block,
)
from handlers.ids import (
    ACK,
    HAS_INFO,
    NOT_KNOWN,
    REDIRECT,
    RESPONSE_ACTIONS,
)

PROMPT_ACTIONS_BLOCK = "handover_prompt_actions"
QUESTION = "Do you hold information about this child or family?"
NO_PERSONAL_DATA = "The details are in the case system; this message holds no personal data."

BUTTON_LABELS = {
    ACK: "Acknowledge",
    HAS_INFO: "I hold information",
    NOT_KNOWN: "Not known to us",
    REDIRECT: "Someone else holds it",
}

# What each response kind reads as once recorded (the `kind` of a Response row).
RESPONSE_LABELS = {
    ResponseKind.ACKNOWLEDGED: "Acknowledged",
    ResponseKind.HAS_INFORMATION: "Holds information",
    ResponseKind.NOT_KNOWN: "Not known",
    ResponseKind.REDIRECTED: "Redirected",
}

VIA_LABELS = {
    "self": "named on the referral",
    "deputy": "deputy",
    "duty": "duty holder",
    "manager": "team manager",
    "channel": "team channel",
    "shift": "on shift",
}


def format_local(instant: datetime, tz: ZoneInfo) -> str:
    """An instant as 'Mon 28 Dec 2026 09:00 GMT' in the service's time zone."""
    local = instant.astimezone(tz)
    return f"{local:%a} {local.day} {local:%b %Y %H:%M} {local.tzname()}"


def category_label(category: str) -> str:
    """'domestic_abuse' -> 'Domestic abuse'."""
    return category.replace("_", " ").capitalize()


def urgency_label(urgency: str) -> str:
    """'urgent' -> 'URGENT' (it should stand out), 'standard' -> 'Standard'."""
    return "URGENT" if urgency == "urgent" else urgency.capitalize()


def notification_text(referral_id: str, what: str) -> str:
    """The fallback text shown on lock screens: the referral ID and a generic phrase only."""
    return f"Handover referral {referral_id}: {what}"


def mrkdwn_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention_or_id(who: str) -> str:
    """A Slack mention (`<@U123>`) as it is; anything else (a person_id) as escaped code."""
    return who if who.startswith("<@") else f"`{mrkdwn_escape(who)}`"


def referral_fields(facts: ReferralFacts, tz: ZoneInfo) -> list[dict[str, str]]:
    """The referral's facts as section fields (at most 10, as Block Kit allows)."""
    pairs = [
        ("Referral", facts.referral_id),
        ("Case reference", mrkdwn_escape(facts.external_ref)),
        ("Category", category_label(facts.category)),
        ("Urgency", urgency_label(facts.urgency)),
        ("Referred at", format_local(facts.referred_at, tz)),
        ("Received", format_local(facts.received_at, tz)),
    ]
    return [mrkdwn_text(f"*{label}*\n{value}") for label, value in pairs]


def response_buttons(prompt_id: int) -> list[dict[str, Any]]:
    """The four response buttons, each valued with the prompt's id."""
    return [_button(action_id, prompt_id) for action_id in RESPONSE_ACTIONS]


def _button(action_id: str, prompt_id: int) -> dict[str, Any]:
    style = "primary" if action_id == ACK else None
    return button(action_id, BUTTON_LABELS[action_id], str(prompt_id), style)


# How the prompt names each escalation step (rota.escalation.STEPS).
STEP_LABELS = {
    "remind": "a reminder",
    "escalate": "your chain and team manager",
    "escalate_channel": "the escalation channel",
    "breach": "breach",
}


def escalation_line(steps: Sequence[tuple[str, datetime]], tz: ZoneInfo, *, urgent: bool) -> str:
    """'If nobody responds: a reminder at …, … ; breach at … (urgent offsets).'"""
    parts = [f"{STEP_LABELS.get(step, step)} at {format_local(at, tz)}" for step, at in steps]
    return "If nobody responds: " + ", ".join(parts) + (" (urgent)." if urgent else ".")


def _why_you(via: str | None, target: str | None) -> str | None:
    if via is None or via == "self" or target is None:
        return None
    label = VIA_LABELS.get(via, via)
    return f"You receive this as {label} for `{mrkdwn_escape(target)}`."


def build_prompt_message(
    referral: Any,
    prompt_id: int,
    *,
    due_at: datetime,
    respond_by: datetime,
    tz: ZoneInfo,
    via: str | None = None,
    target: str | None = None,
    steps: Sequence[tuple[str, datetime]] = (),
) -> dict[str, Any]:
    """The prompt DM: the referral's facts, the question, the deadline and four buttons.

    `steps` are the escalation steps that follow if nobody responds (rota.escalation's names,
    with their instants), shown under the deadline.
    """
    facts = ReferralFacts.of(referral)
    question = f"*{QUESTION}*\nPlease respond by *{format_local(respond_by, tz)}*."
    if steps:
        question += "\n" + escalation_line(steps, tz, urgent=facts.urgency == "urgent")
    notes = [f"Prompt due {format_local(due_at, tz)}."]
    why = _why_you(via, target)
    if why:
        notes.append(why)
    notes.append(NO_PERSONAL_DATA)
    blocks: list[dict[str, Any]] = [
        header_block(f"Handover referral {facts.referral_id}"),
        section_block(question),
        fields_block(referral_fields(facts, tz)),
        actions_block(response_buttons(prompt_id), PROMPT_ACTIONS_BLOCK),
        context_block(" ".join(notes)),
    ]
    return {"text": notification_text(facts.referral_id, "please respond"), "blocks": blocks}


def build_prompt_response_message(
    referral: Any,
    *,
    response: str,
    responder: str,
    responded_at: datetime,
    tz: ZoneInfo,
    redirected_to: str | None = None,
    prompt_id: int | None = None,
) -> dict[str, Any]:
    """The prompt DM after a response: who responded, what and when. The buttons are gone,
    but after an acknowledgement (given `prompt_id`) "I hold information" and "Not known"
    stay: seeing a prompt is not yet an answer (docs/coverage.md).

    `responder` is a Slack mention (`<@U123>`) or a person_id; `redirected_to` a target string.
    """
    facts = ReferralFacts.of(referral)
    label = RESPONSE_LABELS.get(response, response.replace("_", " ").capitalize())
    outcome = f"*{label}* by {mention_or_id(responder)} at {format_local(responded_at, tz)}."
    if redirected_to:
        outcome += f" Redirected to `{mrkdwn_escape(redirected_to)}`."
    blocks: list[dict[str, Any]] = [
        header_block(f"Handover referral {facts.referral_id}"),
        section_block(f"*{QUESTION}*"),
        fields_block(referral_fields(facts, tz)),
        section_block(outcome),
    ]
    if response == ResponseKind.ACKNOWLEDGED and prompt_id is not None:
        blocks.append(section_block("When you have checked your records, please answer:"))
        blocks.append(
            actions_block(
                [_button(HAS_INFO, prompt_id), _button(NOT_KNOWN, prompt_id)],
                "handover_after_ack",
            )
        )
    blocks.append(context_block("Thank you. The response is in the log."))
    return {"text": notification_text(facts.referral_id, label.lower()), "blocks": blocks}
