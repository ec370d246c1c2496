"""Pacing Slack calls to Slack's rate limits, shared by every dispatcher through the database.

Slack limits each Web API method per workspace ("tiers", counted per minute, short bursts
tolerated) and posting messages per workspace; beyond them it answers HTTP 429 with
`Retry-After`. Rather than meeting 429s, each call first takes a token from the bucket of its
tier for its workspace's token: one row of `slack_rate_buckets`, refilled and taken in a single
UPDATE, so that two dispatchers (two processes, two hosts) share one allowance. A call that
finds the bucket empty reserves the next token in that same UPDATE (the bucket goes below zero)
and sleeps until it is due, rather than asking again: dispatchers sharing a bucket queue for
it instead of racing for each token. A 429 that comes anyway empties the bucket until its
`Retry-After` has passed, for every dispatcher.
The rates are docs/reference/configuration.md's (`HANDOVER_SLACK_RATE` for messages).

The work of the clicks and slash commands after their ack (bot/slackjobs/) posts through the
same buckets: its clients are `Pacer.job_client`s, whose every message takes its token first and
whose 429s close the bucket for everyone and are made again once it opens (docs/reference/
slack.md, "Pacing").

Times here are real unix seconds (Slack's limits run on real time, whatever a simulated clock
says); the clock and the sleep are injected for the tests.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from slack_sdk import WebClient
from slack_sdk.http_retry import (
    HttpRequest,
    HttpResponse,
    RateLimitErrorRetryHandler,
    RetryHandler,
    RetryState,
)
from slack_sdk.web import SlackResponse
from sqlalchemy import Connection, Engine, Select, Update, and_, case, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from bot.channels.slack import SlackTransientError, method_of
from bot.models import SlackRateBucket
from bot.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tier:
    """A bucket's rate: `per_second` on average, `burst` at once."""

    per_second: float
    burst: float


_WHOLE = 1.0 - 1e-5  # a token, give or take the rounding of unix seconds (~1e-7 s)
# How far ahead a call may reserve its token: the longest a paced send sleeps between its
# claim's check (in the transaction that reserves the token) and the send. Beyond it (a bucket
# closed by a 429, or more callers queued than the rate serves in a second) nothing is
# reserved and the caller sleeps until the bucket, as it then was, has a token.
RESERVE_AHEAD = 1.0
# A reserved token's sleep longer than this is followed by the guard again (a transaction):
# a close or an answer committed meanwhile then stops the send. A shorter one (two dispatchers
# at 10 messages a second queue ~0.1 s apart) exposes no more than a Slack call's own duration.
CHECK_AGAIN_AFTER = 0.25
MESSAGES = "messages"  # chat.postMessage and chat.update: HANDOVER_SLACK_RATE a second
# Slack's published tiers (per minute, a tenth of a minute's allowance at once).
TIER_3 = Tier(per_second=50 / 60, burst=5)
TIER_4 = Tier(per_second=100 / 60, burst=10)
TIER_OF_METHOD: Mapping[str, str] = {
    "chat.postMessage": MESSAGES,
    "chat.update": MESSAGES,
    "conversations.open": "tier3",
    "conversations.history": "tier3",
    "chat.delete": "tier3",
    "users.lookupByEmail": "tier3",
    "chat.postEphemeral": "tier4",
    "views.publish": "tier4",
}
# What a job's client paces before each call: the messages HANDOVER_SLACK_RATE counts. Not
# chat.postEphemeral: Slack counts it in tier 4 (100+ a minute, generous bursts), apart from
# posted messages, and a job waiting for a tier 4 token holds its runner thread: paced, a burst
# of repeated clicks' private notes (each "already answered") held up the jobs that record the
# first clicks' responses for minutes. Its 429s are shared and waited out like the messages'.
# Not views.publish: a job asks HomeRefreshes (bot/delivery/home.py) for its Home redraws, which
# takes their tokens itself.
JOB_PACED_METHODS = frozenset({"chat.postMessage", "chat.update"})
# The longest a job's call waits for its workspace to open, its first wait and its 429s
# together, before its error is raised: well inside a slack job's lease (bot/slackjobs/queue.py,
# two minutes), so no other runner claims the job meanwhile and does it a second time.
RATE_LIMITED_FOR = 60.0
# When the job being run must stop waiting (a time.monotonic() instant): its lease's end less a
# margin, set by the slack job runner around each job (`waits_until`), as a job makes several
# calls and a runner holds several jobs' leases at once.
_JOB_DEADLINE: ContextVar[float | None] = ContextVar("handover_job_deadline", default=None)
# What the call being made has waited for its token before its first try, for its 429s' budget.
_FIRST_WAIT: ContextVar[float] = ContextVar("handover_first_wait", default=0.0)


