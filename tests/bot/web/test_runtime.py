"""What `serve` runs, shut down together (bot/web/server.py's Runtime)."""

from __future__ import annotations

import threading

from bot.settings import Settings
from bot.slack_standin import SlackStandIn, StandInUser
from bot.web.server import build_runtime


def test_serve_without_a_dispatcher_ends_its_home_redraws_at_shutdown(db_url: str) -> None:
    # `serve --no-dispatcher` redraws Homes on a thread of its own (paced, coalesced): its
    # shutdown, before the engine is closed, ends it (with a dispatcher, the dispatcher's does).
    with SlackStandIn(users=[StandInUser(id="U0HV1", name="jsmith")]) as slack:
        settings = Settings(
            database_url=db_url,
            slack_bot_token="xoxb-test",
            slack_signing_secret="test-signing-secret",
            slack_api_url=slack.url,
        )
        runtime = build_runtime(settings, with_dispatcher=False)
        engine = runtime.services.session_factory.kw["bind"]
        try:
            homes = runtime.services.homes
            before = set(threading.enumerate())
            homes.request(runtime.bolt_app.client, ["U0HV1"])
            assert homes.drain(timeout=10)
            [thread] = [
                t for t in set(threading.enumerate()) - before if t.name == "home-refreshes"
            ]
            runtime.shutdown()
            assert not thread.is_alive()
            assert [c.args["user_id"] for c in slack.calls("views.publish")] == ["U0HV1"]
        finally:
            engine.dispose()
