"""The reference of bench_clicks.py: a Bolt app with Handover's listeners that only ack,
served as `handover serve` serves (Flask's Bolt adapter under waitress, as many threads).

    python benchmarks/noop_bolt.py --port 8123 --signing-secret SECRET --slack-api-url URL
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flask import Flask, request  # noqa: E402
from slack_bolt import App  # noqa: E402
from slack_bolt.adapter.flask import SlackRequestHandler  # noqa: E402
from slack_sdk import WebClient  # noqa: E402
from waitress import create_server  # noqa: E402

from bot.web.server import WAITRESS_THREADS, freeze_startup_heap  # noqa: E402
from handlers import ids  # noqa: E402


def build(signing_secret: str, slack_api_url: str) -> Flask:
    app = App(
        signing_secret=signing_secret,
        client=WebClient(token="xoxb-noop", base_url=slack_api_url),
        token_verification_enabled=False,
        process_before_response=False,
    )

    def just_ack(ack) -> None:
        ack()

    for action in (ids.ACK, ids.NOT_KNOWN, ids.HAS_INFO, ids.REDIRECT):
        app.action(action)(just_ack)
    app.command(ids.COMMAND)(just_ack)
    web = Flask("noop")
    handler = SlackRequestHandler(app)

    @web.post("/slack/events")
    def slack_events():
        return handler.handle(request)

    @web.get("/healthz")
    def healthz():
        return {"status": "ok"}

    return web


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--signing-secret", required=True)
    parser.add_argument("--slack-api-url", required=True, help="Slack's API (the stand-in)")
    args = parser.parse_args()
    web = build(args.signing_secret, args.slack_api_url)
    server = create_server(web, host="127.0.0.1", port=args.port, threads=WAITRESS_THREADS)
    # As `handover serve` does: without it the no-op made a full collection of 30-65 ms in about
    # one burst in four, which lowered Handover's ratio (docs/benchmarks.md).
    freeze_startup_heap()
    print(f"noop: listening on port {server.effective_port}", flush=True)
    server.run()


if __name__ == "__main__":
    main()
