"""`handover demo`: the real bot through a Christmas weekend, against a local Slack stand-in.

Everything runs in this process but talks over real HTTP on 127.0.0.1: the bot's own web app
(`create_web_app`, served by waitress on an ephemeral port) receives signed Slack requests, and
its Web API client posts to an in-process `SlackStandIn`. The database is a temporary SQLite file
migrated with `bot.migrate.upgrade` and filled with the bundled sample rota; time is a
`FixedClock` that the story moves forward, calling `dispatcher.run_once()` at every instant at
which something falls due, so the run is deterministic and takes seconds.

The demo is also a smoke test: each beat of the story is checked against the audit log (exact
instants, recipients) and the stand-in; if one does not happen as told, the demo says which and
exits 1. It reads no configuration: the user's `DATABASE_URL`, Slack and Handover variables are
set aside while it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import hmac
import io
import itertools
import json
import logging
import os
import re
import secrets
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from bot.clock import FixedClock
from bot.delivery import outbox
from bot.demo.render import (
    CHECK,
    EMAIL,
    NARRATION,
    NOTE,
    PAGE,
    Directory,
    Entry,
    day_heading,
    entry_for_call,
    entry_for_response_url,
    entry_lines,
    page_text,
    transcript_html,
)
from bot.services.coverage import COVERAGE_WORDS, STRATEGY_AGENCIES, coverage_for_referrals
from bot.services.report_page import ReportPage
from bot.settings import Settings
from handlers.blocks.alerts import ONCALL_ACK

logger = logging.getLogger(__name__)

TZ = ZoneInfo("Europe/London")
# The bundled sample rota (rota/sample next to this package, installed or not).
SAMPLE_ROTA = Path(__file__).resolve().parents[2] / "rota" / "sample"

EDT_CHANNEL = "C0EDTCARDS"  # the EDT team's channel in the sample rota: the referral cards
ESCALATION_CHANNEL = "C0MASHMGRS"  # MASH managers: the last escalation step and breaches
EXTRA_CHANNELS = {EDT_CHANNEL: "#edt-referrals", ESCALATION_CHANNEL: "#mash-managers"}
# People of the sample rota without a Slack ID are found by email; the stand-in knows them.
# (Riverside's practice manager, reached by email only, is not in Slack at all.)
EMAIL_ONLY_IDS = {"gp-drjones": "U0GPJONE01"}

REFERRER = "edt-amy"
CASE_REF = "WXC-2026-004187"
NOTIFY_PEOPLE = ("hv-jsmith", "mw-rhughes", "prob-tward")
# What the story achieves (docs/coverage.md): an acknowledgement alone leaves police pending.
EXPECTED_COVERAGE = {"social_care": "covered", "police": "pending", "health": "covered"}
NOTIFY_TEAMS = ("gp-northgate", "gp-riverside")
# Riverside Medical Practice is on NHSmail, not on the council's Slack: its practice manager's
# `contact` is `email` in the sample rota, so she is prompted by email and answers on a page.
PRACTICE_MANAGER = "gp-riv-pm-bell"
MAIL_FROM = "Handover <handover@wexcombe.example>"
NOTIFY_ROLES = ("police_dau",)

TITLE = "Handover demo: a referral over Christmas 2026 in Wexcombe"
INTRO = (
    "The real Handover bot (its HTTP server, dispatcher and Slack handlers) against a local "
    "Slack stand-in, on a temporary database with the fictional Wexcombe sample rota and a "
    "simulated clock. Each message below is what one person saw in Slack, at the simulated time."
)

SETTLE_QUIET = 0.12  # seconds without a new Slack call before a step counts as finished
WAIT_TIMEOUT = 15.0
MAX_PASSES = 400

# Variables the bot reads from the environment; the demo sets them aside (see module doc).
_ENV_PREFIXES = ("SLACK_", "HANDOVER_")
_ENV_NAMES = ("DATABASE_URL", "PORT", "HOST")


def local(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A Europe/London wall-clock time."""
    return datetime(year, month, day, hour, minute, tzinfo=TZ)


SAT_0210 = local(2026, 12, 26, 2, 10)


class StoryError(Exception):
    """A beat of the story did not happen as the demo tells it."""


@dataclass(frozen=True)
class Expected:
    """An audit event the story expects at an exact instant."""

    event: str
    at: datetime
    recipient: str | None = None
    target: str | None = None