@contextmanager
def waits_until(deadline: float) -> Iterator[None]:
    """Within, a job's calls wait for tokens no later than `deadline` (time.monotonic())."""
    token = _JOB_DEADLINE.set(deadline)
    try:
        yield
    finally:
        _JOB_DEADLINE.reset(token)


def _may_still_wait(waited: float) -> float:
    """The seconds a job's call may still wait: what RATE_LIMITED_FOR leaves after `waited`,
    and no later than its job's deadline."""
    allowed = RATE_LIMITED_FOR - waited
    deadline = _JOB_DEADLINE.get()
    if deadline is not None:
        allowed = min(allowed, deadline - time.monotonic())
    return max(allowed, 0.0)


def tiers_for(settings: Settings) -> dict[str, Tier]:
    """The buckets and their rates: messages at HANDOVER_SLACK_RATE, Slack's tiers 3 and 4.

    Each bucket holds one token less than Slack's: Slack's bucket starts at our first call,
    a moment after ours, so a full burst then a token at once would find Slack's a fraction
    short (a 429); one token in hand absorbs that lag at no cost to the steady rate.
    """
    rate = settings.slack_rate
    return {
        MESSAGES: _under(Tier(per_second=rate, burst=max(1.0, rate))),
        "tier3": _under(TIER_3),
        "tier4": _under(TIER_4),
    }


def _under(tier: Tier) -> Tier:
    return Tier(per_second=tier.per_second, burst=max(1.0, tier.burst - 1.0))


def bucket_name(token: str | None, tier: str) -> str:
    """The row of a workspace's tier: a digest of its token (never the token), and the tier."""
    digest = hashlib.sha256((token or "").encode()).hexdigest()[:32]
    return f"{digest}:{tier}"


@dataclass(frozen=True)
class _Seen:
    """A bucket as this pacer last saw it: its tokens at `at`, and until when it is closed."""

    tokens: float
    at: float
    blocked_until: float | None = None


class GuardRefused(Exception):
    """A `Pacer.wait` guard answered False: no token was taken."""


