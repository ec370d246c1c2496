"""Block Kit and text for responses: the has-information and redirect modals, private answers,
the EDT card's thread replies, and the answers to `/handover close` and `/handover oncall`.

Minimal data: nothing here takes a referral's summary or anything a person typed (a close
reason is kept for the record only, never echoed into Slack, not even privately to its author).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.delivery.kinds import ResponseKind
from handlers import ids
from handlers.blocks.parts import context_block, option, plain_text, section_block
from handlers.blocks.prompt import (
    RESPONSE_LABELS,
    ReferralFacts,
    format_local,
    mrkdwn_escape,
    notification_text,
)
from handlers.guards import is_referral_id, is_role_name, selected_value

# Has-information modal
BLOCK_CONTACT_BY = "contact_by"
ACTION_CONTACT_BY = "contact_by_select"
BLOCK_METHOD = "contact_method"
ACTION_METHOD = "contact_method_select"
METHOD_LABELS = {"phone": "Phone call", "case_system": "Note in the case system"}

# Redirect modal (its external select loads people through an options listener)
BLOCK_COLLEAGUE = "redirect_to"
ACTION_COLLEAGUE = "handover_redirect_colleague"

# Which modal block shows each field error of the response service.
FIELD_BLOCKS = {
    "contact_by": BLOCK_CONTACT_BY,
    "method": BLOCK_METHOD,
    "colleague": BLOCK_COLLEAGUE,
}

# Answers that name nothing typed (when what was typed is not a well-formed identifier).
NO_SUCH_REFERRAL = "No referral with that ID."
NO_SUCH_ROLE = "That role is not in the rota."

# The card's thread reply for each response kind ("hv-kpatel acknowledged at 09:12").
CARD_VERBS = {
    ResponseKind.ACKNOWLEDGED: "acknowledged",
    ResponseKind.HAS_INFORMATION: "holds information",
    ResponseKind.NOT_KNOWN: "answered not known to their service",
    ResponseKind.REDIRECTED: "redirected",
}


def clock_time(instant: datetime, tz: ZoneInfo) -> str:
    """An instant as '09:12' in the service's time zone."""
    return instant.astimezone(tz).strftime("%H:%M")


def slot_label(slot: datetime, now: datetime, tz: ZoneInfo) -> str:
    """'Today 14:00' or 'Tue 17 Nov 10:00'."""
    local = slot.astimezone(tz)
    if local.date() == now.astimezone(tz).date():
        return f"Today {local:%H:%M}"
    return f"{local:%a} {local.day} {local:%b %H:%M}"


def modal_metadata(prompt_id: int, channel: str | None, message_ts: str | None) -> str:
    """The private metadata of a response modal: the prompt and the message clicked."""
    return json.dumps({"prompt_id": prompt_id, "channel": channel, "message_ts": message_ts})


def read_modal_metadata(view: dict[str, Any]) -> dict[str, Any]:
    """The private metadata of a response modal ({} when missing or malformed)."""
    try:
        value = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _intro(facts: ReferralFacts) -> dict[str, Any]:
    return section_block(
        f"*Referral {facts.referral_id}* (case reference `{mrkdwn_escape(facts.external_ref)}`)"
    )


def build_has_info_modal(
    facts: ReferralFacts,
    slots: Sequence[datetime],
    *,
    now: datetime,
    tz: ZoneInfo,
    private_metadata: str,
) -> dict[str, Any]:
    """The has-information modal: by when and how you will contact the social worker."""
    return {
        "type": "modal",
        "callback_id": ids.HAS_INFO_MODAL,
        "title": plain_text("I hold information"),
        "submit": plain_text("Record"),
        "close": plain_text("Cancel"),
        "private_metadata": private_metadata,
        "blocks": [
            _intro(facts),
            context_block(
                "Share what you hold with the social worker directly, by phone "
                "or in the case system. Do not put it in Slack."
            ),
            {
                "type": "input",
                "block_id": BLOCK_CONTACT_BY,
                "label": plain_text("I will contact the social worker by"),
                "element": {
                    "type": "static_select",
                    "action_id": ACTION_CONTACT_BY,
                    "placeholder": plain_text("Choose a time"),
                    "options": [
                        option(slot.isoformat(), slot_label(slot, now, tz)) for slot in slots[:100]
                    ],
                },
            },
            {
                "type": "input",
                "block_id": BLOCK_METHOD,
                "label": plain_text("How"),
                "element": {
                    "type": "radio_buttons",
                    "action_id": ACTION_METHOD,
                    "options": [option(value, label) for value, label in METHOD_LABELS.items()],
                },
            },
        ],
    }


