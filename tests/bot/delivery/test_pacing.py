"""Pacing Slack calls through buckets shared in the database (bot/delivery/pacing.py).

Two pacers on one database stand for two dispatchers. Time is simulated: each pacer's sleep
moves the shared clock on, so the instants are exact. Each test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from time import monotonic

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import Engine, event, select

from bot.channels.slack import SlackTransientError, make_retry_handlers
from bot.delivery.pacing import (
    MESSAGES,
    RATE_LIMITED_FOR,
    Pacer,
    PausedTooLong,
    Tier,
    bucket_name,
    waits_until,
)
from bot.models import SlackRateBucket
from bot.slack_standin import SlackStandIn
from bot.workspaces.clients import WorkspaceClients

TOKEN = "xoxb-pacing"
RATE = Tier(per_second=10.0, burst=10.0)
START = 1_800_000_000.0


class SimulatedTime:
    """A clock that only a sleep moves on."""

    def __init__(self) -> None:
        self.now = START
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def pacer(engine: Engine, time: SimulatedTime) -> Pacer:
    return Pacer(engine, {MESSAGES: RATE}, now=lambda: time.now, sleep=time.sleep)


def test_two_dispatchers_never_exceed_the_bucket_together(engine: Engine) -> None:
    time = SimulatedTime()
    first, second = pacer(engine, time), pacer(engine, time)
    granted: list[float] = []
    for call in range(60):
        (first if call % 2 else second).wait(TOKEN, "chat.postMessage")
        granted.append(time.now)
    # The burst at once, then one every tenth of a second: no window holds more than the
    # burst plus what the rate earns in it.
    assert granted[:10] == [START] * 10
    assert granted[10:] == pytest.approx([START + 0.1 * n for n in range(1, 51)])
    for i, at in enumerate(granted):
        in_window = [t for t in granted[i:] if t < at + 1.0]
        assert len(in_window) <= RATE.burst + RATE.per_second * 1.0


def test_a_429_empties_the_bucket_until_retry_after_for_every_dispatcher(engine: Engine) -> None:
    time = SimulatedTime()
    first, second = pacer(engine, time), pacer(engine, time)
    first.wait(TOKEN, "chat.postMessage")
    first.hold(TOKEN, "chat.update", 30)  # chat.update shares the message bucket
    time.slept.clear()
    waited = second.wait(TOKEN, "chat.postMessage")
    # Closed for 30 s, then refilled from empty: the first token is a tenth of a second later.
    assert waited == pytest.approx(30.1)
    assert time.now == pytest.approx(START + 30.1)


def test_methods_no_tier_paces_do_not_wait_and_workspaces_have_their_own_buckets(
    engine: Engine,
) -> None:
    time = SimulatedTime()
    paced = pacer(engine, time)
    assert paced.wait(TOKEN, "auth.test") == 0.0
    for _ in range(10):
        paced.wait(TOKEN, "chat.postMessage")
    assert paced.wait("xoxb-partner", "chat.postMessage") == 0.0  # another workspace
    assert paced.wait(TOKEN, "chat.postMessage") == pytest.approx(0.1)
    with engine.connect() as conn:
        buckets = set(conn.scalars(select(SlackRateBucket.bucket)))
    assert {bucket_name(TOKEN, MESSAGES), bucket_name("xoxb-partner", MESSAGES)} <= buckets
    assert not any(TOKEN in bucket or "partner" in bucket for bucket in buckets)  # digests only


def test_a_429_from_slack_is_shared_through_the_bucket_before_the_retry(engine: Engine) -> None:
    time = SimulatedTime()
    paced = pacer(engine, time)
    with SlackStandIn(allow_unknown_users=True, rate_limit=None) as slack:
        client = WebClient(base_url=slack.url, token=TOKEN, retry_handlers=make_retry_handlers())
        paced.watch(client)
        slack.rate_limit_storm("chat.postMessage", count=1, retry_after=1)
        response = client.chat_postMessage(channel="U0PACING1", text="hello")
        assert response["ok"] is True  # slack_sdk waited Retry-After and tried again
        assert slack.rate_limits()["ratelimited"] == {"chat.postMessage": 1}
    mine = SlackRateBucket.bucket == bucket_name(TOKEN, MESSAGES)
    with engine.connect() as conn:
        row = conn.execute(select(SlackRateBucket).where(mine)).one()
    assert (row.tokens, row.blocked_until) == (0.0, START + 1)


def test_a_429_in_a_partner_workspace_empties_that_workspace_s_bucket_only(
    engine: Engine,
) -> None:
    """A partner's client copies the home client's retry handlers (bot/workspaces/clients.py):
    its 429 is held on its own token's bucket, the home workspace's keeps its tokens."""
    time = SimulatedTime()
    paced = pacer(engine, time)
    partner_token = "xoxb-partner-pacing"
    with SlackStandIn(allow_unknown_users=True, rate_limit=None) as slack:
        home = WebClient(base_url=slack.url, token=TOKEN, retry_handlers=make_retry_handlers())
        paced.watch(home)
        partner = WorkspaceClients(home, None)._client(partner_token)
        assert paced.wait(TOKEN, "chat.postMessage") == 0.0  # the home bucket exists, 9 left
        slack.rate_limit_storm("chat.postMessage", count=1, retry_after=1)
        response = partner.chat_postMessage(channel="U0PACING1", text="hello")
        assert response["ok"] is True
        assert slack.rate_limits()["ratelimited"] == {"chat.postMessage": 1}
    with engine.connect() as conn:
        rows = {
            row.bucket: (row.tokens, row.blocked_until)
            for row in conn.execute(select(SlackRateBucket))
        }
    assert rows[bucket_name(partner_token, MESSAGES)] == (0.0, START + 1)
    assert rows[bucket_name(TOKEN, MESSAGES)] == (RATE.burst - 1, None)


@contextmanager
def bucket_statements(engine: Engine) -> Iterator[list[str]]:
    """The statements on the buckets' table run inside the block."""
    seen: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        if "slack_rate_buckets" in statement:
            seen.append(statement.split()[0])

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_an_empty_bucket_is_waited_out_without_asking_the_database_for_a_token(
    engine: Engine,
) -> None:
    time = SimulatedTime()
    paced = pacer(engine, time)
    for _ in range(10):
        paced.wait(TOKEN, "chat.postMessage")
    with bucket_statements(engine) as seen:
        assert paced.wait(TOKEN, "chat.postMessage") == pytest.approx(0.1)
    assert seen == ["UPDATE"]  # the take once a token is due: no refused take, no look
    assert time.slept == pytest.approx([0.1])


