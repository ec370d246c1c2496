"""Ways of reaching people: the channel interface (`base`), Slack (`slack`), email (`email`),
and the rota's rule of which reaches whom (`contact` in people.csv, docs/email.md)."""

from __future__ import annotations

from collections.abc import Callable

from slack_sdk import WebClient
from sqlalchemy.orm import Session, sessionmaker

from bot.channels.base import (
    Channel,
    Channels,
    Contact,
    workspace_channel_name,
    workspace_of_channel,
)
from bot.channels.slack import PartnerSlackChannel, SlackChannel
from bot.clock import Clock, SystemClock
from bot.settings import Settings, SettingsError

SLACK = "slack"
EMAIL = "email"


def channel_order(contact: Contact) -> tuple[str, ...]:
    """The channels tried for a person, in order: `email` first for those who asked for it;
    Slack first for everyone else, and email when Slack cannot reach them."""
    slack = workspace_channel_name(contact.workspace)  # their team's workspace's Slack
    order = (EMAIL, slack) if contact.contact == EMAIL else (slack, EMAIL)
    return tuple(name for name in order if name != EMAIL or contact.email)


def channel_copies(contact: Contact) -> tuple[str, ...]:
    """`slack+email`: what Slack delivers is also sent by email."""
    return (EMAIL,) if contact.contact == f"{SLACK}+{EMAIL}" and contact.email else ()


def build_channels(
    client: WebClient,
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    session_factory: sessionmaker[Session] | None = None,
) -> Channels:
    """The channels the dispatcher delivers through: Slack for everyone and every room, and
    email when HANDOVER_SMTP_URL is set; with SLACK_CLIENT_ID, the Slack of each partner
    workspace (`slack:T…`) for the people of teams that name it (docs/partner-workspaces.md)."""
    channels: list[Channel] = [SlackChannel(client)]
    if settings is not None and settings.email_enabled:
        channels.append(build_email_channel(settings, clock or SystemClock(), session_factory))
    partners = partner_channels(client, settings, session_factory)
    return Channels(channels, for_person=channel_order, copies=channel_copies, more=partners)


def partner_channels(
    client: WebClient,
    settings: Settings | None,
    session_factory: sessionmaker[Session] | None,
) -> Callable[[str], Channel | None]:
    """The channel of a partner workspace by name (`slack:T…`). Without SLACK_CLIENT_ID no
    workspace is installed, so each is one that reaches nobody."""
    from bot.workspaces.clients import WorkspaceClients, installation_store

    store = None
    if settings is not None and settings.oauth_enabled and session_factory is not None:
        store = installation_store(settings, session_factory.kw["bind"])
    clients = WorkspaceClients(client, store)
    made: dict[str, Channel] = {}

    def channel_named(name: str) -> Channel | None:
        workspace = workspace_of_channel(name)
        if workspace is None:
            return None
        if workspace not in made:
            made[workspace] = PartnerSlackChannel(workspace, clients.client_for)
        return made[workspace]

    return channel_named


def build_email_channel(
    settings: Settings, clock: Clock, session_factory: sessionmaker[Session] | None
) -> Channel:
    """The email channel of the settings (HANDOVER_SMTP_URL, HANDOVER_MAIL_FROM, …)."""
    from bot.channels.email import EmailChannel
    from bot.response_links import ResponseLinks

    relay = settings.smtp
    if relay is None or not settings.mail_from or not settings.public_url:
        raise SettingsError(
            "email needs HANDOVER_SMTP_URL, HANDOVER_MAIL_FROM and HANDOVER_PUBLIC_URL"
        )
    if not settings.slack_signing_secret:
        raise SettingsError("email needs SLACK_SIGNING_SECRET: response links are signed with it")
    return EmailChannel(
        relay,
        mail_from=settings.mail_from,
        links=ResponseLinks(settings.slack_signing_secret, settings.public_url),
        clock=clock,
        tz=settings.timezone,
        name_of=_rota_names(session_factory),
    )


def _rota_names(session_factory: sessionmaker[Session] | None) -> Callable[[str], str | None]:
    """A Slack user ID's name in the rota (how an email names a colleague Slack would @-mention)."""
    from bot.services.directory import person_for_slack_user

    def name_of(slack_user_id: str) -> str | None:
        if session_factory is None:
            return None
        with session_factory() as session:
            person = person_for_slack_user(session, slack_user_id)
            return person.name if person is not None else None

    return name_of
