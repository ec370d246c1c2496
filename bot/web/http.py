"""The HTTP surface of `serve`: Slack's endpoint, the case-system API, the health check and,
with email reach, the response pages (`/respond/{token}`).

A slow or stalled database must not starve what needs no database: Slack's `url_verification`,
a bad signature's 401 and a malformed body's 400 are answered before any database work, and
requests that do need the database take one of a bounded number of slots (`DatabaseSlots`), one
set for Slack and one for the case-system API, so that some of the server's threads are always
free for the others and a flood on one surface cannot shut out the other.

A case-system request queues for its slot up to API_SLOT_WAIT_SECONDS (the database's own
statement timeout: by then a slot holder has finished or failed), and at most API_SLOT_QUEUE
requests queue at once, so waiting requests cannot take the threads /healthz and Slack need. A
Slack request waits only SLOT_WAIT_SECONDS: its 3 seconds are for the handler, and Slack retries
an event itself. See docs/reference/http.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from flask import Blueprint, Flask, Response, g, jsonify, request
from slack_bolt import App
from slack_bolt.adapter.flask import SlackRequestHandler
from slack_bolt.adapter.flask.handler import to_flask_response
from slack_bolt.request import BoltRequest
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import HTTPException

from bot.context import Services
from bot.db import SERVICE_TIMEOUTS
from bot.migrate import code_revision
from bot.response_links import ResponseLinks
from bot.services.replay import remember_request
from bot.settings import SettingsError
from bot.web.api import create_api_blueprint
from bot.web.app import slack_follow_up
from bot.web.health import HealthCheck
from bot.web.metrics import create_metrics_blueprint
from bot.web.respond import create_respond_blueprint
from bot.web.slack_guard import (
    APP_RATE_LIMITED,
    SSL_CHECK,
    URL_VERIFICATION,
    Accepted,
    Refused,
    check_slack_request,
)

logger = logging.getLogger(__name__)

SLACK_MAX_BODY = 1024 * 1024
DEFAULT_DATABASE_SLOTS = 16  # for each of Slack and the API
SLOT_WAIT_SECONDS = 0.05  # Slack: its 3 seconds are for the handler
# A referral refused is one the case system must send again: it queues as long as one statement
# may take (bot/db.py), then is answered 503 with Retry-After.
API_SLOT_WAIT_SECONDS = SERVICE_TIMEOUTS.statement
API_SLOT_QUEUE = 8  # API requests queued for a slot at once; more are answered 503 at once
API_RETRY_AFTER_SECONDS = 5
REPLAY_CHECK_SECONDS = 1.0
# Kinds of Slack request answered without the database.
_NO_DATABASE = (URL_VERIFICATION, SSL_CHECK, APP_RATE_LIMITED)


class DatabaseSlots:
    """At most `size` requests at a time may wait on the database; others are told 503.

    A request queues for a slot up to `wait` seconds; with `queue`, at most that many queue at
    once and any more are refused without waiting."""

    def __init__(
        self, size: int, wait: float = SLOT_WAIT_SECONDS, queue: int | None = None
    ) -> None:
        self._slots = threading.BoundedSemaphore(size)
        self._wait = wait
        self._queue = None if queue is None else threading.BoundedSemaphore(queue)

    def acquire(self) -> bool:
        if self._queue is None:
            return self._slots.acquire(timeout=self._wait)
        if self._slots.acquire(blocking=False):
            return True
        if not self._queue.acquire(blocking=False):
            return False
        try:
            return self._slots.acquire(timeout=self._wait)
        finally:
            self._queue.release()

    def release(self) -> None:
        self._slots.release()

    @contextmanager
    def held(self) -> Iterator[bool]:
        """Yields whether a slot was free within the wait; releases it afterwards."""
        got = self.acquire()
        try:
            yield got
        finally:
            if got:
                self.release()


class ReplayGuard:
    """Remembers each signed Slack request so that a replay is answered once, within
    REPLAY_CHECK_SECONDS whatever the database does.

    When the database cannot answer in time the request goes on to its handler (fail open):
    the handler meets the same database and tells the user privately that it cannot record
    anything, which is better than Slack's own timeout error; and a handler's side effects are
    idempotent (a second close or click is answered "already"), so a replay that slips through
    an outage repeats nothing. Answers go to the request's `response_url`, to the user Slack
    signed it for, never to whoever replays it.
    """

    def __init__(self, session_factory: sessionmaker[Session], workers: int) -> None:
        self._session_factory = session_factory
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="replay-guard")
        self._queue = threading.BoundedSemaphore(workers * 2)  # checks waiting or running

    def first_time(self, signature: str, timestamp: int) -> bool | None:
        """True the first time, False for a replay, None when the database did not answer."""
        if not self._queue.acquire(blocking=False):
            logger.warning("replay check skipped: the database is not keeping up")
            return None
        future = self._executor.submit(self._remember, signature, timestamp)
        try:
            return future.result(timeout=REPLAY_CHECK_SECONDS)
        except TimeoutError:
            logger.warning("replay check: no answer from the database within %.1f s",
                           REPLAY_CHECK_SECONDS)  # fmt: skip
        except Exception as exc:
            # The handler meets the same database and logs its traceback: one is enough.
            logger.warning("replay check: database unavailable (%s)", exc.__class__.__name__)
        return None

    def _remember(self, signature: str, timestamp: int) -> bool:
        try:
            with self._session_factory.begin() as session:
                return remember_request(session, signature, timestamp)
        finally:
            self._queue.release()


def bolt_request(verdict: Accepted, text: str, query: str, headers) -> BoltRequest:
    """Bolt's request for an accepted Slack request, with the body the guard has parsed.

    Bolt's Flask adapter would parse the body again (an interaction's URL-encoded JSON costs as
    much as everything else Bolt does for a click). BoltRequest takes a parsed body only in
    Socket Mode, so the request is made as one and then given its raw body and HTTP mode, as
    the adapter's would be: Bolt still verifies the signature over the raw body.
    """
    request = BoltRequest(body=verdict.body, query=query, headers=headers, mode="socket_mode")
    request.raw_body = text
    request.mode = "http"
    return request


def respond_pages(bolt_app: App, services: Services) -> Blueprint:
    """The email response pages, their links signed with a key derived from the signing secret."""
    settings = services.settings
    if not settings.slack_signing_secret or not settings.public_url:
        raise SettingsError("email needs SLACK_SIGNING_SECRET and HANDOVER_PUBLIC_URL")
    links = ResponseLinks(settings.slack_signing_secret, settings.public_url)
    follow_up = slack_follow_up(bolt_app.client, services)
    return create_respond_blueprint(services, links, after_response=follow_up)


def create_web_app(
    bolt_app: App, services: Services, *, database_slots: int = DEFAULT_DATABASE_SLOTS
) -> Flask:
    """The Flask (WSGI) application served by waitress."""
    web = Flask("handover")
    web.config["MAX_CONTENT_LENGTH"] = SLACK_MAX_BODY
    slack_handler = SlackRequestHandler(bolt_app)
    slack_slots = DatabaseSlots(database_slots)
    api_slots = DatabaseSlots(database_slots, API_SLOT_WAIT_SECONDS, queue=API_SLOT_QUEUE)
    health = HealthCheck(services.session_factory, code_revision())
    replays = ReplayGuard(services.session_factory, workers=max(2, database_slots // 4))
    signing_secret = services.settings.slack_signing_secret or ""

    def busy() -> tuple[Response, int]:
        logger.warning("all database slots busy: %s %s answered 503", request.method, request.path)
        return jsonify(error="busy: the database is slow; try again"), 503

    traffic = services.slack_traffic

    @web.post("/slack/events")
    def slack_events():
        if traffic is None:
            return answer_slack()
        with traffic.serving():  # the work after the acks waits for a pause (bot/web/work.py)
            return answer_slack()

    def answer_slack():
        body = request.get_data(cache=True)
        verdict = check_slack_request(
            body, request.headers, signing_secret=signing_secret, now=time.time()
        )
        if isinstance(verdict, Refused):
            logger.info("slack request refused %d: %s", verdict.status, verdict.reason)
            return jsonify(error=verdict.reason), verdict.status

        def to_bolt():
            text = body.decode("utf-8")  # the guard has checked that it is UTF-8
            query = request.query_string.decode("utf-8", "replace")
            answer = bolt_app.dispatch(bolt_request(verdict, text, query, request.headers))
            return to_flask_response(answer)

        if not signing_secret or verdict.kind in _NO_DATABASE or verdict.acked_first:
            # Clicks and commands ack before any database work (handlers/deferred.py): no
            # database slot, no replay check here; both happen after the ack.
            return to_bolt()
        with slack_slots.held() as free:
            if not free:
                return busy()
            replayed = verdict.replay_guarded and (
                replays.first_time(verdict.signature, verdict.timestamp) is False
            )
            if replayed:
                logger.warning("slack request replayed (%s): ignored", verdict.kind)
                return Response(status=200)
            return to_bolt()

    if services.settings.oauth_enabled:
        # Bolt's OAuth flow (docs/partner-workspaces.md); without SLACK_CLIENT_ID both are 404.
        @web.get("/slack/install")
        def slack_install():
            with slack_slots.held() as free:
                return slack_handler.handle(request) if free else busy()

        @web.get("/slack/oauth_redirect")
        def slack_oauth_redirect():
            with slack_slots.held() as free:
                return slack_handler.handle(request) if free else busy()

    @web.get("/healthz")
    def healthz():
        answer = health.check()
        return jsonify(answer.body), answer.status

    @web.before_request
    def take_a_database_slot():
        if request.path.startswith("/api/"):
            if not api_slots.acquire():
                answer, status = busy()
                answer.headers["Retry-After"] = str(API_RETRY_AFTER_SECONDS)
                return answer, status
            g.database_slot = True
        return None

    @web.teardown_request
    def give_back_the_database_slot(_error):
        if g.pop("database_slot", False):
            api_slots.release()

    web.register_blueprint(
        create_api_blueprint(
            services.settings,
            services.session_factory,
            services.clock,
            wake_dispatcher=services.wake_dispatcher,
        )
    )
    web.register_blueprint(
        create_metrics_blueprint(
            services.session_factory,
            services.clock.now,
            token=services.settings.metrics_token,
        )
    )
    if services.settings.email_enabled:
        web.register_blueprint(respond_pages(bolt_app, services))

    @web.errorhandler(404)
    def not_found(_error):
        return jsonify(error="not found"), 404

    @web.errorhandler(405)
    def method_not_allowed(_error):
        return jsonify(error="method not allowed"), 405

    @web.errorhandler(413)
    def too_large(_error):
        return jsonify(error="request too large"), 413

    @web.errorhandler(Exception)
    def unexpected(error: Exception):
        if isinstance(error, HTTPException):
            return jsonify(error=error.name.lower()), error.code
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error="internal error"), 500

    return web
