"""Block Kit for alerts: on call, long gap, unroutable target, and a prompt that failed to go."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from bot.models import ALERT_KINDS as OUTBOX_ALERT_KINDS
from bot.models import (
    KIND_DELIVERY_FAILURE,
    KIND_LONG_GAP,
    KIND_ON_CALL,
    KIND_SLACK_AUTH,
    KIND_UNROUTABLE,
)
from handlers.blocks.prompt import (
    ReferralFacts,
    mrkdwn_escape,
    notification_text,
    referral_fields,
)
from handlers.ids import ALERT_EVENT_TYPE

# The outbox's alerts, and the credentials alert the dispatcher posts directly.
ALERT_KINDS = (*OUTBOX_ALERT_KINDS, KIND_SLACK_AUTH)

_HEADLINES = {
    KIND_ON_CALL: "New referral: you are on call",
    KIND_LONG_GAP: "Long gap before a target can be reached",
    KIND_UNROUTABLE: "Nobody to reach for a target",
    KIND_DELIVERY_FAILURE: "A prompt could not be delivered",
    KIND_SLACK_AUTH: "Slack refused the bot's credentials",
}

_NOTIFICATIONS = {
    KIND_ON_CALL: "new referral (on call)",
    KIND_LONG_GAP: "long gap alert",
    KIND_UNROUTABLE: "unroutable target",
    KIND_DELIVERY_FAILURE: "prompt not delivered",
    KIND_SLACK_AUTH: "Slack credentials refused",
}


def _code(text: str) -> str:
    return f"`{mrkdwn_escape(text)}`"


def _body(
    kind: str,
    *,
    target: str | None,
    recipient: str | None,
    detail: str | None,
    reason: str | None,
) -> str:
    if kind == KIND_ON_CALL:
        role = target.removeprefix("role:") if target else "on call"
        text = f"A referral was received while you are on call as {_code(role)}."
    elif kind == KIND_LONG_GAP:
        text = f"Target {_code(target or '?')} cannot be reached for more than 48 hours."
    elif kind == KIND_UNROUTABLE:
        text = f"Nobody in the chain of {_code(target or '?')} is at work within 7 days."
    elif kind == KIND_DELIVERY_FAILURE:
        who = f" to {_code(recipient)}" if recipient else ""
        text = f"The prompt for {_code(target or '?')}{who} could not be delivered by Slack."
        text += " Please contact them by phone or another route."
    else:
        text = "Prompts are held and retried until the token is fixed; nothing is dropped."
    if detail:
        text += f"\n{mrkdwn_escape(detail)}"
    if reason:
        text += f"\nSlack said: {_code(reason)}"
    return text


def alert_metadata(kind: str, referral_id: str, row_id: int | None = None) -> dict[str, Any]:
    """An alert's message metadata: its kind, and the outbox row that delivers it (if any)."""
    payload: dict[str, Any] = {"referral_id": referral_id, "kind": kind}
    if row_id is not None:
        payload["row_id"] = row_id
    return {"event_type": ALERT_EVENT_TYPE, "event_payload": payload}


def build_alert_message(
    kind: str,
    referral: Any,
    *,
    tz: ZoneInfo,
    target: str | None = None,
    recipient: str | None = None,
    detail: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """An alert about a referral (`kind` one of ALERT_KINDS); `detail` is planner text only.

    `target` is a notify target (`role:NAME` for on_call), `recipient` a person_id, `reason` a
    Slack error code: none of them is free text a person typed.
    """
    if kind not in ALERT_KINDS:
        raise ValueError(f"unknown alert kind {kind!r}")
    facts = ReferralFacts.of(referral)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _HEADLINES[kind]}},
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": _body(
                    kind, target=target, recipient=recipient, detail=detail, reason=reason
                )[:3000],
            },
        },
        {"type": "section", "fields": referral_fields(facts, tz)},
    ]
    return {"text": notification_text(facts.referral_id, _NOTIFICATIONS[kind]), "blocks": blocks}
