"""Events API listeners: the App Home tab is built afresh whenever a user opens it."""

from __future__ import annotations

from typing import Any

from slack_bolt import App
from slack_sdk import WebClient

from bot.context import Services
from handlers import home


def register(app: App, services: Services) -> None:
    """Listen for `app_home_opened` (and the Home tab's own buttons)."""

    @app.event("app_home_opened")
    def on_app_home_opened(event: dict[str, Any], client: WebClient) -> None:
        # The same event fires for the Messages tab; only the Home tab is ours to draw.
        if event.get("tab", "home") != "home":
            return
        home.publish_home(
            client, services.session_factory, event["user"], services.clock.now(), services.settings
        )

    home.register(app, services)
