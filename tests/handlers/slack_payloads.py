"""Signed Slack requests against the real bot, with the Slack stand-in as its peer.

Payload shapes follow tests/data/slack-samples (`interactive-components_BlockActionPayload`,
`views_ViewSubmissionPayload`, `slash-commands_SlashCommandPayload`); `SAMPLE_KEYS` holds each
sample's top-level keys so tests can check that what we send is a subset of what Slack sends.

`running_bot` starts the stand-in, a catcher for `response_url` posts, and the bot (create_app
and create_web_app); `build_scenario` writes a small rota and a referral whose prompt was sent,
directly with the models.

How a request reaches the bot (the inbound side only: the bot's Web API calls always go to the
stand-in over HTTP, and `respond()` posts to the catcher over HTTP):

- `running_bot(factory, in_process=True)`: no server. `Harness.post` hands the signed bytes to
  Bolt as its Flask adapter would,
  `app.dispatch(BoltRequest(body=..., headers=...))`: Bolt still checks the signature, runs the
  middleware (event dedupe), acks and runs the listener in its thread pool, as in production.
  Use this for handler behaviour; it is what tests/handlers use.
- `running_bot(factory)` (the default, for tests/chaos and anything about the HTTP layer), or
  `harness.http` on an in-process harness: a real werkzeug server in front of the Flask app of
  bot/web/http.py, so the signature guard, the 400 before Bolt, the database slots and the
  replay guard are in the path. An in-process harness starts that server only when `.http` is
  first used.

A new handler test module: a `bot` fixture yielding `running_bot(session_factory,
in_process=True)`, and `build_scenario(session_factory, bot.client)` for the data; then
`bot.send_payload(block_actions(...))`, `bot.command_answer(user, "text")`, `bot.calls(method)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Flask
from slack_bolt import App, BoltRequest
from slack_sdk import WebClient
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.serving import make_server

from bot.clock import FixedClock
from bot.context import Services
from bot.delivery.home import HomeRefreshes
from bot.delivery.kinds import RowState
from bot.delivery.pacing import Pacer
from bot.models import OutboxMessage, Target
from bot.settings import Settings
from bot.slack_standin import SlackStandIn
from bot.slackjobs.queue import count_jobs
from bot.slackjobs.writer import JobWriter
from bot.web.app import create_app
from bot.web.http import create_web_app
from bot.web.server import slack_job_runner, workspace_clients
from bot.web.work import SlackTraffic, WorkQueue
from handlers.blocks import response as modals
from handlers.blocks.prompt import build_prompt_message
from rota.models import Person, RotaVersion, Shift, Team
from tests.bot.factories import new_referral

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test"
TEAM_ID = "T0STANDIN"
APP_ID = "A0HANDOVER"
EDT_CHANNEL = "C0EDTCARDS"
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "slack-samples"

# Monday 16 November 2026, 09:12 GMT: health visitors are at work, the EDT night is over.
NOW = datetime(2026, 11, 16, 9, 12, tzinfo=UTC)
REFERRAL_ID = "HO-TEST01"
SUMMARY = "Mother assaulted while holding baby NARRATIVE-5521"


def _sample_keys(name: str) -> frozenset[str]:
    return frozenset(json.loads((SAMPLES / name).read_text(encoding="utf-8")))


SAMPLE_KEYS = {
    "block_actions": _sample_keys("interactive-components_BlockActionPayload.json"),
    "view_submission": _sample_keys("views_ViewSubmissionPayload.json"),
    "slash_command": _sample_keys("slash-commands_SlashCommandPayload.json"),
}


def slack_user(person_id: str) -> str:
    """The Slack user ID the scenario gives a person."""
    return "U" + person_id.upper().replace("-", "")


# ----- signing and payloads -----------------------------------------------------------------


def sign(body: bytes, *, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict:
    """Slack's request signature headers for a raw body."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = b"v0:" + ts.encode() + b":" + body
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def _user(user_id: str, team: str = TEAM_ID) -> dict[str, str]:
    return {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": team}


def block_actions(
    user_id: str,
    action_id: str,
    value: str,
    *,
    channel_id: str,
    message_ts: str,
    trigger_id: str = "13345224609.738474920.8088930838d88f008e0",
    team: str = TEAM_ID,
) -> dict[str, Any]:
    """A block_actions payload for a button clicked in a message (by a user of `team`: the
    home workspace unless a partner's team ID is given)."""
    return {
        "type": "block_actions",
        "team": {"id": team, "domain": "handover-standin"},
        "user": _user(user_id, team),
        "api_app_id": APP_ID,
        "token": "verification-token-unused",
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id,
        "channel": {"id": channel_id, "name": "directmessage"},
        "message": {"type": "message", "ts": message_ts, "text": "", "blocks": []},
        "response_url": "https://hooks.slack.invalid/actions/T0/1/unused",
        "actions": [
            {
                "action_id": action_id,
                "block_id": "handover_prompt_actions",
                "text": {"type": "plain_text", "text": action_id},
                "value": value,
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
        "state": {"values": {}},
        "is_enterprise_install": False,
    }


def view_submission(
    user_id: str,
    callback_id: str,
    *,
    private_metadata: str,
    values: dict[str, Any],
    view_id: str = "V0000000001",
) -> dict[str, Any]:
    """A view_submission payload with the given state values."""
    return {
        "type": "view_submission",
        "team": {"id": TEAM_ID, "domain": "handover-standin"},
        "user": _user(user_id),
        "api_app_id": APP_ID,
        "token": "verification-token-unused",
        "trigger_id": "13345224609.738474920.8088930838d88f008e1",
        "view": {
            "id": view_id,
            "team_id": TEAM_ID,
            "type": "modal",
            "title": {"type": "plain_text", "text": "Handover"},
            "private_metadata": private_metadata,
            "callback_id": callback_id,
            "state": {"values": values},
            "hash": "1700000000.abcdef",
            "app_id": APP_ID,
            "bot_id": "B0HANDOVER",
        },
        "is_enterprise_install": False,
    }


def has_info_values(contact_by: Any, method: Any = "phone") -> dict[str, Any]:
    """The has-information modal's state: the time chosen (its option's value) and the method."""
    slot = {"type": "static_select", "selected_option": {"value": contact_by}}
    how = {"type": "radio_buttons", "selected_option": {"value": method}}
    return {
        modals.BLOCK_CONTACT_BY: {modals.ACTION_CONTACT_BY: slot},
        modals.BLOCK_METHOD: {modals.ACTION_METHOD: how},
    }


def redirect_values(colleague: Any) -> dict[str, Any]:
    """The redirect modal's state: the colleague chosen (their person_id)."""
    chosen = {"type": "external_select", "selected_option": {"value": colleague}}
    return {modals.BLOCK_COLLEAGUE: {modals.ACTION_COLLEAGUE: chosen}}


def block_suggestion(user_id: str, action_id: str, block_id: str, value: str) -> dict[str, Any]:
    """An options request from an external select in a modal."""
    return {
        "type": "block_suggestion",
        "user": _user(user_id),
        "team": {"id": TEAM_ID, "domain": "handover-standin"},
        "api_app_id": APP_ID,
        "token": "verification-token-unused",
        "action_id": action_id,
        "block_id": block_id,
        "value": value,
        "container": {"type": "view", "view_id": "V0000000001"},
        "view": {"id": "V0000000001", "type": "modal", "callback_id": "x", "state": {}},
    }


def app_home_opened(event_id: str, user: str, *, at: float | None = None) -> dict[str, Any]:
    """An Events API delivery of `app_home_opened` (Slack's event_callback envelope)."""
    at = time.time() if at is None else at
    return {
        "token": "verification-token-unused",
        "team_id": TEAM_ID,
        "api_app_id": APP_ID,
        "event": {
            "type": "app_home_opened",
            "user": user,
            "channel": "D0HOME0001",
            "tab": "home",
            "event_ts": f"{at:.6f}",
        },
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(at),
        "authorizations": [{"team_id": TEAM_ID, "user_id": "U0HANDOVER", "is_bot": True}],
    }


def slash_command(
    user_id: str, text: str, *, response_url: str, channel_id: str = "C0SOMEWHERE"
) -> dict[str, str]:
    """The form fields of `/handover TEXT`."""
    return {
        "token": "verification-token-unused",
        "api_app_id": APP_ID,
        "team_id": TEAM_ID,
        "team_domain": "handover-standin",
        "channel_id": channel_id,
        "channel_name": "edt",
        "user_id": user_id,
        "user_name": user_id.lower(),
        "command": "/handover",
        "text": text,
        "response_url": response_url,
        "trigger_id": "13345224609.738474920.8088930838d88f008e2",
        "is_enterprise_install": "false",
    }


# ----- the response_url catcher -------------------------------------------------------------


class ResponseCatcher:
    """Records what Bolt's `respond()` posts to a slash command's response_url."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with catcher._lock:
                    catcher.posts.append({"path": self.path, **body})
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll: shutdown() waits for it (the default 0.5 s is paid by every test).
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()
        self._counter = 0

    def new_url(self) -> str:
        """A fresh response_url; posts to it are recorded with its path."""
        self._counter += 1
        return f"http://127.0.0.1:{self._server.server_address[1]}/respond/{self._counter}"

    def answers(self, url: str) -> list[dict[str, Any]]:
        path = urlsplit(url).path
        with self._lock:
            return [p for p in self.posts if p["path"] == path]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ----- the harness --------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll until `predicate()` is truthy (Bolt runs listeners after ack, in a thread)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the bot")
        time.sleep(interval)


@dataclass
class HttpAnswer:
    status: int
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class _WebServer:
    """The Flask app of bot/web/http.py on a free port, built and started on first use."""

    def __init__(self, build: Callable[[], Flask]) -> None:
        self._build = build
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def port(self) -> int:
        with self._lock:
            if self._server is None:
                self._server = make_server("127.0.0.1", 0, self._build(), threaded=True)
                self._thread = threading.Thread(
                    target=self._server.serve_forever, args=(0.05,), daemon=True
                )
                self._thread.start()
            return self._server.server_port

    def stop(self) -> None:
        with self._lock:
            if self._server is not None:
                self._server.shutdown()
                assert self._thread is not None
                self._thread.join(timeout=5)
                self._server.server_close()


@dataclass
class Harness:
    standin: SlackStandIn
    services: Services
    clock: FixedClock
    client: WebClient
    catcher: ResponseCatcher
    bolt: App
    server: _WebServer
    over_http: bool
    wakes: list[int] = field(default_factory=list)

    @property
    def http(self) -> Harness:
        """The same bot, its requests sent over real HTTP through bot/web/http.py."""
        return replace(self, over_http=True)

    @property
    def port(self) -> int:
        return self.server.port

    def post(self, body: bytes, content_type: str, headers: dict[str, str]) -> HttpAnswer:
        """POST raw bytes to /slack/events, or hand them to Bolt as its Flask adapter would."""
        if not self.over_http:
            request = BoltRequest(
                # Flask's request.get_data(as_text=True), which the adapter uses.
                body=body.decode("utf-8", errors="replace"),
                headers={"Content-Type": content_type, **headers},
            )
            response = self.bolt.dispatch(request)
            return HttpAnswer(response.status, response.body.encode())
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/slack/events", body, {"Content-Type": content_type, **headers})
            response = conn.getresponse()
            return HttpAnswer(response.status, response.read())
        finally:
            conn.close()

    def send_payload(self, payload: dict[str, Any], **sign_args: Any) -> HttpAnswer:
        """A signed interactivity request (`payload=<json>`)."""
        body = urlencode({"payload": json.dumps(payload)}).encode()
        return self.post(body, "application/x-www-form-urlencoded", sign(body, **sign_args))

    def submit_view(self, user_id: str, view: dict[str, Any], values: dict[str, Any]) -> HttpAnswer:
        """`user_id` submits the modal `view` (as views.open was given it) with state `values`."""
        return self.send_payload(
            view_submission(
                user_id,
                view["callback_id"],
                private_metadata=view["private_metadata"],
                values=values,
            )
        )

    def send_command(self, user_id: str, text: str, **sign_args: Any) -> tuple[HttpAnswer, str]:
        """A signed `/handover TEXT`; returns the HTTP answer and its response_url."""
        url = self.catcher.new_url()
        body = urlencode(slash_command(user_id, text, response_url=url)).encode()
        answer = self.post(body, "application/x-www-form-urlencoded", sign(body, **sign_args))
        return answer, url

    def command_answer(self, user_id: str, text: str) -> dict[str, Any]:
        """Run `/handover TEXT` and wait for its (single) private answer."""
        answer, url = self.send_command(user_id, text)
        assert answer.status == 200
        return wait_for(lambda: self.catcher.answers(url))[0]

    def calls(self, method: str) -> list[Any]:
        return self.standin.calls(method)


@contextmanager
def running_bot(
    session_factory: sessionmaker[Session],
    *,
    now: datetime = NOW,
    in_process: bool = False,
    slack_clock: Callable[[], float] | None = None,
    pacer: Pacer | None = None,
    job_workers: int | None = None,
    **settings_overrides: Any,
) -> Iterator[Harness]:
    """The stand-in, the response_url catcher and the bot: served over HTTP on a free port, or
    (`in_process`) given requests through `App.dispatch`, its server started only if needed.
    `slack_clock` is the stand-in's (its calls' instants), `pacer` and `job_workers` the
    jobs' runner's (a pacer on that simulated clock, one thread: exact instants)."""
    standin = SlackStandIn(
        channels=[EDT_CHANNEL], allow_unknown_users=True, rate_limit=None, clock=slack_clock
    )
    standin.start()
    catcher = ResponseCatcher()
    clock = FixedClock(now)
    settings = Settings(
        slack_bot_token=BOT_TOKEN,
        slack_signing_secret=SIGNING_SECRET,
        slack_api_url=standin.url,
        edt_channel=EDT_CHANNEL,
        alert_roles=("edt_manager",),
        **settings_overrides,
    )
    wakes: list[int] = []
    # The queue of the listeners' work after the ack (handlers/deferred.py) and the Home
    # redraws, as create_app would make them: here, so the teardown can wait for both.
    traffic = SlackTraffic()
    work = WorkQueue(traffic=traffic)
    # The clicks' jobs: written to slack_jobs after the ack and run by a runner, as under
    # `serve` with its dispatcher (bot/web/server.py).
    engine = session_factory.kw["bind"]
    jobs = JobWriter(engine)
    client = WebClient(base_url=standin.url, token=BOT_TOKEN)
    services = Services(
        settings,
        session_factory,
        clock,
        lambda: wakes.append(1),
        after_ack=work.submit,
        slack_traffic=traffic,
        slack_jobs=jobs,
        homes=HomeRefreshes(session_factory, settings, clock),
        # Each workspace's client, as `serve` has it: the clicks' jobs reach a partner
        # workspace through it (the request's client is gone by then).
        slack_client_for=workspace_clients(settings, client, engine),
    )
    bolt = create_app(settings, client, services=services)
    runner = slack_job_runner(
        services, client, "test-runner", pacer=pacer, traffic=traffic, workers=job_workers
    )
    jobs.on_written = runner.wake
    runner.start()
    server = _WebServer(lambda: create_web_app(bolt, services))
    harness = Harness(
        standin, services, clock, client, catcher, bolt, server, not in_process, wakes
    )
    if not in_process:
        server.port  # noqa: B018  (start serving now)
    try:
        yield harness
    finally:
        server.stop()
        # The work the listeners queued after their ack (in memory, and the clicks' jobs), then
        # the Home redraws that work asked for: finished here, not against the next test's
        # database.
        work.shutdown(wait=True)
        jobs.shutdown()
        # A job backing off, or a database the test took away: the test's own doing.
        with contextlib.suppress(AssertionError, SQLAlchemyError):
            wait_for(lambda: not open_jobs(session_factory), timeout=10)
        runner.shutdown()
        services.homes.drain(timeout=30)
        services.homes.stop()
        catcher.stop()
        standin.stop()


def open_jobs(session_factory: sessionmaker[Session]) -> int:
    """Click jobs not yet done or dropped (bot/slackjobs/)."""
    with session_factory() as session:
        return count_jobs(session).waiting


# ----- the scenario -------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    referral_id: str
    target_id: int  # person:hv-kpatel, prompted
    prompt_id: int  # its sent prompt
    dm_channel: str
    dm_ts: str
    card_ts: str
    held_target_id: int  # team:gp-northgate, held until tomorrow
    held_prompt_id: int
    escalation_ids: tuple[int, ...]  # hv-kpatel's pending reminder and escalation
    role_target_id: int  # role:police_dau, prompted to pc-jones
    role_prompt_id: int
    role_dm: tuple[str, str]


def build_rota(session: Session) -> None:
    """Teams, people and shifts of the scenario.

    - hv-north (health, Mon-Fri 09:00-17:00, manager hv-lead): hv-kpatel (deputy hv-cover),
      hv-cover, hv-jones, hv-lead (manager), hv-senior (manager permission, not the team manager)
    - gp-northgate (health, manager gp-mgr with the manager permission)
    - edt (shift-only): edt-amy (referrer), edt-bob (no permissions), edt-mgr (referrer; manager;
      on shift as edt_manager now)
    - police-dau (shift-only): pc-jones on shift as police_dau now; pol-sgt (manager permission)
    """
    imported = NOW - timedelta(days=3)
    session.add(RotaVersion(version=7, imported_at=imported, files="x", summary="{}"))
    teams = [
        Team(team_id="hv-north", name="Health Visiting North", agency="NHS",
             agency_type="health", region="england", hours=None, manager_id="hv-lead"),
        Team(team_id="gp-northgate", name="Northgate Surgery", agency="GP",
             agency_type="health", region="england", hours=None, manager_id="gp-mgr"),
        Team(team_id="edt", name="Emergency Duty Team", agency="Council",
             agency_type="social_care", region="england", hours="none", manager_id="edt-mgr"),
        Team(team_id="police-dau", name="Domestic Abuse Unit", agency="Police",
             agency_type="police", region="england", hours="none", manager_id=None),
    ]  # fmt: skip
    session.add_all(teams)
    session.flush()
    people = [
        ("hv-kpatel", "hv-north", "", "hv-cover"),
        ("hv-cover", "hv-north", "", None),
        ("hv-jones", "hv-north", "", None),
        ("hv-lead", "hv-north", "manager", None),
        ("hv-senior", "hv-north", "manager", None),
        ("gp-mgr", "gp-northgate", "manager", None),
        ("edt-amy", "edt", "referrer", None),
        ("edt-bob", "edt", "", None),
        ("edt-mgr", "edt", "referrer;manager;oversight", None),  # the EDT manager sees all
        ("pc-jones", "police-dau", "", None),
        ("pol-sgt", "police-dau", "manager", None),
    ]
    session.add_all(
        Person(
            person_id=pid,
            name=pid.replace("-", " ").title(),
            slack_user=slack_user(pid),
            email=f"{pid}@example.org",
            team_id=team,
            role="worker",
            permissions=perms,
            deputy_id=deputy,
        )
        for pid, team, perms, deputy in people
    )
    session.flush()
    session.add_all(
        [
            Shift(person_id="edt-mgr", role="edt_manager",
                  start_at=NOW - timedelta(hours=16), end_at=NOW + timedelta(hours=8)),
            Shift(person_id="pc-jones", role="police_dau",
                  start_at=NOW - timedelta(hours=2), end_at=NOW + timedelta(hours=6)),
        ]
    )  # fmt: skip


def build_scenario(session_factory: sessionmaker[Session], client: WebClient) -> Scenario:
    """The rota, a referral received on Saturday night, its card, and its prompts as if sent."""
    tz = Settings().timezone
    received = NOW - timedelta(days=2)
    with session_factory.begin() as session:
        build_rota(session)
        referral = new_referral(
            REFERRAL_ID,
            received,
            external_ref="LCS-2026-000123",
            summary=SUMMARY,
            source="slack",
            rota_version=7,
        )
        session.add(referral)
        session.flush()
        card = client.chat_postMessage(channel=EDT_CHANNEL, text="Handover referral HO-TEST01")
        referral.card_channel, referral.card_ts = card["channel"], card["ts"]
        target = Target(referral_id=REFERRAL_ID, position=0, spec="person:hv-kpatel",
                        planned_via="self", planned_recipient="hv-kpatel",
                        due_at=NOW - timedelta(minutes=12), state="prompted")  # fmt: skip
        held = Target(referral_id=REFERRAL_ID, position=1, spec="team:gp-northgate",
                      planned_via="duty", planned_recipient="gp-mgr",
                      due_at=NOW + timedelta(days=1), state="held")  # fmt: skip
        role = Target(referral_id=REFERRAL_ID, position=2, spec="role:police_dau",
                      planned_via="shift", planned_recipient="pc-jones",
                      due_at=received, state="prompted")  # fmt: skip
        session.add_all([target, held, role])
        session.flush()

        def sent_prompt(t: Target, recipient: str) -> tuple[OutboxMessage, str, str]:
            prompt = OutboxMessage(referral_id=REFERRAL_ID, target_id=t.id, kind="prompt",
                            recipient_id=recipient, due_at=t.due_at or NOW, state=RowState.SENT,
                            sent_at=t.due_at)  # fmt: skip
            session.add(prompt)
            session.flush()
            message = build_prompt_message(
                referral, prompt.id, due_at=prompt.due_at, respond_by=NOW + timedelta(hours=4),
                tz=tz, via=t.planned_via, target=t.spec,
            )  # fmt: skip
            posted = client.chat_postMessage(
                channel=slack_user(recipient),
                metadata={
                    "event_type": "handover_prompt",
                    "event_payload": {"referral_id": REFERRAL_ID, "prompt_id": prompt.id},
                },
                **message,
            )
            prompt.message_channel, prompt.message_ts = posted["channel"], posted["ts"]
            return prompt, posted["channel"], posted["ts"]

        prompt, dm_channel, dm_ts = sent_prompt(target, "hv-kpatel")
        role_prompt, role_channel, role_ts = sent_prompt(role, "pc-jones")
        held_prompt = OutboxMessage(referral_id=REFERRAL_ID, target_id=held.id, kind="prompt",
                             due_at=held.due_at, state=RowState.PENDING)  # fmt: skip
        reminder = OutboxMessage(referral_id=REFERRAL_ID, target_id=target.id, kind="reminder",
                          recipient_id="hv-kpatel", due_at=NOW + timedelta(minutes=48),
                          state=RowState.PENDING)  # fmt: skip
        escalation = OutboxMessage(referral_id=REFERRAL_ID, target_id=target.id, kind="escalation",
                            recipient_id="hv-cover", due_at=NOW + timedelta(minutes=108),
                            state=RowState.PENDING)  # fmt: skip
        session.add_all([held_prompt, reminder, escalation])
        session.flush()
        return Scenario(
            referral_id=REFERRAL_ID,
            target_id=target.id,
            prompt_id=prompt.id,
            dm_channel=dm_channel,
            dm_ts=dm_ts,
            card_ts=str(card["ts"]),
            held_target_id=held.id,
            held_prompt_id=held_prompt.id,
            escalation_ids=(reminder.id, escalation.id),
            role_target_id=role.id,
            role_prompt_id=role_prompt.id,
            role_dm=(role_channel, role_ts),
        )
