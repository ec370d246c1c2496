"""Slack's error codes, classified once (bot/channels/slack.py, docs/reference/slack.md): every
code of the three calls that reach a person has a verdict, and each verdict family becomes its
typed error when the stand-in answers with it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from slack_sdk import WebClient

from bot.channels.base import (
    Contact,
    CredentialsRefused,
    Message,
    RecipientUnreachable,
    RequestRefused,
    TransientError,
)
from bot.channels.slack import SLACK_ERRORS, SlackChannel, Verdict, classify
from bot.delivery.metadata import prompt_tag
from bot.slack_standin import SlackStandIn, StandInUser

SPEC = (
    Path(__file__).resolve().parents[2]
    / "data"
    / "slack-web-api"
    / "slack_web_openapi_v2_three_methods.json"
)
METHODS = ("chat.postMessage", "conversations.open", "users.lookupByEmail")
TOKEN = "xoxb-errors-test"
DOCS = Path(__file__).resolve().parents[3] / "docs" / "reference" / "slack.md"


def spec_errors(method: str) -> list[str]:
    """The error codes Slack's Web API spec lists for `method`."""
    paths = json.loads(SPEC.read_text())["paths"]
    codes: list[str] = []
    for operation in paths[f"/{method}"].values():
        for response in operation["responses"].values():
            error = response.get("schema", {}).get("properties", {}).get("error", {})
            codes.extend(error.get("enum", []))
    return codes


@pytest.mark.parametrize("method", METHODS)
def test_every_error_slack_lists_for_reaching_a_person_has_a_verdict(method: str) -> None:
    codes = spec_errors(method)
    assert codes  # the spec lists them
    assert [code for code in codes if code not in SLACK_ERRORS] == []


def test_the_reference_documents_every_verdict() -> None:
    text = DOCS.read_text()
    assert [code for code in SLACK_ERRORS if f"`{code}`" not in text] == []


FAMILIES = {
    Verdict.TRANSIENT: ["ratelimited", "internal_error", "fatal_error", "request_timeout"],
    Verdict.UNREACHABLE: [
        "users_not_found",
        "user_not_found",
        "user_disabled",
        "account_inactive",
        "cannot_dm_bot",
        "messages_tab_disabled",
        "channel_not_found",
    ],
    Verdict.FATAL_CREDENTIALS: ["invalid_auth", "not_authed", "missing_scope", "no_permission"],
    Verdict.FATAL_REQUEST: ["msg_too_long", "invalid_blocks", "too_many_users", "no_text"],
}


@pytest.mark.parametrize(
    ("code", "verdict"), [(c, v) for v, codes in FAMILIES.items() for c in codes]
)
def test_a_code_has_its_familys_verdict(code: str, verdict: Verdict) -> None:
    assert classify(code) is verdict


def test_unknown_codes_are_fatal_requests_unless_slack_said_busy() -> None:
    assert classify("something_new") is Verdict.FATAL_REQUEST
    assert classify("something_new", 400) is Verdict.TRANSIENT
    assert classify("invalid_auth", 429) is Verdict.TRANSIENT
    assert classify("user_disabled", 503) is Verdict.TRANSIENT


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    users = [StandInUser(id="U0ANN", name="ann", email="ann@nhs.example")]
    with SlackStandIn(users=users, channels=["C0EDT"]) as server:
        yield server


@pytest.fixture
def slack(standin: SlackStandIn) -> SlackChannel:
    # No retry handlers: the first answer is the one classified.
    return SlackChannel(WebClient(base_url=standin.url, token=TOKEN, timeout=2))


TYPED = {
    Verdict.TRANSIENT: TransientError,
    Verdict.UNREACHABLE: RecipientUnreachable,
    Verdict.FATAL_CREDENTIALS: CredentialsRefused,
    Verdict.FATAL_REQUEST: RequestRefused,
}


def a_message() -> Message:
    return Message("Handover referral HO-1: please respond", [], prompt_tag("HO-1", 1))


@pytest.mark.parametrize(
    ("code", "verdict"),
    [(codes[0], v) for v, codes in FAMILIES.items()] + [("channel_not_found", Verdict.UNREACHABLE)],
)
def test_chat_post_message_answers_become_typed_errors(
    slack: SlackChannel, standin: SlackStandIn, code: str, verdict: Verdict
) -> None:
    standin.fail_with_error("chat.postMessage", code)
    with pytest.raises(TYPED[verdict]) as raised:
        slack.send("U0ANN", a_message())
    assert raised.value.error == code
    assert raised.value.method == "chat.postMessage"


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        ("user_not_found", Verdict.UNREACHABLE),
        ("user_disabled", Verdict.UNREACHABLE),
        ("request_timeout", Verdict.TRANSIENT),
        ("invalid_auth", Verdict.FATAL_CREDENTIALS),
        ("too_many_users", Verdict.FATAL_REQUEST),
    ],
)
def test_conversations_open_answers_become_typed_errors(
    slack: SlackChannel, standin: SlackStandIn, code: str, verdict: Verdict
) -> None:
    standin.fail_with_error("conversations.open", code)
    with pytest.raises(TYPED[verdict]) as raised:
        slack.find("U0ANN", prompt_tag("HO-1", 1), None)  # a DM's history is opened first
    assert (raised.value.error, raised.value.method) == (code, "conversations.open")


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        ("users_not_found", Verdict.UNREACHABLE),
        ("enterprise_is_restricted", Verdict.UNREACHABLE),
        ("fatal_error", Verdict.TRANSIENT),
        ("no_permission", Verdict.FATAL_CREDENTIALS),
        ("invalid_form_data", Verdict.FATAL_REQUEST),
    ],
)
def test_users_lookup_by_email_answers_become_typed_errors(
    slack: SlackChannel, standin: SlackStandIn, code: str, verdict: Verdict
) -> None:
    standin.fail_with_error("users.lookupByEmail", code)
    with pytest.raises(TYPED[verdict]) as raised:
        slack.look_up(Contact("hv-ann", None, "ann@nhs.example"))
    assert (raised.value.error, raised.value.method) == (code, "users.lookupByEmail")
