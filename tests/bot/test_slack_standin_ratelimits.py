"""Slack's rate-limit tiers and the workspace-wide message limit, as the stand-in applies them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.slack_standin import Limit, RateLimits, SlackStandIn, StandInUser
from bot.slack_standin.model import ControlError
from bot.slack_standin.ratelimits import SLACK_TIERS, RateLimiter
from tests.bot.test_slack_standin import control

USERS = [StandInUser(id=f"U0P{i:03d}", name=f"p{i}", email=f"p{i}@example.org") for i in range(60)]


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    with SlackStandIn(users=USERS, channels=["C0A", "C0B"], rate_limit=None) as running:
        running.add_workspace("T0POLICE", users=USERS[:10], token="xoxb-police")
        yield running


@pytest.fixture
def client(standin: SlackStandIn) -> WebClient:
    return WebClient(base_url=standin.url, token="xoxb-test")


def retry_after(excinfo: pytest.ExceptionInfo[SlackApiError]) -> int:
    response = excinfo.value.response
    assert response.status_code == 429 and response["error"] == "ratelimited"
    value = response.headers["Retry-After"]
    return int(value[0] if isinstance(value, list) else value)


def test_no_tier_limits_unless_asked(standin: SlackStandIn, client: WebClient) -> None:
    for user in USERS:
        client.conversations_open(users=user.id)
        client.users_lookupByEmail(email=user.email)

    assert standin.rate_limits() == {
        "methods": {},
        "workspace": None,
        "workspace_methods": ["chat.postMessage", "chat.update"],
        "ratelimited": {},
    }


def test_tier_3_allows_a_burst_then_answers_429_with_retry_after_per_workspace(
    standin: SlackStandIn, client: WebClient
) -> None:
    standin.set_rate_limits(RateLimits.slack_tiers())

    for user in USERS[:5]:
        client.users_lookupByEmail(email=user.email)
    with pytest.raises(SlackApiError) as limited:
        client.users_lookupByEmail(email=USERS[5].email)

    # 50 a minute: the next token is back 1.2 s after the last was taken.
    assert retry_after(limited) == 2
    # Each method has its own allowance, and each workspace its own.
    client.conversations_open(users=USERS[0].id)
    police = WebClient(base_url=standin.url, token="xoxb-police")
    assert police.users_lookupByEmail(email=USERS[0].email)["ok"]
    assert standin.rate_limits()["ratelimited"] == {"users.lookupByEmail": 1}
    assert standin.calls("users.lookupByEmail")[5].status == 429


def test_the_published_tiers(standin: SlackStandIn) -> None:
    assert {name: limit.per_minute for name, limit in SLACK_TIERS.items()} == {
        "chat.delete": 50,
        "chat.update": 50,
        "conversations.history": 50,
        "conversations.open": 50,
        "users.lookupByEmail": 50,
        "chat.postEphemeral": 100,
        "users.info": 100,
        "views.open": 100,
        "views.publish": 100,
        "views.push": 100,
        "views.update": 100,
    }


def test_a_workspace_message_rate_is_shared_by_post_and_update_across_channels(
    standin: SlackStandIn, client: WebClient
) -> None:
    # Ten at once, then one every six seconds: nothing comes back while the test runs.
    standin.set_rate_limits(RateLimits.from_dict({"workspace": {"per_minute": 10, "burst": 10}}))

    posted = [client.chat_postMessage(channel=f"U0P{i:03d}", text="m") for i in range(6)]
    for message in posted[:4]:
        client.chat_update(channel=message["channel"], ts=message["ts"], text="edited")
    with pytest.raises(SlackApiError) as limited:
        client.chat_postMessage(channel="C0A", text="the eleventh")

    assert retry_after(limited) in (5, 6)
    assert standin.messages("C0A") == []  # a refused call changes nothing
    police = WebClient(base_url=standin.url, token="xoxb-police")
    assert police.chat_postMessage(channel="U0P000", text="another workspace")["ok"]
    assert client.users_info(user="U0P000")["ok"]  # other methods are not counted


def test_slack_sdks_retry_handler_waits_out_retry_after_and_gets_through(
    standin: SlackStandIn,
) -> None:
    standin.set_rate_limits(
        RateLimits.from_dict({"methods": {"views.publish": {"per_minute": 60, "burst": 1}}})
    )
    patient = WebClient(
        base_url=standin.url,
        token="xoxb-test",
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
    )
    view = {"type": "home", "blocks": []}
    patient.views_publish(user_id="U0P000", view=view)

    started = time.monotonic()
    assert patient.views_publish(user_id="U0P001", view=view)["ok"]

    assert time.monotonic() - started >= 1.0
    assert [c.status for c in standin.calls("views.publish")] == [200, 429, 200]
    assert standin.rate_limits()["ratelimited"] == {"views.publish": 1}


def test_limits_through_the_control_api(standin: SlackStandIn, client: WebClient) -> None:
    status, answer = control(
        standin,
        "POST",
        "rate_limits",
        {
            "tiers": True,
            "methods": {"views.open": None, "conversations.open": {"per_minute": 6, "burst": 1}},
            "workspace": {"per_second": 10, "burst": 20},
        },
    )
    assert status == 200
    assert "views.open" not in answer["methods"]
    assert answer["methods"]["conversations.open"] == {"per_minute": 6.0, "burst": 1}
    assert answer["workspace"] == {"per_minute": 600.0, "burst": 20}
    client.conversations_open(users="U0P000")
    with pytest.raises(SlackApiError) as limited:
        client.conversations_open(users="U0P001")
    assert retry_after(limited) == 10
    counts = control(standin, "GET", "rate_limits")[1]["ratelimited"]
    assert counts == {"conversations.open": 1}

    assert control(standin, "POST", "rate_limits", {"enabled": False})[0] == 200
    for user in USERS[:10]:
        client.conversations_open(users=user.id)
    assert control(standin, "POST", "rate_limits", {"tierz": True})[0] == 400
    assert control(standin, "POST", "rate_limits", {"workspace": {"burst": 3}})[0] == 400
    assert control(standin, "POST", "rate_limits", {"methods": {"x": 5}})[0] == 400


def test_injected_429_storms_count_too_and_reset_clears_the_counts(
    standin: SlackStandIn, client: WebClient
) -> None:
    standin.rate_limit_storm("chat.postMessage", count=2, retry_after=0)
    for _ in range(2):
        with pytest.raises(SlackApiError):
            client.chat_postMessage(channel="C0A", text="x")

    assert standin.rate_limits()["ratelimited"] == {"chat.postMessage": 2}
    standin.reset()
    assert standin.rate_limits()["ratelimited"] == {}


def test_limits_refuse_nonsense() -> None:
    with pytest.raises(ControlError):
        Limit(per_minute=0, burst=1)
    with pytest.raises(ControlError):
        Limit.from_dict({"per_minute": "fast"})
    assert Limit.from_dict({"per_minute": 50}) == Limit(per_minute=50, burst=5)
    assert Limit.from_dict({"per_second": 10}) == Limit(per_minute=600, burst=10)


def test_a_refused_call_takes_no_token_from_any_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(
        RateLimits(
            methods={"chat.update": Limit(per_minute=60, burst=2)},
            workspace=Limit(per_minute=60, burst=1),
        ),
        monotonic=lambda: now[0],
    )
    limiter.check("T1", "chat.update")
    with pytest.raises(Exception, match="1"):
        limiter.check("T1", "chat.update")  # the workspace bucket is empty
    now[0] = 1.0
    # The method bucket still holds its second token: the refusal above took none.
    limiter.check("T1", "chat.update")
    now[0] = 1.5
    with pytest.raises(Exception, match="1"):
        limiter.check("T1", "chat.update")
