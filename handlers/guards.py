"""Defensive reading of what Slack sends, and what of it may be shown back.

A correctly signed payload can still be malformed (a hand-made request, a client bug): every value
read here may be missing or of the wrong type, and the readers answer None (or {}) rather than
raising, so the listener gives its usual answer for a missing choice.
"""

from __future__ import annotations

import re
from typing import Any

from bot.services.intake import REFERRAL_ID_ALPHABET, REFERRAL_ID_LENGTH, REFERRAL_ID_PREFIX

# Row ids are 64-bit signed integers in both databases.
MAX_ROW_ID = 2**63 - 1
_MAX_ID_DIGITS = len(str(MAX_ROW_ID))

DATABASE_DOWN = "Handover can't record that right now; please try again in a minute."

REFERRAL_ID_FORMAT = re.compile(
    re.escape(REFERRAL_ID_PREFIX) + f"[{REFERRAL_ID_ALPHABET}]{{{REFERRAL_ID_LENGTH}}}"
)
ROLE_NAME_FORMAT = re.compile(r"[a-z0-9_:-]{1,64}")


def as_int(value: object) -> int | None:
    """A row id from a button value or modal metadata: None unless a whole number in 1..2**63-1."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text.isascii() or not text.isdigit() or len(text) > _MAX_ID_DIGITS:
            return None
        value = int(text)
    if not isinstance(value, int):
        return None
    return value if 1 <= value <= MAX_ROW_ID else None


def is_text(value: object) -> bool:
    """A string the database can store (no lone UTF-16 surrogates, no NUL)."""
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_or_none(value: object) -> str | None:
    """`value` when it is storable text, else None."""
    return value if is_text(value) else None


def dict_at(mapping: object, *keys: str) -> dict[str, Any]:
    """The dict at `mapping[k1][k2]...`, or {} when any step is missing or not a dict."""
    current = mapping
    for key in keys:
        current = current.get(key) if isinstance(current, dict) else None
    return current if isinstance(current, dict) else {}


def state_values(view: object) -> dict[str, Any]:
    """A view's `state.values` ({} when missing or malformed)."""
    return dict_at(view, "state", "values")


def selected_value(values: dict[str, Any], block_id: str, action_id: str) -> str | None:
    """The value of a select's or radio group's chosen option (None unless it is text)."""
    return text_or_none(dict_at(values, block_id, action_id, "selected_option").get("value"))


def selected_values(values: dict[str, Any], block_id: str, action_id: str) -> list[str]:
    """The values of a multi-select's chosen options; a malformed option counts as ''."""
    options = dict_at(values, block_id, action_id).get("selected_options")
    if not isinstance(options, list):
        return []
    return [
        text_or_none(option.get("value") if isinstance(option, dict) else None) or ""
        for option in options
    ]


def input_value(values: dict[str, Any], block_id: str, action_id: str) -> str | None:
    """The text typed into a plain-text input (None when empty or not text)."""
    return text_or_none(dict_at(values, block_id, action_id).get("value"))


def first_action(body: dict[str, Any]) -> dict[str, Any]:
    """The first action of a block_actions payload ({} when missing or malformed)."""
    actions = body.get("actions")
    first = actions[0] if isinstance(actions, list) and actions else None
    return first if isinstance(first, dict) else {}


def is_referral_id(text: object) -> bool:
    """Whether `text` has the referral ID format (HO- and 6 Crockford base32 characters)."""
    return isinstance(text, str) and REFERRAL_ID_FORMAT.fullmatch(text) is not None


def is_role_name(text: object) -> bool:
    """Whether `text` has the format of a rota role name."""
    return isinstance(text, str) and ROLE_NAME_FORMAT.fullmatch(text) is not None
