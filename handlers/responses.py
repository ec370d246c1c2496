"""The has-information and redirect modals' submissions, the colleague search, and what Slack
shows once a response is recorded (the prompt DM updated, a reply on the EDT card, private notes).
"""

from __future__ import annotations

import logging

from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError

from bot.channels.slack import SlackError, slack_edge
from bot.context import Services
from bot.delivery.kinds import ResponseKind
from bot.models import Referral
from bot.services.directory import search_people, search_text, workspace_of_person
from bot.services.responses import ResponseOutcome, record_response
from bot.workspaces.oauth import workspace_of
from handlers import ids
from handlers.blocks.modal import build_options
from handlers.blocks.prompt import build_prompt_response_message
from handlers.blocks.response import (
    ACTION_COLLEAGUE,
    BLOCK_COLLEAGUE,
    BLOCK_CONTACT_BY,
    build_card_reply,
    build_private_notice,
    modal_errors,
    read_has_info_modal,
    read_modal_metadata,
    read_redirect_modal,
    refusal_text,
    responder_label,
)
from handlers.deferred import after_answer
from handlers.guards import DATABASE_DOWN, as_int, state_values, text_or_none
from handlers.home import refresh_after_change
from rota.models import Person

logger = logging.getLogger(__name__)


def register(app: App, services: Services) -> None:
    """Listen for the response modals' submissions and the colleague search."""

    @app.view(ids.HAS_INFO_MODAL)
    def submit_has_info(
        ack: Ack, body: dict, view: dict, client: WebClient, context: BoltContext
    ) -> None:
        contact_by, method = read_has_info_modal(state_values(view))
        answers = {"contact_by": contact_by, "method": method, "workspace": workspace_of(context)}
        submit(
            services,
            ack,
            body,
            view,
            client,
            ResponseKind.HAS_INFORMATION,
            BLOCK_CONTACT_BY,
            **answers,
        )

    @app.view(ids.REDIRECT_MODAL)
    def submit_redirect(
        ack: Ack, body: dict, view: dict, client: WebClient, context: BoltContext
    ) -> None:
        colleague = read_redirect_modal(state_values(view))
        answers = {"colleague": colleague, "workspace": workspace_of(context)}
        submit(
            services, ack, body, view, client, ResponseKind.REDIRECTED, BLOCK_COLLEAGUE, **answers
        )

    @app.options(ACTION_COLLEAGUE)
    def load_colleagues(ack: Ack, payload: dict) -> None:
        try:
            with services.session_factory() as session:
                choices = search_people(session, search_text(payload.get("value")))
        except SQLAlchemyError:
            logger.exception("colleague search: database unavailable")
            choices = []
        ack(**build_options(choices))


def submit(
    services: Services,
    ack: Ack,
    body: dict,
    view: dict,
    client: WebClient,
    kind: str,
    first_block: str,
    **answers: str | None,
) -> None:
    """Record a modal's response (`answers` name the workspace it came from); answer problems
    in the modal, then show the outcome."""
    metadata = read_modal_metadata(view)
    prompt_id = as_int(metadata.get("prompt_id"))
    try:
        outcome = record_now(services, prompt_id, body["user"]["id"], kind, **answers)
    except SQLAlchemyError:
        logger.exception("could not record a %s response: database unavailable", kind)
        ack(response_action="errors", errors={first_block: DATABASE_DOWN})
        return
    if outcome.status == "invalid":
        ack(response_action="errors", errors=modal_errors(outcome.field_errors))
        return
    if outcome.status != "recorded":
        ack(response_action="errors", errors={first_block: refusal_for(outcome, services)[:150]})
        return
    ack()
    clicked = (text_or_none(metadata.get("channel")), text_or_none(metadata.get("message_ts")))
    workspace = answers.get("workspace")
    after_answer(
        services, lambda: show_recorded(client, outcome, services, clicked, workspace=workspace)
    )


def record_now(
    services: Services,
    prompt_id: int | None,
    user_id: str,
    kind: str,
    **answers: str | None,
) -> ResponseOutcome:
    """Record a response (one of RESPONSE_KINDS) at the clock's now, in its own transaction."""
    with services.session_factory.begin() as session:
        return record_response(
            session,
            prompt_id,
            user_id,
            kind,
            now=services.clock.now(),
            settings=services.settings,
            **answers,
        )