def build_redirect_modal(facts: ReferralFacts, *, private_metadata: str) -> dict[str, Any]:
    """The redirect modal: choose the colleague in the rota who holds the information."""
    return {
        "type": "modal",
        "callback_id": ids.REDIRECT_MODAL,
        "title": plain_text("Someone else holds it"),
        "submit": plain_text("Redirect"),
        "close": plain_text("Cancel"),
        "private_metadata": private_metadata,
        "blocks": [
            _intro(facts),
            {
                "type": "input",
                "block_id": BLOCK_COLLEAGUE,
                "label": plain_text("Colleague who holds the information"),
                "hint": plain_text("They get their own prompt, at their next working time."),
                "element": {
                    "type": "external_select",
                    "action_id": ACTION_COLLEAGUE,
                    "min_query_length": 0,
                    "placeholder": plain_text("Type to search the rota"),
                },
            },
        ],
    }


def read_has_info_modal(values: dict[str, Any]) -> tuple[str | None, str | None]:
    """(contact_by, method) from the has-information modal's state (None when not chosen)."""
    return (
        selected_value(values, BLOCK_CONTACT_BY, ACTION_CONTACT_BY),
        selected_value(values, BLOCK_METHOD, ACTION_METHOD),
    )


def read_redirect_modal(values: dict[str, Any]) -> str | None:
    """The chosen colleague's person_id from the redirect modal's state (None when not chosen)."""
    return selected_value(values, BLOCK_COLLEAGUE, ACTION_COLLEAGUE)


def modal_errors(field_errors: dict[str, str]) -> dict[str, str]:
    """Service field errors keyed by the modal's block_ids."""
    return {FIELD_BLOCKS.get(name, name): message[:150] for name, message in field_errors.items()}


def responder_label(
    responder_id: str | None, responder_slack_id: str | None, on_behalf_of: str | None
) -> str:
    """Who responded as shown in the prompt DM: a Slack mention, with whom it was for."""
    who = f"<@{responder_slack_id}>" if responder_slack_id else f"`{responder_id}`"
    if on_behalf_of:
        who += f" for `{mrkdwn_escape(on_behalf_of)}`"
    return who


def build_card_reply(
    *,
    referral_id: str,
    kind: str,
    responder_id: str,
    on_behalf_of: str | None,
    target: str,
    at: datetime,
    tz: ZoneInfo,
    detail: dict[str, Any] | None = None,
    redirected_to: str | None = None,
    phone: str | None = None,
) -> dict[str, Any]:
    """The thread reply on the referral's EDT card, e.g. 'hv-kpatel acknowledged at 09:12';
    for "I hold information", the responder's work phone when the rota has one.

    The detail (who, for whom, what and when) is in the blocks; the notification text names only
    the referral ID, as every notification does.
    """
    detail = detail or {}
    who = responder_id if not on_behalf_of else f"{responder_id} (for {on_behalf_of})"
    text = f"{who} {CARD_VERBS.get(kind, kind.replace('_', ' '))}"
    if kind == ResponseKind.REDIRECTED and redirected_to:
        text += f" to {redirected_to}"
    text += f" at {clock_time(at, tz)}"
    if kind == ResponseKind.HAS_INFORMATION and detail.get("contact_by"):
        method = METHOD_LABELS.get(str(detail.get("method")), "").lower()
        when = datetime.fromisoformat(str(detail["contact_by"]))
        text += f"; will contact the social worker by {slot_label(when, at, tz).lower()}"
        if method:
            text += f" ({method})"
        if phone:
            text += f"; phone {phone}"
    if target != f"person:{on_behalf_of or responder_id}":
        text += f" [{target}]"
    return {
        "text": notification_text(referral_id, "response recorded"),
        "blocks": [section_block(mrkdwn_escape(text))],
    }


