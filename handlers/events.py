"""Events API listeners: the App Home tab is built afresh whenever a user opens it."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App, BoltContext
from slack_sdk import WebClient

from bot.context import Services
from bot.workspaces.oauth import workspace_of
from handlers import home
from handlers.deferred import after_answer

logger = logging.getLogger(__name__)


def register(app: App, services: Services) -> None:
    """Listen for `app_home_opened` (and the Home tab's own buttons)."""

    @app.event("app_home_opened")
    def on_app_home_opened(event: dict[str, Any], client: WebClient, context: BoltContext) -> None:
        # The same event fires for the Messages tab; only the Home tab is ours to draw. Nothing
        # here may raise: Bolt would answer 500 and Slack deliver the event again.
        user_id, workspace = event.get("user"), workspace_of(context)
        if event.get("tab", "home") != "home" or not isinstance(user_id, str):
            return

        def draw() -> None:
            now, sessions = services.clock.now(), services.session_factory
            home.publish_home(
                client, sessions, user_id, now, services.settings, workspace=workspace
            )

        # After the ack: Bolt answers an event when its listener returns (bot/web/app.py).
        after_answer(services, draw)

    home.register(app, services)


def register_home_revocation(app: App) -> None:
    """Without partner workspaces, only the home workspace can remove the app: say so loudly
    (nothing reaches Slack until it is reinstalled and SLACK_BOT_TOKEN replaced)."""

    @app.event("tokens_revoked")
    def on_tokens_revoked(body: dict[str, Any]) -> None:
        logger.error(
            "Slack revoked the bot's token in workspace %s: reinstall the app and set the new "
            "SLACK_BOT_TOKEN",
            body.get("team_id"),
        )

    @app.event("app_uninstalled")
    def on_app_uninstalled(body: dict[str, Any]) -> None:
        logger.error(
            "the app was uninstalled from workspace %s: nothing reaches Slack until it is "
            "reinstalled",
            body.get("team_id"),
        )
