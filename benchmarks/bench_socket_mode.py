"""How fast a no-op Bolt app acks through the stand-in's Socket Mode, and through HTTP.

    PYTHONPATH=. python benchmarks/bench_socket_mode.py [--deliveries 200]

Delivers slash commands one after another to a Bolt app with a listener that only acks: over
the stand-in's WebSocket (Bolt's SocketModeHandler), and signed over HTTP to the same app served
by werkzeug. Prints the median and p99 time from the stand-in sending each envelope to the ack
arriving, in milliseconds: the stand-in's own cost, the floor under any Socket Mode figure of
the bot.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import threading

from flask import Flask, request
from slack_bolt import App
from slack_bolt.adapter.flask import SlackRequestHandler
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from werkzeug.serving import make_server

from bot.slack_standin import SlackStandIn, StandInUser

SIGNING_SECRET = "bench-signing-secret"


def noop_app(standin: SlackStandIn, *, socket_mode: bool) -> App:
    app = App(
        client=WebClient(base_url=standin.url, token="xoxb-bench"),
        signing_secret=SIGNING_SECRET,
        request_verification_enabled=not socket_mode,
    )
    app.command("/handover")(lambda ack: ack())
    return app


def latencies(standin: SlackStandIn, count: int) -> list[float]:
    times = []
    for _ in range(count):
        envelope = standin.deliver_command("U0BENCH", "help")
        assert envelope["state"] == "acked", envelope
        times.append((envelope["ack"]["at"] - envelope["attempts"][0]["at"]) * 1000)
    return times


def report(name: str, times: list[float]) -> None:
    p99 = statistics.quantiles(times, n=100)[98]
    print(f"{name:12} median {statistics.median(times):6.1f} ms   p99 {p99:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=200)
    args = parser.parse_args()
    users = [StandInUser(id="U0BENCH", name="bench")]

    with SlackStandIn(users=users, socket_mode=True) as standin:
        handler = SocketModeHandler(noop_app(standin, socket_mode=True), "xapp-1-bench")
        handler.connect()
        try:
            report("socket mode", latencies(standin, args.deliveries))
        finally:
            handler.close()

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with SlackStandIn(users=users) as standin:
        flask = Flask(__name__)
        bolt = SlackRequestHandler(noop_app(standin, socket_mode=False))
        flask.add_url_rule(
            "/slack/events", "events", lambda: bolt.handle(request), methods=["POST"]
        )
        server = make_server("127.0.0.1", 0, flask, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        standin.set_request_url(f"http://127.0.0.1:{server.port}/slack/events", SIGNING_SECRET)
        try:
            report("http", latencies(standin, args.deliveries))
        finally:
            server.shutdown()


if __name__ == "__main__":
    main()
