"""The app factory: a Bolt App with an injected WebClient and every surface registered."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from slack_bolt import App, BoltResponse
from slack_bolt.listener_matcher import ListenerMatcher
from slack_bolt.listener_matcher.builtins import BuiltinListenerMatcher
from slack_bolt.middleware import Middleware
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient
from sqlalchemy.exc import IntegrityError

from bot.context import Services, run_now
from bot.delivery.home import HomeRefreshes
from bot.models import SlackEvent
from bot.services.responses import ResponseOutcome
from bot.settings import Settings
from bot.web.work import SlackTraffic, WorkQueue

logger = logging.getLogger(__name__)

MAX_EVENT_ID = 64  # SlackEvent.event_id


def create_app(settings: Settings, client: WebClient, *, services: Services) -> App:
    """Build the Bolt app; `client` carries the base URL, token and retry handlers.

    With SLACK_CLIENT_ID the app also serves Bolt's OAuth flow (/slack/install,
    /slack/oauth_redirect) and answers each partner workspace with its installed token
    (docs/partner-workspaces.md); without it, everything is the home workspace's, as before.

    Listeners ack first and queue their work on `services.after_ack`: when that is the
    default (run at once), the app gets its own bounded queue (bot/web/work.py), which makes
    way for the Slack requests counted in `services.slack_traffic`. Home redraws
    after a response are queued and coalesced per user (bot/delivery/home.py).
    """
    if services.after_ack is run_now:
        traffic = services.slack_traffic or SlackTraffic()
        work = WorkQueue(traffic=traffic)
        services = replace(services, after_ack=work.submit, slack_traffic=traffic)
    if services.homes is None:
        services = replace(services, homes=HomeRefreshes(
            services.session_factory, settings, services.clock
        ))  # fmt: skip
    app = App(
        client=client,
        signing_secret=settings.slack_signing_secret or "",
        # HTTP mode verifies signatures; Socket Mode has no signature to verify.
        request_verification_enabled=not settings.socket_mode,
        token_verification_enabled=True,
        # Each listener runs on the request's own thread and Slack is answered when it returns:
        # no hand-off to a listener thread and no 10 ms poll for its ack (docs/benchmarks.md).
        # So a listener only acks and queues: every Slack call and anything slow goes to
        # `services.after_ack` or the slack_jobs table (handlers/deferred.py).
        process_before_response=True,
        **(_partner_workspaces(settings, client, services) if settings.oauth_enabled else {}),
    )
    app.use(EventDedupe(_make_event_dedupe(services)))
    from handlers import actions, commands, contacts, events, oncall, options, responses, views

    # Bolt tries each listener's matcher in the order they were registered, each at the cost of
    # building every argument a listener could take: the command and the clicks, which come
    # by the hundred, go first (the matchers never overlap, so the order changes nothing else).
    for surface in (commands, actions, oncall, contacts, views, options, responses, events):
        surface.register(app, services)
    if settings.oauth_enabled:
        # tokens_revoked and app_uninstalled delete the workspace's installation.
        app.enable_token_revocation_listeners()
    else:
        events.register_home_revocation(app)
    match_on_the_body(app)
    return app


class BodyMatcher(ListenerMatcher):
    """One of Bolt's built-in matchers (a command's name, a button's action_id, a view's
    callback_id...), called with the request's body, the one argument it takes."""

    def __init__(self, func: Callable[..., bool]) -> None:
        self.func = func

    def matches(self, req: BoltRequest, resp: BoltResponse) -> bool:
        return self.func(body=req.body)


def match_on_the_body(app: App) -> None:
    """Have `app`'s listeners call their built-in matchers directly.

    Bolt calls each matcher through its argument injection, which first builds every argument
    any listener could take (say, respond, the payload's views...): about 50 µs for each
    listener tried before the request's own, on every request. A matcher of another kind, or
    a built-in one that takes more than the body, is left to Bolt."""
    for listener in getattr(app, "_listeners", ()):
        listener.matchers = [
            BodyMatcher(matcher.func)
            if type(matcher) is BuiltinListenerMatcher and matcher.arg_names == ["body"]
            else matcher
            for matcher in listener.matchers
        ]


