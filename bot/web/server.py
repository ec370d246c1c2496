"""`handover serve`: the bot over HTTP (waitress) or Socket Mode, with the dispatcher (and the
runner of the clicks' and slash commands' jobs) in-process unless `--no-dispatcher`.

Why waitress: it is a production WSGI server that runs inside our own process, so `serve` can
host the dispatcher next to the HTTP listener and shut both down together on SIGTERM; it is pure
Python (no compiler, runs the same on Linux and on a council's Windows server) and well kept by
the Pylons project. Several instances scale out as several processes behind a proxy, all on one
PostgreSQL database.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import threading
from dataclasses import dataclass, replace

from slack_bolt import App

from bot.clock import Clock, clock_from_env
from bot.context import Services
from bot.db import create_db_engine, make_session_factory
from bot.errors import InputError, ServiceUnavailable
from bot.settings import Settings
from bot.slackjobs.beacon import TrafficBeacon
from bot.slackjobs.runner import JobRunner
from bot.slackjobs.writer import JobWriter
from bot.web.work import SQLITE_WORKERS, WORKERS, SlackTraffic, WorkQueue

logger = logging.getLogger(__name__)

# Requests that wait on the database take at most DATABASE_SLOTS threads for Slack and as many
# for the API; the rest stay free for what needs no database (Slack's url_verification,
# signature refusals, /healthz), so a stalled database cannot starve them. Each waits a bounded
# time (bot/db.py); at most API_SLOT_QUEUE more API requests queue for a slot (bot/web/http.py):
# 16 + 16 + 8 leaves 8 threads free.
WAITRESS_THREADS = 48
DATABASE_SLOTS = 16


@dataclass
class Runtime:
    """Everything `serve` runs, built once and shut down together."""

    services: Services
    bolt_app: App
    dispatcher: object | None
    work: WorkQueue
    jobs: JobWriter
    job_runner: JobRunner | None = None
    beacon: TrafficBeacon | None = None

    def start(self) -> None:
        """Start the dispatcher and the runner of the Slack jobs, when this process runs them,
        and the beacon of Slack's traffic for the runners in other processes."""
        if self.beacon is not None:
            self.beacon.start()
        if self.dispatcher is not None:
            self.dispatcher.start()
        if self.job_runner is not None:
            self.job_runner.start()

    def shutdown(self) -> None:
        if self.beacon is not None:
            self.beacon.stop()
        # The clicks and commands acked are written before anything stops (owed to their users).
        self.jobs.shutdown()
        if self.job_runner is not None:
            self.job_runner.shutdown()
        if self.dispatcher is not None:
            self.dispatcher.shutdown()  # and its Home redraws, which `services.homes` are
        elif self.services.homes is not None:
            self.services.homes.stop()
        self.work.shutdown(wait=False)


def build_runtime(settings: Settings, *, with_dispatcher: bool, clock: Clock | None = None):
    """Wire the engine, the Slack client, the dispatcher and the Bolt app."""
    from bot.channels.slack import make_web_client
    from bot.delivery.dispatcher import Dispatcher
    from bot.web.app import create_app

    if not settings.slack_bot_token:
        raise InputError("SLACK_BOT_TOKEN is required by `handover serve`")
    if not settings.socket_mode and not settings.slack_signing_secret:
        raise InputError("SLACK_SIGNING_SECRET is required by `handover serve` in HTTP mode")
    clock = clock or clock_from_env()
    engine = create_db_engine(settings.database_url)
    factory = make_session_factory(engine)
    client = make_web_client(settings)
    # SQLite takes one writer at a time: more workers only queue on its lock (and time out).
    # The work after the acks makes way for the Slack requests the HTTP layer counts.
    traffic = SlackTraffic()
    work = WorkQueue(
        workers=SQLITE_WORKERS if engine.dialect.name == "sqlite" else WORKERS, traffic=traffic
    )
    dispatcher = None
    if with_dispatcher:
        dispatcher = Dispatcher(settings, factory, client, clock)
    # A click's or a slash command's work after its ack is a job in the database, run by whoever
    # runs the dispatcher (this process, or `handover dispatch`: the Procfile's worker).
    jobs = JobWriter(engine)
    services = Services(
        settings=settings,
        session_factory=factory,
        clock=clock,
        wake_dispatcher=dispatcher.wake if dispatcher else Services.wake_dispatcher,
        after_ack=work.submit,
        slack_traffic=traffic,
        slack_jobs=jobs,
        homes=dispatcher.homes
        if dispatcher
        else _paced_homes(engine, factory, client, settings, clock),
        slack_client_for=workspace_clients(settings, client, engine),
    )
    bolt_app = _create_bolt_app(create_app, settings, client, services)
    runtime = Runtime(
        services=services, bolt_app=bolt_app, dispatcher=dispatcher, work=work, jobs=jobs,
        # On PostgreSQL the runners of `handover dispatch` hear when Slack's requests here
        # begin and pause, and make way for them as this process's own runner does.
        beacon=TrafficBeacon(engine, traffic),
    )  # fmt: skip
    if dispatcher is not None:
        # Here the jobs share the process with the acks: they make way for Slack's requests.
        runtime.job_runner = slack_job_runner(
            services, client, dispatcher.instance_id, pacer=dispatcher.pacer, traffic=traffic
        )
        jobs.on_written = runtime.job_runner.wake
    return runtime


