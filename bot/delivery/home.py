"""Publishing App Home tabs: after a prompt is delivered, and for Slack's own Home events.

The Home's content is `bot.services.home`'s and its Block Kit `handlers.blocks.home`'s; this
module puts them together and calls `views.publish`, so the dispatcher (which may run without
the Bolt app, `handover dispatch`) can redraw a recipient's Home without a Slack surface.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy.orm import Session, sessionmaker

from bot.channels.base import Channel
from bot.channels.slack import SlackChannel
from bot.delivery.compose import Delivery
from bot.delivery.kinds import OutboxKind
from bot.services.home import home_content
from bot.settings import Settings
from handlers.blocks.home import build_home

logger = logging.getLogger(__name__)


def publish_home(
    client: WebClient,
    session: Session,
    slack_user_id: str,
    now: datetime,
    settings: Settings,
    page: int = 1,
    workspace: str | None = None,
) -> None:
    """Build `slack_user_id`'s Home (page `page`) and publish it (`views.publish`); `client`
    and `workspace` are the user's workspace's (None: home)."""
    content = home_content(session, slack_user_id, now, settings, page, workspace)
    view = build_home(content, tz=settings.timezone, now=now)
    client.views_publish(user_id=slack_user_id, view=view)


def refresh_homes(
    client: WebClient,
    session_factory: sessionmaker[Session],
    slack_user_ids: Iterable[str],
    now: datetime,
    settings: Settings,
    workspace: str | None = None,
) -> None:
    """Republish each user's Home (first page); a Slack error for one does not stop the rest.
    The users are of one workspace (None: home), whose client `client` is."""
    for slack_user_id in dict.fromkeys(slack_user_ids):
        try:
            with session_factory() as session:
                publish_home(client, session, slack_user_id, now, settings, workspace=workspace)
        except SlackApiError:
            logger.exception("could not refresh the Home tab of Slack user %s", slack_user_id)


def refresh_recipient_home(
    channel: Channel,
    session_factory: sessionmaker[Session],
    delivery: Delivery,
    now: datetime,
    settings: Settings,
) -> None:
    """Best effort: show a prompt just delivered on its recipient's App Home (a Slack user's)."""
    if delivery.kind != OutboxKind.PROMPT or not isinstance(channel, SlackChannel):
        return
    if not channel.is_user(delivery.address):
        return  # a team channel was prompted: nobody's Home to redraw
    try:
        refresh_homes(
            channel.client,
            session_factory,
            [delivery.address],
            now,
            settings,
            workspace=getattr(channel, "workspace", None),
        )
    except Exception:
        # The prompt is delivered and recorded; a stale Home is redrawn when next opened.
        logger.exception(
            "could not refresh the App Home of %s after prompt %s",
            delivery.address,
            delivery.row_id,
        )