def slack_job_works(services: Services, client: WebClient) -> dict:
    """The work of each kind of job after a Slack ack, a click's (handlers/clicks.py) or a
    slash command's (handlers/command_jobs.py), and of the notice that tells the user of one
    dropped (handlers/dropped_jobs.py), for the runner of the slack_jobs table in a process
    that runs the dispatcher (bot/slackjobs/runner.py)."""
    from handlers.clicks import click_jobs
    from handlers.command_jobs import command_jobs
    from handlers.dropped_jobs import notice_jobs

    return {
        **click_jobs(services, client),
        **command_jobs(services, client),
        **notice_jobs(services, client),
    }


def slack_job_drop_notice():
    """What makes the job that tells a click's or a command's user that its job was dropped
    after its last attempt (handlers/dropped_jobs.py), for the same runner."""
    from handlers.dropped_jobs import dropped_notice

    return dropped_notice


def _partner_workspaces(settings: Settings, client: WebClient, services: Services) -> dict:
    """Bolt's arguments for installs into partner workspaces: the stores and `authorize`."""
    from bot.workspaces.clients import installation_store, state_store
    from bot.workspaces.oauth import (
        WorkspaceAuthorize,
        home_identity,
        not_installed_message,
        oauth_settings,
    )

    engine = services.session_factory.kw["bind"]
    installations = installation_store(settings, engine)
    assert client.token, "the home workspace needs SLACK_BOT_TOKEN"
    return {
        "authorize": WorkspaceAuthorize(
            home_token=client.token,
            home=home_identity(client),
            installation_store=installations,
        ),
        "installation_store": installations,
        "oauth_settings": oauth_settings(settings, installations, state_store(engine)),
        # What someone of a workspace without the app is told (their click or command).
        "user_facing_authorize_error_message": not_installed_message(settings),
    }


def _event_id(body: object) -> str | None:
    """The event_id of an Events API delivery, when it is one the table can hold."""
    if not isinstance(body, dict) or body.get("type") != "event_callback":
        return None
    event_id = body.get("event_id")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= MAX_EVENT_ID:
        return None
    if not event_id.isascii() or not event_id.isprintable():
        return None
    return event_id


class EventDedupe(Middleware):
    """`dedupe_events` as a Bolt middleware called directly: one given to `app.middleware` is
    handed its arguments by Bolt's injection, which builds every argument any listener could
    take, on every request."""

    def __init__(self, dedupe_events) -> None:
        self._dedupe = dedupe_events
        self._logger = logging.getLogger(__name__)

    def process(self, *, req: BoltRequest, resp: BoltResponse, next):  # Bolt names it `next`
        return self._dedupe(req.body, next, self._logger)


def _make_event_dedupe(services: Services):
    """Slack retries event deliveries it thinks failed; process each event_id once.

    Total: whatever the body holds and whatever the database does, it answers or hands on,
    never raises (a request that Bolt could not route is refused before it, in bot/web/http.py).
    """

    def dedupe_events(body: dict, next, logger: logging.Logger) -> BoltResponse | None:
        event_id = _event_id(body)
        if event_id is None:
            return next()
        try:
            with services.session_factory.begin() as session:
                session.add(SlackEvent(event_id=event_id, received_at=services.clock.now()))
        except IntegrityError:
            logger.info("ignoring a repeated delivery of event %s", event_id)
            return BoltResponse(status=200, body="")
        except Exception:
            # Cannot remember the event: handle it anyway (its listener copes with the outage);
            # a repeat at worst redraws a Home tab twice.
            logger.exception("could not record event %s", event_id)
        return next()

    return dedupe_events


def slack_follow_up(client: WebClient, services: Services) -> Callable[[ResponseOutcome], None]:
    """What Slack shows once an answer is given outside it (on an email's response page): the
    same as after a click, the prompt's Slack messages updated and a reply on the EDT card."""

    def follow_up(outcome: ResponseOutcome) -> None:
        from handlers.responses import show_recorded

        show_recorded(client, outcome, services)

    return follow_up
