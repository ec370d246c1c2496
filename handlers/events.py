"""Events API listeners: the App Home tab is built afresh whenever a user opens it."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import App, BoltContext
from slack_sdk import WebClient

from bot.context import Services
from bot.workspaces.oauth import workspace_of
from handlers import home

logger = logging.getLogger(__name__)


def register(app: App, services: Services) -> None:
    """Listen for `app_home_opened` (and the Home tab's own buttons)."""

    @app.event("app_home_opened")
    def on_app_home_opened(event: dict[str, Any], client: WebClient, context: BoltContext) -> None:
        # The same event fires for the Messages tab; only the Home tab is ours to draw.
        if event.get("tab", "home") != "home":
            return
        with services.session_factory() as session:
            home.publish_home(
                client,
                session,
                event["user"],
                services.clock.now(),
                services.settings,
                workspace=workspace_of(context),
            )

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
