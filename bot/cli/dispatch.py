"""`handover dispatch [--once]`: the dispatcher alone (with the runner of the clicks' and slash
commands' jobs), for one pass or until stopped."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from bot.settings import Settings, SettingsError

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_SERVICE = 0, 3
# How long `--once` waits for the Homes of those just prompted before exiting. Redraws are paced
# at views.publish's tier (about 100 a minute), so a big pass could otherwise hold the command
# for many minutes; a Home not redrawn is redrawn when its user next opens it.
HOME_DRAIN_SECONDS = 20.0


def dispatch_command(args: argparse.Namespace, settings: Settings) -> int:
    """One pass and a summary (`--once`), or run until SIGTERM/SIGINT."""
    from bot.channels.slack import make_web_client
    from bot.clock import clock_from_env
    from bot.db import create_db_engine, make_session_factory
    from bot.delivery.dispatcher import Dispatcher
    from bot.migrate import require_migrated
    from bot.web.server import dispatcher_services, slack_job_runner

    if not settings.slack_bot_token:
        raise SettingsError("SLACK_BOT_TOKEN is required by `handover dispatch`")
    engine = create_db_engine(settings.database_url)
    try:
        if args.once:
            # One pass over a database without the tables would only fail; running, the
            # dispatcher keeps retrying while the database is being migrated.
            with engine.connect() as connection:
                require_migrated(connection)
        client = make_web_client(settings)
        dispatcher = Dispatcher(settings, make_session_factory(engine), client, clock_from_env())
        # The clicks' and slash commands' jobs (bot/slackjobs/): the web processes write them,
        # the dispatchers run them.
        services = dispatcher_services(dispatcher, client, engine)
        jobs = slack_job_runner(services, client, dispatcher.instance_id, pacer=dispatcher.pacer)
        if args.once:
            while jobs.run_ready():
                pass
            stats = dispatcher.run_once()
            if not dispatcher.homes.drain(timeout=HOME_DRAIN_SECONDS):
                logger.info(
                    "App Homes still queued after %.0f s: redrawn when next opened",
                    HOME_DRAIN_SECONDS,
                )
                dispatcher.homes.stop()
            print(stats.summary(), flush=True)
            if stats.unreachable and not (stats.sent or stats.alerts or stats.cards):
                return EXIT_SERVICE  # Slack unavailable: nothing could be delivered
            return EXIT_OK
        stop = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            logger.info("signal %s: finishing the current row", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        dispatcher.start()
        jobs.start()
        print(f"handover: dispatcher {dispatcher.instance_id} running", flush=True)
        try:
            while not stop.wait(1.0):
                pass
        finally:
            jobs.shutdown()
            dispatcher.shutdown()
        return EXIT_OK
    finally:
        engine.dispose()
