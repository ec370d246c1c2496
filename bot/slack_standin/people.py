"""What people do in Slack that reaches the app: type a command, click, submit, open Home.

Each method finds the person's workspace, checks what they act on exists there (the message
with the button, the modal), and returns the payload Slack would send the app; the stand-in
then delivers it (``bot.slack_standin.delivery``).
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from typing import Any

from bot.slack_standin.api import WebAPI
from bot.slack_standin.model import ControlError, StandInUser
from bot.slack_standin.payloads import (
    block_actions,
    event_callback,
    find_action,
    slash_command,
    view_submission,
)
from bot.slack_standin.workspace import SlackError, Workspace


class People:
    """The people of every workspace, acting in Slack."""

    def __init__(
        self, api: WebAPI, response_url: Callable[[str], str], clock: Callable[[], float]
    ) -> None:
        self._api = api
        self._response_url = response_url
        self._clock = clock
        self._triggers = itertools.count(1)

    def event(
        self, event: dict[str, Any], *, user_id: str | None = None, team: str | None = None
    ) -> dict[str, Any]:
        """An Events API payload for ``event``, from ``user_id``'s workspace (or ``team``)."""
        api = self._api
        workspace = api.workspace_of_user(user_id, team) if user_id else api.workspace(team)
        now = self._clock()
        inner = {"event_ts": f"{now:.6f}", **event}
        if user_id:
            inner.setdefault("user", user_id)
            if inner["type"] == "app_home_opened":
                inner.setdefault("tab", "home")
                inner.setdefault("channel", workspace.dm_channel_for(user_id) or "D0HOME")
        return event_callback(
            workspace, inner, event_id=f"Ev{secrets.token_hex(5).upper()}", event_time=int(now)
        )

    def command(
        self, user_id: str, text: str, *, channel: str | None, command: str
    ) -> dict[str, str]:
        """``COMMAND TEXT`` typed by ``user_id`` in ``channel`` (default: their DM with the app)."""
        workspace, user = self._person(user_id)
        channel_id = channel or workspace.dm_channel_for(user_id) or "D0COMMAND"
        return slash_command(
            workspace,
            user_id,
            user.name,
            text,
            command=command,
            channel_id=channel_id,
            channel_name="directmessage" if channel_id.startswith("D") else channel_id.lower(),
            response_url=self._response_url(user_id),
            trigger_id=self._trigger_id(),
        )

    def click(
        self, user_id: str, action_id: str, *, channel: str | None, ts: str | None
    ) -> dict[str, Any]:
        """A click on ``action_id`` of a stored message (default: the latest in their DM)."""
        workspace, user = self._person(user_id)
        channel_id = channel or workspace.dm_channel_for(user_id)
        if channel_id is None:
            raise ControlError(f"{user_id} has no DM with the app; name the channel")
        return block_actions(
            workspace,
            user_id,
            user.name,
            channel_id=channel_id,
            message=self._clickable(workspace, channel_id, ts, action_id),
            action_id=action_id,
            response_url=self._response_url(user_id),
            trigger_id=self._trigger_id(),
            action_ts=f"{self._clock():.6f}",
        )

    def submission(self, user_id: str, view_id: str, values: dict[str, Any]) -> dict[str, Any]:
        """The submission of the stored modal ``view_id`` with ``values`` as its state."""
        workspace, user = self._person(user_id)
        view = workspace.view(view_id)
        if view is None or view.get("type") != "modal":
            raise ControlError(f"no modal {view_id} in workspace {workspace.team_id}")
        return view_submission(
            workspace, user_id, user.name, view=view, values=values, trigger_id=self._trigger_id()
        )

    def _person(self, user_id: str) -> tuple[Workspace, StandInUser]:
        workspace = self._api.workspace_of_user(user_id)
        user = workspace.user(user_id)
        if user is None:
            raise ControlError(f"no user {user_id} in workspace {workspace.team_id}")
        return workspace, user

    def _clickable(
        self, workspace: Workspace, channel_id: str, ts: str | None, action_id: str
    ) -> dict[str, Any]:
        if ts is not None:
            try:
                message = workspace.message(channel_id, ts)
            except SlackError as exc:
                raise ControlError(f"no message {ts} in {channel_id}") from exc
            if find_action(message, action_id) is None:
                raise ControlError(f"the message {ts} has no {action_id} button")
            return message
        for message in reversed(workspace.messages(channel_id)):
            if find_action(message, action_id) is not None:
                return message
        raise ControlError(f"no message in {channel_id} has a {action_id} button")

    def _trigger_id(self) -> str:
        # Slack's trigger IDs look like "13345224609.738474920.8088930838d88f008e0".
        return f"{int(self._clock())}{next(self._triggers):04d}.{secrets.randbelow(10**9)}.standin"
