"""Publishing App Home tabs: after a prompt is delivered, and for Slack's own Home events.

The Home's content is `bot.services.home`'s and its Block Kit `handlers.blocks.home`'s; this
module puts them together and calls `views.publish`, so the dispatcher (which may run without
the Bolt app, `handover dispatch`) can redraw a recipient's Home without a Slack surface.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from datetime import datetime

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy.orm import Session, sessionmaker

from bot.channels.base import Channel, RecipientUnreachable
from bot.channels.slack import SlackChannel
from bot.clock import Clock
from bot.delivery.compose import Delivery
from bot.delivery.kinds import OutboxKind
from bot.delivery.pacing import Pacer
from bot.services.home import home_content
from bot.settings import Settings
from handlers.blocks.home import build_home

logger = logging.getLogger(__name__)

# How long `HomeRefreshes.stop` waits for a redraw in hand: its token's wait (about a second at
# views.publish's tier) and one Slack call.
STOP_SECONDS = 10.0


def publish_home(
    client: WebClient,
    session_factory: sessionmaker[Session],
    slack_user_id: str,
    now: datetime,
    settings: Settings,
    page: int = 1,
    workspace: str | None = None,
) -> None:
    """Build `slack_user_id`'s Home (page `page`) and publish it (`views.publish`); `client`
    and `workspace` are the user's workspace's (None: home).

    The Home is read in a transaction of its own, closed before Slack is called: an open
    transaction across an HTTP call held SQLite's write lock (BEGIN IMMEDIATE) for its whole
    length and stalled every other writer.
    """
    with session_factory() as session:
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
            publish_home(client, session_factory, slack_user_id, now, settings, workspace=workspace)
        except SlackApiError:
            logger.exception("could not refresh the Home tab of Slack user %s", slack_user_id)


class HomeRefreshes:
    """Redraws of recipients' App Homes after their prompts are delivered.

    Best effort, and never in a prompt's way: a redraw is queued here and published from a
    thread of its own, coalesced per user (ten prompts to one person in a burst redraw their
    Home once, when its turn comes) and paced on `views.publish`'s own rate tier. A Home still
    waiting when the process stops is redrawn when its user next opens it (app_home_opened).
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        clock: Clock,
        pacer: Pacer | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.clock = clock
        self.pacer = pacer
        # (workspace, Slack user) -> the client of that workspace (workspace None: home)
        self._pending: dict[tuple[str | None, str], WebClient] = {}
        self._busy = False
        self._stopped = False
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def after_delivery(self, channel: Channel, delivery: Delivery) -> None:
        """Queue a redraw of the recipient's Home when `delivery` was a prompt to a user."""
        if delivery.kind != OutboxKind.PROMPT or not isinstance(channel, SlackChannel):
            return
        if not channel.is_user(delivery.address):
            return  # a team channel was prompted: nobody's Home to redraw
        try:
            client = channel.client  # a partner's: its installation's (gone: nothing to redraw)
        except RecipientUnreachable:
            logger.warning("no client to redraw the App Home of %s", delivery.address)
            return
        self.request(client, [delivery.address], channel.workspace)

    def request(
        self, client: WebClient, slack_user_ids: Iterable[str], workspace: str | None = None
    ) -> None:
        """Queue a redraw of each user's Home (once, however often asked before its turn); the
        users are of `workspace` (None: home), whose client `client` is. Nothing, once stopped."""
        with self._changed:
            if self._stopped:
                return  # redrawn when its user next opens the Home
            for slack_user_id in slack_user_ids:
                self._pending[(workspace, slack_user_id)] = client
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="home-refreshes", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def start(self) -> None:
        """Take redraws again after a `stop` (a dispatcher started again)."""
        with self._changed:
            self._stopped = False

    def stop(self, timeout: float = STOP_SECONDS) -> bool:
        """Forget the redraws still queued (each is redrawn when its user opens the Home), take
        no more, and wait for the thread to end; False when a redraw in hand outlasted
        `timeout` (it publishes nothing after its wait for a token)."""
        with self._changed:
            self._stopped = True
            self._pending.clear()
            thread = self._thread
            self._changed.notify_all()
        if thread is None or thread is threading.current_thread():
            return True
        thread.join(timeout)
        if thread.is_alive():
            logger.warning("an App Home redraw was still in hand %.0f s after the stop", timeout)
            return False
        return True

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued Home is redrawn; False when `timeout` came first."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._pending and not self._busy, timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                if self._stopped:
                    self._thread = None
                    self._changed.notify_all()
                    return
                if not self._pending:
                    self._changed.notify_all()
                    if not self._changed.wait(timeout=60) and not self._pending:
                        self._thread = None
                        return
                    continue
                workspace, slack_user_id = key = next(iter(self._pending))
                client = self._pending.pop(key)
                self._busy = True
            try:
                self._publish(client, slack_user_id, workspace)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _publish(self, client: WebClient, slack_user_id: str, workspace: str | None) -> None:
        try:
            if self.pacer is not None:
                self.pacer.wait(client.token, "views.publish")
            with self._changed:
                if self._stopped:
                    return  # its token is spent on nothing; redrawn when next opened
            refresh_homes(
                client,
                self.session_factory,
                [slack_user_id],
                self.clock.now(),
                self.settings,
                workspace=workspace,
            )
        except Exception:
            # The prompt is delivered and recorded; a stale Home is redrawn when next opened.
            logger.exception("could not refresh the App Home of %s", slack_user_id)
