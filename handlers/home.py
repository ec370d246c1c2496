"""The App Home tab: managers see referrals, overdue work and coverage; others their prompts.

`register` handles the Previous/Next buttons of a paginated Home; `refresh_after_change`
republishes the Homes a change shows on. Building and publishing a Home is
`bot.delivery.home`'s (the dispatcher redraws a recipient's Home too).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.channels.slack import SlackError, slack_edge
from bot.context import Services
from bot.delivery.home import publish_home, refresh_homes
from bot.services.home import home_content, manager_slack_users
from bot.settings import Settings
from bot.workspaces.oauth import workspace_of
from handlers.blocks.home import HOME_NEXT, HOME_PREVIOUS, build_home
from handlers.blocks.response import build_private_notice
from handlers.guards import DATABASE_DOWN, first_action

logger = logging.getLogger(__name__)


def build_home_view(
    session: Session, slack_user_id: str, now: datetime, settings: Settings, page: int = 1
) -> dict[str, Any]:
    """The Home view `slack_user_id` should see now (page `page` of a long list)."""
    content = home_content(session, slack_user_id, now, settings, page)
    return build_home(content, tz=settings.timezone, now=now)


def _requested_page(body: dict[str, Any]) -> int:
    try:
        return int(first_action(body).get("value") or 1)
    except (TypeError, ValueError):
        return 1


def register(app: App, services: Services) -> None:
    """Listen for the Home tab's Previous/Next buttons."""

    def turn_page(ack: Ack, body: dict[str, Any], client: WebClient, context: BoltContext) -> None:
        ack()
        slack_user_id = body["user"]["id"]
        try:
            with services.session_factory() as session:
                publish_home(
                    client,
                    session,
                    slack_user_id,
                    services.clock.now(),
                    services.settings,
                    page=_requested_page(body),
                    workspace=workspace_of(context),
                )
        except SQLAlchemyError:
            logger.exception("could not turn a Home page: database unavailable")
            try:
                with slack_edge("chat.postMessage"):
                    client.chat_postMessage(
                        channel=slack_user_id, **build_private_notice(DATABASE_DOWN)
                    )
            except SlackError:
                pass  # logged at the edge; nothing else can reach this user

    app.action(HOME_NEXT)(turn_page)
    app.action(HOME_PREVIOUS)(turn_page)


def refresh_after_change(
    client: WebClient, services: Services, slack_users: Iterable[tuple[str | None, str]]
) -> None:
    """Republish the Homes a change shows on: the people involved, as (workspace, user), and
    every manager; each through their own workspace's client (`client` is the request's)."""
    with services.session_factory() as session:
        users = [(w, u) for w, u in slack_users if u] + manager_slack_users(session)
    by_workspace: dict[str | None, list[str]] = {}
    for workspace, user in users:
        by_workspace.setdefault(workspace, []).append(user)
    for workspace, ids_there in by_workspace.items():
        there = services.client_for(workspace, client)
        if there is None:
            continue  # the app was removed from that workspace: no Home to draw there
        refresh_homes(
            there,
            services.session_factory,
            ids_there,
            services.clock.now(),
            services.settings,
            workspace=workspace,
        )
