"""End-to-end harness: the installed `handover` commands and the Slack stand-in as processes.

Everything talks over real HTTP. Time is simulated with a clock file (HANDOVER_CLOCK_FILE)
that every bot process reads, so a test can move a whole deployment through a weekend.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from tests.conftest import PG_URL, postgres_database

SAMPLE_ROTA = Path(__file__).resolve().parents[2] / "rota" / "sample"
HANDOVER = [sys.executable, "-m", "bot"]
SIGNING_SECRET = "e2e-signing-secret"
API_SECRET = "e2e-api-secret-of-at-least-32-bytes"
EDT_CHANNEL = "C0EDTCARDS"
ESCALATION_CHANNEL = "C0MASHMGRS"


_names = itertools.count()


@contextmanager
def fresh_database(backend: str, workdir: Path, template: str | None = None) -> Iterator[str]:
    """The URL of a database of its own (SQLite file, or PostgreSQL database): empty, or a copy
    of `template` (the SQLite file, or the name of the PostgreSQL database, to copy)."""
    if backend == "sqlite":
        path = workdir / "handover.db"
        if template:
            shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    name = f"{make_url(PG_URL).database}_e2e_{os.getpid()}_{next(_names)}"
    with postgres_database(name, template) as url:
        yield url


PORT_ATTEMPTS = 5
ADDRESS_IN_USE = "Address already in use"
LISTENING = "handover: listening on port"  # what serve prints once it has bound its port


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll until `predicate()` is truthy; return its value or fail with the last one."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s; last value: {value!r}")


def slack_signature(
    body: bytes, *, secret: str = SIGNING_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    """Slack's signature headers for `body`, at `timestamp` (default: real now)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


