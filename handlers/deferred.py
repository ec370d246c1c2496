"""Acknowledge first, then work: what a click or a slash command does after its ack.

Slack waits 3 seconds for an ack. A listener acks before it touches the database and hands the
rest to `Services.after_ack` (bot/web/work.py's bounded queue under `serve`), so that a slow
database or a burst of clicks never delays the ack itself (docs/reference/slack.md). The work
runs once per signed request: a replay of the same signature within Slack's window is dropped
there (the HTTP layer checks the other kinds before Bolt, bot/web/http.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from slack_bolt.request import BoltRequest
from sqlalchemy.exc import SQLAlchemyError

from bot.context import Services
from bot.services.replay import remember_request

logger = logging.getLogger(__name__)

BUSY = "Handover is busy; please try again in a minute."


def signature_of(request: BoltRequest) -> tuple[str, int] | None:
    """The request's Slack signature (hex) and timestamp; None when it carries none (Socket
    Mode, where Slack's connection authenticates the request instead)."""
    headers = request.headers or {}
    signature = (headers.get("x-slack-signature") or [""])[0]
    timestamp = (headers.get("x-slack-request-timestamp") or [""])[0]
    if not signature.startswith("v0=") or not (timestamp.isascii() and timestamp.isdigit()):
        return None
    return signature.removeprefix("v0="), int(timestamp)


def after_ack(
    services: Services,
    request: BoltRequest,
    job: Callable[[], None],
    *,
    busy: Callable[[], None],
    urgent: bool = False,
) -> None:
    """Queue `job`, to run once per signed request; call `busy` when the queue refuses it.

    An `urgent` job opens a modal: its trigger_id lasts 3 seconds, so it does not wait for a
    pause in Slack's requests as other work does (bot/web/work.py)."""
    signed = signature_of(request)

    def once() -> None:
        if signed is not None and not _first_time(services, *signed):
            logger.warning("slack request replayed: ignored")
            return
        job()

    if not services.after_ack(once, urgent=urgent):
        busy()


def _first_time(services: Services, signature: str, timestamp: int) -> bool:
    try:
        with services.session_factory.begin() as session:
            return remember_request(session, signature, timestamp)
    except SQLAlchemyError as exc:
        # Fail open, as bot/web/http.py's guard: the job meets the same database and tells the
        # user it cannot record anything; a second click or close is answered "already".
        logger.warning("replay check: database unavailable (%s)", exc.__class__.__name__)
        return True
