"""The parts every Block Kit message and view here is built from, each within Block Kit's limits
(docs/reference/slack.md): a header's text at most 150 characters, a section's or context's
mrkdwn text at most 3000, an option's label at most 75. Pure functions returning dicts."""

from __future__ import annotations

from typing import Any

HEADER_TEXT_LIMIT = 150
SECTION_TEXT_LIMIT = 3000
OPTION_TEXT_LIMIT = 75


def plain_text(text: str) -> dict[str, Any]:
    """A plain_text object (labels, titles, button texts)."""
    return {"type": "plain_text", "text": text}


def mrkdwn_text(text: str) -> dict[str, Any]:
    """A mrkdwn text object, cut to the section limit."""
    return {"type": "mrkdwn", "text": text[:SECTION_TEXT_LIMIT]}


def header_block(text: str) -> dict[str, Any]:
    """A header block, its text cut to the header limit."""
    return {"type": "header", "text": plain_text(text[:HEADER_TEXT_LIMIT])}


def section_block(text: str, block_id: str | None = None) -> dict[str, Any]:
    """A section of mrkdwn text (with a block_id when given)."""
    block: dict[str, Any] = {"type": "section", "text": mrkdwn_text(text)}
    if block_id:
        block["block_id"] = block_id
    return block


def fields_block(fields: list[dict[str, Any]]) -> dict[str, Any]:
    """A section of fields (at most 10, as Block Kit allows)."""
    return {"type": "section", "fields": fields}


def context_block(text: str) -> dict[str, Any]:
    """A context block of one mrkdwn text."""
    return {"type": "context", "elements": [mrkdwn_text(text)]}


def divider_block() -> dict[str, Any]:
    """A divider."""
    return {"type": "divider"}


def actions_block(elements: list[dict[str, Any]], block_id: str | None = None) -> dict[str, Any]:
    """An actions block (with a block_id when given)."""
    if block_id is None:
        return {"type": "actions", "elements": elements}
    return {"type": "actions", "block_id": block_id, "elements": elements}


def button(action_id: str, label: str, value: str, style: str | None = None) -> dict[str, Any]:
    """A button valued `value`; `style` is "primary" or "danger" (None: the default)."""
    element: dict[str, Any] = {"type": "button", "action_id": action_id, "text": plain_text(label)}
    if style:
        element["style"] = style
    element["value"] = value
    return element


def option(value: str, label: str) -> dict[str, Any]:
    """An option of a select or of radio buttons, its label cut to the option limit."""
    return {"text": plain_text(label[:OPTION_TEXT_LIMIT]), "value": value}
