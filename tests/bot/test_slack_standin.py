"""The local Slack stand-in, driven through the real slack_sdk WebClient (and Bolt)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.slack_standin import RateLimit, SlackStandIn, StandInUser

PROMPT_METADATA = {
    "event_type": "handover_prompt",
    "event_payload": {"referral_id": "R-0001", "prompt_id": "P-0001"},
}
USERS = [
    StandInUser(id="U0ANN", name="ann", email="ann.health@example.org"),
    StandInUser(id="U0BOB", name="bob", email="bob.school@example.org"),
    StandInUser(id="U0GONE", name="gone", email="gone@example.org", deleted=True),
]


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    with SlackStandIn(users=USERS, channels=["C0EDT"], rate_limit=None) as running:
        yield running


@pytest.fixture
def client(standin: SlackStandIn) -> WebClient:
    return WebClient(base_url=standin.url, token="xoxb-test")


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def slack_error(excinfo: pytest.ExceptionInfo[SlackApiError]) -> str:
    return str(excinfo.value.response["error"])


def error_messages(excinfo: pytest.ExceptionInfo[SlackApiError]) -> list[str]:
    return list(excinfo.value.response["response_metadata"]["messages"])


def control(standin: SlackStandIn, verb: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        standin.control_url + path,
        data=data,
        method=verb,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# ----- messages --------------------------------------------------------------------------------


def test_posting_to_a_user_id_lands_in_their_dm_with_metadata_only_when_asked(
    standin: SlackStandIn, client: WebClient
) -> None:
    posted = client.chat_postMessage(
        channel="U0ANN",
        text="Referral R-0001",
        blocks=[section("R-0001")],
        metadata=PROMPT_METADATA,
    )

    dm = posted["channel"]
    assert dm.startswith("D")
    assert dm == standin.dm_channel_for("U0ANN")
    assert posted["message"]["metadata"] == PROMPT_METADATA
    plain = client.conversations_history(channel=dm)["messages"]
    assert [m["text"] for m in plain] == ["Referral R-0001"]
    assert "metadata" not in plain[0]
    with_metadata = client.conversations_history(channel=dm, include_all_metadata=True)
    assert with_metadata["messages"][0]["metadata"] == PROMPT_METADATA
    assert standin.messages(dm)[0]["metadata"] == PROMPT_METADATA
    assert client.conversations_open(users="U0ANN")["channel"]["id"] == dm


def test_metadata_sent_as_json_text_in_a_form_body_is_kept(
    standin: SlackStandIn, client: WebClient
) -> None:
    client.api_call(
        "chat.postMessage",
        params={"channel": "U0BOB", "text": "R-0002", "metadata": json.dumps(PROMPT_METADATA)},
    )

    assert standin.messages()[0]["metadata"] == PROMPT_METADATA


def test_timestamps_are_unique_and_increasing(client: WebClient) -> None:
    stamps = [client.chat_postMessage(channel="C0EDT", text=f"m{i}")["ts"] for i in range(5)]

    assert stamps == sorted(stamps, key=float)
    assert len(set(stamps)) == 5
    assert all(len(ts.split(".")[1]) == 6 for ts in stamps)


def test_history_is_newest_first_and_paginates_with_cursors(client: WebClient) -> None:
    stamps = [client.chat_postMessage(channel="C0EDT", text=f"m{i}")["ts"] for i in range(5)]

    first = client.conversations_history(channel="C0EDT", limit=2)
    assert [m["text"] for m in first["messages"]] == ["m4", "m3"]
    assert first["has_more"] is True
    cursor = first["response_metadata"]["next_cursor"]
    second = client.conversations_history(channel="C0EDT", limit=2, cursor=cursor)
    assert [m["text"] for m in second["messages"]] == ["m2", "m1"]
    # slack_sdk's iterator follows next_cursor; each page replaces the response's data.
    texts, last_cursor = [], None
    for page in client.conversations_history(channel="C0EDT", limit=2):
        texts += [m["text"] for m in page["messages"]]
        last_cursor = page["response_metadata"]["next_cursor"]
    assert texts == [f"m{i}" for i in range(4, -1, -1)]
    assert last_cursor == ""
    window = client.conversations_history(
        channel="C0EDT", oldest=stamps[1], latest=stamps[3], inclusive=True
    )
    assert [m["text"] for m in window["messages"]] == ["m3", "m2", "m1"]
    exclusive = client.conversations_history(channel="C0EDT", oldest=stamps[1], latest=stamps[3])
    assert [m["text"] for m in exclusive["messages"]] == ["m2"]


def test_unknown_channels_are_refused_unless_auto_created(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel="C0NOWHERE", text="x")
    assert slack_error(excinfo) == "channel_not_found"
    with SlackStandIn(auto_create_channels=True) as lenient:
        posted = WebClient(base_url=lenient.url, token="xoxb-t").chat_postMessage(
            channel="C0NEW", text="x"
        )
        assert posted["channel"] == "C0NEW"


def test_posting_to_unknown_or_deactivated_people_fails(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as unknown:
        client.chat_postMessage(channel="U0NOBODY", text="x")
    with pytest.raises(SlackApiError) as gone:
        client.chat_postMessage(channel="U0GONE", text="x")

    assert slack_error(unknown) == "channel_not_found"
    assert slack_error(gone) == "user_disabled"


def test_chat_update_replaces_the_message_in_place(
    standin: SlackStandIn, client: WebClient
) -> None:
    posted = client.chat_postMessage(channel="U0ANN", text="R-0001", metadata=PROMPT_METADATA)

    updated = client.chat_update(
        channel=posted["channel"],
        ts=posted["ts"],
        text="R-0001 acknowledged",
        blocks=[section("ok")],
    )

    assert updated["ts"] == posted["ts"]
    [message] = standin.messages(posted["channel"])
    assert message["text"] == "R-0001 acknowledged"
    assert message["blocks"] == [section("ok")]
    assert message["metadata"] == PROMPT_METADATA
    assert "edited" in message


def test_chat_update_errors(standin: SlackStandIn, client: WebClient) -> None:
    posted = client.chat_postMessage(channel="U0ANN", text="R-0001")
    person_ts = standin.post_as_user("C0EDT", "U0BOB", "hello")

    with pytest.raises(SlackApiError) as missing:
        client.chat_update(channel=posted["channel"], ts="1.000001", text="x")
    with pytest.raises(SlackApiError) as not_ours:
        client.chat_update(channel="C0EDT", ts=person_ts, text="x")
    with pytest.raises(SlackApiError) as user_id:
        client.chat_update(channel="U0ANN", ts=posted["ts"], text="x")

    assert slack_error(missing) == "message_not_found"
    assert slack_error(not_ours) == "cant_update_message"
    assert slack_error(user_id) == "channel_not_found"


def test_ephemeral_messages_are_kept_apart_and_permalinks_point_at_messages(
    standin: SlackStandIn, client: WebClient
) -> None:
    answer = client.chat_postEphemeral(channel="C0EDT", user="U0BOB", text="Only you can see this")
    posted = client.chat_postMessage(channel="C0EDT", text="card")
    link = client.chat_getPermalink(channel="C0EDT", message_ts=posted["ts"])

    assert answer["message_ts"]
    assert [e["text"] for e in standin.ephemerals("U0BOB")] == ["Only you can see this"]
    assert standin.ephemerals("U0ANN") == []
    assert [m["text"] for m in standin.messages("C0EDT")] == ["card"]
    assert link["permalink"].endswith("/archives/C0EDT/p" + posted["ts"].replace(".", ""))


# ----- the spec table and Block Kit -----------------------------------------------------------


def test_every_call_is_checked_against_the_method_table(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as unknown_method:
        client.api_call("chat.postMessages", json={"channel": "C0EDT", "text": "x"})
    with pytest.raises(SlackApiError) as not_simulated:
        client.api_call("chat.meMessage", json={"channel": "C0EDT", "text": "waves"})
    with pytest.raises(SlackApiError) as unknown_argument:
        client.chat_postMessage(channel="C0EDT", text="x", colour="red")
    with pytest.raises(SlackApiError) as missing_argument:
        client.api_call("chat.postMessage", json={"text": "x"})

    assert slack_error(unknown_method) == "unknown_method"
    assert slack_error(not_simulated) == "not_implemented_in_standin"
    assert slack_error(unknown_argument) == "invalid_arguments"
    assert error_messages(unknown_argument) == ["[ERROR] unknown argument 'colour'"]
    assert slack_error(missing_argument) == "invalid_arguments"
    assert "missing required argument 'channel'" in error_messages(missing_argument)[0]


def test_bolt_per_request_clients_may_send_team_id(standin: SlackStandIn) -> None:
    client = WebClient(base_url=standin.url, token="xoxb-test", team_id="T0STANDIN")

    assert client.chat_postMessage(channel="C0EDT", text="x")["ok"]


def test_a_message_needs_text_or_blocks(client: WebClient) -> None:
    # slack_sdk warns about the missing text before sending; the stand-in must refuse it too.
    with pytest.warns(UserWarning, match="text"), pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel="C0EDT")

    assert slack_error(excinfo) == "no_text"


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        ([section(f"b{i}") for i in range(51)], "no more than 50 items allowed"),
        (
            [
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "action_id": "handover_ack",
                            "text": {"type": "plain_text", "text": "x" * 76},
                        }
                    ],
                }
            ],
            "must be less than 76 characters [json-pointer:/blocks/0/elements/0/text/text]",
        ),
        ([section("x" * 3001)], "must be less than 3001 characters"),
        ([{"type": "carousel"}], "unknown block type 'carousel'"),
        (
            [
                {
                    "type": "actions",
                    "elements": [
                        {
                            "type": "button",
                            "action_id": "same",
                            "text": {"type": "plain_text", "text": t},
                        }
                        for t in ("A", "B")
                    ],
                }
            ],
            "action_id 'same' is already used in this block",
        ),
        ([{**section("x"), "block_id": "b" * 256}], "must be less than 256 characters"),
    ],
    ids=[
        "51-blocks",
        "76-char-button",
        "3001-char-section",
        "unknown-type",
        "dup-action",
        "long-id",
    ],
)
def test_block_kit_limits_are_enforced_on_messages(
    client: WebClient, blocks: list[dict[str, Any]], expected: str
) -> None:
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel="C0EDT", text="x", blocks=blocks)

    assert slack_error(excinfo) == "invalid_blocks"
    assert any(expected in message for message in error_messages(excinfo))


def test_fifty_blocks_and_a_75_char_button_are_fine(client: WebClient) -> None:
    button = {
        "type": "actions",
        "elements": [
            {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "x" * 75}}
        ],
    }

    assert client.chat_postMessage(
        channel="C0EDT", text="x", blocks=[button, *[section("s")] * 49]
    )["ok"]


# ----- views -----------------------------------------------------------------------------------


def modal(
    title: str = "New referral", blocks: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": "handover_referral",
        "title": {"type": "plain_text", "text": title},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": blocks if blocks is not None else [section("Who should know?")],
    }


def test_views_open_and_update_with_hash_checks(standin: SlackStandIn, client: WebClient) -> None:
    opened = client.views_open(trigger_id="123.456.abc", view={**modal(), "external_id": "ref-1"})
    view = opened["view"]
    assert view["id"].startswith("V") and view["hash"]

    with pytest.raises(SlackApiError) as conflict:
        client.views_update(view_id=view["id"], hash="stale", view=modal("Changed"))
    updated = client.views_update(view_id=view["id"], hash=view["hash"], view=modal("Changed"))
    by_external_id = client.views_update(external_id="ref-1", view=modal("Again"))
    with pytest.raises(SlackApiError) as unknown:
        client.views_update(view_id="V0NOPE", view=modal())

    assert slack_error(conflict) == "hash_conflict"
    assert updated["view"]["hash"] != view["hash"]
    assert by_external_id["view"]["id"] == view["id"]
    assert slack_error(unknown) == "not_found"
    assert [v["title"]["text"] for v in standin.views()] == ["Again"]


def test_views_open_needs_a_trigger_and_a_short_title(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as no_trigger:
        client.api_call("views.open", json={"view": modal()})
    with pytest.raises(SlackApiError) as long_title:
        client.views_open(trigger_id="1.2.3", view=modal("x" * 25))
    with pytest.raises(SlackApiError) as too_many:
        client.views_open(trigger_id="1.2.3", view=modal(blocks=[section("s")] * 101))

    assert slack_error(no_trigger) == "invalid_arguments"
    assert "'trigger_id'" in error_messages(no_trigger)[0]
    assert slack_error(long_title) == "invalid_blocks"
    assert (
        "must be less than 25 characters [json-pointer:/view/title/text]"
        in error_messages(long_title)[0]
    )
    assert "no more than 100 items allowed" in error_messages(too_many)[0]


def test_views_publish_keeps_the_latest_home_per_user(
    standin: SlackStandIn, client: WebClient
) -> None:
    first = client.views_publish(user_id="U0ANN", view={"type": "home", "blocks": [section("1")]})
    second = client.views_publish(
        user_id="U0ANN",
        hash=first["view"]["hash"],
        view={"type": "home", "blocks": [section("2")]},
    )
    with pytest.raises(SlackApiError) as stale:
        client.views_publish(
            user_id="U0ANN", hash=first["view"]["hash"], view={"type": "home", "blocks": []}
        )
    with pytest.raises(SlackApiError) as modal_as_home:
        client.views_publish(user_id="U0ANN", view=modal())

    home = standin.home_view("U0ANN")
    assert home is not None and home["blocks"] == [section("2")]
    assert second["view"]["id"] == first["view"]["id"]
    assert standin.home_view("U0BOB") is None
    assert slack_error(stale) == "hash_conflict"
    assert slack_error(modal_as_home) == "invalid_blocks"


# ----- users and auth --------------------------------------------------------------------------


def test_users_lookup_by_email_and_info(client: WebClient) -> None:
    found = client.users_lookupByEmail(email="Ann.Health@example.org")
    info = client.users_info(user="U0GONE")
    with pytest.raises(SlackApiError) as not_found:
        client.users_lookupByEmail(email="nobody@example.org")
    with pytest.raises(SlackApiError) as no_user:
        client.users_info(user="U0NOBODY")

    assert found["user"]["id"] == "U0ANN"
    assert found["user"]["profile"]["email"] == "ann.health@example.org"
    assert info["user"]["deleted"] is True
    assert slack_error(not_found) == "users_not_found"
    assert slack_error(no_user) == "user_not_found"


def test_tokens_are_checked(standin: SlackStandIn) -> None:
    def auth_error(token: str | None) -> str:
        with pytest.raises(SlackApiError) as excinfo:
            WebClient(base_url=standin.url, token=token).auth_test()
        return slack_error(excinfo)

    assert auth_error(None) == "not_authed"
    assert auth_error("xoxp-user-token") == "invalid_auth"
    standin.revoke_token("xoxb-revoked")
    assert auth_error("xoxb-revoked") == "token_revoked"
    assert WebClient(base_url=standin.url, token="xoxb-fine").auth_test()["user_id"] == "U0HANDOVER"
    with pytest.raises(SlackApiError) as bot_token:
        WebClient(base_url=standin.url, token="xoxb-fine").apps_connections_open(
            app_token="xoxb-fine"
        )
    assert slack_error(bot_token) == "not_allowed_token_type"
    with SlackStandIn(tokens=["xoxb-only-this"]) as strict:
        with pytest.raises(SlackApiError) as other:
            WebClient(base_url=strict.url, token="xoxb-other").auth_test()
        assert slack_error(other) == "invalid_auth"


def test_bolt_app_starts_against_the_standin(standin: SlackStandIn) -> None:
    app = App(client=WebClient(base_url=standin.url, token="xoxb-test"), signing_secret="s")

    assert app.client.base_url == standin.url
    assert [call.method for call in standin.calls()] == ["auth.test"]


# ----- rate limits and faults ------------------------------------------------------------------


def test_post_message_is_rate_limited_per_channel_and_the_retry_handler_gets_through(
    standin: SlackStandIn, client: WebClient
) -> None:
    standin.set_rate_limit(RateLimit(burst=2, per_second=1.0))
    client.chat_postMessage(channel="C0EDT", text="1")
    client.chat_postMessage(channel="C0EDT", text="2")
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel="C0EDT", text="3")
    assert excinfo.value.response.status_code == 429
    assert excinfo.value.response["error"] == "ratelimited"
    assert int(excinfo.value.response.headers["Retry-After"][0]) >= 1
    assert client.chat_postMessage(channel="U0ANN", text="another channel")["ok"]

    patient = WebClient(
        base_url=standin.url,
        token="xoxb-test",
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)],
    )
    assert patient.chat_postMessage(channel="C0EDT", text="3")["ok"]
    assert [m["text"] for m in standin.messages("C0EDT")] == ["1", "2", "3"]


def test_a_429_storm_is_ridden_out_by_the_retry_handler(
    standin: SlackStandIn, client: WebClient
) -> None:
    standin.rate_limit_storm("users.info", count=1, retry_after=0)
    patient = WebClient(
        base_url=standin.url,
        token="xoxb-test",
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )

    assert patient.users_info(user="U0ANN")["user"]["name"] == "ann"
    assert [c.status for c in standin.calls("users.info")] == [429, 200]


def test_injected_server_errors_are_recovered_by_the_retry_handler(standin: SlackStandIn) -> None:
    standin.fail_with_status("chat.postMessage", 500, count=1)
    standin.fail_with_status("chat.postMessage", 503, count=1)
    patient = WebClient(
        base_url=standin.url,
        token="xoxb-test",
        retry_handlers=[ServerErrorRetryHandler(max_retry_count=2)],
    )

    assert patient.chat_postMessage(channel="C0EDT", text="once")["ok"]
    assert [c.status for c in standin.calls("chat.postMessage")] == [500, 503, 200]
    assert [m["text"] for m in standin.messages("C0EDT")] == ["once"]


def test_a_failure_before_applying_stores_nothing(standin: SlackStandIn, client: WebClient) -> None:
    standin.fail_with_status("chat.postMessage", 502)

    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel="C0EDT", text="lost")

    assert excinfo.value.response.status_code == 502
    assert standin.messages() == []


def test_applied_then_failed_leaves_the_message_stored(
    standin: SlackStandIn, client: WebClient
) -> None:
    standin.fail_with_status("chat.postMessage", 503, after_apply=True)

    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel="U0ANN", text="R-0001", metadata=PROMPT_METADATA)

    assert excinfo.value.response.status_code == 503
    [stored] = standin.messages()
    assert stored["metadata"] == PROMPT_METADATA
    assert standin.calls("chat.postMessage")[0].status == 503


def test_injected_slack_errors(standin: SlackStandIn, client: WebClient) -> None:
    standin.fail_with_error("*", "account_inactive")
    standin.fail_with_error("users.lookupByEmail", "user_not_found")

    with pytest.raises(SlackApiError) as inactive:
        client.auth_test()
    with pytest.raises(SlackApiError) as lookup:
        client.users_lookupByEmail(email="ann.health@example.org")

    assert slack_error(inactive) == "account_inactive"
    assert slack_error(lookup) == "user_not_found"
    assert client.users_lookupByEmail(email="ann.health@example.org")["ok"]


def test_a_hang_times_the_client_out(standin: SlackStandIn) -> None:
    impatient = WebClient(base_url=standin.url, token="xoxb-test", timeout=0.3)
    standin.hang("chat.postMessage", 1.0)
    standin.hang("chat.postMessage", 1.0, after_apply=True)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        impatient.chat_postMessage(channel="C0EDT", text="never stored")
    with pytest.raises(TimeoutError):
        impatient.chat_postMessage(channel="C0EDT", text="stored, answer lost")

    assert time.monotonic() - started < 1.5
    assert [m["text"] for m in standin.messages("C0EDT")] == ["stored, answer lost"]


def test_a_held_post_takes_effect_only_once_released_after_a_later_one(
    standin: SlackStandIn, client: WebClient
) -> None:
    # Held before it takes effect: as from a process frozen while sending it.
    status, _ = control(
        standin,
        "POST",
        "faults",
        {"kind": "hold", "method": "chat.postMessage", "channel": "U0ANN", "seconds": 30},
    )
    assert status == 200
    answers: list[Any] = []
    late = threading.Thread(
        target=lambda: answers.append(client.chat_postMessage(channel="U0ANN", text="late"))
    )
    late.start()
    deadline = time.monotonic() + 10
    while not standin.held() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert control(standin, "GET", "holds")[1]["held"] == [
        {"method": "chat.postMessage", "channel": "U0ANN", "released": False}
    ]
    client.chat_postMessage(channel="U0BOB", text="another DM is not held")
    first = client.chat_postMessage(channel="U0ANN", text="first")  # the hold was used up
    assert [m["text"] for m in standin.messages()] == ["another DM is not held", "first"]

    assert control(standin, "POST", "holds/release", {})[1] == {"ok": True, "released": 1}
    late.join(timeout=10)
    assert answers and answers[0]["ok"] is True
    assert [m["text"] for m in standin.messages(first["channel"])] == ["first", "late"]
    # Listed until its answer is written, which the client may read a moment before that.
    deadline = time.monotonic() + 10
    while standin.held() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert standin.held() == []
    assert control(standin, "POST", "faults", {"kind": "hold", "seconds": 0})[0] == 400
    assert (
        control(standin, "POST", "faults", {"kind": "hold", "seconds": 5, "after_apply": True})[0]
        == 400
    )


def test_chat_delete_takes_back_the_bot_s_own_message_only(
    standin: SlackStandIn, client: WebClient
) -> None:
    kept = client.chat_postMessage(channel="C0EDT", text="kept")
    gone = client.chat_postMessage(channel="C0EDT", text="gone")
    said = standin.post_as_user("C0EDT", "U0ANN", "a person's message")

    answer = client.chat_delete(channel="C0EDT", ts=gone["ts"])
    assert (answer["channel"], answer["ts"]) == ("C0EDT", gone["ts"])
    with pytest.raises(SlackApiError) as again:
        client.chat_delete(channel="C0EDT", ts=gone["ts"])
    with pytest.raises(SlackApiError) as not_ours:
        client.chat_delete(channel="C0EDT", ts=said)
    with pytest.raises(SlackApiError) as no_channel:
        client.chat_delete(channel="C0NOWHERE", ts=kept["ts"])

    assert slack_error(again) == "message_not_found"
    assert slack_error(not_ours) == "cant_delete_message"
    assert slack_error(no_channel) == "channel_not_found"
    assert [m["text"] for m in standin.messages("C0EDT")] == ["kept", "a person's message"]


# ----- inspection, control API and CLI ---------------------------------------------------------


def test_all_text_holds_every_string_sent_but_never_the_token(
    standin: SlackStandIn, client: WebClient
) -> None:
    client.chat_postMessage(
        channel="U0ANN",
        text="R-0001",
        blocks=[section("Category: neglect")],
        metadata=PROMPT_METADATA,
    )
    client.views_open(trigger_id="1.2.3", view=modal(blocks=[section("asked by 10:00")]))

    text = standin.all_text()
    for expected in ("R-0001", "Category: neglect", "P-0001", "asked by 10:00", "New referral"):
        assert expected in text
    assert "xoxb-test" not in text


def test_response_urls_keep_what_the_app_said_and_count_towards_all_text(
    standin: SlackStandIn,
) -> None:
    request = urllib.request.Request(
        standin.response_url("cmd-1"),
        data=json.dumps({"response_type": "ephemeral", "text": "R-0001 closed"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200

    [response] = standin.responses("cmd-1")
    assert response["body"]["text"] == "R-0001 closed"
    assert "R-0001 closed" in standin.all_text()


def test_control_endpoints_from_another_client(standin: SlackStandIn, client: WebClient) -> None:
    assert control(standin, "POST", "users", {"users": [{"id": "U0EVE", "name": "eve"}]})[0] == 200
    status, faults = control(
        standin, "POST", "faults", {"kind": "status", "method": "chat.postMessage", "status": 500}
    )
    assert status == 200 and faults["faults"][0]["remaining"] == 1
    with pytest.raises(SlackApiError):
        client.chat_postMessage(channel="U0EVE", text="first")
    client.chat_postMessage(channel="U0EVE", text="second")

    calls = control(standin, "GET", "calls?method=chat.postMessage")[1]["calls"]
    assert [c["status"] for c in calls] == [500, 200]
    assert control(standin, "GET", "calls/count")[1] == {"ok": True, "count": len(standin.calls())}
    assert calls[1]["args"]["text"] == "second" and calls[1]["timestamp"] > 0
    by_user = control(standin, "GET", "messages?user=U0EVE")[1]["messages"]
    dm = standin.dm_channel_for("U0EVE")
    assert [m["text"] for m in by_user] == ["second"]
    assert control(standin, "GET", f"messages?channel={dm}")[1]["messages"] == by_user
    assert control(standin, "GET", "dm?user=U0EVE")[1]["channel"] == dm
    assert control(standin, "POST", "faults", {"kind": "explode"})[0] == 400
    assert control(standin, "GET", "nothing-here")[0] == 404
    assert control(standin, "POST", "rate_limit", {"burst": 1, "per_second": 1})[0] == 200
    client.chat_postMessage(channel="C0EDT", text="one")
    with pytest.raises(SlackApiError):
        client.chat_postMessage(channel="C0EDT", text="two")

    assert control(standin, "POST", "reset", {})[0] == 200
    assert standin.calls() == [] and standin.messages() == []
    assert client.users_info(user="U0EVE")["ok"]


@pytest.mark.slow  # starts a process
def test_the_cli_prints_its_url_and_serves(tmp_path: Any) -> None:
    users = tmp_path / "users.json"
    users.write_text(json.dumps([{"id": "U0ANN", "name": "ann", "email": "ann@example.org"}]))
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.slack_standin", "--port", "0", "--users", str(users)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/api/")
        client = WebClient(base_url=url, token="xoxb-test")
        assert client.users_lookupByEmail(email="ann@example.org")["user"]["id"] == "U0ANN"
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_a_stand_in_defect_is_answered_500_not_a_closed_connection(
    standin: SlackStandIn, client: WebClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError("user")

    monkeypatch.setattr("bot.slack_standin.control.route", broken)
    assert control(standin, "GET", "calls") == (
        500,
        {"ok": False, "error": "standin_failed: KeyError"},
    )
    monkeypatch.setattr(standin.api, "dispatch", broken)
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel="C0EDT", text="one")
    assert excinfo.value.response.status_code == 500
    assert slack_error(excinfo) == "standin_failed: KeyError"
