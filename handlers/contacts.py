"""The contact check's buttons (docs/closing-the-loop.md): did the contact promised with
"I hold information" happen? The answer updates the check in place; a refusal is private."""

from __future__ import annotations

import logging

from slack_bolt import App
from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError

from bot.channels.slack import SlackError, slack_edge
from bot.context import Services
from bot.services.loop import ContactOutcome, record_contact
from handlers import ids
from handlers.actions import tell_clicker
from handlers.blocks.loop import build_contact_answered
from handlers.deferred import Click, ClickWork, ack_then_job
from handlers.guards import DATABASE_DOWN
from handlers.responses import tell_privately

logger = logging.getLogger(__name__)


def register(app: App, services: Services) -> None:
    """Listen for the contact check's two buttons: each acks at once, then works
    (handlers/deferred.py), as the prompt buttons do."""
    for kind, work in clicks(services).items():
        app.action(kind)(ack_then_job(services, kind, work, tell=tell_clicker))


def clicks(services: Services) -> dict[str, ClickWork]:
    """The contact check's buttons' work, by action_id (a job's kind)."""
    return {
        ids.CONTACT_MADE: _make_answer(services, made=True),
        ids.CONTACT_MISSED: _make_answer(services, made=False),
    }


def _make_answer(services: Services, *, made: bool) -> ClickWork:
    def answer(click: Click, client: WebClient) -> None:
        # A user is known by (workspace, user).
        user_id, channel, message_ts = click.user, click.channel, click.message_ts
        followup_id, workspace = click.value, click.workspace
        try:
            with services.session_factory.begin() as session:
                outcome = record_contact(
                    session,
                    followup_id,
                    user_id,
                    made,
                    now=services.clock.now(),
                    settings=services.settings,
                    workspace=workspace,
                )
        except SQLAlchemyError:
            logger.exception("could not record a contact answer: database unavailable")
            tell_privately(client, user_id, channel, DATABASE_DOWN)
            return
        if outcome.status in ("recorded", "already") and channel and message_ts:
            _show(client, services, outcome, channel, message_ts)
        if outcome.status != "recorded":
            tell_privately(client, user_id, channel, _refusal(outcome), outcome.referral_id)

    return answer


def _show(
    client: WebClient, services: Services, outcome: ContactOutcome, channel: str, ts: str
) -> None:
    assert outcome.referral_id is not None
    message = build_contact_answered(
        outcome.referral_id,
        made=outcome.made,
        answered_by=outcome.answered_by,
        at=outcome.answered_at,
        tz=services.settings.timezone,
    )
    try:
        with slack_edge("chat.update"):
            client.chat_update(channel=channel, ts=ts, **message)
    except SlackError:
        pass  # logged at the edge; the answer itself is recorded


def _refusal(outcome: ContactOutcome) -> str:
    if outcome.status == "not_found":
        return "Handover does not know this contact check."
    if outcome.status == "already":
        said = "made" if outcome.made else "missed"
        by = (
            f" by {outcome.answered_by}"
            if outcome.answered_by
            else " (no answer by the end of the day)"
        )
        return f"This contact was already recorded as {said}{by}."
    return (
        "Only the referrer, the daytime social-care team and oversight may say whether this "
        "contact happened."
    )