def _http(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        payload = error.read()
        try:
            return error.code, json.loads(payload or b"null")
        except ValueError:
            return error.code, payload.decode("utf-8", "replace")


@dataclass
class StandInProcess:
    """`python -m bot.slack_standin` as a process, with its control API."""

    process: subprocess.Popen
    url: str

    @property
    def control(self) -> str:
        return self.url.removesuffix("api/") + "_standin/"

    def get(self, path: str, **query: str) -> Any:
        suffix = f"?{urllib.parse.urlencode(query)}" if query else ""
        status, body = _http("GET", self.control + path + suffix)
        assert status == 200, (status, body)
        return body

    def post(self, path: str, payload: Any) -> Any:
        status, body = _http(
            "POST",
            self.control + path,
            json.dumps(payload).encode(),
            {"Content-Type": "application/json"},
        )
        assert status == 200, (status, body)
        return body

    def calls(self, method: str | None = None) -> list[dict]:
        body = self.get("calls", **({"method": method} if method else {}))
        return body["calls"] if isinstance(body, dict) else body

    def dm(self, user: str) -> list[dict]:
        body = self.get("messages", user=user)
        return body["messages"] if isinstance(body, dict) else body

    def channel(self, channel: str) -> list[dict]:
        body = self.get("messages", channel=channel)
        return body["messages"] if isinstance(body, dict) else body

    def all_text(self) -> str:
        body = self.get("text")
        return body["text"] if isinstance(body, dict) else body

    def messages(self) -> list[dict]:
        """Every stored message in every channel, oldest first."""
        return self.get("messages")["messages"]

    def views(self) -> list[dict]:
        """Every modal and Home view the bot opened or published."""
        return self.get("views")["views"]

    def inject(self, *faults: dict[str, Any]) -> None:
        """Queue faults (`{"kind": "ratelimit" | "status" | "hang" | "error", ...}`)."""
        self.post("faults", {"faults": list(faults)})

    def clear_faults(self) -> None:
        status, body = _http("DELETE", self.control + "faults")
        assert status == 200, (status, body)

    def prompt_messages(self, *, alerts: bool = False) -> dict[int, list[dict]]:
        """Stored bot messages grouped by the outbox row that posted them.

        Prompts (`handover_prompt`, by prompt_id) by default; alerts and cards
        (`handover_alert`, `handover_card`, by row_id) with `alerts=True`. Escalation steps
        (`handover_escalation`) are neither.
        """
        wanted = (
            {"handover_alert": "row_id", "handover_card": "row_id"}
            if alerts
            else {"handover_prompt": "prompt_id"}
        )
        grouped: dict[int, list[dict]] = {}
        for message in self.messages():
            metadata = message.get("metadata") or {}
            key = wanted.get(metadata.get("event_type"))
            payload = metadata.get("event_payload") or {}
            if key is None or key not in payload:
                continue  # the credentials alert is posted directly, by no row
            grouped.setdefault(int(payload[key]), []).append(message)
        return grouped

    def response_url(self, name: str) -> str:
        """A response_url whose posts the stand-in records under `name`."""
        return self.control + f"response/{name}"

    def responses(self, name: str) -> list[dict]:
        return self.get("responses", name=name)["responses"]

    def deliver(self, route: str, **fields: Any) -> dict[str, Any]:
        """Deliver to the app through the stand-in (Socket Mode or Request URL) and wait for
        its ack: `route` is `command`, `click`, `view_submission` or `event`."""
        return self.post(f"deliver/{route}", fields)["envelope"]

    def socket_connections(self) -> list[dict[str, Any]]:
        """The open Socket Mode connections."""
        return self.get("socket")["connections"]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


@dataclass
class Deployment:
    """A database, a stand-in, a clock file and the environment of every bot process."""

    workdir: Path
    database_url: str
    standin: StandInProcess
    clock_file: Path
    port: int
    processes: list[subprocess.Popen] = field(default_factory=list)
    started: int = 0  # processes started so far; names their log files
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. the mail relay's settings
    # The dispatchers' safety interval; None leaves the bot's default (30 s), as in production.
    dispatch_interval: str | None = "0.2"
    _engine: Any = field(default=None, repr=False)
    _clock_runner: Any = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "HANDOVER_"))}
        env.update(
            DATABASE_URL=self.database_url,
            SLACK_API_URL=self.standin.url,
            SLACK_BOT_TOKEN="xoxb-e2e-token",
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            HANDOVER_API_SECRET=API_SECRET,
            HANDOVER_EDT_CHANNEL=EDT_CHANNEL,
            HANDOVER_ESCALATION_CHANNEL=ESCALATION_CHANNEL,
            HANDOVER_CLOCK_FILE=str(self.clock_file),
            PORT=str(self.port),
            PYTHONUNBUFFERED="1",
        )
        if self.dispatch_interval is not None:
            env["HANDOVER_DISPATCH_INTERVAL"] = self.dispatch_interval
        env.update(self.extra_env)
        return env

    # -- time ------------------------------------------------------------------------------
    def set_clock(self, instant: datetime) -> None:
        """Move every bot process to `instant` (aware)."""
        tmp = self.clock_file.with_suffix(".tmp")
        tmp.write_text(instant.isoformat(), encoding="utf-8")
        tmp.replace(self.clock_file)  # atomic: readers never see a half-written time

    def now(self) -> datetime:
        return datetime.fromisoformat(self.clock_file.read_text(encoding="utf-8"))

    def run_clock(self, start: datetime) -> None:
        """Let the clock run from `start` at the pace of the wall clock (the file is rewritten
        every 10 ms) until `stop_clock`, so a timing can be measured in real seconds."""
        self.stop_clock()
        self.set_clock(start)
        self._clock_runner = _RunningClock(self, start)

    def wall_time_of(self, instant: datetime) -> float:
        """The wall-clock time (`time.time()`) at which the running clock shows `instant`."""
        assert self._clock_runner is not None, "the clock is not running"
        return self._clock_runner.wall_time_of(instant)

    def stop_clock(self) -> None:
        runner, self._clock_runner = self._clock_runner, None
        if runner is not None:
            runner.stop()

    # -- commands ------------------------------------------------------------------------
    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run `handover ARGS` to completion."""
        result = subprocess.run(
            [*HANDOVER, *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise AssertionError(f"handover {' '.join(args)} failed:\n{result.stderr}")
        return result

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a long-running `handover ARGS` (serve, dispatch) in the background."""
        name = f"proc-{self.started:02d}-{args[0]}.log"
        self.started += 1
        with open(self.workdir / name, "w") as log:
            process = subprocess.Popen(
                [*HANDOVER, *args], env=env or self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes.append(process)
        return process

    def start_server(self, *args: str) -> subprocess.Popen:
        """Start `handover serve` and wait until /healthz answers.

        `free_port` can only name a port that was free: another test's process may take it
        before `serve` binds it (or, on a restart, after the last `serve` let it go). Then
        `serve` exits naming the address in use, and it is started again on another port."""
        for _ in range(PORT_ATTEMPTS):
            process = self.start("serve", *args)
            log = self.workdir / f"proc-{self.started - 1:02d}-serve.log"

            def healthy(process: subprocess.Popen = process, log: Path = log) -> bool | str:
                said = log.read_text(encoding="utf-8", errors="replace")
                if process.poll() is not None:
                    if ADDRESS_IN_USE in said:
                        return "port taken"
                    raise AssertionError(f"serve exited with {process.returncode}:\n{self.logs()}")
                if LISTENING not in said:
                    return False  # not bound yet: whatever answers on the port is not it
                try:
                    return _http("GET", f"{self.base_url}/healthz")[0] == 200
                except OSError:
                    return False

            if wait_for(healthy, timeout=30) is True:
                return process
            self.processes.remove(process)
            self.port = free_port()
        raise AssertionError(f"serve found no free port in {PORT_ATTEMPTS} tries:\n{self.logs()}")

    def kill(self, process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        process.send_signal(sig)
        process.wait(timeout=30)

    def wait_idle(self, process: subprocess.Popen | None = None, settle: float = 1.0) -> None:
        """Let background dispatchers run several passes (they poll every 0.2 s)."""
        time.sleep(settle)
        if process is not None and process.poll() is not None:
            raise AssertionError(f"process exited with {process.returncode}:\n{self.logs()}")

    def stop_all(self) -> None:
        self.stop_clock()
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
        self.processes.clear()

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')}"
            for path in sorted(self.workdir.glob("proc-*.log"))
        )

    # -- HTTP ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        """A signed call to the case-system API, timestamped with the simulated clock."""
        body = b"" if payload is None else json.dumps(payload).encode()
        timestamp = str(int(self.now().timestamp()))
        digest = hmac.new(
            API_SECRET.encode(), f"v1:{timestamp}:".encode() + body, hashlib.sha256
        ).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-Handover-Timestamp": timestamp,
            "X-Handover-Signature": f"v1={digest}",
        }
        return _http(method, self.base_url + path, body if payload is not None else None, headers)

    def slash_command(
        self, user_id: str, text: str = "", channel_id: str = EDT_CHANNEL
    ) -> tuple[int, Any, str]:
        """A signed `/handover TEXT` from `user_id`; returns status, body and its response name."""
        name = f"cmd-{time.monotonic_ns()}"
        form = {
            "token": "verification-token-unused",
            "api_app_id": "A0HANDOVER",
            "team_id": "T0STANDIN",
            "team_domain": "handover-standin",
            "channel_id": channel_id,
            "channel_name": "edt",
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": "/handover",
            "text": text,
            "response_url": self.standin.response_url(name),
            "trigger_id": f"{time.monotonic_ns()}.738474920.8088930838d88f008e2",
            "is_enterprise_install": "false",
        }
        status, body = self.slack(form)
        return status, body, name

    def slack(self, form: dict[str, str]) -> tuple[int, Any]:
        """A signed Slack request (slash command or interaction) to /slack/events."""
        body = urllib.parse.urlencode(form).encode()
        timestamp = str(int(time.time()))  # Bolt checks Slack signatures against real time
        digest = hmac.new(
            SIGNING_SECRET.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256
        ).hexdigest()
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": f"v0={digest}",
        }
        return _http("POST", self.base_url + "/slack/events", body, headers)

    def slack_raw(
        self,
        body: bytes,
        content_type: str = "application/x-www-form-urlencoded",
        *,
        secret: str = SIGNING_SECRET,
        timestamp: int | None = None,
        signed: bool = True,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """POST raw bytes to /slack/events, signed with `secret` at `timestamp` (real time)."""
        all_headers = {"Content-Type": content_type, **(headers or {})}
        if signed:
            all_headers.update(slack_signature(body, secret=secret, timestamp=timestamp))
        return _http("POST", self.base_url + "/slack/events", body, all_headers)

    def slack_payload(self, payload: dict[str, Any]) -> tuple[int, Any]:
        """A signed interactivity request (`payload=<json>`): view submissions, options."""
        return self.slack({"payload": json.dumps(payload)})

    def slack_event(self, event: dict[str, Any], **headers: str) -> tuple[int, Any]:
        """A signed Events API delivery (JSON body), with extra headers such as retries."""
        return self.slack_raw(json.dumps(event).encode(), "application/json", headers=headers)

    def api_raw(
        self,
        body: bytes,
        *,
        secret: str = API_SECRET,
        timestamp: int | None = None,
        signed: bool = True,
    ) -> tuple[int, Any]:
        """POST raw bytes to /api/referrals, signed with `secret` at `timestamp` (simulated)."""
        headers = {"Content-Type": "application/json"}
        if signed:
            stamp = str(int(self.now().timestamp()) if timestamp is None else timestamp)
            digest = hmac.new(
                secret.encode(), f"v1:{stamp}:".encode() + body, hashlib.sha256
            ).hexdigest()
            headers["X-Handover-Timestamp"] = stamp
            headers["X-Handover-Signature"] = f"v1={digest}"
        return _http("POST", self.base_url + "/api/referrals", body, headers)

    @property
    def engine(self) -> Any:
        """An engine on the deployment's database, made once (see `close`)."""
        if self._engine is None:
            from bot.db import create_db_engine

            self._engine = create_db_engine(self.database_url)
        return self._engine

    def close(self) -> None:
        """Drop the test's own connections to the database."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def query(self, sql: str, **params: Any) -> list[tuple]:
        """Rows of a read-only SQL query on the deployment's database."""

        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]

    def outstanding(self) -> int:
        """Outbox rows due at the simulated now (or held by a dispatcher) and not yet done."""
        from sqlalchemy import and_, func, or_, select

        from bot.delivery.kinds import RowState
        from bot.models import OutboxMessage

        now = self.now()
        due = or_(
            OutboxMessage.state == RowState.CLAIMED,
            and_(
                OutboxMessage.state == RowState.PENDING,
                OutboxMessage.due_at <= now,
                or_(OutboxMessage.next_attempt_at.is_(None), OutboxMessage.next_attempt_at <= now),
            ),
        )
        with Session(self.engine) as session:
            return session.scalar(select(func.count()).select_from(OutboxMessage).where(due)) or 0

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until the dispatchers have delivered everything due at the simulated now."""
        try:
            wait_for(lambda: self.outstanding() == 0, timeout=timeout)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{self.logs()[-6000:]}") from None
        for process in self.processes:
            if process.poll() is not None and process.returncode not in (0, -9, -15):
                raise AssertionError(f"a process exited with {process.returncode}:\n{self.logs()}")

    def advance(self, instant: datetime, timeout: float = 30.0) -> None:
        """Move the clock to `instant` and wait until everything then due is delivered."""
        self.set_clock(instant)
        self.settle(timeout)

    def prompt_ids(self, referral_id: str | None = None) -> dict[int, tuple[str, str, str]]:
        """Prompt rows (kind `prompt`): id -> (referral_id, state, recipient_id)."""
        sql = "SELECT id, referral_id, state, recipient_id FROM outbox WHERE kind = 'prompt'"
        rows = self.query(sql)
        return {
            row[0]: (row[1], row[2], row[3])
            for row in rows
            if referral_id is None or row[1] == referral_id
        }

    def log(self, referral_id: str | None = None) -> list[dict]:
        """The log as `handover log --format jsonl [--referral ID]` prints it, written by that
        command's own code (`write_log`) in this process: a `handover log` process costs more
        than a second of CPU, and tests poll the log. `log_process` runs the command."""
        from bot.cli.log import referral_known, write_log
        from bot.services.logbook import parse_window

        tz = ZoneInfo(self.env.get("HANDOVER_TIMEZONE") or "Europe/London")
        out = io.StringIO()
        with Session(self.engine) as session:
            if referral_id is not None:
                assert referral_known(session, referral_id), f"no referral {referral_id}"
            write_log(session, parse_window(None, None, tz, referral_id), "jsonl", tz, out)
        return [json.loads(line) for line in out.getvalue().splitlines()]

    def log_process(self, referral_id: str | None = None) -> list[dict]:
        """The log from a `handover log --format jsonl [--referral ID]` process."""
        args = ["log", "--format", "jsonl"] + (["--referral", referral_id] if referral_id else [])
        output = self.run(*args).stdout
        return [json.loads(line) for line in output.splitlines() if line.strip()]


class _RunningClock:
    """A thread that keeps a deployment's clock file at `start` + the wall time elapsed."""

    def __init__(self, deployment: Deployment, start: datetime) -> None:
        self.start = start
        self.wall_start = time.time()
        self._deployment = deployment
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="e2e-clock", daemon=True)
        self._thread.start()

    def wall_time_of(self, instant: datetime) -> float:
        return self.wall_start + (instant - self.start).total_seconds()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            elapsed = timedelta(seconds=time.time() - self.wall_start)
            self._deployment.set_clock(self.start + elapsed)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def slack_users(rota: Path) -> list[dict[str, str]]:
    """The workspace's users: everyone in people.csv, with an ID made up for email-only rows."""
    users = []
    with open(rota / "people.csv", encoding="utf-8-sig", newline="") as handle:
        for row in csv.DictReader(handle):
            user_id = (
                row["slack_user"]
                or "U9" + hashlib.sha1(row["email"].encode()).hexdigest()[:8].upper()
            )
            users.append({"id": user_id, "name": row["person_id"], "email": row["email"]})
    return users


