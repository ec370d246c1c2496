"""The `/handover` slash command: no text opens the referral modal; subcommands answer privately."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from slack_bolt import Ack, App, BoltContext, Respond
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError

from bot.context import Services
from bot.services.directory import person_for_slack_user
from bot.services.responses import close_referral, on_call_now
from bot.workspaces.oauth import WORKSPACE_KEY, workspace_of
from handlers import ids
from handlers.blocks.modal import build_referral_modal
from handlers.blocks.response import close_answer, oncall_answer
from handlers.deferred import BUSY, after_ack
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
    if outcome.status == "closed":
        services.wake_dispatcher()
    text = close_answer(
        outcome.status,
        referral_id=outcome.referral_id,
        cancelled_prompts=outcome.cancelled_prompts,
        cancelled_rows=outcome.cancelled_rows,
    )
    respond(text=text, response_type="ephemeral")


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
        # Ack first, then work on the queue (handlers/deferred.py); the modal's trigger_id
        # lasts 3 seconds, so the work that opens it is urgent: it takes the next free thread
        # without waiting for a pause in Slack's requests (bot/web/work.py).
        ack()
        after_ack(
            services,
            request,
            lambda: run_command(services, command, client, respond),
            busy=lambda: respond(text=BUSY, response_type="ephemeral"),
            # `/handover` alone opens the referral modal (run_command).
            urgent=not (command.get("text") or "").split(),
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
