"""A partner workspace's Slack as a channel: its own token, and "not on Slack" when the app is
not (or no longer) installed there; the rota's rule picks it for the people of its teams."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_sdk import WebClient

from bot.channels import build_channels, channel_order
from bot.channels.base import Contact, Message, RecipientUnreachable
from bot.channels.slack import PartnerSlackChannel
from bot.delivery.metadata import prompt_tag
from bot.slack_standin import SlackStandIn, StandInUser
from bot.workspaces.clients import WorkspaceClients

POLICE = "T0POLICE"
POLICE_TOKEN = "xoxb-police-channel-test"


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    with SlackStandIn(
        users=[StandInUser(id="U0SAM", name="sam", email="sam@example.org")], rate_limit=None
    ) as server:
        server.add_workspace(
            POLICE,
            name="Police",
            users=[StandInUser(id="U0PCSAM", name="sam", email="sam@example.org")],
            token=POLICE_TOKEN,
        )
        yield server


def message() -> Message:
    return Message("Handover referral HO-1", [], prompt_tag("HO-1", 7))


def installed(standin: SlackStandIn, tokens: dict[str, str]) -> PartnerSlackChannel:
    def client_for(workspace: str) -> WebClient | None:
        token = tokens.get(workspace)
        return WebClient(base_url=standin.url, token=token) if token else None

    return PartnerSlackChannel(POLICE, client_for)


def test_a_partners_people_are_found_and_messaged_with_its_own_token(
    standin: SlackStandIn,
) -> None:
    police = installed(standin, {POLICE: POLICE_TOKEN})
    sam = Contact("pc-sam", None, "sam@example.org", workspace=POLICE)

    assert police.name == f"slack:{POLICE}"
    # The same email is another user in the council's workspace; this finds the police one.
    assert police.look_up(sam) == "U0PCSAM"
    sent = police.send("U0PCSAM", message())
    assert police.describe(sent) == {
        "channel": sent.conversation,
        "ts": sent.ts,
        "workspace": POLICE,
    }
    assert police.find("U0PCSAM", prompt_tag("HO-1", 7), None) == sent
    assert [c.team_id for c in standin.calls("chat.postMessage")] == [POLICE]


def test_a_workspace_without_the_app_reaches_nobody(standin: SlackStandIn) -> None:
    police = installed(standin, {})
    with pytest.raises(RecipientUnreachable) as raised:
        police.look_up(Contact("pc-sam", None, "sam@example.org", workspace=POLICE))
    assert raised.value.error == "workspace_not_installed"
    with pytest.raises(RecipientUnreachable):
        police.send("U0PCSAM", message())
    assert standin.calls("chat.postMessage") == []


def test_a_revoked_partner_token_is_unreachable_not_a_hold_on_everything(
    standin: SlackStandIn,
) -> None:
    police = installed(standin, {POLICE: POLICE_TOKEN})
    standin.revoke_token(POLICE_TOKEN)
    with pytest.raises(RecipientUnreachable) as raised:
        police.send("U0PCSAM", message())
    assert raised.value.error == "workspace_token_revoked"


def test_the_rule_picks_the_slack_of_the_persons_workspace_then_email() -> None:
    assert channel_order(Contact("hv", "U1", "hv@example.org")) == ("slack", "email")
    police = Contact("pc", None, "pc@example.org", workspace=POLICE)
    assert channel_order(police) == (f"slack:{POLICE}", "email")
    assert channel_order(Contact("pc", None, "pc@example.org", "email", POLICE)) == (
        "email",
        f"slack:{POLICE}",
    )


def test_channels_make_a_partners_channel_by_name(standin: SlackStandIn) -> None:
    home = WebClient(base_url=standin.url, token="xoxb-home")
    channels = build_channels(home)
    police = channels.for_person(Contact("pc", "U0PCSAM", None, workspace=POLICE))
    assert isinstance(police, PartnerSlackChannel) and police.workspace == POLICE
    assert channels.named(f"slack:{POLICE}") is police
    assert channels.for_person(Contact("hv", "U0SAM")) is channels.for_rooms()
    # Without SLACK_CLIENT_ID nothing is installed anywhere but home.
    with pytest.raises(RecipientUnreachable):
        police.send("U0PCSAM", message())


def test_workspace_clients_reuse_a_token_for_a_while_then_read_the_store_again() -> None:
    class Store:
        def __init__(self) -> None:
            self.reads = 0
            self.token: str | None = POLICE_TOKEN

        def find_bot(self, *, enterprise_id: str | None, team_id: str | None):
            self.reads += 1
            if self.token is None:
                return None
            return type("Bot", (), {"bot_token": self.token})()

    store, now = Store(), [100.0]
    home = WebClient(base_url="http://127.0.0.1:9/api/", token="xoxb-home")
    clients = WorkspaceClients(home, store, monotonic=lambda: now[0])  # type: ignore[arg-type]

    assert clients.client_for(None) is home
    first = clients.client_for(POLICE)
    assert first is not None and first.token == POLICE_TOKEN
    assert first.base_url == home.base_url
    assert clients.client_for(POLICE) is first and store.reads == 1
    store.token = None  # uninstalled
    now[0] += 11
    assert clients.client_for(POLICE) is None and store.reads == 2
    assert WorkspaceClients(home, None).client_for(POLICE) is None


def test_a_token_no_key_opens_is_as_if_not_installed(caplog: pytest.LogCaptureFixture) -> None:
    from bot.workspaces.tokens import TokenKeyError

    class Store:
        def find_bot(self, *, enterprise_id: str | None, team_id: str | None):
            raise TokenKeyError("a stored workspace token opens under no key of HANDOVER_TOKEN_KEY")

    home = WebClient(base_url="http://127.0.0.1:9/api/", token="xoxb-home")
    clients = WorkspaceClients(home, Store())  # type: ignore[arg-type]
    assert clients.client_for(POLICE) is None
    assert f"cannot read the token of workspace {POLICE}" in caplog.text
    with pytest.raises(RecipientUnreachable) as raised:
        PartnerSlackChannel(POLICE, clients.client_for).send("U0PCSAM", message())
    assert raised.value.error == "workspace_not_installed"