def modal_state(
    *,
    external_ref: str = "",
    category: str | None = None,
    urgency: str | None = "standard",
    people: tuple[str, ...] = (),
    teams: tuple[str, ...] = (),
    roles: tuple[str, ...] = (),
    summary: str = "",
) -> dict[str, Any]:
    """The referral modal's `view.state.values` as Slack sends them on submission."""

    def option(value: str) -> dict[str, Any]:
        return {"text": {"type": "plain_text", "text": value}, "value": value}

    def selects(values: tuple[str, ...]) -> dict[str, Any]:
        return {"type": "multi_external_select", "selected_options": [option(v) for v in values]}

    return {
        "external_ref": {"external_ref_input": {"type": "plain_text_input", "value": external_ref}},
        "category": {
            "category_select": {
                "type": "static_select",
                "selected_option": option(category) if category else None,
            }
        },
        "urgency": {
            "urgency_select": {
                "type": "radio_buttons",
                "selected_option": option(urgency) if urgency else None,
            }
        },
        "notify_people": {"notify_people_select": selects(people)},
        "notify_teams": {"notify_teams_select": selects(teams)},
        "notify_roles": {"notify_roles_select": selects(roles)},
        "summary": {"summary_input": {"type": "plain_text_input", "value": summary or None}},
    }


