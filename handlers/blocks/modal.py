"""The referral modal (its block_ids are fixed: docs/reference/slack.md) and the plan shown to
its submitter."""

from __future__ import annotations

import json
from datetime import tzinfo
from typing import Any

from handlers import ids
from handlers.blocks.parts import context_block, option, plain_text, section_block

CATEGORY_LABELS = {
    "domestic_abuse": "Domestic abuse",
    "physical_abuse": "Physical abuse",
    "sexual_abuse": "Sexual abuse",
    "neglect": "Neglect",
    "emotional_abuse": "Emotional abuse",
    "exploitation": "Exploitation",
    "missing": "Missing",
    "other": "Other",
}
URGENCY_LABELS = {"urgent": "Urgent", "standard": "Standard"}


def build_referral_modal(private_metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """The modal opened by `/handover`; option values are bare ids and role names."""
    return {
        "type": "modal",
        "callback_id": ids.REFERRAL_MODAL,
        "title": plain_text("New referral"),
        "submit": plain_text("Send"),
        "close": plain_text("Cancel"),
        "private_metadata": json.dumps(private_metadata or {}),
        "blocks": [
            context_block(
                "Slack messages show only the case reference, category and "
                "urgency. Never type a child's name, address or date of birth here."
            ),
            {
                "type": "input",
                "block_id": ids.BLOCK_EXTERNAL_REF,
                "label": plain_text("Case system reference"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": ids.ACTION_EXTERNAL_REF,
                    "max_length": 64,
                    "placeholder": plain_text("e.g. LCS-2026-000123"),
                },
            },
            {
                "type": "input",
                "block_id": ids.BLOCK_CATEGORY,
                "label": plain_text("Category"),
                "element": {
                    "type": "static_select",
                    "action_id": ids.ACTION_CATEGORY,
                    "options": [option(v, label) for v, label in CATEGORY_LABELS.items()],
                },
            },
            {
                "type": "input",
                "block_id": ids.BLOCK_URGENCY,
                "label": plain_text("Urgency"),
                "element": {
                    "type": "radio_buttons",
                    "action_id": ids.ACTION_URGENCY,
                    "initial_option": option("standard", URGENCY_LABELS["standard"]),
                    "options": [option(v, label) for v, label in URGENCY_LABELS.items()],
                },
            },
            _notify_block(ids.BLOCK_NOTIFY_PEOPLE, ids.ACTION_NOTIFY_PEOPLE, "Professionals"),
            _notify_block(ids.BLOCK_NOTIFY_TEAMS, ids.ACTION_NOTIFY_TEAMS, "Teams"),
            _notify_block(ids.BLOCK_NOTIFY_ROLES, ids.ACTION_NOTIFY_ROLES, "On-call roles"),
        ],
    }


def _notify_block(block_id: str, action_id: str, label: str) -> dict[str, Any]:
    return {
        "type": "input",
        "block_id": block_id,
        "optional": True,
        "label": plain_text(label),
        "element": {
            "type": "multi_external_select",
            "action_id": action_id,
            "min_query_length": 0,
            "placeholder": plain_text("Type to search the rota"),
        },
    }


def build_options(choices: list[tuple[str, str]]) -> dict[str, Any]:
    """The answer to an external select's options request (at most 100 options)."""
    return {"options": [option(value, label) for value, label in choices[:100]]}


def build_plan_message(referral_id: str, plan: dict[str, Any], tz: tzinfo) -> dict[str, Any]:
    """What the submitter sees privately: who will be asked, and when."""
    from datetime import datetime

    lines = []
    for entry in plan["plan"]:
        if entry["via"] == "unroutable":
            lines.append(f"• `{entry['target']}`: *nobody reachable within 7 days*")
            continue
        when = datetime.fromisoformat(entry["due_at"]).astimezone(tz)
        timing = "now" if entry["immediate"] else when.strftime("%a %d %b %H:%M")
        lines.append(f"• `{entry['target']}` → {entry['recipient']} ({entry['via']}), {timing}")
    alerts = [a for a in plan["alerts"] if a["kind"] != "on_call"]
    on_call = sorted({a["recipient"] for a in plan["alerts"] if a["kind"] == "on_call"})
    blocks: list[dict[str, Any]] = [
        section_block(f"*Referral {referral_id} received.*"),
        section_block("\n".join(lines)),
    ]
    context = []
    if on_call:
        context.append("On call alerted now: " + ", ".join(on_call))
    for alert in alerts:
        context.append(f"{alert['kind'].replace('_', ' ')}: {alert['target']}")
    if context:
        blocks.append(context_block("\n".join(context)))
    return {"text": f"Handover referral {referral_id} received", "blocks": blocks}
