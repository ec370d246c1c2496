"""The App Home tab: managers see referrals, overdue work and coverage; others their prompts.

`register` handles the Previous/Next buttons of a paginated Home (as jobs after the ack);
`refresh_after_change` republishes the Homes a change shows on. Building and publishing a Home is
`bot.delivery.home`'s (the dispatcher redraws a recipient's Home too).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from slack_bolt import App
from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.channels.slack import SlackError, slack_edge
from bot.context import Services
from bot.delivery.home import publish_home, refresh_homes
from bot.services.home import home_content, manager_slack_users
from bot.settings import Settings
from handlers.blocks.home import HOME_NEXT, HOME_PREVIOUS, build_home
from handlers.blocks.response import build_private_notice
from handlers.deferred import Click, ClickWork, ack_then_job
from handlers.guards import DATABASE_DOWN

logger = logging.getLogger(__name__)


def build_home_view(
    session: Session, slack_user_id: str, now: datetime, settings: Settings, page: int = 1
) -> dict[str, Any]:
    """The Home view `slack_user_id` should see now (page `page` of a long list)."""
    content = home_content(session, slack_user_id, now, settings, page)
    return build_home(content, tz=settings.timezone, now=now)


def register(app: App, services: Services) -> None:
    """Listen for the Home tab's Previous/Next buttons: each acks, then is a job."""
    for kind, work in clicks(services).items():
        app.action(kind)(ack_then_job(services, kind, work, tell=_tell_clicker))


def clicks(services: Services) -> dict[str, ClickWork]:
    """The Home tab's buttons' work, by action_id (a job's kind): the button's value is the
    page to show."""

    def show_page(click: Click, client: WebClient) -> None:
        try:
            publish_home(
                client,
                services.session_factory,
                click.user,
                services.clock.now(),
                services.settings,
                page=click.value or 1,
                workspace=click.workspace,
            )
        except SQLAlchemyError:
            logger.exception("could not turn a Home page: database unavailable")
            tell_directly(client, click.user, DATABASE_DOWN)

    return {HOME_NEXT: show_page, HOME_PREVIOUS: show_page}


def _tell_clicker(client: WebClient, click: Click, text: str) -> None:
    tell_directly(client, click.user, text)


def tell_directly(client: WebClient, slack_user_id: str, text: str) -> None:
    """A private note in the user's DM with the bot (a Home tab has no channel to reply in)."""
    with contextlib.suppress(SlackError):  # logged at the edge; nothing else can reach them
        send_directly(client, slack_user_id, text)


def send_directly(client: WebClient, slack_user_id: str, text: str) -> None:
    """`tell_directly`'s note, a failure raised (a SlackError, logged at the edge) for a caller
    that tries again later (a dropped job's notice: handlers/dropped_jobs.py)."""
    with slack_edge("chat.postMessage"):
        client.chat_postMessage(channel=slack_user_id, **build_private_notice(text))


def refresh_after_change(
    client: WebClient, services: Services, slack_users: Iterable[tuple[str | None, str]]
) -> None:
    """Republish the Homes a change shows on: the people involved, as (workspace, user), and
    every manager; each through their own workspace's client (`client` is the request's).
    Queued, coalesced and paced when the app has a HomeRefreshes (bot/delivery/home.py)."""
    with services.session_factory() as session:
        users = [(w, u) for w, u in slack_users if u] + manager_slack_users(session)
    by_workspace: dict[str | None, list[str]] = {}
    for workspace, user in users:
        by_workspace.setdefault(workspace, []).append(user)
    for workspace, ids_there in by_workspace.items():
        there = services.client_for(workspace, client)
        if there is None:
            continue  # the app was removed from that workspace: no Home to draw there
        if services.homes is not None:
            services.homes.request(there, ids_there, workspace)
            continue
        refresh_homes(
            there,
            services.session_factory,
            ids_there,
            services.clock.now(),
            services.settings,
            workspace=workspace,
        )