@contextlib.contextmanager
def isolated_environment() -> Iterator[None]:
    """Set aside the variables the bot would read, and put them back afterwards."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES) or k in _ENV_NAMES}
    for name in saved:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(saved)


def _sample_people() -> list[dict[str, str]]:
    with open(SAMPLE_ROTA / "people.csv", encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _sample_channels() -> dict[str, str]:
    channels = dict(EXTRA_CHANNELS)
    with open(SAMPLE_ROTA / "teams.csv", encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["channel"] and row["channel"] not in channels:
                channels[row["channel"]] = f"#{row['team_id']}"
    return channels


class Demo:
    """The bot, the stand-in, the database and the simulated clock of one demo run."""

    def __init__(self, workdir: Path, emit: Callable[[Entry], None]) -> None:
        self.workdir = workdir
        self.emit_entry = emit
        self.clock = FixedClock(SAT_0210 - timedelta(minutes=5))
        self.entries: list[Entry] = []
        self.signing_secret = secrets.token_hex(16)
        self.people = [
            row
            for row in _sample_people()
            if row["slack_user"] or row["person_id"] in EMAIL_ONLY_IDS
        ]
        self.slack_ids = {
            row["person_id"]: row["slack_user"] or EMAIL_ONLY_IDS[row["person_id"]]
            for row in self.people
        }
        self.directory = Directory(
            people={
                self.slack_ids[row["person_id"]]: (row["name"], row["person_id"])
                for row in self.people
            },
            channels=_sample_channels(),
        )
        self._calls_seen = 0
        self._responses_seen = 0
        self._mails_seen = 0
        self._trigger_count = 0
        self._stack = contextlib.ExitStack()
        self.referral_id: str | None = None

    # ----- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Demo:
        try:
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start(self) -> None:
        from waitress import create_server

        from bot.db import create_db_engine, make_session_factory
        from bot.mail_standin import MailStandIn, free_port
        from bot.migrate import upgrade
        from bot.slack_standin import SlackStandIn
        from bot.web.http import create_web_app
        from bot.web.server import build_runtime
        from rota.apply import apply_rota
        from rota.importer import read_rota_files

        database_url = f"sqlite:///{self.workdir / 'handover-demo.db'}"
        upgrade(database_url)
        engine = create_db_engine(database_url)
        self._stack.callback(engine.dispose)
        with (
            read_rota_files([SAMPLE_ROTA], TZ) as batch,
            make_session_factory(engine).begin() as session,
        ):
            apply_rota(session, batch, self.clock.now())

        standin = SlackStandIn(
            users=[
                {
                    "id": self.slack_ids[row["person_id"]],
                    "name": row["person_id"],
                    "real_name": row["name"],
                    "email": row["email"],
                }
                for row in self.people
            ],
            channels=list(self.directory.channels),
            rate_limit=None,
        ).start()
        self._stack.callback(standin.stop)
        self.standin = standin
        self.relay = MailStandIn().start()  # the council's mail relay, on this machine
        self._stack.callback(self.relay.stop)
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"

        self.settings = Settings(
            database_url=database_url,
            slack_bot_token="xoxb-handover-demo",
            slack_signing_secret=self.signing_secret,
            slack_api_url=standin.url,
            timezone_name=TZ.key,
            edt_channel=EDT_CHANNEL,
            escalation_channel=ESCALATION_CHANNEL,
            owner_team="mash",  # the MASH takes over on working days: told what partners offer
            smtp_url=self.relay.url,
            mail_from=MAIL_FROM,
            public_url=self.base_url,
        )
        runtime = build_runtime(self.settings, with_dispatcher=True, clock=self.clock)
        self._stack.callback(runtime.shutdown)
        # The clicks' and commands' jobs run in the background, as under `serve`; the
        # dispatcher's passes are the story's to run (run_due).
        assert runtime.job_runner is not None
        runtime.job_runner.start()
        bind = runtime.services.session_factory.kw.get("bind")
        if bind is not None:
            self._stack.callback(bind.dispose)
        self.runtime = runtime
        self.session_factory = runtime.services.session_factory
        self.dispatcher = runtime.dispatcher

        web = create_web_app(runtime.bolt_app, runtime.services)
        server = create_server(web, host="127.0.0.1", port=port, threads=4)
        thread = threading.Thread(target=_run_quietly, args=(server,), daemon=True)
        thread.start()
        self._stack.callback(thread.join, 5)
        self._stack.callback(server.close)
        self.collect()  # auth.test at start-up: nobody sees it

    # ----- the transcript ------------------------------------------------------------------

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)
        self.emit_entry(entry)

    def narrate(self, text: str) -> None:
        self.add(Entry(at=self.clock.now(), kind=NARRATION, audience="", text=text))

    def check(self, text: str) -> None:
        self.add(Entry(at=self.clock.now(), kind=CHECK, audience="", text=text))

    def fail(self, text: str) -> None:
        self.add(Entry(at=self.clock.now(), kind=CHECK, audience="", text=text, ok=False))

    def collect(self, show_home: str | None = None) -> list[Entry]:
        """Turn the Slack calls made since the last look into transcript entries."""
        calls = self.standin.calls()
        responses = self.standin.responses()
        new_calls = calls[self._calls_seen :]
        new_responses = responses[self._responses_seen :]
        self._calls_seen = len(calls)
        self._responses_seen = len(responses)
        for user_id in self.directory.people:
            dm = self.standin.dm_channel_for(user_id)
            if dm:
                self.directory.dm_channels[dm] = user_id
        now = self.clock.now()
        timed: list[tuple[float, Entry]] = []
        refreshed: list[str] = []
        for call in new_calls:
            if call.method == "views.publish" and call.args.get("user_id") != show_home:
                # Home tabs are redrawn for everyone concerned after each change; only the one
                # a person opens in the story is shown in full.
                refreshed.append(self.directory.short(str(call.args.get("user_id"))))
                continue
            entry = entry_for_call(call.method, call.args, call.response, now, self.directory)
            if entry is not None:
                timed.append((call.timestamp, entry))
        if refreshed:
            names = ", ".join(refreshed[:3])
            if len(refreshed) > 3:
                names += f" and {len(refreshed) - 3} more"
            text = f"Home tab kept up to date for {names}"
            timed.append((float("inf"), Entry(at=now, kind=NOTE, audience="App Home", text=text)))
        for response in new_responses:
            user = self.directory.person(str(response["name"]))
            audience = f"Only visible to {user} (answer to /handover)"
            timed.append(
                (response["timestamp"], entry_for_response_url(response["body"], now, audience))
            )
        timed.sort(key=lambda pair: pair[0])
        timed.extend((float("inf"), entry) for entry in self._new_emails(now))
        entries = [entry for _, entry in timed]
        for entry in entries:
            self.add(entry)
        return entries

    def _new_emails(self, now: datetime) -> list[Entry]:
        """The emails the relay took since the last look, as their recipients read them."""
        mails = self.relay.messages()
        new, self._mails_seen = mails[self._mails_seen :], len(mails)
        names = {row["email"]: row["name"] for row in _sample_people()}
        return [
            Entry(
                at=now,
                kind=EMAIL,
                audience=f"Email to {names.get(mail.rcpt_tos[0], '')} <{mail.rcpt_tos[0]}>",
                title=str(mail.email["Subject"]),
                text=f"Message-ID: {mail.message_id}\n\n{self._short_links(mail.body().strip())}",
            )
            for mail in new
        ]

    def _short_links(self, text: str) -> str:
        """The email's links as the transcript shows them: to the page, the token cut short (the
        demo's server is gone once it ends, and the transcript links nowhere)."""
        return re.sub(
            re.escape(self.base_url) + r"/respond/(\S{12})\S*",
            r"[link to Handover's page /respond/\1…]",
            text,
        )

    # ----- the bot's own pages ---------------------------------------------------------------

    def open_page(self, url: str, who: str) -> str:
        """A person opens one of the bot's pages in a browser; returns its HTML."""
        status, page = _http(url)
        if status != 200:
            raise StoryError(f"{url} answered HTTP {status}")
        self.show_page(page, who)
        return page

    def show_page(self, page: str, who: str) -> None:
        title = page.split("<h1>", 1)[-1].split("</h1>", 1)[0]
        self.add(
            Entry(at=self.clock.now(), kind=PAGE, audience=f"Page seen by {who}", title=title,
                  text=page_text(page))
        )  # fmt: skip

    def submit_page(self, url: str, page: str, who: str, **fields: str) -> str:
        """Submit the page's form (with its CSRF token) as a browser would; the page it ends on."""
        token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        body = urllib.parse.urlencode({"csrf_token": token, **fields}).encode()
        status, answer = _http(url, body)  # urllib follows the 303 to the answer's page
        if status != 200:
            raise StoryError(f"submitting {url} answered HTTP {status}")
        self.show_page(answer, who)
        return answer

    # ----- time ----------------------------------------------------------------------------

    def run_due(self) -> None:
        """One dispatcher pass at the current simulated instant."""
        self.dispatcher.run_once()
        self.collect()

    def advance_to(self, instant: datetime, narration: str | None = None) -> None:
        """Move the clock to `instant`, running the dispatcher at every due time on the way;
        `narration` is told at `instant`, before what falls due then."""
        for _ in range(MAX_PASSES):
            with self.session_factory() as session:
                due = outbox.next_due_at(session)
            if due is None or due >= instant:
                break
            if due > self.clock.now():
                self.clock.set(due)
            stats = self.dispatcher.run_once()
            self.collect()
            if not stats.claimed:
                break  # due but not claimable now (a retry backing off): look again later
        else:
            raise StoryError(f"the dispatcher did not settle before {instant:%a %d %b %H:%M}")
        if instant > self.clock.now():
            self.clock.set(instant)
        if narration:
            self.narrate(narration)
        self.run_due()

    # ----- Slack requests --------------------------------------------------------------------

    def _signed_post(self, body: bytes, content_type: str) -> tuple[int, bytes]:
        timestamp = str(int(time.time()))  # Bolt checks signatures against the real clock
        digest = hmac.new(
            self.signing_secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256
        ).hexdigest()
        request = urllib.request.Request(
            f"{self.base_url}/slack/events",
            data=body,
            method="POST",
            headers={
                "Content-Type": content_type,
                "X-Slack-Request-Timestamp": timestamp,
                "X-Slack-Signature": f"v0={digest}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def _interaction(self, payload: dict[str, Any]) -> dict[str, Any] | None:
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        status, raw = self._signed_post(body, "application/x-www-form-urlencoded")
        if status != 200:
            raise StoryError(f"the bot answered a {payload['type']} with HTTP {status}")
        return json.loads(raw) if raw.strip() else None

    def _new_trigger(self, user_id: str) -> str:
        self._trigger_count += 1
        trigger = f"{1000 + self._trigger_count}.{secrets.randbelow(10**9)}.demo"
        self.directory.triggers[trigger] = user_id
        return trigger

    def _user(self, user_id: str) -> dict[str, str]:
        person_id = self.directory.people.get(user_id, ("", user_id))[1]
        return {"id": user_id, "username": person_id, "name": person_id, "team_id": "T0STANDIN"}

    def settle(self, predicate: Callable[[], Any], what: str) -> Any:
        """Wait for the bot's background listeners: until `predicate`, then until quiet."""
        deadline = time.monotonic() + WAIT_TIMEOUT
        value = predicate()
        while not value:
            if time.monotonic() > deadline:
                raise StoryError(f"{what} did not happen within {WAIT_TIMEOUT:.0f} s")
            time.sleep(0.02)
            value = predicate()
        count = len(self.standin.calls())
        while True:
            time.sleep(SETTLE_QUIET)
            now_count = len(self.standin.calls())
            if now_count == count or time.monotonic() > deadline:
                break
            count = now_count
        return value

    def _calls_after(self, method: str, seen: int) -> list[Any]:
        return [c for c in self.standin.calls()[seen:] if c.method == method]

    def slash_command(self, person_id: str, text: str, channel: str) -> dict[str, Any]:
        """`/handover TEXT` typed by a person; returns the modal opened, if any."""
        user_id = self.slack_ids[person_id]
        seen = len(self.standin.calls())
        form = {
            "token": "unused",
            "api_app_id": "A0HANDOVER",
            "team_id": "T0STANDIN",
            "team_domain": "handover-standin",
            "channel_id": channel,
            "channel_name": self.directory.channel(channel).lstrip("#"),
            "user_id": user_id,
            "user_name": person_id,
            "command": "/handover",
            "text": text,
            "response_url": self.standin.response_url(user_id),
            "trigger_id": self._new_trigger(user_id),
            "is_enterprise_install": "false",
        }
        status, _ = self._signed_post(
            urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
        )
        if status != 200:
            raise StoryError(f"the bot answered /handover with HTTP {status}")
        if text:
            self.settle(lambda: self.standin.responses(user_id), "the answer to /handover")
            self.collect()
            return {}
        opened = self.settle(
            lambda: self._calls_after("views.open", seen), "opening the referral modal"
        )
        self.collect()
        return opened[0].response["view"]

    def submit_view(
        self, person_id: str, view: dict[str, Any], answers: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Submit a modal with `answers` keyed by block_id; returns the bot's ack body."""
        user_id = self.slack_ids[person_id]
        payload = {
            "type": "view_submission",
            "team": {"id": "T0STANDIN", "domain": "handover-standin"},
            "user": self._user(user_id),
            "api_app_id": "A0HANDOVER",
            "token": "unused",
            "trigger_id": self._new_trigger(user_id),
            "view": {**view, "state": {"values": modal_values(view, answers)}},
            "is_enterprise_install": False,
        }
        return self._interaction(payload)

    def prompt_message(self, person_id: str) -> dict[str, Any]:
        """The latest message with response buttons in a person's DM with the app."""
        user_id = self.slack_ids[person_id]
        channel = self.standin.dm_channel_for(user_id)
        for message in reversed(self.standin.messages(channel) if channel else []):
            for block in message.get("blocks") or []:
                if block.get("type") == "actions":
                    return {**message, "channel": channel}
        raise StoryError(f"{person_id} has no prompt with buttons in their DM")

    def click(self, person_id: str, action_id: str) -> None:
        """A person clicks a button of the prompt in their DM."""
        self.click_in(person_id, self.prompt_message(person_id), action_id)

    def on_call_alerts(self, person_id: str) -> list[dict[str, Any]]:
        """The on-call alerts in a person's DM that still carry their Acknowledge button."""
        channel = self.standin.dm_channel_for(self.slack_ids[person_id])
        return [
            {**message, "channel": channel}
            for message in (self.standin.messages(channel) if channel else [])
            if any(
                element.get("action_id") == ONCALL_ACK
                for block in message.get("blocks") or []
                if block.get("type") == "actions"
                for element in block.get("elements") or []
            )
        ]

    def click_in(self, person_id: str, message: dict[str, Any], action_id: str) -> None:
        """A person clicks a button of `message` (with its `channel`) in their DM."""
        user_id = self.slack_ids[person_id]
        button = next(
            (
                element
                for block in message.get("blocks") or []
                if block.get("type") == "actions"
                for element in block.get("elements") or []
                if element.get("action_id") == action_id
            ),
            None,
        )
        if button is None:
            raise StoryError(f"the message to {person_id} has no {action_id} button")
        payload = {
            "type": "block_actions",
            "team": {"id": "T0STANDIN", "domain": "handover-standin"},
            "user": self._user(user_id),
            "api_app_id": "A0HANDOVER",
            "token": "unused",
            "container": {
                "type": "message",
                "message_ts": message["ts"],
                "channel_id": message["channel"],
                "is_ephemeral": False,
            },
            "trigger_id": self._new_trigger(user_id),
            "channel": {"id": message["channel"], "name": "directmessage"},
            "message": {k: v for k, v in message.items() if k != "channel"},
            "response_url": self.standin.response_url(user_id),
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "handover_prompt_actions",
                    "text": button["text"],
                    "value": button.get("value", ""),
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
            "state": {"values": {}},
            "is_enterprise_install": False,
        }
        self._interaction(payload)

    def open_home(self, person_id: str) -> None:
        """A person opens the app's Home tab (an `app_home_opened` event)."""
        user_id = self.slack_ids[person_id]
        seen = len(self.standin.calls())
        event = {
            "token": "unused",
            "team_id": "T0STANDIN",
            "api_app_id": "A0HANDOVER",
            "event": {
                "type": "app_home_opened",
                "user": user_id,
                "channel": self.standin.dm_channel_for(user_id) or "D0HOME",
                "tab": "home",
                "event_ts": f"{time.time():.6f}",
            },
            "type": "event_callback",
            "event_id": f"Ev{secrets.token_hex(5).upper()}",
            "event_time": int(time.time()),
        }
        status, _ = self._signed_post(json.dumps(event).encode(), "application/json")
        if status != 200:
            raise StoryError(f"the bot answered app_home_opened with HTTP {status}")
        self.settle(
            lambda: [
                c
                for c in self._calls_after("views.publish", seen)
                if c.args.get("user_id") == user_id
            ],
            "publishing the App Home",
        )
        self.collect(show_home=user_id)

    # ----- the log -------------------------------------------------------------------------

    def log_records(self) -> list[dict[str, Any]]:
        from bot.services.logbook import iter_log, log_record

        with self.session_factory() as session:
            return [log_record(row, TZ) for row in iter_log(session)]

    def expect(self, *expected: Expected) -> None:
        """Each expected event is in the log at exactly its instant, for its recipient/target."""
        records = self.log_records()
        for item in expected:
            related = [
                r
                for r in records
                if r["event"] == item.event and (item.target is None or r["target"] == item.target)
            ]
            if any(
                datetime.fromisoformat(r["at"]) == item.at
                and (item.recipient is None or r["recipient"] == item.recipient)
                for r in related
            ):
                continue
            who = " ".join(
                part
                for part in (
                    f"for {item.target}" if item.target else "",
                    f"to {item.recipient}" if item.recipient else "",
                )
                if part
            )
            seen = "; ".join(
                f"to {r['recipient'] or 'nobody'} at "
                + datetime.fromisoformat(r["at"]).astimezone(TZ).strftime("%a %d %b %H:%M:%S")
                for r in related
            )
            raise StoryError(
                f"expected `{item.event}` {who} at {item.at:%a %d %b %Y %H:%M %Z}; "
                + (f"the log has it {seen}" if seen else "the log has none")
            )

    def expect_none(self, event: str, *, since: datetime, until: datetime, why: str) -> None:
        """No `event` in the log in [since, until)."""
        for record in self.log_records():
            at = datetime.fromisoformat(record["at"])
            if record["event"] == event and since <= at < until:
                raise StoryError(
                    f"unexpected `{event}` to {record['recipient']} at "
                    f"{at.astimezone(TZ):%a %d %b %H:%M}: {why}"
                )


def _run_quietly(server: Any) -> None:
    # close() from the main thread makes waitress's accept loop see a closed socket.
    with contextlib.suppress(OSError, ValueError):
        server.run()


def modal_values(view: dict[str, Any], answers: dict[str, Any]) -> dict[str, Any]:
    """A modal's `state.values` as Slack sends them, from answers keyed by block_id."""
    values: dict[str, Any] = {}
    for block in view.get("blocks") or []:
        if block.get("type") != "input":
            continue
        block_id = block.get("block_id")
        element = block.get("element") or {}
        kind = element.get("type")
        answer = answers.get(block_id)
        state: dict[str, Any] = {"type": kind}
        if kind == "plain_text_input":
            state["value"] = answer
        elif kind in ("static_select", "radio_buttons", "external_select"):
            state["selected_option"] = None if answer is None else _option(element, answer)
        elif kind in ("multi_static_select", "multi_external_select"):
            state["selected_options"] = [_option(element, a) for a in answer or ()]
        else:
            raise StoryError(f"the demo cannot fill a {kind} input ({block_id})")
        values[block_id] = {element.get("action_id"): state}
    missing = set(answers) - set(values)
    if missing:
        raise StoryError(f"the modal has no input blocks {', '.join(sorted(missing))}")
    return values


def _option(element: dict[str, Any], value: str) -> dict[str, Any]:
    options = element.get("options")
    if options is None:  # an external select: options come from the bot when searched
        return {"text": {"type": "plain_text", "text": value}, "value": value}
    for option in options:
        if option.get("value") == value:
            return option
    raise StoryError(f"the modal offers no option {value!r} in {element.get('action_id')}")


def option_label(view: dict[str, Any], block_id: str, value: str) -> str:
    """The label of option `value` in a modal's input block."""
    for block in view.get("blocks") or []:
        if block.get("block_id") == block_id:
            for option in (block.get("element") or {}).get("options") or []:
                if option.get("value") == value:
                    return str(option["text"]["text"])
    return value


def first_option(view: dict[str, Any], block_id: str) -> str:
    """The value of the first option of a modal's select."""
    for block in view.get("blocks") or []:
        if block.get("block_id") == block_id:
            options = (block.get("element") or {}).get("options") or []
            if options:
                return str(options[0]["value"])
    raise StoryError(f"the modal has no options in {block_id}")


# ----- the story -----------------------------------------------------------------------------


LONG_GAP_TARGETS = (
    "person:hv-jsmith",
    "team:gp-northgate",
    "team:gp-riverside",
    "person:mw-rhughes",
    "person:prob-tward",
)


def tell_story(demo: Demo) -> None:
    """The weekend, beat by beat; raises StoryError when a beat does not happen."""
    amy = demo.slack_ids[REFERRER]
    demo.clock.set(SAT_0210)
    demo.narrate(
        "Boxing Day night. The police call Wexcombe's emergency duty team: a mother was "
        "assaulted by her partner while holding their 10-week-old baby. EDT social worker "
        "Amy Carter takes the referral. Handover must make sure the health visitor, the GP, "
        "the midwife and the partner's probation officer, who all work 9 to 5 on weekdays, "
        "are asked at the start of their next working morning."
    )
    demo.narrate("Amy types /handover in #edt-referrals.")
    view = demo.slash_command(REFERRER, "", EDT_CHANNEL)
    if view.get("callback_id") != "handover_referral_modal":
        raise StoryError("/handover did not open the referral modal")
    demo.check("The referral modal opened in Amy's Slack.")

    demo.narrate(
        f"Amy fills in the case system's reference {CASE_REF}, domestic abuse, urgent; picks "
        "the health visitor Jo Smith, Northgate Surgery (the mother's GP), Riverside Medical "
        "Practice (the partner's), the midwife Rhiannon Hughes, the probation officer Tessa "
        "Ward and the police domestic abuse desk. The modal has no free-text field: the account "
        "of the child stays in the case system. Send."
    )
    seen = len(demo.standin.calls())
    answer = demo.submit_view(
        REFERRER,
        view,
        {
            "external_ref": CASE_REF,
            "category": "domestic_abuse",
            "urgency": "urgent",
            "notify_people": list(NOTIFY_PEOPLE),
            "notify_teams": list(NOTIFY_TEAMS),
            "notify_roles": list(NOTIFY_ROLES),
        },
    )
    if answer and answer.get("response_action") == "errors":
        raise StoryError(f"the modal refused the referral: {answer.get('errors')}")
    posted = demo.settle(
        lambda: [
            c
            for c in demo.standin.calls()[seen:]
            if c.method == "chat.postEphemeral" and c.args.get("user") == amy
        ],
        "the private plan shown to Amy",
    )
    demo.collect()
    demo.referral_id = _referral_id_of(posted[0].args)
    demo.expect(Expected("referral_received", SAT_0210))
    demo.check(f"Referral {demo.referral_id} recorded at 02:10; Amy sees who will be asked, when.")

    demo.narrate("Handover's dispatcher runs: the on-call people hear at once.")
    demo.run_due()
    demo.expect(
        Expected("on_call_alerted", SAT_0210, recipient="edt-mgr-raj"),
        Expected("prompt_sent", SAT_0210, recipient="pol-pc-ahmed", target="role:police_dau"),
        *(Expected("long_gap_alert", SAT_0210, target=target) for target in LONG_GAP_TARGETS),
    )
    demo.check(
        "At 02:10 the on-call EDT manager Raj Malhotra was alerted, with a long-gap alert for "
        "each daytime professional (nobody reachable before Tuesday), and PC Yusuf Ahmed, on "
        "shift at the police domestic abuse desk, was prompted."
    )

    demo.advance_to(
        local(2026, 12, 26, 2, 13),
        "Raj reads the alerts on his phone and acknowledges each one: the new referral, and "
        "every long gap he will now plan around. Unacknowledged, each would be sent to him "
        "again at 02:20 and posted to the EDT channel at 02:30.",
    )
    alerts = demo.on_call_alerts("edt-mgr-raj")
    seen = len(demo.standin.calls())
    for alert in alerts:
        demo.click_in("edt-mgr-raj", alert, ONCALL_ACK)
    demo.settle(
        lambda: len(demo._calls_after("chat.update", seen)) >= len(alerts),
        "showing Raj's acknowledgements on his alerts",
    )
    demo.collect()
    demo.expect(
        *(
            Expected("on_call_acknowledged", local(2026, 12, 26, 2, 13), target=target)
            for target in ("role:edt_manager", *LONG_GAP_TARGETS)
        )
    )
    _respond(
        demo,
        local(2026, 12, 26, 2, 24),
        "PC Ahmed reads the prompt and clicks Acknowledge, inside the 15 minutes an urgent "
        "referral allows.",
        "pol-pc-ahmed",
        "handover_ack",
        "acknowledged",
    )
    demo.advance_to(local(2026, 12, 26, 2, 40))
    for event in ("on_call_repaged", "on_call_unanswered"):
        demo.expect_none(
            event,
            since=SAT_0210,
            until=local(2026, 12, 27, 0, 0),
            why="Raj acknowledged every alert at 02:13",
        )
    demo.check("02:40: Raj acknowledged all six alerts at 02:13; none was sent again.")

    demo.advance_to(
        local(2026, 12, 27, 12, 0),
        "Sunday 27 December: quiet. The daytime prompts are held in the database, not lost "
        "in anyone's head.",
    )
    demo.advance_to(
        local(2026, 12, 28, 9, 0),
        "Monday 28 December, 09:00: Boxing Day fell on a Saturday, so today is the substitute "
        "bank holiday in England. Nobody is at work; nothing is sent.",
    )
    demo.advance_to(local(2026, 12, 28, 17, 0))
    demo.expect_none(
        "prompt_sent",
        since=local(2026, 12, 26, 3, 0),
        until=local(2026, 12, 29, 0, 0),
        why="Monday 28 December 2026 is a bank holiday in England",
    )
    demo.check("No prompt on the bank holiday.")

    _prompted(
        demo,
        local(2026, 12, 29, 8, 0),
        "Tuesday 29 December, 08:00, the first working morning: Northgate Surgery opens. Its "
        "duty doctor today is Dr Owen Jones, who has no Slack ID in the rota: Handover finds "
        "him by his email address. The community midwife starts at 08:00 too. Riverside "
        "Medical Practice opens as well; it is on NHSmail, not on the council's Slack, so its "
        "practice manager Sam Bell is asked by email.",
        {
            "gp-drjones": "team:gp-northgate",
            PRACTICE_MANAGER: "team:gp-riverside",
            "mw-rhughes": "person:mw-rhughes",
        },
        "08:00: the GP practice's duty doctor, the midwife and, by email, Riverside's "
        "practice manager were prompted.",
    )
    _email_sent(demo, local(2026, 12, 29, 8, 0))

    _respond(
        demo,
        local(2026, 12, 29, 8, 10),
        "The referral is urgent: each prompt asks for a response within 15 working minutes. "
        "The midwife checks her records: the family is not known to her service.",
        "mw-rhughes",
        "handover_not_known",
        "not_known",
    )

    demo.advance_to(
        local(2026, 12, 29, 8, 12),
        "Dr Jones remembers the mother's last appointment and clicks I hold information.",
    )
    seen = len(demo.standin.calls())
    demo.click("gp-drjones", "handover_has_info")
    opened = demo.settle(
        lambda: demo._calls_after("views.open", seen), "opening the has-information modal"
    )
    demo.collect()
    info_view = opened[0].response["view"]
    contact_by = first_option(info_view, "contact_by")
    demo.narrate(
        "He chooses to call the social worker by "
        f"{option_label(info_view, 'contact_by', contact_by)}, by phone, and records it."
    )
    seen = len(demo.standin.calls())
    answer = demo.submit_view(
        "gp-drjones", info_view, {"contact_by": contact_by, "contact_method": "phone"}
    )
    if answer and answer.get("response_action") == "errors":
        raise StoryError(f"the has-information modal refused: {answer.get('errors')}")
    demo.settle(lambda: demo._calls_after("chat.update", seen), "updating Dr Jones's prompt")
    demo.collect()
    demo.expect(Expected("has_information", local(2026, 12, 29, 8, 12)))

    _answer_by_email(demo, local(2026, 12, 29, 8, 14))

    _prompted(
        demo,
        local(2026, 12, 29, 9, 0),
        "09:00: health visiting opens. Jo Smith is on leave until 8 January, so her deputy "
        "Kiran Patel is asked; the probation officer Tessa Ward is asked too.",
        {"hv-kpatel": "person:hv-jsmith", "prob-tward": "person:prob-tward"},
        "09:00: Kiran Patel (deputy for Jo Smith) and Tessa Ward were prompted.",
    )

    _respond(
        demo,
        local(2026, 12, 29, 9, 10),
        "Kiran acknowledges; she will look up the family's records this morning.",
        "hv-kpatel",
        "handover_ack",
        "acknowledged",
    )

    demo.narrate("Tessa Ward is in court all day and does not see the prompt.")
    steps = (
        (
            local(2026, 12, 29, 9, 15),
            "reminder_sent",
            "09:15, fifteen working minutes on (urgent): a reminder.",
        ),
        (
            local(2026, 12, 29, 9, 30),
            "escalated",
            "09:30, thirty working minutes on: escalation to her chain and her manager.",
        ),
        (
            local(2026, 12, 29, 10, 0),
            "escalated_channel",
            "10:00, an hour on: escalation to the MASH managers' channel.",
        ),
        (
            local(2026, 12, 29, 17, 0),
            "breach",
            "17:00, the end of her working day without a response: a breach.",
        ),
    )
    for instant, event, words in steps:
        demo.advance_to(instant)
        demo.expect(Expected(event, instant, target="person:prob-tward"))
        demo.check(words)
    for event in ("reminder_sent", "escalated", "escalated_channel", "breach"):
        for record in demo.log_records():
            if record["event"] == event and record["target"] != "person:prob-tward":
                raise StoryError(
                    f"`{event}` for {record['target']}, which had responded or was not due"
                )

    demo.advance_to(
        local(2026, 12, 30, 9, 5),
        "Wednesday 30 December, 09:05: Grace Osei, the MASH manager, opens Handover's Home "
        "tab in Slack, then reads the report and the log.",
    )
    demo.open_home("mash-mgr-osei")

    # The coverage it really achieved, by the one rule every view applies (docs/coverage.md).
    assert demo.referral_id is not None
    with demo.session_factory() as session:
        coverage = coverage_for_referrals(session, [demo.referral_id], TZ)[demo.referral_id]
    achieved = {a: str(coverage.states[a]) for a in STRATEGY_AGENCIES}
    if achieved != EXPECTED_COVERAGE:
        raise StoryError(f"coverage {achieved}, not {EXPECTED_COVERAGE}")
    words = ", ".join(
        f"{a.replace('_', ' ')} {COVERAGE_WORDS[coverage.states[a]]}" for a in STRATEGY_AGENCIES
    )
    demo.check(
        f"Strategy-discussion coverage of {demo.referral_id}: {words}. Social care is covered "
        "by the EDT itself, health by the GPs and the midwife who answered; the police desk only "
        "acknowledged, so police stay pending until they say what they hold."
    )


def _http(url: str, body: bytes | None = None) -> tuple[int, str]:
    """GET (or POST a form to) one of the bot's pages, following redirects."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8", "replace")


def _link_in(text: str, label: str) -> str:
    """The link an email gives for one answer ('I hold information:' then the URL)."""
    lines = [line.strip() for line in text.splitlines()]
    for first, second in itertools.pairwise(lines):
        if first == f"{label}:" and "/respond/" in second:
            return second
    raise StoryError(f"the email has no link for {label!r}")


def _referral_id_of(args: dict[str, Any]) -> str:
    text = str(args.get("text") or "")
    for word in text.replace(":", " ").split():
        if word.startswith("HO-"):
            return word
    raise StoryError(f"no referral ID in the plan shown to Amy: {text!r}")


def _prompted(
    demo: Demo, instant: datetime, narration: str, targets: dict[str, str], check: str
) -> None:
    """At `instant` each recipient is prompted for their target (recipient -> target)."""
    demo.advance_to(instant, narration)
    demo.expect(
        *(
            Expected("prompt_sent", instant, recipient=recipient, target=target)
            for recipient, target in targets.items()
        )
    )
    demo.check(check)


def _email_sent(demo: Demo, instant: datetime) -> None:
    """The prompt to Riverside's practice manager went by email, and the log says so."""
    [sent] = [
        r
        for r in demo.log_records()
        if r["event"] == "prompt_sent" and r["recipient"] == PRACTICE_MANAGER
    ]
    mails = demo.relay.messages()
    if sent["detail"].get("channel") != "email" or not mails:
        raise StoryError("the prompt to Riverside's practice manager did not go by email")
    if sent["detail"].get("message_id") != mails[-1].message_id:
        raise StoryError("the log does not name the email's Message-ID")
    demo.check(
        f"At {instant.astimezone(TZ):%H:%M} the log records the prompt sent by email, with its "
        f"Message-ID {mails[-1].message_id}; the email names only the referral in its subject."
    )


def _answer_by_email(demo: Demo, instant: datetime) -> None:
    """Riverside's practice manager answers on Handover's page, from the email's link."""
    demo.advance_to(
        instant,
        "Sam Bell, Riverside's practice manager, reads Handover's email on her phone. The "
        "practice saw the father last month. She taps I hold information.",
    )
    [mail] = demo.relay.messages(to="sam.bell@riverside.nhs.example")
    url = _link_in(mail.body(), "I hold information")
    who = "Sam Bell (gp-riv-pm-bell)"
    page = demo.open_page(url, who)
    demo.narrate(
        "She will phone the social worker by 10:00 and taps Record. The page needs no "
        "JavaScript and no Slack account; the link works only for her, for this prompt."
    )
    seen = len(demo.standin.calls())
    answered = demo.submit_page(
        url, page, who, contact_by=_option_value(page, "Today 10:00"), method="phone"
    )
    if "Thank you: your answer is recorded" not in answered:
        raise StoryError("the page did not record Sam Bell's answer")
    demo.settle(
        lambda: [c for c in demo.standin.calls()[seen:] if c.args.get("thread_ts")],
        "the reply under the referral's card",
    )
    demo.run_due()  # the card shows her answer
    demo.expect(Expected("has_information", instant, target="team:gp-riverside"))
    demo.check(
        f"{instant.astimezone(TZ):%H:%M}: Sam Bell's answer is in the log and on the EDT card, "
        "as if she had clicked in Slack; the social worker knows to expect her call by 10:00."
    )


def _option_value(page: str, label: str) -> str:
    """The value of the page's select option labelled `label`."""
    for value, text in re.findall(r'<option value="([^"]*)"[^>]*>([^<]*)</option>', page):
        if text.strip() == label:
            return value
    raise StoryError(f"the page offers no {label!r}")


def _respond(
    demo: Demo,
    instant: datetime,
    narration: str,
    person_id: str,
    action_id: str,
    event: str,
) -> None:
    """At `instant` a person clicks a button of their prompt; the log records `event` then."""
    demo.advance_to(instant, narration)
    seen = len(demo.standin.calls())
    demo.click(person_id, action_id)
    demo.settle(lambda: demo._calls_after("chat.update", seen), f"updating {person_id}'s prompt")
    demo.collect()
    demo.expect(Expected(event, instant))


# ----- the command ---------------------------------------------------------------------------


def _report_and_log(demo: Demo) -> tuple[str, str]:
    from bot.cli.log import write_log, write_report_table
    from bot.services.logbook import LogWindow
    from bot.services.reports import build_report

    report = io.StringIO()
    log = io.StringIO()
    with demo.session_factory() as session:
        write_report_table(build_report(session, LogWindow(), TZ), TZ, report)
        write_log(session, LogWindow(), "table", TZ, log)
    return report.getvalue(), log.getvalue()


def _report_page(demo: Demo) -> ReportPage:
    """The managers' report of the weekend, as `handover report --html` draws it."""
    from bot.services.logbook import LogWindow
    from bot.services.report_page import build_report_page

    with demo.session_factory() as session:
        return build_report_page(
            session,
            LogWindow(),
            TZ,
            demo.clock.now(),
            channels={
                EDT_CHANNEL: "#edt-referrals (the EDT channel)",
                ESCALATION_CHANNEL: "#mash-managers (the escalation channel)",
            },
        )


class _Printer:
    """Prints entries as they happen, with a heading for each new day."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.day = None
        self.directory: Directory | None = None

    def say(self, text: str) -> None:
        """Print, unless the reader has gone (`handover demo | head`): the story goes on."""
        try:
            print(text, file=self.out, flush=True)
        except BrokenPipeError:
            devnull = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
            with contextlib.suppress(AttributeError, OSError, ValueError):
                # The interpreter flushes stdout at exit; point its descriptor somewhere quiet.
                os.dup2(devnull.fileno(), self.out.fileno())
            self.out = devnull

    def __call__(self, entry: Entry) -> None:
        assert self.directory is not None
        day = entry.at.astimezone(TZ).date()
        if day != self.day:
            self.say(day_heading(entry.at, TZ))
            self.day = day
        self.say("\n".join(entry_lines(entry, self.directory, TZ)))


def run_demo(html_path: Path, out: TextIO) -> int:
    """Run the story, print it, write the HTML transcript; 0 when every beat happened."""
    started = time.monotonic()
    printer = _Printer(out)
    printer.say(TITLE)
    printer.say(textwrap.fill(INTRO, 100, break_on_hyphens=False))
    ok = True
    failure = ""
    report_text = log_text = ""
    report_page = None
    with isolated_environment(), tempfile.TemporaryDirectory(prefix="handover-demo-") as tmp:
        demo = Demo(Path(tmp), printer)
        printer.directory = demo.directory
        with demo:
            try:
                tell_story(demo)
            except StoryError as exc:
                ok, failure = False, str(exc)
                demo.collect()
                demo.fail(f"The story did not happen as told: {failure}")
            except Exception as exc:
                logger.exception("the demo failed")
                ok, failure = False, f"{type(exc).__name__}: {exc}"
                demo.fail(f"The demo broke: {failure}")
            report_text, log_text = _report_and_log(demo)
            report_page = _report_page(demo)
        entries, directory = demo.entries, demo.directory
    printer.say("\n" + "\u2550" * 24 + " handover report " + "\u2550" * 24)
    printer.say(report_text)
    printer.say("\u2550" * 24 + " handover log " + "\u2550" * 27)
    printer.say(log_text)
    elapsed = time.monotonic() - started
    if ok:
        verdict = (
            f"Demo complete: every step happened as told, at the exact instants "
            f"({elapsed:.1f} s of real time)."
        )
    else:
        verdict = f"DEMO FAILED: {failure}"
    page = transcript_html(
        entries,
        directory,
        TZ,
        title=TITLE,
        intro=INTRO,
        verdict=verdict,
        ok=ok,
        page=report_page,
    )
    html_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.write_text(page, encoding="utf-8")
    printer.say(verdict)
    printer.say(f"Transcript written to {html_path}")
    if not ok:
        print(f"handover demo: {failure}", file=sys.stderr)
    return 0 if ok else 1


def demo_command(args: argparse.Namespace, settings: Settings) -> int:
    """`handover demo [--html FILE]`; the settings from the environment are not used."""
    if not getattr(args, "verbose", False):
        # The story is the output; the bot's own INFO logs would drown it.
        logging.getLogger().setLevel(logging.WARNING)
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    return run_demo(Path(args.html), sys.stdout)