def test_dispatchers_at_an_empty_bucket_queue_for_its_tokens_one_update_each(
    engine: Engine,
) -> None:
    """The one that finds the bucket empty reserves the next token in its UPDATE and sleeps
    until it is due; the other, waking when it thought a token was due, finds it reserved and
    takes the one after: no refused take, no look at the bucket, and one a tenth of a second."""
    time = SimulatedTime()
    first, second = pacer(engine, time), pacer(engine, time)
    for _ in range(10):
        first.wait(TOKEN, "chat.postMessage")
    with bucket_statements(engine) as seen:
        assert second.wait(TOKEN, "chat.postMessage") == pytest.approx(0.1)
        assert first.wait(TOKEN, "chat.postMessage") == pytest.approx(0.1)
        assert second.wait(TOKEN, "chat.postMessage") == pytest.approx(0.1)
    assert seen == ["UPDATE", "UPDATE", "UPDATE"]
    assert time.now == pytest.approx(START + 0.3)


def test_a_token_is_reserved_at_most_a_second_ahead(engine: Engine) -> None:
    time = SimulatedTime()
    paced = pacer(engine, time)
    bucket = bucket_name(TOKEN, MESSAGES)
    takes = [paced.take(bucket, RATE) for _ in range(21)]
    assert takes[:10] == [(True, 0.0)] * 10  # the burst
    # Then each the next token due, a tenth of a second after the one before, up to a second.
    assert [taken for taken, _ in takes[10:20]] == [True] * 10
    assert [wait for _, wait in takes[10:20]] == pytest.approx([0.1 * n for n in range(1, 11)])
    # Nothing taken: the bucket owes 10 tokens; it next has one 1.1 s on.
    assert takes[20][0] is False and takes[20][1] == pytest.approx(1.1)
    with engine.connect() as conn:
        owed = conn.scalar(select(SlackRateBucket.tokens).where(SlackRateBucket.bucket == bucket))
    assert owed == pytest.approx(-10.0)
    assert time.slept == []  # `take` never sleeps; `wait` sleeps what it answers


