"""Prompt buttons: acknowledge and not known record a response (as a job after the ack, run by
a dispatcher process); has information and redirect open a modal first (after checking that
the clicker may respond). The on-call alerts' button is handlers/oncall.py."""

from __future__ import annotations

import logging
from collections.abc import Callable

from slack_bolt import Ack, App, BoltContext
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError

from bot.channels.slack import SlackError, slack_edge
from bot.context import Services
from bot.delivery.kinds import ResponseKind
from bot.services.responses import check_response
from bot.workspaces.oauth import workspace_of
from handlers import ids
from handlers.blocks.response import build_has_info_modal, build_redirect_modal, modal_metadata
from handlers.deferred import BUSY, Click, ClickWork, ack_then_job, after_ack, after_answer
from handlers.guards import DATABASE_DOWN
from handlers.responses import record_now, refusal_for, show_recorded, tell_privately

logger = logging.getLogger(__name__)


def register(app: App, services: Services) -> None:
    """Listen for the prompt buttons: each acks at once, then works (handlers/deferred.py):
    acknowledge and not known as a job, the modal openers in this process (urgent)."""
    for kind, work in clicks(services).items():
        app.action(kind)(ack_then_job(services, kind, work, tell=tell_clicker))
    for action in (ids.HAS_INFO, ids.REDIRECT):
        opener = _make_modal_opener(services, ids.RESPONSE_KIND_BY_ACTION[action])
        app.action(action)(ack_then_open(services, opener))


def clicks(services: Services) -> dict[str, ClickWork]:
    """The work of the buttons that record a response at once, by action_id (a job's kind)."""
    return {
        action: _make_direct(services, ids.RESPONSE_KIND_BY_ACTION[action])
        for action in (ids.ACK, ids.NOT_KNOWN)
    }


def tell_clicker(client: WebClient, click: Click, text: str) -> None:
    """A private note to the clicker, in the channel of the click (or a DM)."""
    tell_privately(client, click.user, click.channel, text)


# A modal opener's work after its ack: the body (its trigger_id), the request's client, the
# clicker's workspace.
OpenerWork = Callable[[dict, WebClient, str | None], None]


def ack_then_open(services: Services, work: OpenerWork) -> Callable[..., None]:
    """A click listener that acks, then opens a modal in this process: the trigger_id lasts 3
    seconds, so the work is urgent (handlers/deferred.py) and never a job. Told the clicker's
    workspace, which a BoltContext gives only while the request is in hand."""

    def acknowledge_click(
        ack: Ack, body: dict, client: WebClient, context: BoltContext, request: BoltRequest
    ) -> None:
        ack()
        user_id, _, channel, _ = button_click(body)
        workspace = workspace_of(context)
        after_ack(
            services,
            request,
            lambda: work(body, client, workspace),
            busy=lambda: after_answer(
                services, lambda: tell_privately(client, user_id, channel, BUSY)
            ),
            urgent=True,
        )

    return acknowledge_click


def button_click(body: dict) -> tuple[str, int | None, str | None, str | None]:
    """(user, prompt id, channel, message ts) of a button click; a garbled value is no prompt."""
    click = Click.of(body, None)
    return click.user, click.value, click.channel, click.message_ts


def _make_direct(services: Services, kind: str) -> ClickWork:
    def respond_now(click: Click, client: WebClient) -> None:
        # A user is known by (workspace, user).
        user_id, channel, workspace = click.user, click.channel, click.workspace
        try:
            outcome = record_now(services, click.value, user_id, kind, workspace=workspace)
        except SQLAlchemyError:
            logger.exception("could not record a %s click: database unavailable", kind)
            tell_privately(client, user_id, channel, DATABASE_DOWN)
            return
        if outcome.status == "recorded":
            clicked = (channel, click.message_ts)
            show_recorded(client, outcome, services, clicked, workspace=workspace)
            return
        referral_id = outcome.referral.referral_id if outcome.referral else None
        tell_privately(client, user_id, channel, refusal_for(outcome, services), referral_id)

    return respond_now


def _make_modal_opener(services: Services, kind: str) -> OpenerWork:
    def open_modal(body: dict, client: WebClient, workspace: str | None) -> None:
        user_id, prompt_id, channel, message_ts = button_click(body)
        now = services.clock.now()
        try:
            with services.session_factory.begin() as session:
                outcome = check_response(
                    session,
                    prompt_id,
                    user_id,
                    kind,
                    now=now,
                    settings=services.settings,
                    workspace=workspace,
                )
        except SQLAlchemyError:
            logger.exception("could not check a %s click: database unavailable", kind)
            tell_privately(client, user_id, channel, DATABASE_DOWN)
            return
        referral_id = outcome.referral.referral_id if outcome.referral else None
        if outcome.status != "allowed" or outcome.referral is None or prompt_id is None:
            tell_privately(client, user_id, channel, refusal_for(outcome, services), referral_id)
            return
        metadata = modal_metadata(prompt_id, channel, message_ts)
        if kind == ResponseKind.HAS_INFORMATION:
            view = build_has_info_modal(
                outcome.referral,
                outcome.contact_slots,
                now=now,
                tz=services.settings.timezone,
                private_metadata=metadata,
            )
        else:
            view = build_redirect_modal(outcome.referral, private_metadata=metadata)
        try:
            with slack_edge("views.open"):
                client.views_open(trigger_id=body["trigger_id"], view=view)
        except SlackError:
            tell_privately(
                client,
                user_id,
                channel,
                "Handover could not open the form; please click the button again.",
                referral_id,
            )

    return open_modal
