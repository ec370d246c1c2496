"""The `/handover` slash command: no text opens the referral modal; subcommands answer privately.

A subcommand's work after the ack is a job in the slack_jobs table (`command_job`; run by
handlers/command_jobs.py in whichever process runs the dispatcher), so an acknowledged
`/handover close` survives a crash of the web process. The modal's opening stays in the web
process: its trigger_id lasts 3 seconds.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from bot.clock import SystemClock
from bot.context import Services
from bot.services.closing import close_referral
from bot.services.directory import person_for_slack_user
from bot.services.oncall import on_call_now
from bot.slackjobs.queue import PRIVATE, NewJob
from bot.workspaces.oauth import WORKSPACE_KEY, workspace_of
from handlers import ids
from handlers.blocks.modal import build_referral_modal
from handlers.blocks.response import close_answer, oncall_answer
from handlers.deferred import BUSY, after_ack, after_answer, signature_of
from handlers.guards import DATABASE_DOWN, is_role_name

logger = logging.getLogger(__name__)

HELP_TEXT = (
    "*Handover* — out-of-hours referrals, next-morning prompts, escalation.\n"
    "• `/handover` — post a referral (EDT referrers)\n"
    "• `/handover oncall [ROLE]` — who is on call now\n"
    "• `/handover log [open|overdue|REFERRAL_ID]` — the escalation log (managers)\n"
    "• `/handover close REFERRAL_ID REASON` — close a referral (referrer or manager)\n"
    "• `/handover help` — this help"
)

Subcommand = Callable[[Services, dict, list[str], Respond], None]
SUBCOMMANDS: dict[str, Subcommand] = {}
# A subcommand's job kind: this and its name (handover_command_close, ...).
JOB_KIND_PREFIX = "handover_command_"


def subcommand(name: str) -> Callable[[Subcommand], Subcommand]:
    """Register a `/handover NAME ...` subcommand handler."""

    def decorate(func: Subcommand) -> Subcommand:
        SUBCOMMANDS[name] = func
        return func

    return decorate


@subcommand("help")
def _help(services: Services, command: dict, args: list[str], respond: Respond) -> None:
    respond(text=HELP_TEXT, response_type="ephemeral")


@subcommand("log")
def _log(services: Services, command: dict, args: list[str], respond: Respond) -> None:
    # Imported here: the log surface pulls in the logbook and Home builders only when used.
    from handlers.log_command import handle_log

    handle_log(services, command, args, respond)


@subcommand("oncall")
def _oncall(services: Services, command: dict, args: list[str], respond: Respond) -> None:
    now = services.clock.now()
    typed = args[0] if args else None
    with services.session_factory() as session:
        answer = on_call_now(session, now=now, settings=services.settings, role=typed)
    unknown = answer.unknown_role
    if unknown is not None and not is_role_name(typed):
        unknown = ""  # not a role name as typed (capitals, spaces, too long): not echoed
    text = oncall_answer(
        answer.roles, at=answer.at, tz=services.settings.timezone, unknown_role=unknown
    )
    respond(text=text, response_type="ephemeral")


@subcommand("close")
def _close(services: Services, command: dict, args: list[str], respond: Respond) -> None:
    respond(text=close_and_answer(services, command, args), response_type="ephemeral")


def close_and_answer(
    services: Services,
    command: dict,
    args: list[str],
    *,
    with_the_close: Callable[[Session], None] | None = None,
) -> str:
    """Close the referral `args` name (`args[1:]` the reason) and say what came of it.
    `with_the_close(session)` runs in the close's own transaction (a job's erasing its copy
    of the reason, handlers/command_jobs.py): both are committed, or neither."""
    referral_id = args[0] if args else None
    with services.session_factory.begin() as session:
        outcome = close_referral(
            session,
            referral_id,
            command["user_id"],
            " ".join(args[1:]),
            now=services.clock.now(),
            settings=services.settings,
            workspace=command.get(WORKSPACE_KEY),
        )
        if with_the_close is not None:
            with_the_close(session)
    if outcome.status == "closed":
        services.wake_dispatcher()
    return close_answer(
        outcome.status,
        referral_id=outcome.referral_id,
        cancelled_prompts=outcome.cancelled_prompts,
        cancelled_rows=outcome.cancelled_rows,
    )


def register(app: App, services: Services) -> None:
    """Listen for `/handover`."""

    @app.command(ids.COMMAND)
    def handle_command(
        ack: Ack,
        command: dict,
        client: WebClient,
        respond: Respond,
        context: BoltContext,
        request: BoltRequest,
    ) -> None:
        # Who typed it is (workspace, user): the subcommands read both from the command, which
        # the work after the ack is given (a BoltContext is the request's only).
        command = {**command, WORKSPACE_KEY: workspace_of(context)}
        ack()
        words = (command.get("text") or "").split()
        writer = services.slack_jobs
        if words and writer is not None and command.get("response_url"):
            # A subcommand: a job (handlers/command_jobs.py), written after the ack.
            job = command_job(command, words, signature_of(request), now=SystemClock().now())

            def refused() -> None:  # the writer could not write it: nothing will be done
                respond(text=DATABASE_DOWN, response_type="ephemeral")

            if not writer.submit(job, refused=refused):
                after_answer(services, lambda: respond(text=BUSY, response_type="ephemeral"))
            return
        # `/handover` alone opens the referral modal: its trigger_id lasts 3 seconds, so that
        # work is urgent, on the in-memory queue (handlers/deferred.py) without waiting for a
        # pause in Slack's requests (bot/web/work.py).
        after_ack(
            services,
            request,
            lambda: run_command(services, command, client, respond),
            busy=lambda: after_answer(
                services, lambda: respond(text=BUSY, response_type="ephemeral")
            ),
            urgent=not words,
        )


def command_job(
    command: dict, words: list[str], signed: tuple[str, int] | None, *, now: datetime
) -> NewJob:
    """The job of `/handover WORDS...`: who typed it where, and when (its response_url lasts
    30 minutes from then); privately, until its work has used them, the response_url and the
    words after the subcommand's name (a close's referral ID and reason). `help`, which an
    unknown subcommand is, keeps nothing of what was typed."""
    name = words[0].lower()
    if name not in SUBCOMMANDS or name == "help":
        name, words = "help", ["help"]
    payload: dict[str, Any] = {
        "user": command["user_id"],
        "workspace": command.get(WORKSPACE_KEY),
        "channel": command.get("channel_id") or None,
        "issued_at": signed[1] if signed else int(now.timestamp()),
        PRIVATE: {"response_url": command["response_url"], "args": words[1:]},
    }
    return NewJob(
        kind=JOB_KIND_PREFIX + name,
        payload=payload,
        signature=signed[0] if signed else None,
        timestamp=signed[1] if signed else None,
    )


def run_command(services: Services, command: dict, client: WebClient, respond: Respond) -> None:
    """What `/handover [SUBCOMMAND ...]` does after its ack."""
    words = (command.get("text") or "").split()
    if not words:
        try:
            open_referral_modal(services, command, client, respond)
        except SQLAlchemyError:
            logger.exception("/handover: database unavailable")
            respond(text=DATABASE_DOWN, response_type="ephemeral")
        return
    handler = SUBCOMMANDS.get(words[0].lower(), _help)
    try:
        handler(services, command, words[1:], respond)
    except SQLAlchemyError:
        logger.exception("/handover %s: database unavailable", handler.__name__.lstrip("_"))
        respond(text=DATABASE_DOWN, response_type="ephemeral")


def open_referral_modal(
    services: Services, command: dict, client: WebClient, respond: Respond
) -> None:
    """Open the referral modal for referrers; tell anyone else privately why not."""
    with services.session_factory() as session:
        person = person_for_slack_user(session, command["user_id"], command.get(WORKSPACE_KEY))
        allowed = person is not None and person.has_permission("referrer")
    if not allowed:
        logger.info("refused referral modal for Slack user %s", command["user_id"])
        respond(
            text="Only EDT referrers in the rota may post referrals. Ask your manager to add "
            "the `referrer` permission to your entry in people.csv.",
            response_type="ephemeral",
        )
        return
    metadata = {"channel_id": command.get("channel_id", "")}
    client.views_open(trigger_id=command["trigger_id"], view=build_referral_modal(metadata))


def private_metadata(view: dict) -> dict:
    """The modal's private metadata (the channel it was opened from)."""
    try:
        return json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        return {}