def slack_user_of(person_id: str, rota: Path = SAMPLE_ROTA) -> str:
    """The Slack user ID the stand-in gives `person_id` of `rota`."""
    for user in slack_users(rota):
        if user["name"] == person_id:
            return user["id"]
    raise KeyError(person_id)


def start_standin(
    workdir: Path, rota: Path = SAMPLE_ROTA, extra_args: tuple[str, ...] = ()
) -> StandInProcess:
    """Start the stand-in with the rota's people as Slack users and the bot's channels."""
    log = open(workdir / "standin.log", "w")  # noqa: SIM115
    users_file = workdir / "slack-users.json"
    users_file.write_text(json.dumps(slack_users(rota)), encoding="utf-8")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot.slack_standin",
            "--port",
            "0",
            "--users",
            str(users_file),
            "--auto-create-channels",
            "--no-rate-limit",
            *extra_args,
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    url = process.stdout.readline().strip()
    if not url.startswith("http"):
        process.kill()
        raise AssertionError(f"the stand-in did not start: {url!r}")
    return StandInProcess(process=process, url=url)


def deploy(
    workdir: Path,
    database_url: str,
    start: datetime,
    rota: Path = SAMPLE_ROTA,
    *,
    import_rota: bool = True,
    standin_args: tuple[str, ...] = (),
    migrated: bool = False,
) -> Deployment:
    """A migrated database with `rota` imported, a stand-in, and the clock at `start`
    (`handover db upgrade` runs first unless the database is `migrated` already)."""
    standin = start_standin(workdir, rota, standin_args)
    deployment = Deployment(
        workdir=workdir,
        database_url=database_url,
        standin=standin,
        clock_file=workdir / "clock",
        port=free_port(),
    )
    try:
        deployment.set_clock(start)
        if not migrated:
            deployment.run("db", "upgrade")
        if import_rota:
            deployment.run("rota", "import", str(rota))
    except BaseException:
        standin.stop()
        raise
    return deployment


