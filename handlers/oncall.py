"""The on-call alerts' button, `handover_oncall_ack` (docs/reference/slack.md, "On-call alerts").

A holder's click records the acknowledgement (bot.services.oncall), which stops the re-paging
of every holder of that alert; then every DM of the alert is updated to show who took it. A
click by anyone else is refused privately and logged; a second click is told who was first.
"""

from __future__ import annotations

import logging

from slack_bolt import App
from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError

from bot.channels.slack import SlackError, slack_edge
from bot.context import Services
from bot.services.oncall import AckOutcome, acknowledge_alert
from handlers import ids
from handlers.actions import tell_clicker
from handlers.blocks.alerts import build_alert_message
from handlers.blocks.prompt import format_local
from handlers.deferred import Click, ClickWork, ack_then_job
from handlers.guards import DATABASE_DOWN
from handlers.responses import tell_privately

logger = logging.getLogger(__name__)


def register(app: App, services: Services) -> None:
    """Listen for the on-call alerts' button: it acks at once, then works (handlers/deferred.py),
    as the prompt buttons do."""
    for kind, work in clicks(services).items():
        app.action(kind)(ack_then_job(services, kind, work, tell=tell_clicker))


def clicks(services: Services) -> dict[str, ClickWork]:
    """The on-call alerts' button's work, by action_id (a job's kind)."""
    return {ids.ONCALL_ACK: make_acknowledge(services)}


def make_acknowledge(services: Services) -> ClickWork:
    """The work of a `handover_oncall_ack` click, after its ack."""

    def acknowledge(click: Click, client: WebClient) -> None:
        # A user is known by (workspace, user).
        user_id, row_id, channel = click.user, click.value, click.channel
        message_ts, workspace = click.message_ts, click.workspace
        try:
            with services.session_factory.begin() as session:
                outcome = acknowledge_alert(
                    session, row_id, user_id, now=services.clock.now(), workspace=workspace
                )
        except SQLAlchemyError:
            logger.exception("could not record an on-call acknowledgement: database unavailable")
            tell_privately(client, user_id, channel, DATABASE_DOWN)
            return
        referral_id = outcome.referral.referral_id if outcome.referral else None
        if outcome.status in ("recorded", "already"):
            services.wake_dispatcher()  # its cancelled re-pages leave the schedule
            _show_acknowledged(client, outcome, services, (channel, message_ts))
        if outcome.status != "recorded":
            tell_privately(client, user_id, channel, _refusal(outcome, services), referral_id)

    return acknowledge


def _refusal(outcome: AckOutcome, services: Services) -> str:
    if outcome.status == "already" and outcome.acknowledged_at is not None:
        at = format_local(outcome.acknowledged_at, services.settings.timezone)
        return f"This alert was already acknowledged by {outcome.who} at {at}."
    if outcome.status == "refused":
        return outcome.reason
    return "Handover does not know this on-call alert."


def _show_acknowledged(
    client: WebClient,
    outcome: AckOutcome,
    services: Services,
    clicked: tuple[str | None, str | None],
) -> None:
    """Every DM of the alert (each holder's, and the re-pages) shows who acknowledged it."""
    assert outcome.referral is not None and outcome.acknowledged_at is not None
    for message in outcome.messages:
        built = build_alert_message(
            message.kind,
            outcome.referral,
            tz=services.settings.timezone,
            target=message.facts.get("role") or message.facts.get("target"),
            recipient=message.facts.get("person_id"),
            detail=message.facts.get("detail"),
            repage=message.repage,
            acknowledged=(outcome.who, outcome.acknowledged_at),
        )
        try:
            with slack_edge("chat.update"):
                client.chat_update(channel=message.channel, ts=message.ts, **built)
        except SlackError:
            pass  # logged at the edge; the acknowledgement itself is recorded
    if clicked[0] and clicked[1]:
        known = {(m.channel, m.ts) for m in outcome.messages}
        if (clicked[0], clicked[1]) not in known:
            logger.warning("acknowledged alert message %s/%s is not in the outbox", *clicked)
