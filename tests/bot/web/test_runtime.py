"""What `serve` runs, shut down together (bot/web/server.py's Runtime)."""

from __future__ import annotations

import gc
import threading
import weakref

from bot.settings import Settings
from bot.slack_standin import SlackStandIn, StandInUser
from bot.web.server import build_runtime, freeze_startup_heap


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


def test_what_start_up_made_is_left_out_of_the_collectors_full_passes() -> None:
    # `serve` freezes its start-up heap before it answers Slack: a full pass of the garbage
    # collector then no longer walks the modules, mappers and app (tens of milliseconds with
    # every request thread stopped). What is made after it is still collected.
    made_at_start_up = [object() for _ in range(1000)]
    before = gc.get_freeze_count()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() >= before + len(made_at_start_up)
        assert gc.get_count()[2] == 0  # start-up's own garbage collected first
        later: list[object] = []
        later.append(later)  # a cycle made after the freeze
        gone = weakref.ref(_Cycle(later))
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()


class _Cycle:
    def __init__(self, cycle: list[object]) -> None:
        self.me = self
        self.cycle = cycle