def show_recorded(
    client: WebClient,
    outcome: ResponseOutcome,
    services: Services,
    clicked: tuple[str | None, str | None] = (None, None),
    *,
    workspace: str | None = None,
) -> None:
    """After the commit: update the prompt's messages and reply on the referral's EDT card.

    `client` is the one of the workspace the response came from (`workspace`, None: home);
    `clicked` is the message whose button was used, in case the outbox does not know it.
    Each message is updated through its own workspace's client, the card through the home's.
    """
    services.wake_dispatcher()
    assert outcome.referral is not None and outcome.kind is not None
    try:
        _show_on_messages_and_card(client, outcome, services, clicked, workspace)
    finally:
        try:
            recipient, recipient_workspace = _slack_id_of(services, outcome.recipient_id)
            # The referrer's Home lists their referrals' states (docs/closing-the-loop.md).
            referrer, referrer_workspace = _slack_id_of(
                services, _referrer_of(services, outcome.referral.referral_id)
            )
            refresh_after_change(
                client,
                services,
                [
                    (workspace, outcome.slack_user_id),
                    (recipient_workspace, recipient or ""),
                    (referrer_workspace, referrer or ""),
                ],
            )
        except SQLAlchemyError:
            # The response is committed and shown; only the Home tabs stay as they were.
            logger.exception("could not refresh Home tabs after a response")


def _referrer_of(services: Services, referral_id: str) -> str | None:
    with services.session_factory() as session:
        referral = session.get(Referral, referral_id)
        return referral.referrer_id if referral is not None else None


def _slack_id_of(services: Services, person_id: str | None) -> tuple[str | None, str | None]:
    """A person's Slack user and their workspace (None: home)."""
    if person_id is None:
        return None, None
    with services.session_factory() as session:
        person = session.get(Person, person_id)
        if person is None:
            return None, None
        return person.slack_user_id, workspace_of_person(session, person_id)


def _show_on_messages_and_card(
    client: WebClient,
    outcome: ResponseOutcome,
    services: Services,
    clicked: tuple[str | None, str | None],
    workspace: str | None,
) -> None:
    assert outcome.referral is not None and outcome.kind is not None
    tz = services.settings.timezone

    def shown_in(where: str | None) -> dict:
        # A mention resolves only in the responder's own workspace; elsewhere, their rota id.
        slack_id = outcome.responder_slack_id if where == workspace else None
        return build_prompt_response_message(
            outcome.referral,
            response=outcome.kind,
            responder=responder_label(outcome.responder_id, slack_id, outcome.on_behalf_of),
            responded_at=outcome.at,
            tz=tz,
            redirected_to=outcome.redirected_to,
            prompt_id=outcome.detail.get("prompt_id"),
        )

    messages = list(outcome.messages)
    if clicked[0] and clicked[1] and (clicked[0], clicked[1], workspace) not in messages:
        messages.append((clicked[0], clicked[1], workspace))
    for channel, ts, where in messages:
        updater = client if where == workspace else services.client_for(where, client)
        if updater is None:
            continue  # that workspace removed the app: its message cannot change
        try:
            with slack_edge("chat.update"):
                updater.chat_update(channel=channel, ts=ts, **shown_in(where))
        except SlackError:
            pass  # logged at the edge; the response itself is recorded
    if outcome.card is None or outcome.responder_id is None or outcome.target is None:
        return
    phone = None
    if outcome.kind == ResponseKind.HAS_INFORMATION:
        with services.session_factory() as session:
            responder = session.get(Person, outcome.responder_id)
            phone = responder.phone if responder is not None else None
    reply = build_card_reply(
        referral_id=outcome.referral.referral_id,
        kind=outcome.kind,
        responder_id=outcome.responder_id,
        on_behalf_of=outcome.on_behalf_of,
        target=outcome.target,
        at=outcome.at,
        tz=tz,
        detail=outcome.detail,
        redirected_to=outcome.redirected_to,
        phone=phone,
    )
    channel, ts = outcome.card
    home = client if workspace is None else services.client_for(None, client)
    if home is None:
        return
    try:
        with slack_edge("chat.postMessage"):
            home.chat_postMessage(channel=channel, thread_ts=ts, **reply)
    except SlackError:
        pass  # logged at the edge; the card itself is refreshed by the dispatcher


def tell_privately(
    client: WebClient,
    user_id: str,
    channel: str | None,
    text: str,
    referral_id: str | None = None,
) -> None:
    """An ephemeral note in the channel of the click, or a DM when that is not possible."""
    notice = build_private_notice(text, referral_id)
    if channel:
        try:
            with slack_edge("chat.postEphemeral"):
                client.chat_postEphemeral(channel=channel, user=user_id, **notice)
            return
        except SlackError:
            pass  # logged at the edge; fall back to a DM
    try:
        with slack_edge("chat.postMessage"):
            client.chat_postMessage(channel=user_id, **notice)
    except SlackError:
        pass  # logged at the edge; nothing else can reach this user


def refusal_for(outcome: ResponseOutcome, services: Services) -> str:
    """The private text for an outcome that recorded nothing."""
    earlier = outcome.earlier
    earlier_by = None
    if earlier is not None:
        earlier_by = earlier.responder_id + (
            f" (for {earlier.on_behalf_of})" if earlier.on_behalf_of else ""
        )
    return refusal_text(
        outcome.status,
        reason=outcome.reason,
        referral_id=outcome.referral.referral_id if outcome.referral else None,
        earlier_kind=earlier.kind if earlier else None,
        earlier_by=earlier_by,
        earlier_at=earlier.at if earlier else None,
        tz=services.settings.timezone,
    )
