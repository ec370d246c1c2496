"""The stand-in's Socket Mode and HTTP delivery, driven by Bolt, slack_sdk and a raw WebSocket."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from bot.slack_standin import SlackStandIn, StandInUser
from tests.bot.test_slack_standin import control

USERS = [StandInUser(id="U0ANN", name="ann", email="ann@example.org")]
SIGNING_SECRET = "standin-test-signing-secret"
PROMPT_BLOCKS = [
    {
        "type": "actions",
        "block_id": "handover_prompt_actions",
        "elements": [
            {
                "type": "button",
                "action_id": "handover_ack",
                "text": {"type": "plain_text", "text": "Acknowledge"},
                "value": "P-1",
            }
        ],
    }
]


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    with SlackStandIn(users=USERS, channels=["C0EDT"], rate_limit=None, socket_mode=True) as s:
        yield s


def socket_url(standin: SlackStandIn) -> str:
    client = WebClient(base_url=standin.url)
    return str(client.apps_connections_open(app_token="xapp-1-test")["url"])


@pytest.fixture
def raw(standin: SlackStandIn) -> Iterator[ClientConnection]:
    """A bare WebSocket client on a fresh Socket Mode URL, its hello already read."""
    with connect(socket_url(standin), proxy=None) as connection:
        hello = json.loads(connection.recv(timeout=5))
        assert hello["type"] == "hello"
        yield connection


def receive(connection: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(connection.recv(timeout=timeout))


def bolt_app(standin: SlackStandIn) -> App:
    app = App(
        client=WebClient(base_url=standin.url, token="xoxb-test"),
        request_verification_enabled=False,
    )

    @app.command("/handover")
    def command(ack, command) -> None:
        ack(text=f"Hello {command['user_id']} from {command['team_id']}")

    @app.view("handover_referral")
    def submitted(ack) -> None:
        ack(response_action="errors", errors={"notify_people": "Name someone to tell"})

    @app.action("handover_ack")
    def clicked(ack, body, client) -> None:
        ack()
        client.chat_postMessage(channel=body["user"]["id"], text="Thanks")

    @app.event("app_home_opened")
    def home(event, client) -> None:
        client.views_publish(user_id=event["user"], view={"type": "home", "blocks": []})

    return app


@pytest.fixture
def bolt(standin: SlackStandIn) -> Iterator[SocketModeHandler]:
    handler = SocketModeHandler(bolt_app(standin), "xapp-1-test")
    handler.connect()
    # Bolt's connect() returns once its side is open; the stand-in lists the link a moment
    # later (its own thread), and a test that disconnects before then would find nobody.
    deadline = time.monotonic() + 10
    while not standin.socket_info()["connections"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert standin.socket_info()["connections"], "Bolt's Socket Mode client never connected"
    try:
        yield handler
    finally:
        handler.close()


# ----- the protocol, seen from a bare WebSocket --------------------------------------------------


def test_apps_connections_open_gives_a_one_time_url_and_hello_names_the_app(
    standin: SlackStandIn,
) -> None:
    url = socket_url(standin)
    assert url.startswith(f"ws://127.0.0.1:{standin.socket.port}/link/?ticket=")
    assert url.endswith("&app_id=A0HANDOVER")

    with connect(url, proxy=None) as connection:
        hello = receive(connection)
        assert hello == {
            "type": "hello",
            "num_connections": 1,
            "debug_info": {
                "host": "applink-standin",
                "build_number": 1,
                "approximate_connection_time": 18060,
            },
            "connection_info": {"app_id": "A0HANDOVER"},
        }
        with pytest.raises(InvalidStatus) as reused:
            connect(url, proxy=None)
        assert reused.value.response.status_code == 401
        assert [c["id"] for c in standin.socket_info()["connections"]] == ["link-1"]


def test_socket_mode_off_refuses_a_url_and_bot_tokens_never_get_one() -> None:
    with SlackStandIn() as off:
        client = WebClient(base_url=off.url)
        with pytest.raises(SlackApiError) as refused:
            client.apps_connections_open(app_token="xapp-1-test")
        with pytest.raises(SlackApiError) as bot_token:
            client.apps_connections_open(app_token="xoxb-not-an-app-token")
    assert refused.value.response["error"] == "access_denied"
    assert bot_token.value.response["error"] == "not_allowed_token_type"


def test_an_envelope_carries_slacks_fields_and_the_ack_payload_is_kept(
    standin: SlackStandIn, raw: ClientConnection
) -> None:
    submission = {"type": "view_submission", "view": {"id": "V1", "callback_id": "x"}}
    delivered = standin.deliver("interactive", submission, wait=False)

    envelope = receive(raw)
    assert envelope == {
        "envelope_id": delivered["envelope_id"],
        "type": "interactive",
        "payload": submission,
        "accepts_response_payload": True,
        "retry_attempt": 0,
        "retry_reason": "",
    }
    raw.send(
        json.dumps(
            {"envelope_id": envelope["envelope_id"], "payload": {"response_action": "clear"}}
        )
    )
    settled = standin.deliveries.wait(envelope["envelope_id"])
    assert settled["state"] == "acked"
    assert settled["ack"]["payload"] == {"response_action": "clear"}
    assert settled["ack"]["connection"] == "link-1" and settled["ack"]["late"] is False
    # A click carries no response in its ack; an event neither.
    standin.deliver("interactive", {"type": "block_actions"}, wait=False)
    standin.deliver("events_api", {"type": "event_callback"}, wait=False)
    assert [receive(raw)["accepts_response_payload"] for _ in range(2)] == [False, False]


def test_an_event_not_acked_within_three_seconds_is_sent_again_with_retry_attempt(
    standin: SlackStandIn, raw: ClientConnection
) -> None:
    delivered = standin.deliver_event({"type": "app_home_opened"}, user_id="U0ANN", wait=False)

    first = receive(raw)
    again = receive(raw, timeout=6)
    assert again["envelope_id"] == first["envelope_id"] == delivered["envelope_id"]
    assert (first["retry_attempt"], first["retry_reason"]) == (0, "")
    assert (again["retry_attempt"], again["retry_reason"]) == (1, "timeout")
    assert again["payload"] == first["payload"]
    raw.send(json.dumps({"envelope_id": again["envelope_id"]}))

    settled = standin.deliveries.wait(again["envelope_id"])
    assert settled["state"] == "acked" and settled["ack"]["retry_attempt"] == 1
    assert [a["retry_attempt"] for a in settled["attempts"]] == [0, 1]
    # Never before Slack's 3 seconds are up; soon after.
    waited = settled["attempts"][1]["at"] - settled["attempts"][0]["at"]
    assert 3.0 <= waited < 4.5, waited


def test_an_interaction_not_acked_within_three_seconds_expires_and_is_not_sent_again(
    standin: SlackStandIn, raw: ClientConnection
) -> None:
    started = time.monotonic()
    settled = standin.deliver("interactive", {"type": "block_actions"})

    assert settled["state"] == "expired" and settled["ack"] is None
    assert 2.9 <= time.monotonic() - started < 4.5
    receive(raw)  # the one delivery
    with pytest.raises(TimeoutError):
        raw.recv(timeout=0.5)


def test_events_wait_for_a_connection_and_interactions_expire_without_one(
    standin: SlackStandIn,
) -> None:
    event = standin.deliver("events_api", {"type": "event_callback"}, wait=False)
    click = standin.deliver("interactive", {"type": "block_actions"})
    assert click["state"] == "expired"
    assert standin.envelope(event["envelope_id"])["state"] == "queued"

    with connect(socket_url(standin), proxy=None) as connection:
        assert receive(connection)["type"] == "hello"
        waiting = receive(connection)
        assert waiting["envelope_id"] == event["envelope_id"]
        connection.send(json.dumps({"envelope_id": waiting["envelope_id"]}))
        assert standin.deliveries.wait(event["envelope_id"])["state"] == "acked"
        with pytest.raises(TimeoutError):
            connection.recv(timeout=0.3)


def test_an_ack_for_an_unknown_envelope_or_garbage_is_ignored(
    standin: SlackStandIn, raw: ClientConnection
) -> None:
    raw.send("not json")
    raw.send(json.dumps({"envelope_id": "no-such-envelope"}))
    raw.send(json.dumps(["a list"]))
    settled = standin.deliver("slash_commands", {"command": "/handover"}, wait=False)
    envelope = receive(raw)
    raw.send(json.dumps({"envelope_id": envelope["envelope_id"], "payload": {"text": "ok"}}))

    assert standin.deliveries.wait(settled["envelope_id"])["ack"]["payload"] == {"text": "ok"}


# ----- Bolt's Socket Mode adapter ----------------------------------------------------------------


def test_bolt_acks_commands_views_clicks_and_events_through_the_socket(
    standin: SlackStandIn, bolt: SocketModeHandler
) -> None:
    client = WebClient(base_url=standin.url, token="xoxb-test")
    posted = client.chat_postMessage(channel="U0ANN", text="P-1", blocks=PROMPT_BLOCKS)
    client.chat_postMessage(channel="U0ANN", text="a later message without buttons")
    opened = client.views_open(
        trigger_id="1.2.3",
        view={
            "type": "modal",
            "callback_id": "handover_referral",
            "title": {"type": "plain_text", "text": "New referral"},
            "blocks": [],
        },
    )

    command = standin.deliver_command("U0ANN", "help")
    view = standin.submit_view("U0ANN", opened["view"]["id"], {"notify_people": {}})
    click = standin.click("U0ANN", "handover_ack")
    home = standin.deliver_event({"type": "app_home_opened"}, user_id="U0ANN")

    assert command["ack"]["payload"] == {"text": "Hello U0ANN from T0STANDIN"}
    assert view["ack"]["payload"] == {
        "response_action": "errors",
        "errors": {"notify_people": "Name someone to tell"},
    }
    assert click["state"] == home["state"] == "acked"
    assert click["payload"]["message"]["ts"] == posted["ts"]
    assert click["payload"]["actions"][0]["value"] == "P-1"
    # The listeners ran after their acks: their Web API calls reach the stand-in.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (
        standin.calls("views.publish") and len(standin.calls("chat.postMessage")) == 3
    ):  # two set up here, one by the click's listener
        time.sleep(0.05)
    assert standin.home_view("U0ANN") is not None
    assert standin.messages(posted["channel"])[-1]["text"] == "Thanks"


def test_refresh_requested_makes_bolt_reconnect_and_the_next_event_goes_through(
    standin: SlackStandIn, bolt: SocketModeHandler
) -> None:
    assert standin.socket_disconnect("refresh_requested") == 1

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        links = [c["id"] for c in standin.socket_info()["connections"]]
        if links == ["link-2"]:
            break
        time.sleep(0.05)
    assert links == ["link-2"]
    assert len(standin.calls("apps.connections.open")) == 2
    settled = standin.deliver_event({"type": "app_home_opened"}, user_id="U0ANN")
    assert settled["state"] == "acked" and settled["ack"]["connection"] == "link-2"


def test_the_control_api_delivers_and_reads_acks(
    standin: SlackStandIn, bolt: SocketModeHandler
) -> None:
    status, answer = control(standin, "POST", "deliver/command", {"user": "U0ANN", "text": ""})
    assert status == 200
    envelope = answer["envelope"]
    assert envelope["type"] == "slash_commands" and envelope["state"] == "acked"
    assert envelope["payload"]["team_id"] == "T0STANDIN"
    assert envelope["payload"]["response_url"] == standin.response_url("U0ANN")
    status, raw_answer = control(
        standin,
        "POST",
        "deliver",
        {"type": "slash_commands", "payload": {**envelope["payload"], "text": "again"}},
    )
    assert status == 200 and raw_answer["envelope"]["ack"]["payload"]["text"].startswith("Hello")

    listed = control(standin, "GET", "envelopes?state=acked")[1]["envelopes"]
    assert [e["envelope_id"] for e in listed] == [
        envelope["envelope_id"],
        raw_answer["envelope"]["envelope_id"],
    ]
    one = control(standin, "GET", f"envelopes/{envelope['envelope_id']}")[1]["envelope"]
    assert one["ack"] == envelope["ack"]
    assert control(standin, "GET", "socket")[1]["connections"][0]["acks_received"] == 2
    assert control(standin, "POST", "deliver", {"type": "rtm", "payload": {}})[0] == 400
    assert control(standin, "POST", "deliver/click", {"user": "U0ANN", "action_id": "x"})[0] == 400
    assert control(standin, "GET", "envelopes/unknown")[0] == 400


# ----- HTTP delivery to a Request URL ---------------------------------------------------------


class RequestUrlApp:
    """An app's Request URL: records each request and answers from a list of statuses."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[dict[str, Any]] = []
        app = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                app.requests.append({"headers": dict(self.headers), "body": body})
                status = app.statuses.pop(0) if app.statuses else 200
                answer = json.dumps({"response_action": "clear"}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slack/events"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_http_delivery_is_signed_and_a_failed_event_is_retried_with_slacks_headers() -> None:
    receiver = RequestUrlApp(statuses=[500, 200, 200])
    try:
        with SlackStandIn(
            users=USERS, request_url=receiver.url, signing_secret=SIGNING_SECRET
        ) as standin:
            event = standin.deliver_event({"type": "app_home_opened"}, user_id="U0ANN")
            view = standin.deliver("interactive", {"type": "view_submission", "view": {}})
    finally:
        receiver.close()

    verifier = SignatureVerifier(SIGNING_SECRET)
    for request in receiver.requests:
        headers = request["headers"]
        assert verifier.is_valid(
            request["body"], headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
        )
    first, retry, interaction = receiver.requests
    assert "X-Slack-Retry-Num" not in first["headers"]
    assert retry["headers"]["X-Slack-Retry-Num"] == "1"
    assert retry["headers"]["X-Slack-Retry-Reason"] == "http_error"
    assert json.loads(retry["body"])["event"]["type"] == "app_home_opened"
    assert event["state"] == "acked" and event["via"] == "http"
    assert [a.get("status") for a in event["attempts"]] == [500, None]
    form = parse_qs(interaction["body"].decode())
    assert json.loads(form["payload"][0])["type"] == "view_submission"
    assert view["ack"]["payload"] == {"response_action": "clear"} and view["ack"]["status"] == 200