def dispatcher_services(dispatcher, client, engine) -> Services:
    """What the clicks' and commands' jobs are given in a process that runs only the dispatcher."""
    return Services(
        settings=dispatcher.settings,
        session_factory=dispatcher.session_factory,
        clock=dispatcher.clock,
        wake_dispatcher=dispatcher.wake,
        homes=dispatcher.homes,
        slack_client_for=workspace_clients(dispatcher.settings, client, engine),
    )


def slack_job_runner(
    services: Services,
    client,
    instance_id: str,
    *,
    pacer=None,
    traffic: SlackTraffic | None = None,
    workers: int | None = None,
) -> JobRunner:
    """The runner of the clicks' and slash commands' jobs (bot/slackjobs/runner.py), for a
    process that runs the dispatcher; `client` is the home workspace's. The jobs post through
    `pacer`'s shared buckets (the dispatcher's; without one, a pacer of their own on the same
    database, sharing the same buckets): every workspace's client is a `Pacer.job_client`."""
    from bot.delivery.pacing import Pacer, tiers_for
    from bot.web.app import slack_job_drop_notice, slack_job_works

    if pacer is None:
        pacer = Pacer(services.session_factory.kw["bind"], tiers_for(services.settings))
    return JobRunner(
        services.session_factory,
        slack_job_works(_paced(services, pacer), pacer.job_client(client)),
        instance_id=instance_id,
        clock=services.clock,
        traffic=traffic,
        dropped_notice=slack_job_drop_notice(),
        workers=workers,
    )


def _paced(services: Services, pacer) -> Services:
    """`services` whose workspace clients are `pacer`'s job clients (the home one is the
    default the jobs are given)."""
    client_for = services.slack_client_for
    if client_for is None:
        return services

    def paced_client_for(workspace: str | None):
        found = client_for(workspace)
        return pacer.job_client(found) if found is not None else None

    return replace(services, slack_client_for=paced_client_for)


def _paced_homes(engine, factory, client, settings: Settings, clock: Clock):
    """Home redraws paced through the shared buckets, for a `serve` without a dispatcher."""
    from bot.delivery.home import HomeRefreshes
    from bot.delivery.pacing import Pacer, tiers_for

    pacer = Pacer(engine, tiers_for(settings))
    pacer.watch(client)
    return HomeRefreshes(factory, settings, clock, pacer)


def workspace_clients(settings: Settings, client, engine):
    """Each workspace's client, when partner workspaces can install the app (else None)."""
    if not settings.oauth_enabled:
        return None
    from bot.workspaces.clients import WorkspaceClients, installation_store

    return WorkspaceClients(client, installation_store(settings, engine)).client_for


def _create_bolt_app(create_app, settings: Settings, client, services: Services) -> App:
    """The Bolt app; a failed start-up `auth.test` is exit 3 (unreachable) or 1 (refused)."""
    from slack_bolt.error import BoltError
    from slack_sdk.errors import SlackApiError, SlackClientError

    try:
        return create_app(settings, client, services=services)
    except BoltError as exc:
        # Bolt wraps the SlackApiError of auth.test; its error code names no secret.
        cause = exc.__context__
        response = cause.response if isinstance(cause, SlackApiError) else None
        if response is None or response.status_code >= 500:
            raise ServiceUnavailable(
                f"Slack is unavailable at {settings.slack_api_url} (auth.test failed)"
            ) from exc
        raise InputError(
            f"Slack refused SLACK_BOT_TOKEN ({response.get('error') or 'auth.test failed'})"
        ) from exc
    except (SlackClientError, OSError) as exc:
        # Connection refused, DNS failure, timeout: slack_sdk's retries are already spent.
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        raise ServiceUnavailable(
            f"Slack is unreachable at {settings.slack_api_url} ({reason})"
        ) from exc


def serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the bot until SIGTERM or SIGINT."""
    runtime = build_runtime(settings, with_dispatcher=not args.no_dispatcher)
    stop = threading.Event()
    runtime.start()
    if settings.socket_mode and settings.email_enabled:
        # Socket Mode serves no HTTP: the response pages must be served by an HTTP-mode `serve`.
        logger.warning(
            "email links point at HANDOVER_PUBLIC_URL/respond/, which a Socket Mode process "
            "does not serve: run `handover serve --no-dispatcher` in HTTP mode there too"
        )
    if settings.socket_mode and settings.oauth_enabled:
        logger.warning(
            "partner workspaces install from HANDOVER_PUBLIC_URL/slack/install, which a Socket "
            "Mode process does not serve: run `handover serve --no-dispatcher` in HTTP mode there"
        )
    try:
        if settings.socket_mode:
            _serve_socket_mode(runtime, settings, stop)
        else:
            _serve_http(runtime, settings, stop)
    finally:
        runtime.shutdown()
    logger.info("stopped")
    return 0


def freeze_startup_heap() -> None:
    """Leave what start-up made (modules, the mappers, the app: some 80,000 objects) out of the
    garbage collector's full passes from now on (`gc.freeze`, after collecting start-up's own
    garbage). A full pass holds the interpreter lock, so every request thread waits for it: over
    1,000 clicks in-process, two came, of 15 and 57 ms, against a p99 of about 100 ms
    (benchmarks/profile_click.py); a pass over start-up's objects alone took 31 ms, and 0 ms once
    frozen. What is made later is collected as before."""
    gc.collect()
    gc.freeze()


def _serve_http(runtime: Runtime, settings: Settings, stop: threading.Event) -> None:
    from waitress import create_server

    from bot.web.http import create_web_app
    from bot.web.metrics import exposure_warning

    web = create_web_app(runtime.bolt_app, runtime.services, database_slots=DATABASE_SLOTS)
    host = os.environ.get("HOST", "0.0.0.0")
    try:
        server = create_server(web, host=host, port=settings.port, threads=WAITRESS_THREADS)
    except OSError as exc:  # the port is taken, or not ours to use: a setting to change
        raise InputError(
            f"cannot listen on {host}:{settings.port} (HOST, PORT): {exc.strerror or exc}"
        ) from None
    exposed = exposure_warning(host, settings.metrics_token)
    if exposed is not None:
        logger.warning(exposed)

    def on_signal(signum: int, _frame) -> None:
        if stop.is_set():
            return  # already stopping: let the shutdown finish
        logger.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()
        # Waitress's own way out of its loop (as on Ctrl-C): run() catches this and waits for
        # the requests in progress. Closing the server here instead closed the trigger under
        # a worker thread still answering a request (OSError: Bad file descriptor).
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info(
        "listening on http://%s:%s",
        host,
        server.effective_port,
        extra={"host": host, "port": server.effective_port},
    )
    print(f"handover: listening on port {server.effective_port}", flush=True)
    freeze_startup_heap()
    try:
        server.run()
    except SystemExit:
        # The signal came before or after waitress's loop, which would have caught it.
        if not stop.is_set():
            raise
    server.close()


def _serve_socket_mode(runtime: Runtime, settings: Settings, stop: threading.Event) -> None:
    from slack_bolt.adapter.socket_mode import SocketModeHandler
    from slack_sdk.errors import SlackApiError, SlackClientError

    handler = SocketModeHandler(runtime.bolt_app, settings.slack_app_token)
    freeze_startup_heap()

    def on_signal(signum: int, _frame) -> None:
        logger.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        handler.connect()
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        if error in ("invalid_auth", "not_authed", "token_revoked", "not_allowed_token_type"):
            raise InputError(f"Slack refused SLACK_APP_TOKEN ({error})") from exc
        raise ServiceUnavailable(
            f"Slack refused the Socket Mode connection ({error or 'apps.connections.open failed'})"
        ) from exc
    except (SlackClientError, OSError) as exc:
        raise ServiceUnavailable(f"Slack is unreachable for Socket Mode ({exc})") from exc
    print("handover: connected in Socket Mode", flush=True)
    stop.wait()
    handler.close()
