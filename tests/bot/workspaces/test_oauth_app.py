"""The app's OAuth surfaces: /slack/install and /slack/oauth_redirect only with SLACK_CLIENT_ID;
Bolt's install page asks for the partner scopes; each workspace's requests are answered with
its own token, and a workspace without an installation is refused. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from cryptography.fernet import Fernet
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import FixedClock
from bot.context import Services
from bot.settings import Settings
from bot.slack_standin import SlackStandIn, StandInUser
from bot.web.app import create_app
from bot.web.http import create_web_app
from bot.workspaces.oauth import PARTNER_SCOPES
from tests.bot.workspaces.installs import save_installation

CLIENT_ID = "1111.2222"
SECRET = "oauth-app-test-signing-secret"
POLICE = "T0POLICE"
POLICE_TOKEN = "xoxb-police-oauth-app-test"
HOME_TOKEN = "xoxb-home-oauth-app-test"


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    with SlackStandIn(
        users=[StandInUser(id="U0ANN", name="ann")],
        rate_limit=None,
        client_id=CLIENT_ID,
        client_secret="client-secret",
    ) as server:
        server.add_workspace(
            POLICE, users=[StandInUser(id="U0PCAHMED", name="ahmed")], token=POLICE_TOKEN
        )
        server.add_workspace("T0SCHOOL", users=[StandInUser(id="U0HEAD", name="head")])
        yield server


def settings_for(standin: SlackStandIn, db_url: str, *, oauth: bool) -> Settings:
    extra = {}
    if oauth:
        extra = {
            "slack_client_id": CLIENT_ID,
            "slack_client_secret": "client-secret",
            "token_keys": (Fernet.generate_key().decode(),),
            "public_url": "https://handover.example.gov.uk",
        }
    return Settings(
        database_url=db_url,
        slack_bot_token=HOME_TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=standin.url,
        **extra,
    )


def build(standin: SlackStandIn, settings: Settings, factory: sessionmaker[Session]):
    services = Services(settings, factory, FixedClock(datetime(2026, 11, 2, 10, tzinfo=UTC)))
    client = WebClient(base_url=standin.url, token=HOME_TOKEN)
    bolt = create_app(settings, client, services=services)
    return bolt, create_web_app(bolt, services).test_client()


def test_without_a_client_id_there_is_no_install_page(
    standin: SlackStandIn, db_url: str, session_factory: sessionmaker[Session]
) -> None:
    _, web = build(standin, settings_for(standin, db_url, oauth=False), session_factory)
    assert web.get("/slack/install").status_code == 404
    assert web.get("/slack/oauth_redirect?code=x&state=y").status_code == 404


def test_the_install_page_asks_slack_for_the_partner_scopes(
    standin: SlackStandIn, db_url: str, session_factory: sessionmaker[Session]
) -> None:
    _, web = build(standin, settings_for(standin, db_url, oauth=True), session_factory)
    page = web.get("/slack/install")
    assert page.status_code == 200
    [link] = re.findall(r'href="([^"]+/oauth/v2/authorize[^"]*)"', page.get_data(as_text=True))
    link = link.replace("&amp;", "&")
    assert link.startswith(standin.authorize_url)
    query = parse_qs(urlsplit(link).query)
    assert query["client_id"] == [CLIENT_ID]
    assert query["scope"] == [",".join(PARTNER_SCOPES)]
    assert query["redirect_uri"] == ["https://handover.example.gov.uk/slack/oauth_redirect"]
    assert "slack-app-oauth-state" in page.headers["Set-Cookie"]
    # A redirect without the state this browser was given is refused, and installs nothing.
    refused = web.get("/slack/oauth_redirect?code=x&state=forged")
    assert refused.status_code == 400


def _signed(body: str, content_type: str = "application/json") -> BoltRequest:
    """A request as Slack signs it with the app's signing secret."""
    stamp = str(int(time.time()))
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=stamp, body=body)
    return BoltRequest(
        body=body,
        headers={
            "content-type": content_type,
            "x-slack-request-timestamp": stamp,
            "x-slack-signature": signature,
        },
    )


def _signed_command(team_id: str, user_id: str, response_url: str) -> BoltRequest:
    body = urlencode(
        {
            "team_id": team_id,
            "user_id": user_id,
            "command": "/handover",
            "text": "help",
            "channel_id": "D0X",
            "response_url": response_url,
            "trigger_id": "1.2.3",
        }
    )
    return _signed(body, "application/x-www-form-urlencoded")


def test_each_workspace_is_answered_with_its_own_token_and_one_without_the_app_is_refused(
    standin: SlackStandIn, db_url: str, session_factory: sessionmaker[Session]
) -> None:
    settings = settings_for(standin, db_url, oauth=True)
    bolt, _ = build(standin, settings, session_factory)
    engine = session_factory.kw["bind"]
    store = save_installation(settings, engine, POLICE, POLICE_TOKEN, installer="U0PCAHMED")

    for team, user in (("T0STANDIN", "U0ANN"), (POLICE, "U0PCAHMED"), ("T0SCHOOL", "U0HEAD")):
        answer = bolt.dispatch(_signed_command(team, user, standin.response_url(team)))
        assert answer.status == 200, team
    deadline = time.monotonic() + 5
    while not all(standin.responses(t) for t in ("T0STANDIN", POLICE, "T0SCHOOL")):
        assert time.monotonic() < deadline, "not every command was answered"
        time.sleep(0.05)
    # Home and police get /handover help; the school, where the app is not installed, is told so.
    helped = [standin.responses(t)[0]["body"]["text"] for t in ("T0STANDIN", POLICE)]
    assert helped[0] == helped[1] and "/handover" in helped[0]
    assert standin.responses("T0SCHOOL")[0]["body"]["text"] == (
        "Handover is not installed in this Slack workspace (or was removed from it), so it "
        "cannot act here. A Slack admin can install it from "
        "https://handover.example.gov.uk/slack/install."
    )

    # app_uninstalled from the police workspace deletes its installation.
    event = json.dumps(
        {
            "type": "event_callback",
            "team_id": POLICE,
            "api_app_id": "A0HANDOVER",
            "event_id": "Ev0UNINSTALL",
            "event_time": int(time.time()),
            "event": {"type": "app_uninstalled"},
        }
    )
    answer = bolt.dispatch(_signed(event))
    assert answer.status == 200
    deadline = time.monotonic() + 5
    while store.find_bot(enterprise_id=None, team_id=POLICE) is not None:
        assert time.monotonic() < deadline, "the installation was not deleted"
        time.sleep(0.05)


def test_without_partners_the_home_workspace_removing_the_app_is_logged_as_an_error(
    standin: SlackStandIn,
    db_url: str,
    session_factory: sessionmaker[Session],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bolt, _ = build(standin, settings_for(standin, db_url, oauth=False), session_factory)
    for n, kind in enumerate(("tokens_revoked", "app_uninstalled")):
        event = json.dumps(
            {
                "type": "event_callback",
                "team_id": "T0STANDIN",
                "api_app_id": "A0HANDOVER",
                "event_id": f"Ev0HOME{n}",
                "event_time": int(time.time()),
                "event": {"type": kind, "tokens": {"bot": ["U0HANDOVER"]}},
            }
        )
        assert bolt.dispatch(_signed(event)).status == 200
    deadline = time.monotonic() + 5
    while "uninstalled from workspace T0STANDIN" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.05)
    assert "revoked the bot's token in workspace T0STANDIN" in caplog.text
    assert HOME_TOKEN not in caplog.text
