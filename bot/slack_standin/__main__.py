"""Run the Slack stand-in on its own: ``python -m bot.slack_standin --port 8099 [--users FILE]``.

The first line on stdout is the Web API base URL (the value for ``SLACK_API_URL``).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bot.slack_standin.model import ControlError, RateLimit, StandInUser
from bot.slack_standin.ratelimits import RateLimits
from bot.slack_standin.server import SlackStandIn


def read_users(path: Path) -> dict[str | None, list[StandInUser]]:
    """Read a user directory from JSON (a list of objects) or CSV (``id``/``slack_user``, …).

    Users are grouped by their ``team`` field (a workspace's team ID; none = the home one).
    """
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows: list[dict[str, Any]] = []
        for row in csv.DictReader(text.splitlines()):
            # people.csv names the Slack user ``slack_user``; rows without one are skipped.
            user_id = row.get("id") or row.get("slack_user")
            if user_id:
                rows.append({**row, "id": user_id})
    else:
        loaded = json.loads(text)
        rows = loaded.get("users", []) if isinstance(loaded, dict) else loaded
    teams: dict[str | None, list[StandInUser]] = {}
    for row in rows:
        teams.setdefault(row.get("team") or None, []).append(StandInUser.from_dict(row))
    return teams


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bot.slack_standin``."""
    parser = argparse.ArgumentParser(prog="python -m bot.slack_standin", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099, help="0 picks a free port")
    parser.add_argument("--socket-port", type=int, default=0, help="Socket Mode's WebSocket port")
    parser.add_argument(
        "--users", type=Path, metavar="FILE", help="JSON list or CSV of users (a 'team' per user)"
    )
    parser.add_argument("--channels", default="", help="comma-separated channel IDs that exist")
    parser.add_argument("--auto-create-channels", action="store_true")
    parser.add_argument("--allow-unknown-users", action="store_true")
    parser.add_argument("--team-id", default="T0STANDIN")
    parser.add_argument("--bot-user-id", default="U0HANDOVER")
    parser.add_argument(
        "--token", action="append", dest="tokens", help="accepted bot token (default: any xoxb-)"
    )
    parser.add_argument(
        "--app-token", action="append", dest="app_tokens", help="accepted xapp- token (any)"
    )
    parser.add_argument(
        "--install",
        action="append",
        default=[],
        metavar="TEAM=TOKEN",
        help="install the app in another workspace with this bot token",
    )
    parser.add_argument(
        "--socket-mode", action="store_true", help="turn on the app's Socket Mode setting"
    )
    parser.add_argument("--client-id", help="the app's OAuth client ID")
    parser.add_argument("--client-secret", help="the app's OAuth client secret")
    parser.add_argument("--request-url", help="deliver events and interactions here over HTTP")
    parser.add_argument("--signing-secret", help="sign HTTP deliveries with this secret")
    parser.add_argument("--no-rate-limit", action="store_true", help="for the demo")
    parser.add_argument("--rate-burst", type=int, default=5)
    parser.add_argument("--rate-per-second", type=float, default=1.0)
    parser.add_argument(
        "--slack-tiers", action="store_true", help="apply Slack's per-method tier limits"
    )
    parser.add_argument(
        "--workspace-rate",
        type=float,
        metavar="PER_SECOND",
        help="workspace-wide limit of chat.postMessage + chat.update",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def _rate_limits(args: argparse.Namespace) -> RateLimits | None:
    if args.slack_tiers:
        return RateLimits.slack_tiers(messages_per_second=args.workspace_rate)
    if args.workspace_rate:
        return RateLimits.from_dict({"workspace": {"per_second": args.workspace_rate}})
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until interrupted (SIGINT or SIGTERM)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        teams = read_users(args.users) if args.users else {}
        rate_limit = (
            None if args.no_rate_limit else RateLimit(args.rate_burst, args.rate_per_second)
        )
        installs = dict(item.split("=", 1) for item in args.install)
        standin = SlackStandIn(
            args.host,
            args.port,
            team_id=args.team_id,
            bot_user_id=args.bot_user_id,
            users=teams.pop(None, []) + teams.pop(args.team_id, []),
            channels=[c.strip() for c in args.channels.split(",") if c.strip()],
            auto_create_channels=args.auto_create_channels,
            allow_unknown_users=args.allow_unknown_users,
            tokens=args.tokens,
            app_tokens=args.app_tokens,
            rate_limit=rate_limit,
            rate_limits=_rate_limits(args),
            client_id=args.client_id,
            client_secret=args.client_secret,
            request_url=args.request_url,
            signing_secret=args.signing_secret,
            socket_mode=args.socket_mode,
            socket_port=args.socket_port,
        )
        for team_id in sorted(set(teams) | set(installs)):
            standin.add_workspace(
                team_id, users=teams.get(team_id, []), token=installs.get(team_id)
            )
    except (OSError, ValueError, ControlError) as exc:
        print(f"slack stand-in: {exc}", file=sys.stderr)
        return 2
    try:
        standin.start()
    except OSError as exc:
        print(f"slack stand-in: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2

    def stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() blocks until serve_forever returns, so it must not run on the main thread.
        threading.Thread(target=standin.stop, daemon=True).start()

    # Both read before the first is printed: a SIGTERM right after it stops the server.
    url, control_url = standin.url, standin.control_url
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(url, flush=True)
    print(f"control API: {control_url}", file=sys.stderr, flush=True)
    standin.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
