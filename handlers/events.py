"""Events API listeners: the App Home tab is built afresh whenever a user opens it."""

from __future__ import annotations

from typing import Any

from slack_bolt import App, BoltContext
from slack_sdk import WebClient

from bot.context import Services
from bot.workspaces.oauth import workspace_of
from handlers import home


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