def refusal_text(
    status: str,
    *,
    reason: str = "",
    referral_id: str | None = None,
    earlier_kind: str | None = None,
    earlier_by: str | None = None,
    earlier_at: datetime | None = None,
    tz: ZoneInfo,
) -> str:
    """The private answer when a response is not recorded."""
    if status == "refused":
        return f"You cannot respond to this prompt. {reason}".strip()
    if status == "closed":
        return f"Referral {referral_id} is closed; no response is needed."
    if status == "already":
        if earlier_kind and earlier_by and earlier_at:
            label = RESPONSE_LABELS.get(earlier_kind, earlier_kind).lower()
            return (
                f"Already answered: {label} by {earlier_by} at {format_local(earlier_at, tz)}. "
                "Nothing more is needed."
            )
        return "This prompt no longer needs a response."
    return "This prompt is no longer known to Handover."


def build_private_notice(text: str, referral_id: str | None = None) -> dict[str, Any]:
    """An ephemeral (or DM) notice; its notification text names at most the referral ID."""
    fallback = notification_text(referral_id, "notice") if referral_id else "Handover notice"
    return {"text": fallback, "blocks": [section_block(text)]}


def close_answer(
    status: str,
    *,
    referral_id: str | None,
    cancelled_prompts: int = 0,
    cancelled_rows: int = 0,
) -> str:
    """The private answer to `/handover close`; the typed reason stays in the log, not in Slack.

    A referral ID is shown only when it has the referral ID format: whatever else was typed
    (a name, say) is not echoed.
    """
    shown_id = referral_id if is_referral_id(referral_id) else None
    if status == "closed":
        return (
            f"Referral {referral_id} is closed. Cancelled {cancelled_prompts} prompt(s) "
            f"still held and {cancelled_rows - cancelled_prompts} other pending message(s). "
            "The reason is kept with the referral (never in Slack or the log)."
        )
    if status == "usage":
        return "Usage: `/handover close REFERRAL_ID REASON`"
    if status == "forbidden":
        return (
            "Only its referrer, a manager of a team it concerns, or someone with oversight may "
            "close a referral."
        )
    if status == "missing_reason":
        return f"Give a reason: `/handover close {shown_id or 'REFERRAL_ID'} REASON`"
    if status == "not_found":
        return f"There is no referral {shown_id}." if shown_id else NO_SUCH_REFERRAL
    if status == "already_closed":
        return f"Referral {referral_id} is already closed."
    return "Nothing was changed."


def oncall_answer(
    roles: Sequence[tuple[str, Sequence[Any]]],
    *,
    at: datetime,
    tz: ZoneInfo,
    unknown_role: str | None = None,
) -> str:
    """Who holds each on-call role now, one line per role.

    An unknown role is named only when it has the format of a role name.
    """
    if unknown_role is not None:
        if not is_role_name(unknown_role):
            return NO_SUCH_ROLE
        return f"No shift in the rota names the role `{unknown_role}`."
    lines = [f"*On call at {format_local(at, tz)}*"]
    for role, holders in roles:
        if not holders:
            lines.append(f"• `{role}`: nobody on shift")
            continue
        names = ", ".join(
            f"{mrkdwn_escape(h.name)} (`{h.person_id}`"
            + (f", <@{h.slack_user_id}>" if h.slack_user_id else "")
            + f") until {format_local(h.until, tz)}"
            for h in holders
        )
        lines.append(f"• `{role}`: {names}")
    return "\n".join(lines)
