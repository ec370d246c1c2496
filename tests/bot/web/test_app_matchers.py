"""bot/web/app.py's `match_on_the_body`: Bolt's built-in matchers called with the body alone
route every request as Bolt's own calls did."""

from __future__ import annotations

import json
import urllib.parse

from slack_bolt import App
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.listener_matcher.builtins import BuiltinListenerMatcher
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient

from bot.web.app import BodyMatcher, match_on_the_body


def routed_app() -> tuple[App, list[str]]:
    """A Bolt app whose listeners record which of them ran (listeners run in the request's
    thread: process_before_response)."""
    app = App(
        client=WebClient(base_url="http://127.0.0.1:9/api/"),  # never called
        # Authorized without Slack's auth.test.
        authorize=lambda **_: AuthorizeResult(
            enterprise_id=None, team_id="T1", bot_token="xoxb-test", bot_user_id="UB"
        ),
        signing_secret="unused",
        request_verification_enabled=False,
        token_verification_enabled=False,
        process_before_response=True,
    )
    ran: list[str] = []

    def recorder(name: str):
        def listener(ack) -> None:
            ack()
            ran.append(name)

        return listener

    app.command("/handover")(recorder("command"))
    app.action("handover_ack")(recorder("ack"))
    app.action({"action_id": "handover_not_known", "block_id": "prompt"})(recorder("not known"))
    app.view("handover_referral")(recorder("view"))
    app.action("handover_redirect", matchers=[lambda body: body["user"]["id"] == "U1"])(
        recorder("redirect by U1")
    )
    return app, ran


def form(fields: dict[str, str]) -> BoltRequest:
    return BoltRequest(body=urllib.parse.urlencode(fields), headers={})


def click(action_id: str, block_id: str = "prompt", user: str = "U1") -> BoltRequest:
    payload = {
        "type": "block_actions",
        "team": {"id": "T1"},
        "user": {"id": user, "team_id": "T1"},
        "actions": [{"action_id": action_id, "block_id": block_id, "type": "button"}],
    }
    return form({"payload": json.dumps(payload)})


def test_built_in_matchers_are_called_with_the_body_and_others_are_left_to_bolt() -> None:
    app, _ = routed_app()
    match_on_the_body(app)
    kinds = [[type(m) for m in listener.matchers] for listener in app._listeners]
    assert kinds == [
        [BodyMatcher],
        [BodyMatcher],
        [BodyMatcher],
        [BodyMatcher],
        [BodyMatcher, kinds[4][1]],
    ]
    assert kinds[4][1] not in (BodyMatcher, BuiltinListenerMatcher)  # the custom matcher


def test_each_request_reaches_the_listener_bolt_would_have_chosen() -> None:
    requests = {
        "command": form({"command": "/handover", "text": "oncall", "user_id": "U1"}),
        "ack": click("handover_ack"),
        "not known": click("handover_not_known"),
        "not known, another block": click("handover_not_known", block_id="other"),
        "view": form(
            {
                "payload": json.dumps(
                    {
                        "type": "view_submission",
                        "team": {"id": "T1"},
                        "user": {"id": "U1"},
                        "view": {"type": "modal", "callback_id": "handover_referral", "id": "V1"},
                    }
                )
            }
        ),
        "redirect by U1": click("handover_redirect"),
        "redirect by U2": click("handover_redirect", user="U2"),
        "another command": form({"command": "/other", "text": "", "user_id": "U1"}),
    }
    answers = {}
    for fast in (False, True):
        app, ran = routed_app()
        if fast:
            match_on_the_body(app)
        for name, request in requests.items():
            ran.clear()
            response = app.dispatch(request)
            answers.setdefault(name, []).append((response.status, list(ran)))
    assert answers == {
        "command": [(200, ["command"])] * 2,
        "ack": [(200, ["ack"])] * 2,
        "not known": [(200, ["not known"])] * 2,
        "not known, another block": [(404, [])] * 2,
        "view": [(200, ["view"])] * 2,
        "redirect by U1": [(200, ["redirect by U1"])] * 2,
        "redirect by U2": [(404, [])] * 2,
        "another command": [(404, [])] * 2,
    }