def test_a_job_client_paces_its_workspace_and_makes_a_rate_limited_call_again_once(
    engine: Engine,
) -> None:
    """The clicks' jobs' client (`Pacer.job_client`): a partner's messages take that
    workspace's tokens, and a 429 closes its bucket until Retry-After, then the call waits its
    turn and is made again, once."""
    time = SimulatedTime()
    paced = pacer(engine, time)
    partner_token = "xoxb-partner-pacing"
    with SlackStandIn(allow_unknown_users=True, rate_limit=None) as slack:
        home = WebClient(base_url=slack.url, token=TOKEN, retry_handlers=make_retry_handlers())
        partner = paced.job_client(WorkspaceClients(home, None)._client(partner_token))
        assert paced.job_client(home) is paced.job_client(home)  # one copy a workspace
        slack.rate_limit_storm("chat.postMessage", count=1, retry_after=3)
        for n in range(12):
            assert partner.chat_postMessage(channel="U0PACING1", text=f"{n}")["ok"] is True
        posted = [
            call.args["text"] for call in slack.calls("chat.postMessage") if call.status == 200
        ]
    assert posted == [f"{n}" for n in range(12)]  # the first made again once, nothing twice
    # Closed for 3 s by the 429, then refilled from empty: a token every tenth of a second.
    assert time.now == pytest.approx(START + 3.0 + 0.1 * 12)
    with engine.connect() as conn:
        buckets = set(conn.scalars(select(SlackRateBucket.bucket)))
    assert buckets == {bucket_name(partner_token, MESSAGES)}  # the home workspace's untouched


def test_a_job_client_does_not_wait_past_its_cap_for_a_workspace_paused_longer(
    engine: Engine,
) -> None:
    """A job's call that finds its workspace paused by a 429 for longer than RATE_LIMITED_FOR
    is not made and does not wait: waiting, it would outlive the job's two-minute lease and
    another runner would do the job again. A shorter pause is waited out as before."""
    time = SimulatedTime()
    paced = pacer(engine, time)
    with SlackStandIn(allow_unknown_users=True, rate_limit=None) as slack:
        home = WebClient(base_url=slack.url, token=TOKEN, retry_handlers=make_retry_handlers())
        job_client = paced.job_client(home)
        paced.hold(TOKEN, "chat.update", RATE_LIMITED_FOR + 240)  # another runner's 429
        with pytest.raises(PausedTooLong) as refused:
            job_client.chat_postMessage(channel="U0PACING1", text="not yet")
        assert isinstance(refused.value, SlackTransientError)
        assert time.slept == []  # not a second of the job's lease spent
        assert slack.calls("chat.postMessage") == []

        time.now += RATE_LIMITED_FOR + 240 - 30  # 30 s of the pause are left: waited out
        assert job_client.chat_postMessage(channel="U0PACING1", text="now")["ok"] is True
        assert sum(time.slept) == pytest.approx(30.1)
        assert [call.args["text"] for call in slack.calls("chat.postMessage")] == ["now"]


def test_a_job_calls_first_wait_counts_in_its_429s_budget_and_its_job_deadline_caps_both(
    engine: Engine,
) -> None:
    """RATE_LIMITED_FOR is the whole of a call's waiting: 59 s for a closed bucket leave no
    room for a second 59 s after its 429 (together they would near the job's lease). Within a
    job whose lease ends sooner (`waits_until`), a call waits no later than that."""
    time = SimulatedTime()
    paced = pacer(engine, time)
    with SlackStandIn(allow_unknown_users=True, rate_limit=None) as slack:
        home = WebClient(base_url=slack.url, token=TOKEN, retry_handlers=make_retry_handlers())
        job_client = paced.job_client(home)
        paced.hold(TOKEN, "chat.postMessage", 59)
        slack.rate_limit_storm("chat.postMessage", count=1, retry_after=59)
        with pytest.raises(SlackApiError) as limited:
            job_client.chat_postMessage(channel="U0PACING1", text="late")
        assert limited.value.response.status_code == 429
        assert sum(time.slept) == pytest.approx(59.1)  # the first wait only, not 59 more
        assert [call.status for call in slack.calls("chat.postMessage")] == [429]

        time.slept.clear()
        paced.hold(TOKEN, "chat.postMessage", 30)
        with waits_until(monotonic() + 5), pytest.raises(PausedTooLong):
            job_client.chat_postMessage(channel="U0PACING1", text="after the lease")
        assert time.slept == []


def test_a_job_calls_429_on_a_method_no_bucket_paces_is_not_made_again_at_once(
    engine: Engine,
) -> None:
    """With no bucket to wait in, a 429 is the caller's error at once, not a hundred calls."""
    paced = pacer(engine, SimulatedTime())
    with SlackStandIn(allow_unknown_users=True, rate_limit=None) as slack:
        home = WebClient(base_url=slack.url, token=TOKEN, retry_handlers=make_retry_handlers())
        slack.rate_limit_storm("auth.test", count=50, retry_after=30)
        with pytest.raises(SlackApiError):
            paced.job_client(home).auth_test()
        assert len(slack.calls("auth.test")) == 1
