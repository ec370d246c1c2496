"""The payloads Slack sends an app: events, slash commands and interactions.

Pure builders: each takes the workspace the person is in, so ``team_id`` and ``team`` are right
in every payload, and returns the shape of tests/data/slack-samples (the Events API
wrapper with ``authorizations``; ``block_actions``; ``view_submission``; the slash command's
form fields).
"""

from __future__ import annotations

from typing import Any, Protocol

# Slack still sends the deprecated verification token; Bolt ignores it.
VERIFICATION_TOKEN = "standin-verification-token"


class Team(Protocol):
    """What a payload needs to know of the workspace it comes from."""

    team_id: str
    team_domain: str
    app_id: str
    bot_user_id: str


def event_callback(
    team: Team, event: dict[str, Any], *, event_id: str, event_time: int
) -> dict[str, Any]:
    """The Events API wrapper of ``event``, authorised for the app's bot user in ``team``."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team.team_id,
        "api_app_id": team.app_id,
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": event_time,
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": team.team_id,
                "user_id": team.bot_user_id,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


def slash_command(
    team: Team,
    user_id: str,
    user_name: str,
    text: str,
    *,
    command: str,
    channel_id: str,
    channel_name: str,
    response_url: str,
    trigger_id: str,
) -> dict[str, str]:
    """The form fields of ``COMMAND TEXT`` typed by a person in ``channel_id``."""
    return {
        "token": VERIFICATION_TOKEN,
        "team_id": team.team_id,
        "team_domain": team.team_domain,
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": command,
        "text": text,
        "api_app_id": team.app_id,
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id,
    }


def _user(team: Team, user_id: str, user_name: str) -> dict[str, str]:
    return {"id": user_id, "username": user_name, "name": user_name, "team_id": team.team_id}


def _interaction(team: Team, kind: str, user_id: str, user_name: str) -> dict[str, Any]:
    return {
        "type": kind,
        "team": {"id": team.team_id, "domain": team.team_domain},
        "user": _user(team, user_id, user_name),
        "api_app_id": team.app_id,
        "token": VERIFICATION_TOKEN,
        "enterprise": None,
        "is_enterprise_install": False,
    }


def find_action(message: dict[str, Any], action_id: str) -> tuple[str, dict[str, Any]] | None:
    """The block_id and element of the interactive element ``action_id`` in a message."""
    for block in message.get("blocks") or []:
        for element in block.get("elements") or []:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return str(block.get("block_id", "")), element
        accessory = block.get("accessory")
        if isinstance(accessory, dict) and accessory.get("action_id") == action_id:
            return str(block.get("block_id", "")), accessory
    return None


def block_actions(
    team: Team,
    user_id: str,
    user_name: str,
    *,
    channel_id: str,
    message: dict[str, Any],
    action_id: str,
    response_url: str,
    trigger_id: str,
    action_ts: str,
) -> dict[str, Any]:
    """A click on the button ``action_id`` of a stored message (KeyError when it has none)."""
    found = find_action(message, action_id)
    if found is None:
        raise KeyError(action_id)
    block_id, element = found
    action = {
        "action_id": action_id,
        "block_id": block_id,
        "type": element.get("type", "button"),
        "action_ts": action_ts,
    }
    for key in ("text", "value", "style"):
        if key in element:
            action[key] = element[key]
    is_im = channel_id.startswith("D")
    return {
        **_interaction(team, "block_actions", user_id, user_name),
        "container": {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id,
        "channel": {"id": channel_id, "name": "directmessage" if is_im else channel_id.lower()},
        "message": {k: v for k, v in message.items() if k != "channel"},
        "response_url": response_url,
        "actions": [action],
        "state": {"values": {}},
    }


def view_submission(
    team: Team,
    user_id: str,
    user_name: str,
    *,
    view: dict[str, Any],
    values: dict[str, Any],
    trigger_id: str,
) -> dict[str, Any]:
    """The submission of a stored modal with ``values`` as its ``state.values``."""
    return {
        **_interaction(team, "view_submission", user_id, user_name),
        "trigger_id": trigger_id,
        "view": {**view, "state": {"values": values}},
        "response_urls": [],
    }