DeploymentFactory = Callable[..., Deployment]


# A database for a deployment to copy: given the backend, and the instant the sample rota is
# imported at (None: only migrated), the SQLite file or the PostgreSQL database's name.
Template = Callable[[str, datetime | None], str]


class DatabaseTemplates:
    """Databases with the sample rota imported at an instant, as `deploy` leaves them, each made
    once (with `handover rota import` as a process) and then copied for every deployment that
    starts at that instant; the PostgreSQL ones are dropped by `close`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._made: dict[tuple[str, str], str] = {}
        self._stack = ExitStack()

    def with_rota(self, backend: str, start: datetime, migrated: str) -> str:
        """The template of `backend` with the rota imported at `start`, made from `migrated`."""
        key = (backend, start.isoformat())
        if key not in self._made:
            workdir = self.workdir / f"{backend}-{next(_names)}"
            workdir.mkdir()
            if backend == "sqlite":
                made = str(workdir / "handover.db")
                shutil.copyfile(migrated, made)
                url = f"sqlite:///{made}"
            else:
                made = f"{make_url(PG_URL).database}_rota_{os.getpid()}_{next(_names)}"
                url = self._stack.enter_context(postgres_database(made, migrated))
            importer = Deployment(
                workdir=workdir,
                database_url=url,
                # The import reaches no Slack: nothing listens at this address.
                standin=StandInProcess(process=None, url="http://127.0.0.1:9/api/"),  # type: ignore[arg-type]
                clock_file=workdir / "clock",
                port=free_port(),  # never listened on
            )
            importer.set_clock(start)
            importer.run("rota", "import", str(SAMPLE_ROTA))
            self._made[key] = made
        return self._made[key]

    def close(self) -> None:
        self._stack.close()


@contextmanager
def deployments(tmp_path: Path, template: Template | None = None) -> Iterator[DeploymentFactory]:
    """`make(backend, start)` gives a deployment; all of them are stopped and dropped after.

    With `template`, each database is a copy of `template(backend, start)` (or, if the rota is
    not to be imported, of `template(backend, None)`): `handover db upgrade` and `handover rota
    import` are not run again for it."""
    with ExitStack() as stack:

        def make(
            backend: str,
            start: datetime,
            *,
            import_rota: bool = True,
            standin_args: tuple[str, ...] = (),
        ) -> Deployment:
            workdir = tmp_path / f"{backend}-{next(_names)}"
            workdir.mkdir()
            copied = template(backend, start if import_rota else None) if template else None
            url = stack.enter_context(fresh_database(backend, workdir, copied))
            deployment = deploy(
                workdir,
                url,
                start,
                import_rota=import_rota and copied is None,
                standin_args=standin_args,
                migrated=copied is not None,
            )
            # Callbacks run last-in first-out: processes, then the stand-in, then the database.
            stack.callback(deployment.standin.stop)
            stack.callback(deployment.close)
            stack.callback(deployment.stop_all)
            return deployment

        yield make
