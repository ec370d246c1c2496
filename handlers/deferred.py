"""Acknowledge first, then work: what a click or a slash command does after its ack.

Slack waits 3 seconds for an ack. A listener acks before it touches the database. A click's
work is then a job: its kind (the button's action_id) and a `Click` (who, which button value,
which message, which workspace; never the message's blocks), written to the slack_jobs table by
`Services.slack_jobs` and run by a dispatcher process (bot/slackjobs/), so it survives a crash
and does not share the web process (docs/reference/slack.md, "Acknowledging"). The table's
unique signature is the replay check: a replay of the same signed request adds no second job.

A slash command's subcommand is a job the same way (handlers/commands.py's `command_job`).
What cannot wait for a job goes to `Services.after_ack` (bot/web/work.py's queue under `serve`):
a modal's opening (its trigger_id lasts 3 seconds). There a replay of the same signature within
Slack's window is dropped by `remember_request`. The HTTP layer checks the other kinds before
Bolt (bot/web/http.py).

Bolt answers Slack when the listener returns (bot/web/app.py), so a listener makes no Slack
call itself, not even to say it is busy: that too is queued (`after_answer`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from slack_bolt import Ack, BoltContext
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError

from bot.context import Services
from bot.services.replay import remember_request
from bot.slackjobs.queue import NewJob
from bot.workspaces.oauth import workspace_of
from handlers.guards import DATABASE_DOWN, as_int, dict_at, first_action, text_or_none

logger = logging.getLogger(__name__)

BUSY = "Handover is busy; please try again in a minute."


@dataclass(frozen=True)
class Click:
    """What a click's work needs (a job's payload): the clicker, the button's value (a prompt,
    alert row, contact check or page number), the message clicked and the workspace."""

    user: str
    value: int | None
    channel: str | None
    message_ts: str | None
    workspace: str | None

    @classmethod
    def of(cls, body: dict, workspace: str | None) -> Click:
        """The click in a block_actions body; a garbled value is None."""
        container = dict_at(body, "container")
        channel = text_or_none(dict_at(body, "channel").get("id")) or text_or_none(
            container.get("channel_id")
        )
        return cls(
            user=body["user"]["id"],
            value=as_int(first_action(body).get("value")),
            channel=channel,
            message_ts=text_or_none(container.get("message_ts")),
            workspace=workspace,
        )

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Click:
        return cls(
            user=str(payload["user"]),
            value=as_int(payload.get("value")),
            channel=text_or_none(payload.get("channel")),
            message_ts=text_or_none(payload.get("message_ts")),
            workspace=text_or_none(payload.get("workspace")),
        )

    def payload(self) -> dict[str, Any]:
        # Field by field: dataclasses.asdict deep-copies each value, a fifth of a listener's
        # CPU on every click.
        return {
            "user": self.user,
            "value": self.value,
            "channel": self.channel,
            "message_ts": self.message_ts,
            "workspace": self.workspace,
        }


# A click's work: the click and the Web API client of its workspace.
ClickWork = Callable[[Click, WebClient], None]


def ack_then_job(
    services: Services,
    kind: str,
    work: ClickWork,
    *,
    tell: Callable[[WebClient, Click, str], None],
) -> Callable[..., None]:
    """A click listener that acks, then hands the click to the slack_jobs table as a job of
    `kind` (or, without a writer, runs `work` on `after_ack`). `tell` reaches the clicker
    privately when the job cannot be taken (busy) or written (database down)."""

    def acknowledge_click(
        ack: Ack, body: dict, client: WebClient, context: BoltContext, request: BoltRequest
    ) -> None:
        ack()
        click = Click.of(body, workspace_of(context))
        writer = services.slack_jobs
        if writer is None:
            after_ack(
                services,
                request,
                lambda: work(click, client),
                busy=lambda: after_answer(services, lambda: tell(client, click, BUSY)),
            )
            return
        signed = signature_of(request)
        job = NewJob(
            kind=kind,
            payload=click.payload(),
            signature=signed[0] if signed else None,
            timestamp=signed[1] if signed else None,
        )
        if not writer.submit(job, refused=lambda: tell(client, click, DATABASE_DOWN)):
            after_answer(services, lambda: tell(client, click, BUSY))

    return acknowledge_click


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
    """Queue `job` in this process, to run once per signed request; call `busy` when the queue
    refuses it.

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


def after_answer(services: Services, job: Callable[[], None]) -> None:
    """Queue `job` (a Slack call after a listener's ack) to run once Slack has its answer,
    without waiting for a pause in Slack's requests; logged when the queue refuses it."""
    if not services.after_ack(job, urgent=True):
        logger.warning("slack work queue full: the work after an ack was not done")


def _first_time(services: Services, signature: str, timestamp: int) -> bool:
    try:
        with services.session_factory.begin() as session:
            return remember_request(session, signature, timestamp)
    except SQLAlchemyError as exc:
        # Fail open, as bot/web/http.py's guard: the job meets the same database and tells the
        # user it cannot record anything; a second click or close is answered "already".
        logger.warning("replay check: database unavailable (%s)", exc.__class__.__name__)
        return True
