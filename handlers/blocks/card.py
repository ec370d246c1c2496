"""Block Kit for a referral's card in the EDT channel: its targets and their live state."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.delivery.kinds import ResponseKind, TargetState
from bot.models import ReferralStatus
from handlers.blocks.parts import (
    SECTION_TEXT_LIMIT,
    context_block,
    divider_block,
    fields_block,
    header_block,
    section_block,
)
from handlers.blocks.prompt import (
    ReferralFacts,
    format_local,
    mrkdwn_escape,
    notification_text,
    referral_fields,
)

MAX_TARGET_SECTIONS = 40  # leaves room for header, facts and context within 50 blocks

STATE_ICONS = {
    TargetState.HELD: ":hourglass_flowing_sand:",
    TargetState.PROMPTED: ":envelope:",
    ResponseKind.ACKNOWLEDGED: ":white_check_mark:",
    ResponseKind.HAS_INFORMATION: ":information_source:",
    ResponseKind.NOT_KNOWN: ":heavy_minus_sign:",
    ResponseKind.REDIRECTED: ":arrow_right:",
    TargetState.ESCALATED: ":arrow_up:",
    "breach": ":rotating_light:",
    TargetState.UNROUTABLE: ":warning:",
    TargetState.FAILED: ":x:",
    TargetState.CANCELLED: ":no_entry_sign:",
}


def target_state_line(target: Any, tz: ZoneInfo, recipient: str | None = None) -> str:
    """One line of the card: the target and its state (`held until`, `prompted <@U1>`, …)."""
    state = target.state
    name = f"`{mrkdwn_escape(target.spec)}`"
    if state == TargetState.HELD:
        when = format_local(target.due_at, tz) if target.due_at else "its next working time"
        what = f"held until {when}"
    elif state == TargetState.PROMPTED:
        what = f"prompted {recipient}" if recipient else "prompted"
    elif state == TargetState.UNROUTABLE:
        what = "unroutable: nobody to reach within 7 days"
    elif state == ResponseKind.HAS_INFORMATION:
        what = "holds information"
    elif state == ResponseKind.NOT_KNOWN:
        what = "not known"
    elif state == TargetState.FAILED:
        what = "prompt could not be delivered"
    else:
        what = state.replace("_", " ")
    if recipient and state not in (TargetState.HELD, TargetState.PROMPTED, TargetState.UNROUTABLE):
        what += f" ({recipient})"
    icon = STATE_ICONS.get(state, ":grey_question:")
    return f"{icon} {name}: {what}"


def _sections_of(lines: Sequence[str]) -> list[dict[str, Any]]:
    # Pack lines into as few sections as the 3000-character limit allows.
    sections: list[str] = []
    current = ""
    for line in lines:
        candidate = f"{current}\n{line}" if current else line
        if len(candidate) > SECTION_TEXT_LIMIT and current:
            sections.append(current)
            current = line[:SECTION_TEXT_LIMIT]
        else:
            current = candidate[:SECTION_TEXT_LIMIT]
    if current:
        sections.append(current)
    return [section_block(text) for text in sections[:MAX_TARGET_SECTIONS]]


def build_card(
    referral: Any,
    targets: Sequence[Any],
    *,
    tz: ZoneInfo,
    recipients: Mapping[int, str] | None = None,
    updated_at: datetime | None = None,
    offsets: tuple[int, int, int] | None = None,
) -> dict[str, Any]:
    """The EDT channel card: the referral's facts and one line per target with its state.

    `recipients` maps a target's id to how its current recipient is shown (`<@U1>`, `<#C1>`);
    `offsets` are the referral's escalation offsets (reminder, escalation, channel), in working
    minutes after each prompt is sent.
    """
    facts = ReferralFacts.of(referral)
    recipients = recipients or {}
    ordered = sorted(targets, key=lambda t: t.position)
    lines = [target_state_line(t, tz, recipients.get(t.id)) for t in ordered]
    status = getattr(referral, "status", ReferralStatus.OPEN)
    header = f"Referral {facts.referral_id}" + (
        " (closed)" if status == ReferralStatus.CLOSED else ""
    )
    blocks: list[dict[str, Any]] = [
        header_block(header),
        fields_block(referral_fields(facts, tz)),
        divider_block(),
        *_sections_of(lines or ["No targets."]),
    ]
    if offsets is not None:
        urgency = "urgent" if facts.urgency == "urgent" else "standard"
        remind, escalate, channel = offsets
        text = (
            f"Unanswered prompts escalate on the {urgency} offsets: a reminder at +{remind}, "
            f"the chain and team manager at +{escalate}, the escalation channel at +{channel} "
            "working minutes; breach at the end of the recipient's own working day."
        )
        blocks.append(context_block(text))
    if updated_at is not None:
        blocks.append(context_block(f"Updated {format_local(updated_at, tz)}."))
    return {"text": notification_text(facts.referral_id, "referral card"), "blocks": blocks}
