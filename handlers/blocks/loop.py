"""Block Kit of closing the loop (docs/closing-the-loop.md): the information notice, the
contact check and its answer, and the missed-contact DM. Pure builders.

Minimal data: the referral's ID, case reference, category and urgency, the professional's work
details (name, role, team, Slack mention, work phone), the method and the time. Never a summary.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.services.loop import Offered
from handlers.blocks.parts import (
    actions_block,
    button,
    context_block,
    fields_block,
    header_block,
    section_block,
)
from handlers.blocks.prompt import (
    NO_PERSONAL_DATA,
    ReferralFacts,
    format_local,
    mrkdwn_escape,
    notification_text,
    referral_fields,
)
from handlers.ids import CONTACT_MADE, CONTACT_MISSED

METHOD_LABELS = {"phone": "by phone", "case_system": "through the case system"}
CONTACT_BLOCK = "handover_contact"
CONTACT_LABELS = {CONTACT_MADE: "Yes, contact made", CONTACT_MISSED: "No, contact missed"}


def method_label(method: str) -> str:
    """'phone' -> 'by phone'."""
    return METHOD_LABELS.get(method, method.replace("_", " "))


def professional_lines(offered: Offered) -> str:
    """Who offered: name, role, team, Slack mention and phone, one per line."""
    lines = [f"*{mrkdwn_escape(offered.name)}* (`{mrkdwn_escape(offered.person_id)}`)"]
    if offered.role or offered.team:
        role = mrkdwn_escape(offered.role) if offered.role else "—"
        lines.append(f"Role: {role} · Team: {mrkdwn_escape(offered.team) or '—'}")
    if offered.slack_user_id:
        lines.append(f"Slack: <@{offered.slack_user_id}>")
    lines.append(f"Phone: {mrkdwn_escape(offered.phone) if offered.phone else 'not in the rota'}")
    return "\n".join(lines)


def build_information_notice(
    referral: Any,
    offered: Offered,
    *,
    method: str,
    contact_by: datetime,
    tz: ZoneInfo,
    owner: bool,
) -> dict[str, Any]:
    """The notice that a professional holds information and will make contact."""
    facts = ReferralFacts.of(referral)
    who = "the daytime owner of this referral" if owner else "the referrer"
    blocks = [
        header_block(f"Information offered: {facts.referral_id}"),
        section_block(
            f"*{mrkdwn_escape(offered.name)} holds information* and will contact the social "
            f"worker {method_label(method)} by *{format_local(contact_by, tz)}*."
        ),
        section_block(professional_lines(offered)),
        fields_block(referral_fields(facts, tz)),
        context_block(
            f"You receive this as {who}. If the contact does not come, Handover will ask "
            "you after the promised time. The details are in the case system."
        ),
    ]
    return {"text": notification_text(facts.referral_id, "information offered"), "blocks": blocks}


def build_contact_check(
    referral: Any,
    offered: Offered,
    followup_id: int,
    *,
    method: str,
    contact_by: datetime,
    tz: ZoneInfo,
) -> dict[str, Any]:
    """The question, at the promised time +30 min: did the contact happen?"""
    facts = ReferralFacts.of(referral)
    value = str(followup_id)
    blocks = [
        header_block(f"Did the contact happen? {facts.referral_id}"),
        section_block(
            f"*{mrkdwn_escape(offered.name)}* promised to contact the social worker "
            f"{method_label(method)} by *{format_local(contact_by, tz)}*. Did they?"
        ),
        section_block(professional_lines(offered)),
        actions_block(
            [
                button(CONTACT_MADE, CONTACT_LABELS[CONTACT_MADE], value, "primary"),
                button(CONTACT_MISSED, CONTACT_LABELS[CONTACT_MISSED], value, "danger"),
            ],
            CONTACT_BLOCK,
        ),
        context_block(
            "With no answer by the end of the working day, the contact counts as missed and "
            "the professional and their manager are told."
        ),
    ]
    return {
        "text": notification_text(facts.referral_id, "did the contact happen?"),
        "blocks": blocks,
    }


def build_contact_answered(
    referral_id: str, *, made: bool, answered_by: str | None, at: datetime | None, tz: ZoneInfo
) -> dict[str, Any]:
    """The check after an answer: what was said, by whom and when; the buttons are gone."""
    outcome = "Contact made" if made else "Contact missed"
    who = f" by `{mrkdwn_escape(answered_by)}`" if answered_by else ""
    when = f" at {format_local(at, tz)}" if at else ""
    blocks = [
        header_block(f"Contact check: {referral_id}"),
        section_block(
            f":white_check_mark: *{outcome}*{who}{when}."
            if made
            else f":x: *{outcome}*{who}{when}. The professional and their manager are told."
        ),
    ]
    return {"text": notification_text(referral_id, outcome.lower()), "blocks": blocks}


def build_contact_missed_message(
    referral: Any,
    offered: Offered,
    *,
    method: str,
    contact_by: datetime,
    tz: ZoneInfo,
    to_manager: bool,
) -> dict[str, Any]:
    """The DM to the professional (or their manager) after a missed contact."""
    facts = ReferralFacts.of(referral)
    if to_manager:
        lead = (
            f"*{mrkdwn_escape(offered.name)}* (your team) offered information and promised to "
            f"contact the social worker {method_label(method)} by "
            f"*{format_local(contact_by, tz)}*: the social worker reports no contact."
        )
    else:
        lead = (
            f"You offered information and promised to contact the social worker "
            f"{method_label(method)} by *{format_local(contact_by, tz)}*: the social worker "
            "reports no contact. Please call the daytime social-care team now."
        )
    blocks = [
        header_block(f"Contact missed: {facts.referral_id}"),
        section_block(f":warning: {lead}"),
        fields_block(referral_fields(facts, tz)),
        context_block(NO_PERSONAL_DATA),
    ]
    return {"text": notification_text(facts.referral_id, "contact missed"), "blocks": blocks}