class Pacer:
    """Takes tokens from the shared buckets, waiting when they are empty.

    What a take answers (the tokens left) is remembered, so a call that finds the bucket empty
    as last seen waits out the refill here and then takes its token in one statement, rather
    than asking the database for a token it cannot yet have. The bucket as last seen never
    holds fewer tokens than the real one (others only take more), so that wait is never too
    long. When others took the token meanwhile, the take reserves the next one due instead
    (at most RESERVE_AHEAD ahead): the bucket holds what is owed as negative tokens, the
    caller sleeps until its token's instant and then calls, and the next caller's reservation
    falls after it. So each call costs one UPDATE however many dispatchers share the bucket,
    and a call never goes out before its token's instant: a token is taken for one call, and
    spent at its instant, not held for later (one spent late, after the bucket refilled, could
    make a burst; the token each bucket keeps in hand, `tiers_for`, is for Slack's lag).
    """

    def __init__(
        self,
        engine: Engine,
        tiers: Mapping[str, Tier],
        *,
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.engine = engine
        self.tiers = dict(tiers)
        self._now = now
        self._sleep = sleep
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()
        self._job_clients: dict[tuple[str, str | None], WebClient] = {}

    def paces(self, method: str) -> bool:
        """Whether a rate tier paces `method`."""
        return TIER_OF_METHOD.get(method) in self.tiers

    def wait(
        self,
        token: str | None,
        method: str,
        *,
        guard: Callable[[Connection], bool] | None = None,
        at_most: float | None = None,
    ) -> float:
        """Take a token for `method` in `token`'s workspace, waiting as long as needed (or, with
        `at_most`, raising PausedTooLong rather than wait past it for a closed bucket); returns
        the seconds waited (0 for a method no tier paces).

        A `guard` runs first in each transaction that tries to take the token (a delivery's
        check of its claim, bot/delivery/send.py): the check and the take cost one transaction,
        and the check is the last thing before the call. A reserved token's sleep (at most
        RESERVE_AHEAD) longer than CHECK_AGAIN_AFTER is followed by the check again, in a
        transaction of its own. When it
        answers False, nothing is taken (or the reserved token is left unused) and
        GuardRefused is raised.
        """
        tier_name = TIER_OF_METHOD.get(method)
        if tier_name is None or tier_name not in self.tiers:
            return 0.0
        tier = self.tiers[tier_name]
        bucket = bucket_name(token, tier_name)
        waited = 0.0
        while True:
            pause = self._until_seen_refills(bucket, tier)
            if pause <= 0:
                taken, pause = self.take(bucket, tier, guard=guard)
                if taken and pause <= 0:
                    return waited
                if taken:
                    self._sleep(pause)  # until the reserved token's instant
                    if pause > CHECK_AGAIN_AFTER:
                        self._check_again(guard, bucket)
                    return waited + pause
            if at_most is not None and waited + pause > at_most:
                logger.warning("%s not made: its workspace is paused for %.0f s", method, pause)
                raise PausedTooLong(
                    f"{method} paused by a 429 for {waited + pause:.0f} s",
                    method=method,
                    error="ratelimited",
                    ambiguous=False,  # not sent
                    retry_after=waited + pause,
                )
            self._sleep(pause)
            waited += pause

    def _check_again(self, guard: Callable[[Connection], bool] | None, bucket: str) -> None:
        """After sleeping for a reserved token, the guard once more, so that nothing committed
        during the sleep (a close, an answer) is sent past: the check stays the last thing
        before the call. (Its token is then spent on nothing.)"""
        if guard is None:
            return
        with self.engine.begin() as conn:
            if not guard(conn):
                raise GuardRefused(bucket)

    def _until_seen_refills(self, bucket: str, tier: Tier) -> float:
        """Seconds until the bucket, as last seen, has a token (0: it has, or was not seen)."""
        now = self._now()
        with self._lock:
            seen = self._seen.get(bucket)
        if seen is None:
            return 0.0
        if seen.blocked_until is not None and now < seen.blocked_until:
            return seen.blocked_until - now
        tokens = min(tier.burst, seen.tokens + max(0.0, now - seen.at) * tier.per_second)
        return 0.0 if tokens >= _WHOLE else (1.0 - tokens) / tier.per_second

    def take(
        self, bucket: str, tier: Tier, *, guard: Callable[[Connection], bool] | None = None
    ) -> tuple[bool, float]:
        """A token: (True, seconds until its instant), 0.0 when there is one now, else a
        reservation of the next one due within RESERVE_AHEAD; or (False, seconds until the
        bucket as it is now has a token), nothing taken, when it is closed or owes more than
        that. One UPDATE, atomic, after the `guard` (see `wait`) in the same transaction."""
        now = self._now()
        with self.engine.begin() as conn:
            if guard is not None and not guard(conn):
                raise GuardRefused(bucket)
            taken = conn.execute(_taking(bucket, tier, now)).first()
            if taken is not None:
                self._saw(bucket, _Seen(taken.tokens, taken.updated_at))
                owed = -taken.tokens if taken.tokens < _WHOLE - 1.0 else 0.0
                return True, max(0.0, taken.updated_at - now) + owed / tier.per_second
            row = conn.execute(_bucket_as_it_is(bucket)).first()
        if row is None:
            self._create(bucket, tier, now)
            return self.take(bucket, tier, guard=guard)
        self._saw(bucket, _Seen(row.tokens, row.updated_at, row.blocked_until))
        tokens = min(tier.burst, row.tokens + max(0.0, now - row.updated_at) * tier.per_second)
        until_token = (1.0 - tokens) / tier.per_second if tokens < _WHOLE else 0.0
        until_open = (row.blocked_until - now) if row.blocked_until else 0.0
        return False, max(until_token, until_open, 1e-6)

    def warm_up(self) -> None:
        """Run `take`'s statements for a bucket that does not exist, rolled back: an UPDATE
        of no row and a read. SQLAlchemy compiles a statement at its first use in a process,
        and the first message a new dispatcher sends would otherwise pay for it at its instant.
        On SQLite the UPDATE takes the write lock for as long as it compiles and runs (a few
        milliseconds, once a process); on PostgreSQL it locks no row."""
        if not self.tiers:
            return
        tier = next(iter(self.tiers.values()))
        with self.engine.connect() as conn, conn.begin() as transaction:
            conn.execute(_taking(WARM_UP_BUCKET, tier, self._now())).first()
            conn.execute(_bucket_as_it_is(WARM_UP_BUCKET)).first()
            transaction.rollback()

    def _saw(self, bucket: str, seen: _Seen) -> None:
        with self._lock:
            self._seen[bucket] = seen

    def hold(self, token: str | None, method: str, retry_after: float) -> None:
        """Slack answered 429: empty the bucket of `method` until `retry_after` seconds from
        now, for every dispatcher."""
        tier = TIER_OF_METHOD.get(method)
        if tier is None or tier not in self.tiers:
            return
        bucket = bucket_name(token, tier)
        now = self._now()
        until = now + max(retry_after, 1.0)
        self._saw(bucket, _Seen(0.0, until, until))
        table = SlackRateBucket.__table__
        with self.engine.begin() as conn:
            held = conn.execute(
                update(table)
                .where(
                    table.c.bucket == bucket,
                    or_(table.c.blocked_until.is_(None), table.c.blocked_until < until),
                )
                .values(tokens=0.0, updated_at=until, blocked_until=until)
            ).rowcount
            exists = (
                held
                or conn.execute(
                    select(table.c.bucket).where(and_(table.c.bucket == bucket))
                ).first()
            )
        if not exists:
            self._create(bucket, self.tiers[tier], now, tokens=0.0, blocked_until=until)
        logger.warning("Slack rate-limited %s: its bucket waits %.0f s", method, retry_after)

    def _create(
        self,
        bucket: str,
        tier: Tier,
        now: float,
        *,
        tokens: float | None = None,
        blocked_until: float | None = None,
    ) -> None:
        values = {
            "bucket": bucket,
            "tokens": tier.burst if tokens is None else tokens,
            "updated_at": blocked_until or now,
            "blocked_until": blocked_until,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(SlackRateBucket.__table__).values(**values))
        except IntegrityError:
            pass  # another dispatcher made it first: use theirs

    def delivery_client(self, client: WebClient) -> WebClient:
        """A copy of `client` for deliveries: a 429 empties the bucket for everyone and comes
        back as an error at once, never waited out inside the send (the row goes back to the
        outbox until its Retry-After, bot/delivery/failures.py). Its other retries (a refused
        connection, a 5xx of a method that cannot have posted) are kept: two each, waiting
        about 0.5 s and 1 s (plus up to 1 s of jitter), far inside a claim's lease."""
        return WebClient(
            token=client.token,
            base_url=client.base_url,
            timeout=client.timeout,
            ssl=client.ssl,
            proxy=client.proxy,
            headers=dict(client.headers),
            retry_handlers=[PacingRateLimitHandler(self, client), *_all_but_429s(client)],
        )

    def job_client(self, client: WebClient) -> WebClient:
        """A copy of `client` for the work after a click's or a command's ack: each message it
        posts (JOB_PACED_METHODS) first takes its token from the shared bucket, as a
        delivery's does; a 429 empties the bucket for everyone until its Retry-After and the
        call waits its turn in the bucket and is made again (for up to RATE_LIMITED_FOR), so
        nothing is lost and nothing posted twice. One copy a workspace's token, kept."""
        key = (client.base_url, client.token)
        with self._lock:
            paced = self._job_clients.get(key)
        if paced is not None:
            return paced
        paced = PacedWebClient(
            self,
            token=client.token,
            base_url=client.base_url,
            timeout=client.timeout,
            ssl=client.ssl,
            proxy=client.proxy,
            headers=dict(client.headers),
            retry_handlers=[PacedRateLimitRetryHandler(self, client), *_all_but_429s(client)],
        )
        with self._lock:
            return self._job_clients.setdefault(key, paced)

    def watch(self, client: WebClient) -> None:
        """Make `client`'s 429 retries empty the bucket for everyone before they wait."""
        handlers = _all_but_429s(client)
        limit = next(
            (h for h in client.retry_handlers if isinstance(h, RateLimitErrorRetryHandler)), None
        )
        retries = limit.max_retry_count if limit is not None else 1
        client.retry_handlers = [PacingRateLimitRetryHandler(self, client, retries), *handlers]


# No bucket is named so (`bucket_name`'s are `<digest>:<tier>`): `Pacer.warm_up` finds nothing.
WARM_UP_BUCKET = "warm-up"


def _taking(bucket: str, tier: Tier, now: float) -> Update:
    """Take a token from `bucket` if it has one (or one due within RESERVE_AHEAD): one UPDATE,
    returning the bucket's tokens and time after it, or no row."""
    table = SlackRateBucket.__table__
    elapsed = case((table.c.updated_at < now, now - table.c.updated_at), else_=0.0)
    filled = table.c.tokens + elapsed * tier.per_second
    refilled = case((filled > tier.burst, tier.burst), else_=filled)
    return (
        update(table)
        .where(
            table.c.bucket == bucket,
            or_(table.c.blocked_until.is_(None), table.c.blocked_until <= now),
            refilled >= _WHOLE - RESERVE_AHEAD * tier.per_second,
        )
        .values(
            tokens=refilled - 1.0,
            updated_at=case((table.c.updated_at < now, now), else_=table.c.updated_at),
            blocked_until=None,
        )
        .returning(table.c.tokens, table.c.updated_at)
    )


def _bucket_as_it_is(bucket: str) -> Select:
    table = SlackRateBucket.__table__
    return select(table.c.tokens, table.c.updated_at, table.c.blocked_until).where(
        table.c.bucket == bucket
    )


def _all_but_429s(client: WebClient) -> list[RetryHandler]:
    """`client`'s retry handlers but slack_sdk's 429 retry."""
    return [h for h in client.retry_handlers if not isinstance(h, RateLimitErrorRetryHandler)]


class PacingRateLimitHandler(RetryHandler):
    """A 429 empties the shared bucket for its `Retry-After`, and is not retried: the caller
    gets the error at once (a delivery's row goes back to the outbox until then)."""

    def __init__(self, pacer: Pacer, client: WebClient) -> None:
        super().__init__(max_retry_count=1)
        self.pacer = pacer
        self.client = client

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is not None and response.status_code == 429:
            _share_429(self.pacer, self.client, request, response)
        return False


def _share_429(
    pacer: Pacer, client: WebClient, request: HttpRequest, response: HttpResponse
) -> None:
    """Empty the bucket of the method that met a 429 until its Retry-After, for everyone."""
    method = method_of(request)
    retry_after = _retry_after_seconds(response.headers)
    try:
        # The token of the request that met the 429: a partner workspace's client copies
        # the home one's handlers (bot/workspaces/clients.py), so the handler's own client
        # may be another workspace's.
        pacer.hold(_token_of(request) or client.token, method, retry_after)
    except Exception:
        logger.exception("could not share a 429 of %s with the other dispatchers", method)


class PacingRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 retry (it waits `Retry-After`), which first empties the shared bucket:
    for calls outside deliveries (Bolt's handlers answering a click), which may wait."""

    def __init__(self, pacer: Pacer, client: WebClient, max_retry_count: int) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.pacer = pacer
        self.client = client

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        if response is not None:
            _share_429(self.pacer, self.client, request, response)
        super().prepare_for_next_attempt(
            state=state, request=request, response=response, error=error
        )


class PacedWebClient(WebClient):
    """A WebClient whose messages wait for their token in the shared bucket (`Pacer.job_client`)."""

    def __init__(self, pacer: Pacer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pacer = pacer

    def api_call(self, api_method: str, **kwargs: Any) -> SlackResponse:  # type: ignore[override]
        waited = 0.0
        if api_method in JOB_PACED_METHODS:
            # A bucket closed for longer (a long Retry-After) must not hold the job past its
            # lease, when another runner would do it again: the call is not made.
            waited = self.pacer.wait(self.token, api_method, at_most=_may_still_wait(0.0))
        first_wait = _FIRST_WAIT.set(waited)  # counted in its 429s' budget
        try:
            return super().api_call(api_method, **kwargs)
        finally:
            _FIRST_WAIT.reset(first_wait)


class PausedTooLong(SlackTransientError):
    """A job's call found its workspace paused by a 429 for longer than RATE_LIMITED_FOR: it is
    not made (its job goes on as after any Slack error it cannot wait out)."""


_WAITED = "handover_waited"  # a call's RetryState: the seconds its 429s have been waited out


class PacedRateLimitRetryHandler(PacingRateLimitHandler):
    """A 429 of a job's call empties the shared bucket until its Retry-After, for everyone;
    the call then takes its token like any other (waiting for the bucket to open and for the
    calls queued before it) and is made again, while its waits add up to at most
    RATE_LIMITED_FOR. A 429 means Slack did nothing: the call made again is not a second."""

    def can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        _share_429(self.pacer, self.client, request, response)
        if not self.pacer.paces(method_of(request)):
            return False  # no bucket to wait in: made again at once, it would only meet 429s
        waited = (state.custom_values or {}).get(_WAITED, _FIRST_WAIT.get())
        return _retry_after_seconds(response.headers) <= _may_still_wait(waited)

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        state.next_attempt_requested = True
        token = _token_of(request) or self.client.token
        values = state.custom_values or {}
        before = values.get(_WAITED, _FIRST_WAIT.get())
        waited = self.pacer.wait(token, method_of(request), at_most=_may_still_wait(before))
        state.custom_values = {**values, _WAITED: before + waited}
        state.increment_current_attempt()


def _token_of(request: HttpRequest) -> str | None:
    """The bearer token a Web API request was sent with (None without one)."""
    for key, values in request.headers.items():
        if key.lower() == "authorization":
            value = values[0] if isinstance(values, list) else values
            if isinstance(value, str) and value.startswith("Bearer "):
                return value.removeprefix("Bearer ")
    return None


def _retry_after_seconds(headers: Mapping[str, object]) -> float:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) else value
            try:
                return float(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                break
    return 1.0
