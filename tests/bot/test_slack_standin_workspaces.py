"""Several workspaces in the stand-in: tokens tied to teams, OAuth v2 installs, revocation."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from slack_bolt.oauth.oauth_flow import OAuthFlow
from slack_bolt.oauth.oauth_settings import OAuthSettings
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth.installation_store import FileInstallationStore
from slack_sdk.oauth.state_store import FileOAuthStateStore

from bot.slack_standin import SlackStandIn, StandInUser
from bot.slack_standin.__main__ import read_users
from tests.bot.test_slack_standin import control, slack_error

POLICE = "T0POLICE"
POLICE_TOKEN = "xoxb-police-test"
CLIENT_ID = "1111.2222"
CLIENT_SECRET = "standin-test-client-secret"
REDIRECT = "http://127.0.0.1:9/slack/oauth_redirect"

HOME_USERS = [
    StandInUser(id="U0ANN", name="ann", email="ann@example.org"),
    StandInUser(id="U0SAM", name="sam", email="sam.both@example.org"),
]
POLICE_USERS = [
    StandInUser(id="U0PCAHMED", name="ahmed", email="ahmed@police.example.org"),
    # The same person, with an account in each workspace.
    StandInUser(id="U0PCSAM", name="sam", email="sam.both@example.org"),
]


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    with SlackStandIn(
        users=HOME_USERS,
        channels=["C0EDT"],
        rate_limit=None,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        socket_mode=True,
    ) as running:
        yield running


@pytest.fixture
def police(standin: SlackStandIn) -> WebClient:
    standin.add_workspace(POLICE, name="Police", users=POLICE_USERS, token=POLICE_TOKEN)
    return WebClient(base_url=standin.url, token=POLICE_TOKEN)


@pytest.fixture
def home(standin: SlackStandIn) -> WebClient:
    return WebClient(base_url=standin.url, token="xoxb-home")


def test_each_token_acts_for_its_own_workspace_and_sees_only_its_people(
    standin: SlackStandIn, home: WebClient, police: WebClient
) -> None:
    assert (home.auth_test()["team_id"], home.auth_test()["user_id"]) == ("T0STANDIN", "U0HANDOVER")
    who = police.auth_test()
    assert (who["team_id"], who["team"], who["user_id"]) == (POLICE, "Police", "U0POLICEBOT")

    # The same email is a different user in each workspace.
    at_home = home.users_lookupByEmail(email="sam.both@example.org")["user"]
    at_police = police.users_lookupByEmail(email="sam.both@example.org")["user"]
    assert (at_home["id"], at_home["team_id"]) == ("U0SAM", "T0STANDIN")
    assert (at_police["id"], at_police["team_id"]) == ("U0PCSAM", POLICE)

    with pytest.raises(SlackApiError) as lookup:
        police.users_lookupByEmail(email="ann@example.org")
    with pytest.raises(SlackApiError) as info:
        police.users_info(user="U0ANN")
    with pytest.raises(SlackApiError) as dm:
        police.chat_postMessage(channel="U0ANN", text="x")
    with pytest.raises(SlackApiError) as channel:
        police.chat_postMessage(channel="C0EDT", text="x")
    with pytest.raises(SlackApiError) as home_tab:
        police.views_publish(user_id="U0ANN", view={"type": "home", "blocks": []})
    assert slack_error(lookup) == "users_not_found"
    assert slack_error(info) == slack_error(home_tab) == "user_not_found"
    assert slack_error(dm) == slack_error(channel) == "channel_not_found"


def test_dms_history_and_views_are_kept_per_workspace(
    standin: SlackStandIn, home: WebClient, police: WebClient
) -> None:
    ours = home.chat_postMessage(channel="U0SAM", text="home prompt")
    theirs = police.chat_postMessage(channel="U0PCSAM", text="police prompt")
    police.views_publish(user_id="U0PCAHMED", view={"type": "home", "blocks": []})

    assert ours["channel"] != theirs["channel"]
    assert theirs["message"]["team"] == POLICE and theirs["message"]["user"] == "U0POLICEBOT"
    assert [
        m["text"] for m in police.conversations_history(channel=theirs["channel"])["messages"]
    ] == ["police prompt"]
    with pytest.raises(SlackApiError) as other:
        police.conversations_history(channel=ours["channel"])
    with pytest.raises(SlackApiError) as update:
        police.chat_update(channel=ours["channel"], ts=ours["ts"], text="x")
    assert slack_error(other) == slack_error(update) == "channel_not_found"

    assert standin.dm_channel_for("U0PCSAM") == theirs["channel"]
    assert [m["text"] for m in standin.messages()] == ["home prompt", "police prompt"]
    assert standin.home_view("U0PCAHMED")["team_id"] == POLICE
    assert {c.team_id for c in standin.calls("chat.postMessage")} == {"T0STANDIN", POLICE}
    by_team = control(standin, "GET", f"calls?method=chat.postMessage&team={POLICE}")[1]
    assert [c["args"]["text"] for c in by_team["calls"]] == ["police prompt"]
    assert control(standin, "GET", "messages?user=U0PCSAM")[1]["messages"][0]["team"] == POLICE


def test_a_workspace_without_the_app_accepts_no_token_until_installed(
    standin: SlackStandIn,
) -> None:
    standin.add_workspace("T0SCHOOL", users=[{"id": "U0HEAD", "name": "head"}])

    assert [(w["team_id"], w["installed"]) for w in standin.workspaces()] == [
        ("T0STANDIN", True),
        ("T0SCHOOL", False),
    ]
    with pytest.raises(SlackApiError) as guessed:
        WebClient(base_url=standin.url, token="xoxb-T0SCHOOL-guess").users_info(user="U0HEAD")
    # A guessed token acts for the home workspace, where that person does not exist.
    assert slack_error(guessed) == "user_not_found"


# ----- OAuth v2 --------------------------------------------------------------------------------


def oauth_flow(standin: SlackStandIn, tmp_path: Path) -> OAuthFlow:
    """Bolt's own OAuth flow, pointed at the stand-in's install page and Web API."""
    settings = OAuthSettings(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        scopes=["chat:write", "commands", "users:read.email"],
        redirect_uri=REDIRECT,
        authorization_url=standin.authorize_url,
        installation_store=FileInstallationStore(base_dir=str(tmp_path / "installations")),
        state_store=FileOAuthStateStore(expiration_seconds=600, base_dir=str(tmp_path / "states")),
    )
    return OAuthFlow(client=WebClient(base_url=standin.url), settings=settings)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def follow_once(url: str) -> tuple[int, str]:
    """GET ``url`` as a browser would, without following the redirect: status, Location."""
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=5) as response:
            return response.status, response.headers.get("Location", "")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Location", "")


def test_bolts_oauth_flow_installs_the_app_into_a_partner_workspace(
    standin: SlackStandIn, tmp_path: Path
) -> None:
    standin.add_workspace(POLICE, name="Police", users=POLICE_USERS)
    flow = oauth_flow(standin, tmp_path)
    request = BoltRequest(body="", query="", headers={})
    state = flow.issue_new_state(request)

    status, location = follow_once(
        flow.build_authorize_url(state, request) + f"&team={POLICE}&user=U0PCAHMED"
    )
    assert status == 302
    back = urlsplit(location)
    assert f"{back.scheme}://{back.netloc}{back.path}" == REDIRECT
    answer = parse_qs(back.query)
    assert answer["state"] == [state]
    installation = flow.run_installation(answer["code"][0])

    assert installation is not None
    assert (installation.team_id, installation.team_name) == (POLICE, "Police")
    assert (installation.bot_user_id, installation.bot_id) == ("U0POLICEBOT", "B0POLICEBOT")
    assert installation.user_id == "U0PCAHMED" and installation.app_id == "A0HANDOVER"
    assert installation.bot_scopes == ["chat:write", "commands", "users:read.email"]
    assert installation.is_enterprise_install is False and installation.enterprise_id is None
    token = installation.bot_token
    assert token and token.startswith("xoxb-")
    client = WebClient(base_url=standin.url, token=token)
    assert client.users_lookupByEmail(email="ahmed@police.example.org")["user"]["id"] == "U0PCAHMED"
    # The answer has exactly the fields Slack documents for a workspace install.
    [exchange] = standin.calls("oauth.v2.access")
    assert exchange.response == {
        "ok": True,
        "app_id": "A0HANDOVER",
        "authed_user": {"id": "U0PCAHMED"},
        "scope": "chat:write,commands,users:read.email",
        "token_type": "bot",
        "access_token": token,
        "bot_user_id": "U0POLICEBOT",
        "team": {"id": POLICE, "name": "Police"},
        "enterprise": None,
        "is_enterprise_install": False,
    }
    assert CLIENT_SECRET not in standin.all_text() + json.dumps(exchange.args)
    assert {w["team_id"]: w["installed"] for w in standin.workspaces()}[POLICE] is True


def test_a_code_works_once_and_only_with_the_apps_credentials_and_redirect(
    standin: SlackStandIn,
) -> None:
    standin.add_workspace(POLICE, users=POLICE_USERS)
    code = standin.authorize(POLICE, redirect_uri=REDIRECT).code
    client = WebClient(base_url=standin.url)

    def exchange(**kwargs: str) -> str:
        arguments = {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "code": code,
            "redirect_uri": REDIRECT,
            **kwargs,
        }
        try:
            client.oauth_v2_access(**arguments)
        except SlackApiError as exc:
            return str(exc.response["error"])
        return "ok"

    assert exchange(client_id="9999.9999") == "invalid_client_id"
    assert exchange(client_secret="wrong") == "bad_client_secret"
    assert exchange(redirect_uri="https://elsewhere.example/") == "bad_redirect_uri"
    assert exchange(code="not-a-code") == "invalid_code"
    assert exchange() == "ok"
    assert exchange() == "invalid_code"  # a code is used once


def test_the_install_page_reports_a_refusal_and_bad_requests(standin: SlackStandIn) -> None:
    base = f"{standin.authorize_url}?client_id={CLIENT_ID}&scope=chat:write"
    status, location = follow_once(f"{base}&redirect_uri={REDIRECT}&state=s1&deny=1")
    assert status == 302 and location == f"{REDIRECT}?error=access_denied&state=s1"
    assert follow_once(base)[0] == 400  # no redirect_uri
    assert follow_once(f"{base}&redirect_uri={REDIRECT}&team=T0NOWHERE")[0] == 400
    wrong = f"{standin.authorize_url}?client_id=1.2&redirect_uri={REDIRECT}"
    assert follow_once(wrong)[0] == 400
    _, answer = control(standin, "POST", "oauth/authorize", {"team_id": "T0STANDIN"})
    assert answer["code"] and answer["team_id"] == "T0STANDIN"


# ----- revoking and uninstalling ----------------------------------------------------------------


def test_auth_revoke_stops_the_token_and_tells_the_app_tokens_revoked(
    standin: SlackStandIn, police: WebClient
) -> None:
    assert police.auth_revoke(test=True)["revoked"] is False
    assert police.auth_test()["ok"]

    assert police.auth_revoke()["revoked"] is True

    with pytest.raises(SlackApiError) as revoked:
        police.auth_test()
    assert slack_error(revoked) == "token_revoked"
    # Socket Mode is on but the app is not connected: the event waits for it.
    [envelope] = standin.envelopes()
    assert envelope["state"] == "queued" and envelope["type"] == "events_api"
    payload = envelope["payload"]
    assert payload["team_id"] == POLICE and payload["type"] == "event_callback"
    assert payload["event"]["type"] == "tokens_revoked"
    assert payload["event"]["tokens"] == {"bot": ["U0POLICEBOT"]}
    assert payload["authorizations"][0]["team_id"] == POLICE


def test_an_admin_uninstalling_revokes_every_token_and_sends_app_uninstalled(
    standin: SlackStandIn, police: WebClient
) -> None:
    status, answer = control(standin, "POST", f"workspaces/{POLICE}/uninstall", {})
    assert (status, answer["revoked"]) == (200, 1)

    with pytest.raises(SlackApiError) as gone:
        police.chat_postMessage(channel="U0PCAHMED", text="x")
    assert slack_error(gone) == "token_revoked"
    assert [e["payload"]["event"]["type"] for e in standin.envelopes()] == [
        "tokens_revoked",
        "app_uninstalled",
    ]
    assert {w["team_id"]: w["installed"] for w in standin.workspaces()}[POLICE] is False
    # Reinstalling gives the app a new token that works.
    code = standin.authorize(POLICE).code
    new = WebClient(base_url=standin.url).oauth_v2_access(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code=code
    )["access_token"]
    assert new != POLICE_TOKEN
    assert WebClient(base_url=standin.url, token=new).auth_test()["team_id"] == POLICE


def test_apps_uninstall_needs_the_apps_credentials(
    standin: SlackStandIn, police: WebClient
) -> None:
    with pytest.raises(SlackApiError) as wrong:
        police.apps_uninstall(client_id=CLIENT_ID, client_secret="nope")
    assert slack_error(wrong) == "bad_client_secret"
    assert police.apps_uninstall(client_id=CLIENT_ID, client_secret=CLIENT_SECRET)["ok"]
    with pytest.raises(SlackApiError) as after:
        police.auth_test()
    assert slack_error(after) == "token_revoked"


# ----- payloads name their workspace ----------------------------------------------------------


def test_every_payload_the_standin_builds_names_the_persons_workspace(
    standin: SlackStandIn, police: WebClient
) -> None:
    posted = police.chat_postMessage(
        channel="U0PCAHMED",
        text="P-1",
        blocks=[
            {
                "type": "actions",
                "block_id": "b",
                "elements": [
                    {
                        "type": "button",
                        "action_id": "handover_ack",
                        "text": {"type": "plain_text", "text": "OK"},
                    }
                ],
            }
        ],
    )
    modal = police.views_open(
        trigger_id="1.2.3",
        view={"type": "modal", "title": {"type": "plain_text", "text": "T"}, "blocks": []},
    )["view"]

    command = standin.deliver_command("U0PCAHMED", "help", wait=False)["payload"]
    click = standin.click("U0PCAHMED", "handover_ack", wait=False)["payload"]
    view = standin.submit_view("U0PCAHMED", modal["id"], {}, wait=False)["payload"]
    event = standin.deliver_event({"type": "app_home_opened"}, user_id="U0PCAHMED", wait=False)

    assert (command["team_id"], command["team_domain"], command["user_id"]) == (
        POLICE,
        "police",
        "U0PCAHMED",
    )
    for interaction in (click, view):
        assert interaction["team"] == {"id": POLICE, "domain": "police"}
        assert interaction["user"]["team_id"] == POLICE
        assert interaction["api_app_id"] == "A0HANDOVER"
    assert click["container"]["message_ts"] == posted["ts"]
    assert click["channel"]["id"] == posted["channel"]
    assert view["view"]["id"] == modal["id"] and view["view"]["team_id"] == POLICE
    assert event["payload"]["team_id"] == POLICE
    assert event["payload"]["event"]["user"] == "U0PCAHMED"
    assert event["payload"]["event"]["channel"] == posted["channel"]
    assert event["payload"]["authorizations"] == [
        {
            "enterprise_id": None,
            "team_id": POLICE,
            "user_id": "U0POLICEBOT",
            "is_bot": True,
            "is_enterprise_install": False,
        }
    ]


def test_workspaces_through_the_control_api_and_the_cli_users_file(
    standin: SlackStandIn, tmp_path: Path
) -> None:
    status, answer = control(
        standin,
        "POST",
        "workspaces",
        {"team_id": "T0NHS", "name": "NHS Trust", "users": [{"id": "U0HV", "name": "hv"}]},
    )
    assert status == 200 and answer["workspace"]["installed"] is False
    assert control(standin, "POST", "workspaces", {"team_id": "T0NHS"})[0] == 400
    assert control(standin, "POST", "workspaces", {"team_id": "not-a-team"})[0] == 400
    assert control(standin, "POST", "users", {"team": "T0NHS", "users": [{"id": "U0GP"}]})[0] == 200
    assert control(standin, "POST", "tokens", {"bind": "xoxb-nhs", "team": "T0NHS"})[0] == 200
    nhs = WebClient(base_url=standin.url, token="xoxb-nhs")
    assert nhs.users_info(user="U0GP")["user"]["team_id"] == "T0NHS"
    listed = control(standin, "GET", "workspaces")[1]["workspaces"]
    assert [(w["team_id"], w["installed"], w["users"]) for w in listed][1] == (
        "T0NHS",
        True,
        ["U0GP", "U0HV"],
    )

    users = tmp_path / "users.json"
    users.write_text(
        json.dumps([{"id": "U0A", "name": "a"}, {"id": "U0B", "name": "b", "team": "T0NHS"}])
    )
    assert {team: [u.id for u in people] for team, people in read_users(users).items()} == {
        None: ["U0A"],
        "T0NHS": ["U0B"],
    }


def test_the_cli_serves_several_workspaces_socket_mode_and_tiers(tmp_path: Path) -> None:
    users = tmp_path / "users.json"
    users.write_text(
        json.dumps(
            [
                {"id": "U0ANN", "name": "ann", "email": "same@example.org"},
                {"id": "U0PCANN", "name": "ann", "email": "same@example.org", "team": POLICE},
            ]
        )
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot.slack_standin",
            "--port",
            "0",
            "--users",
            str(users),
            "--install",
            f"{POLICE}={POLICE_TOKEN}",
            "--socket-mode",
            "--slack-tiers",
            "--workspace-rate",
            "10",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        police = WebClient(base_url=url, token=POLICE_TOKEN)
        home = WebClient(base_url=url, token="xoxb-home")
        assert police.users_lookupByEmail(email="same@example.org")["user"]["id"] == "U0PCANN"
        assert home.users_lookupByEmail(email="same@example.org")["user"]["id"] == "U0ANN"
        socket = WebClient(base_url=url).apps_connections_open(app_token="xapp-1")["url"]
        assert socket.startswith("ws://127.0.0.1:")
        with urllib.request.urlopen(url.replace("/api/", "/_standin/rate_limits")) as answer:
            limits = json.loads(answer.read())
        assert limits["methods"]["views.publish"] == {"per_minute": 100, "burst": 10}
        assert limits["workspace"] == {"per_minute": 600.0, "burst": 10}
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
