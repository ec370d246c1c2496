"""Button clicks and slash commands at 50 concurrent users: Handover against a no-op Bolt app.

    python benchmarks/bench_clicks.py [--clients 50] [--requests 20] [--rounds 5]
        [--backend sqlite|postgresql] [--layouts single procfile] [--phases clicks commands]
        [--gc-log [DIR]] [--stall-log [DIR]] [--control]

Handover in each layout (a fresh deployment each): `single`, `handover serve` with its
dispatcher in-process (which runs the clicks' jobs too); `procfile`, the Procfile's
`serve --no-dispatcher` and `handover dispatch` (which runs the clicks' jobs: bot/slackjobs/).
HTTP mode, the stand-in as Slack, the sample rota and prompts delivered. It and
`benchmarks/noop_bolt.py` (the same listeners, each only acking, served the same way) are each
sent bursts of the same signed requests by `--clients` threads at once: Acknowledge clicks on
real prompts by their recipients (each round of clicks on the prompts of its own `--referrals`
referrals), then `/handover oncall`. With both apps started once, each phase (clicks, then
commands) runs `--rounds` rounds of one burst to each app, Handover's first in odd rounds and
the no-op's in even ones (Handover, no-op, no-op, Handover, ...); `--phases` runs one alone
(the commands alone, their first burst was no slower than the rest: nothing cold in the
commands' own path). Every burst starts once Handover's jobs are all done and both apps'
processes are idle (under a tenth of a core), so that the work Handover did after its acks does
not run beside the reference and slow it, and neither app's burst starts on the heels of the
other's (the second burst of a round used to start at once after the first, and took the
round's tail: p99 191 ms against 100-118 ms for the same app's other rounds).

For each burst: p50, p99, throughput and the count of 404s (Bolt's answer when no ack came
within 3 s), timeouts and other failures; the CPU time each process used during it; after
Handover's clicks, how long it took to finish the work they started (after their acks); and
each round's p99 ratio. For each phase, the headline: the ratio of the pooled p99s (all rounds'
samples of each app together; goal: ≤ 1.5), with the median of the round ratios, and the 404s,
timeouts and failures summed. A p99 of one burst of 1,000 is its 10th slowest request, and on
2 shared cores the no-op's own p99 moved from 64 to 136 ms between runs (to 584 ms at load);
the rounds interleaved give both apps the same spread of load, and the pooled p99 of 5,000 is
their 50th slowest, so one run's headline can be believed where one burst's could not. Beside
it, the ratio of the pooled medians: a burst's p99 has been one stall of the whole process,
in either app (each burst's 10 slowest requests are listed with when they began: in 15 of 16
of Handover's bursts and 14 of 16 of a second no-op's, within 50 ms of each other), while the
median is each request's own cost. Last, the
Slack Web API calls Handover made during each of its bursts and in the 5 s before (a command is
answered through its response_url, so during a burst of commands each is work left from
earlier: the first commands burst after the clicks had their trailing App Home redraws in it),
the resident memory of `serve` and of the no-op app after the load, and the load average. The
default (5 rounds, 40 referrals a round) took 4.5 to 5.5 minutes a layout on the 2 shared cores
(load average 2 to 9), half of it delivering each round's 200 prompts (28 to 32 s, whatever the
load); a round is about a minute.

With `--gc-log`, each app's processes log their garbage collections (benchmarks/gctrace, loaded
as `sitecustomize`, so the product runs unchanged), and the run ends with the full and middle
generation's collections each made during each burst: a full pass holds the interpreter lock,
stopping every request thread. With `--control`, a second no-op app takes Handover's bursts
(Handover still started, delivering the clicks' prompts): the ratios two identical apps show
on the machine's load at the time, against which Handover's can be read.

With `--stall-log`, each app's processes and this client run a watcher thread that logs every
stall of the interpreter of 15 ms or more, with the CPU each thread used (benchmarks/gctrace/
stalls.py), and a process of its own logs every process's CPU on the machine; the run ends with,
for each burst, the span its 10 slowest requests were in flight, which processes had the cores
then, the CPU of each of the app's threads over the burst and over that span, and the stalls of
20 ms or more in it, with what ran. It tells a stall of the app (one of its threads, or a
collection, holding the interpreter lock) from one of the client or of the machine (the app's
CPU well under the span while other processes had the cores). The watchers cost each process
about 2% of a core. The client collects no garbage during a burst (its full collections had
stopped it 45-60 ms in whichever app's burst they fell).
"""

from __future__ import annotations

import argparse
import gc
import http.client
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy.exc import OperationalError  # noqa: E402

from benchmarks.gctrace import stalls  # noqa: E402
from handlers import ids  # noqa: E402
from tests.e2e.harness import (  # noqa: E402
    SIGNING_SECRET,
    Deployment,
    deployments,
    free_port,
    slack_signature,
    slack_user_of,
)

LONDON = ZoneInfo("Europe/London")
START = datetime(2027, 1, 5, 10, 0, tzinfo=LONDON)  # a Tuesday morning: prompts go at once
# People of the sample rota reached on Slack and at work on a Tuesday morning.
RECIPIENTS = ["hv-kpatel", "mash-tkelly", "prob-tward", "sch-dsl-moore", "gp-drshah"]
TIMEOUT = 10.0


def p99(latencies: list[float]) -> float:
    """The 99th percentile: of 1,000 samples the 10th slowest, of 5,000 the 50th."""
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


@dataclass
class Figures:
    latencies: list[float]
    statuses: Counter
    elapsed: float
    answered: list[bytes]  # the bodies answered 200
    began: list[float] = field(default_factory=list)  # each request's start, from the burst's
    zero: float = 0.0  # the burst's start, wall clock (time.time())

    def slowest(self, count: int = 10) -> str:
        """When the `count` slowest requests (the p99's, of 1,000) began, after the burst did:
        bunched, one stall took them; spread, the whole burst was slow."""
        ranked = sorted(zip(self.latencies, self.began, strict=True), reverse=True)[:count]
        return ", ".join(f"{took * 1000:.0f} ms at +{at:.2f}" for took, at in ranked)

    def line(self, name: str) -> str:
        p50 = statistics.median(self.latencies) if self.latencies else float("nan")
        failures = sum(n for s, n in self.statuses.items() if s != 200)
        return (
            f"{name:<9} p50 {p50 * 1000:7.1f} ms  p99 {self.p99() * 1000:7.1f} ms  "
            f"{len(self.latencies) / self.elapsed:6.0f}/s  404: {self.statuses.get(404, 0)}  "
            f"timeouts: {self.statuses.get('timeout', 0)}  other failures: "
            f"{failures - self.statuses.get(404, 0) - self.statuses.get('timeout', 0)}"
            + (f" {dict(self.statuses)}" if failures else "")
        )

    def p99(self) -> float:
        return p99(self.latencies)


def pooled(bursts: list[Figures]) -> Figures:
    """Every burst's samples and answers together, as one burst of their summed durations."""
    return Figures(
        [x for burst in bursts for x in burst.latencies],
        sum((burst.statuses for burst in bursts), Counter()),
        sum(burst.elapsed for burst in bursts),
        [body for burst in bursts for body in burst.answered],
        [at for burst in bursts for at in burst.began],
    )


def summary(handover: list[Figures], noop: list[Figures], name: str = "handover") -> list[str]:
    """The headline of a phase's rounds: the ratio of the pooled p99s, then the median of the
    round ratios and each of them; before it, the ratio of the pooled medians."""
    ratios = [h.p99() / n.p99() for h, n in zip(handover, noop, strict=True)]
    medians = [statistics.median(pooled(bursts).latencies) for bursts in (handover, noop)]
    return [
        pooled(handover).line(name),
        pooled(noop).line("no-op"),
        # A burst's p99 was one stall of the whole process (its 10 slowest began together),
        # of either app; the p50 is each request's own cost, and moved far less between runs.
        f"p50 ratio of the {len(ratios)} rounds pooled: {medians[0] / medians[1]:.2f}",
        f"p99 ratio of the {len(ratios)} rounds pooled: "
        f"{pooled(handover).p99() / pooled(noop).p99():.2f} (goal ≤ 1.5); "
        f"median of the round ratios {statistics.median(ratios):.2f} "
        f"({', '.join(f'{ratio:.2f}' for ratio in ratios)})",
    ]


def post(port: int, body: bytes) -> int | str:
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        **slack_signature(body, secret=SIGNING_SECRET),
    }
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        connection.request("POST", "/slack/events", body, headers)
        response = connection.getresponse()
        response.read()
        return response.status
    except TimeoutError:
        return "timeout"
    except OSError:
        return "error"
    finally:
        connection.close()


def load(port: int, bodies: list[list[bytes]]) -> Figures:
    """Each client thread posts its bodies one after another; all clients start together."""
    latencies: list[float] = []
    started: list[float] = []
    statuses: Counter = Counter()
    answered: list[bytes] = []
    lock = threading.Lock()
    start = threading.Barrier(len(bodies) + 1)

    def client(mine: list[bytes]) -> None:
        start.wait()
        for body in mine:
            began = time.perf_counter()
            status = post(port, body)
            took = time.perf_counter() - began
            with lock:
                latencies.append(took)
                started.append(began - zero)
                statuses[status] += 1
                if status == 200:
                    answered.append(body)

    threads = [threading.Thread(target=client, args=(mine,)) for mine in bodies]
    # This client's own full collections (its heap holds the run's prompts and bodies) stopped
    # every client thread for 45-60 ms in whichever app's burst they fell (--stall-log): none
    # during a burst, what the last one left collected before it starts.
    gc.collect()
    gc.disable()
    try:
        for thread in threads:
            thread.start()
        zero = time.perf_counter()  # the burst's start, as every client is let go
        zero_wall = time.time()
        start.wait()
        for thread in threads:
            thread.join()
    finally:
        gc.enable()
    return Figures(latencies, statuses, time.perf_counter() - zero, answered, started, zero_wall)


def click_body(d: Deployment, prompt: dict, user_id: str, person: str, n: int) -> bytes:
    button = next(
        element
        for block in prompt["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
        if element["action_id"] == ids.ACK
    )
    payload = {
        "type": "block_actions",
        "team": {"id": "T0STANDIN", "domain": "handover-standin"},
        "user": {"id": user_id, "username": person, "name": person, "team_id": "T0STANDIN"},
        "api_app_id": "A0HANDOVER",
        "token": "verification-token-unused",
        "container": {
            "type": "message",
            "message_ts": prompt["ts"],
            "channel_id": prompt["channel"],
            "is_ephemeral": False,
        },
        "trigger_id": f"{n}.1.bench",
        "channel": {"id": prompt["channel"], "name": "directmessage"},
        "message": {"type": "message", "ts": prompt["ts"], "text": prompt["text"]},
        "response_url": d.standin.response_url(f"click-{n}"),
        "actions": [
            {
                "action_id": ids.ACK,
                "block_id": "handover_prompt_actions",
                "text": button["text"],
                "value": button["value"],
                "type": "button",
                "action_ts": f"{time.time():.6f}.{n}",
            }
        ],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def command_body(d: Deployment, user_id: str, n: int) -> bytes:
    return command_form(user_id, d.standin.response_url(f"cmd-{n}"), n)


def command_form(user_id: str, response_url: str, n: int) -> bytes:
    """A `/handover oncall` as Slack posts it (profile_click.py's too)."""
    form = {
        "token": "verification-token-unused",
        "api_app_id": "A0HANDOVER",
        "team_id": "T0STANDIN",
        "team_domain": "handover-standin",
        "channel_id": "C0EDTCARDS",
        "channel_name": "edt",
        "user_id": user_id,
        "user_name": "bench",
        "command": ids.COMMAND,
        "text": "oncall",
        "response_url": response_url,
        "trigger_id": f"{n}.2.bench",
        "is_enterprise_install": "false",
    }
    return urllib.parse.urlencode(form).encode()


def prepare(d: Deployment, referrals: int, round_: int) -> list[tuple[dict, str, str]]:
    """Post a round's referrals, let serve deliver their prompts: (prompt message, user id,
    person) of this round's prompts only."""
    before = set(d.prompt_ids())
    for r in range(referrals):
        status, answer = d.api(
            "POST",
            "/api/referrals",
            {
                "external_ref": f"BENCH-{round_}-{r}",
                "category": "neglect",
                "urgency": "standard",
                "referrer": "edt-amy",
                "notify": [f"person:{p}" for p in RECIPIENTS],
                "summary": "bench",
            },
        )
        assert status == 201, (status, answer)
    d.settle(timeout=120)
    recipient_of = {pid: row[2] for pid, row in d.prompt_ids().items()}
    prompts = []
    for message in d.standin.messages():
        metadata = message.get("metadata") or {}
        if metadata.get("event_type") != "handover_prompt":
            continue
        prompt_id = int(metadata["event_payload"]["prompt_id"])
        if prompt_id in before:
            continue
        person = recipient_of[prompt_id]
        prompts.append((message, slack_user_of(person), person))
    return prompts


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_idle(pid: int, timeout: float = 60.0) -> float:
    """Wait until process `pid` uses under a tenth of a core (over half a second), so that the
    work after Handover's acks does not run beside the reference's load; the seconds waited."""
    began = time.perf_counter()
    last = cpu_seconds(pid)
    while time.perf_counter() - began < timeout:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - last < 0.05:
            break
        last = now
    return time.perf_counter() - began


def memory(pid: int) -> str:
    """Resident memory now and at its peak (VmRSS, VmHWM) of process `pid`."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return f"RSS {fields.get('VmRSS')}, peak {fields.get('VmHWM')}"


def value_of(body: bytes) -> str:
    payload = json.loads(urllib.parse.parse_qs(body.decode())["payload"][0])
    return payload["actions"][0]["value"]


def acknowledged(d: Deployment) -> int:
    while True:
        try:
            return d.query("SELECT count(*) FROM responses")[0][0]
        except OperationalError:  # SQLite busy with the server's writes: look again
            time.sleep(0.2)


def wait_until_acknowledged(d: Deployment, goal: int) -> int:
    """Wait until `goal` prompts are acknowledged, or the count stops moving for 5 s."""
    last, since = -1, time.monotonic()
    while True:
        count = acknowledged(d)
        if count >= goal or time.monotonic() - since > 5:
            return count
        if count != last:
            last, since = count, time.monotonic()
        time.sleep(0.1)


PHASES = ("clicks", "commands")

LAYOUTS = {
    # `serve` with its dispatcher, which runs the clicks' jobs too, in one process.
    "single": "serve (the dispatcher and the clicks' jobs in-process)",
    # The Procfile's web and worker: the clicks' jobs run in `handover dispatch`.
    "procfile": "serve --no-dispatcher + handover dispatch (the Procfile)",
}


def start_layout(d: Deployment, layout: str) -> None:
    # The dispatcher's safety pass at its default, 30 s, as users run it (the tests' harness
    # shortens it to 0.2 s, which had the dispatcher reading the outbox 5 times a second
    # beside every burst); the prompts are sent on their wake-ups, as in production.
    d.dispatch_interval = None
    if layout == "single":
        d.start_server()
        return
    d.start_server("--no-dispatcher")
    d.start("dispatch")


UNFINISHED_JOBS = "SELECT count(*) FROM slack_jobs WHERE state IN ('waiting', 'running')"


def unfinished_jobs(d: Deployment) -> int:
    """The clicks' and commands' jobs not yet done (bot/slackjobs/)."""
    while True:
        try:
            return d.query(UNFINISHED_JOBS)[0][0]
        except OperationalError:  # SQLite busy with the server's writes: look again
            time.sleep(0.2)


def wait_until_all_idle(d: Deployment, timeout: float = 120.0) -> float:
    """Wait until every job the bursts started is done, then until every process of the
    deployment is idle (see wait_until_idle); the seconds waited. Idle alone let a burst start
    on the tail of the clicks' jobs: their last replies (the repeated clicks', each private)
    went 0.1-0.5 s before the first burst of commands, 200-270 of them in the 5 s before it,
    though a half-second under a tenth of a core had been seen."""
    began = time.perf_counter()
    while unfinished_jobs(d) and time.perf_counter() - began < timeout:
        time.sleep(0.2)
    for process in d.processes:
        if process.poll() is None:
            wait_until_idle(process.pid)
    wait_until_slack_quiet(d, timeout=max(1.0, timeout - (time.perf_counter() - began)))
    return time.perf_counter() - began


SLACK_QUIET_SECONDS = 1.0


def wait_until_slack_quiet(d: Deployment, timeout: float = 60.0) -> None:
    """Wait until Handover has made no Slack Web API call for SLACK_QUIET_SECONDS. Its jobs
    done and its processes under a tenth of a core were not enough: after the clicks, `serve`
    still sent the repeated clicks' private replies and redrew Homes, 190-240 calls in the 5 s
    before the first commands burst, the last 0.4-0.6 s before it (each call costs the sender
    little CPU, so the process looked idle), and that burst's p99 was 3.9x the no-op's."""
    began = time.perf_counter()
    count, since = d.standin.get("calls/count")["count"], time.perf_counter()
    while time.perf_counter() - began < timeout:
        time.sleep(0.2)
        now = d.standin.get("calls/count")["count"]
        if now != count:
            count, since = now, time.perf_counter()
        elif time.perf_counter() - since >= SLACK_QUIET_SECONDS:
            return


def cpu_of(d: Deployment) -> list[float]:
    return [cpu_seconds(process.pid) for process in d.processes]


def bodies_for(
    d: Deployment, phase: str, prompts: list, args: argparse.Namespace, rng: random.Random,
    numbers: Iterator[int],
) -> list[list[bytes]]:  # fmt: skip
    """A burst's requests: for each client, its clicks on `prompts` or its commands."""
    bodies = []
    for _ in range(args.clients):
        mine = []
        for _ in range(args.requests):
            n = next(numbers)
            if phase == "clicks":
                prompt, user_id, person = rng.choice(prompts)
                mine.append(click_body(d, prompt, user_id, person, n))
            elif prompts:  # after the clicks: their recipients type it
                _, user_id, _ = rng.choice(prompts)
                mine.append(command_body(d, user_id, n))
            else:  # the commands alone: the same people type it
                mine.append(command_body(d, slack_user_of(rng.choice(RECIPIENTS)), n))
        bodies.append(mine)
    return bodies


def handover_burst(d: Deployment, phase: str, bodies: list[list[bytes]]) -> Figures:
    """Handover's burst, the CPU of its processes during it, then a wait until the work it
    started is done and its processes are idle again."""
    names = ["serve", "dispatch"][: len(d.processes)]
    acknowledged_before = acknowledged(d) if phase == "clicks" else 0
    cpu_before = cpu_of(d)
    began_at = time.time()
    handover = load(d.port, bodies)
    ended_at = time.time()
    WINDOWS.append((f"{phase} {len(WINDOWS) + 1}", began_at, ended_at))
    GC_WINDOWS.append(("handover", f"{phase} {len(WINDOWS)}", began_at, ended_at))
    BURSTS.append(("handover", f"{phase} {len(WINDOWS)}", handover))
    acked_at = time.perf_counter()
    cpu_during = [after - before for after, before in zip(cpu_of(d), cpu_before, strict=True)]
    print(handover.line("handover"), flush=True)
    print(f"   the 10 slowest: {handover.slowest()} s")
    print(
        "   CPU during the load: "
        + ", ".join(f"{names[i]} {cpu:.1f} s" for i, cpu in enumerate(cpu_during))
        + f" over {handover.elapsed:.1f} s"
    )
    drained = "  "
    if phase == "clicks":
        # The work after the acks: each prompt clicked (answered 200) is acknowledged.
        clicked = {value_of(b) for b in handover.answered}
        done = wait_until_acknowledged(d, acknowledged_before + len(clicked))
        drained += (
            f" {done - acknowledged_before} of {len(clicked)} prompts clicked acknowledged "
            f"{time.perf_counter() - acked_at:.1f} s after the last ack;"
        )
    waited = wait_until_all_idle(d)
    print(
        f"{drained} every job done and idle {time.perf_counter() - acked_at:.1f} s after the "
        f"last ack ({waited:.1f} s after that)",
        flush=True,
    )
    return handover


# Each Handover burst: (its name, wall-clock start, end), for `calls_beside`.
WINDOWS: list[tuple[str, float, float]] = []
# Each burst of either app, for `collections_during` (--gc-log): (app, name, start, end).
GC_WINDOWS: list[tuple[str, str, float, float]] = []
# Each burst of either app, for `stalls_during` (--stall-log): (app, name, its figures).
BURSTS: list[tuple[str, str, Figures]] = []
# The run's own processes by id, for `machine_between` (--stall-log).
PROCESS_LABELS: dict[int, str] = {}


def gc_env(gc_log: Path | None, app: str, stall_log: Path | None = None) -> dict[str, str]:
    """The environment that has an app's processes log their garbage collections into
    `gc_log` and their stalls into `stall_log` (benchmarks/gctrace/sitecustomize.py)."""
    if gc_log is None and stall_log is None:
        return {}
    paths = [str(ROOT / "benchmarks" / "gctrace"), os.environ.get("PYTHONPATH", "")]
    return {
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        **({"BENCH_GC_LOG": str(gc_log / app)} if gc_log else {}),
        **({"BENCH_STALL_LOG": str(stall_log / app)} if stall_log else {}),
    }


def read_stall_log(directory: Path, app: str) -> dict[str, list[dict]]:
    """Each process's stalls (see benchmarks/gctrace/stalls.py), by its command line."""
    logs = {}
    for path in sorted(directory.glob(f"{app}.*")):
        lines = path.read_text().splitlines()
        name = " ".join(lines[0].split()[2:4]) if lines and app == "handover" else app
        logs[f"{name} ({path.suffix[1:]})"] = [json.loads(line) for line in lines[1:]]
    return logs


def cpu_between(rows: list[dict], began: float, ended: float) -> tuple[dict[str, float], float]:
    """Each thread's CPU (ms; waitress's request threads as one) from the last account at or
    before `began` to the first at or after `ended`, and the machine's busy share then."""
    accounts = [r for r in rows if "cpu_at" in r]
    before = [r for r in accounts if r["cpu_at"] <= began]
    after = [r for r in accounts if r["cpu_at"] >= ended]
    if not before or not after:
        return {}, float("nan")
    first, last = before[-1], after[0]
    used: Counter = Counter()
    for name, ms in last["cpu_ms"].items():
        group = "waitress-*" if name.startswith("waitress-") else name
        used[group] += ms - first["cpu_ms"].get(name, 0.0)
    jiffies = last["machine"][1] - first["machine"][1]
    busy = (last["machine"][0] - first["machine"][0]) / jiffies if jiffies else float("nan")
    return dict(used), busy


def cpu_line(rows: list[dict], began: float, ended: float) -> str:
    used, busy = cpu_between(rows, began, ended)
    top = sorted(((ms, name) for name, ms in used.items() if ms >= 1), reverse=True)[:6]
    return (
        f"CPU {sum(used.values()):.0f} ms over {(ended - began) * 1000:.0f} ms"
        + (" (" + ", ".join(f"{name} {ms:.0f}" for ms, name in top) + ")" if top else "")
        + f", machine {busy:.0%} busy"
    )


STALL_SHOWN_MS = 20.0


def machine_between(path: Path, began: float, ended: float, labels: dict[int, str]) -> str:
    """Which processes had the machine's cores from `began` to `ended` (the log of
    `stalls.py --machine`), the most first: `labels` names the run's own."""
    names: dict[int, str] = {}
    state: dict[int, int] = {}
    first = last = None
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if "names" in row:
            names.update({int(pid): name for pid, name in row["names"].items()})
            continue
        state.update({int(pid): ticks for pid, ticks in row["cpu"].items()})
        if row["at"] <= began:
            first = (row["at"], dict(state))
        elif row["at"] >= ended and last is None:
            last = (row["at"], dict(state))
            break
    if first is None or last is None:
        return "?"
    tick = 1000 / os.sysconf("SC_CLK_TCK")
    used = sorted(((ticks - first[1].get(pid, 0)) * tick, pid) for pid, ticks in last[1].items())[
        ::-1
    ]
    shown = [f"{labels.get(pid) or names.get(pid, '?')} {ms:.0f}" for ms, pid in used[:6] if ms]
    return (
        f"{sum(ms for ms, _ in used):.0f} ms of CPU over {(last[0] - first[0]) * 1000:.0f} ms: "
        + ", ".join(shown)
    )


def stalls_during(directory: Path) -> list[str]:
    """For each burst, the span its 10 slowest requests were in flight; the processes that had
    the machine's cores then (`machine_between`); the CPU of each of the app's threads over the
    burst and over that span; and every stall of 20 ms or more of the app's processes and of this
    client in that span: how long, the CPU the process used over it, the machine's busy share,
    any garbage collection, and the threads that ran (with their innermost frames). A stall with
    the process's CPU near its length is one of its threads holding the interpreter lock; with
    little CPU, the process was not running."""
    lines = []
    logs = {app: read_stall_log(directory, app) for app in ("handover", "noop", "control")}
    client = read_stall_log(directory, "client")
    machine = directory / "machine"
    for app, name, figures in BURSTS:
        ranked = sorted(zip(figures.latencies, figures.began, strict=True), reverse=True)[:10]
        if not ranked:
            continue
        first = figures.zero + min(at for _, at in ranked)
        last = figures.zero + max(at + took for took, at in ranked)
        lines.append(f"{name}: its 10 slowest in flight +{first - figures.zero:.2f} to "
                     f"+{last - figures.zero:.2f} s")  # fmt: skip
        if machine.exists():
            lines.append(
                f"   the machine then: {machine_between(machine, first, last, PROCESS_LABELS)}"
            )
        sources = [(process, rows, True) for process, rows in logs[app].items()]
        sources += [(process, rows, False) for process, rows in client.items()]
        for process, rows, theirs in sources:
            ended = figures.zero + figures.elapsed
            if theirs:  # (not the client's: its threads end with the burst, their CPU unread)
                lines.append(
                    f"   {process}: the burst's {cpu_line(rows, figures.zero, ended)}; "
                    f"the slowest's {cpu_line(rows, first, last)}"
                )
            rows = [r for r in rows if "at" in r]
            burst = [r for r in rows if figures.zero <= r["at"] <= figures.zero + figures.elapsed]
            inside = [r for r in burst if r["at"] + r["ms"] / 1000 >= first and r["at"] <= last]
            shown = [r for r in inside if r["ms"] >= STALL_SHOWN_MS]
            lines.append(
                f"   {process}: {len(burst)} stalls in the burst "
                f"({sum(r['ms'] for r in burst):.0f} ms), {len(shown)} of {STALL_SHOWN_MS:.0f} ms+ "
                "beside the slowest"
            )
            for r in shown:
                threads = "; ".join(
                    f"{t['name']} {t['cpu_ms']:.0f} ms [{' < '.join(t['frames'][:4])}]"
                    for t in r["threads"]
                    if t["cpu_ms"] >= 1
                )
                collected = ", ".join(f"gen {g} {ms:.0f} ms" for _, ms, g in r["gc"] if ms >= 1)
                lines.append(
                    f"      +{r['at'] - figures.zero:.2f} s {r['ms']:.0f} ms: process CPU "
                    f"{r['cpu_ms']:.0f} ms over {r['window_ms']:.0f} ms, machine "
                    f"{r['machine_busy']:.0%} busy" + (f", gc {collected}" if collected else "")
                    + (f"; {threads}" if threads else "")
                )  # fmt: skip
    BURSTS.clear()
    return lines


def read_gc_log(directory: Path, app: str) -> dict[str, list[list[str]]]:
    """Each process's collections (see benchmarks/gctrace), by the command line that ran it."""
    logs = {}
    for path in sorted(directory.glob(f"{app}.*")):
        lines = path.read_text().splitlines()
        # The first line is the process's command line: `# .../bot/__main__.py serve ...`.
        name = " ".join(lines[0].split()[2:]) if lines and app == "handover" else app
        logs[f"{name} ({path.suffix[1:]})"] = [line.split() for line in lines[1:]]
    return logs


def collections_during(directory: Path) -> list[str]:
    """The full (generation 2) and generation 1 collections each app's processes made during
    each of its bursts: a full pass holds the interpreter lock, stopping every request thread."""
    lines = []
    logs = {app: read_gc_log(directory, app) for app in ("handover", "noop", "control")}
    for app, name, began, ended in GC_WINDOWS:
        for process, rows in logs[app].items():
            inside = [r for r in rows if began <= float(r[0]) <= ended]
            full = [r for r in inside if r[1] == "2"]
            young = [float(r[2]) for r in inside if r[1] == "1"]
            lines.append(
                f"{name:<12} {process}: {len(full)} full"
                + (
                    " (" + ", ".join(f"{float(r[2]):.0f} ms at +{float(r[0]) - began:.1f} s"
                                    f", {r[4]} left" for r in full) + ")"
                    if full else ""
                )
                + f", {len(young)} of generation 1 ({sum(young):.0f} ms)"
            )  # fmt: skip
    first = min((began for _, _, began, _ in GC_WINDOWS), default=0.0)
    for app in logs:
        for process, rows in logs[app].items():
            # Start-up's own (before the first burst: imports, gc.freeze's collect) apart.
            full = [(float(r[0]), float(r[2])) for r in rows if r[1] == "2"]
            full = [(at, took) for at, took in full if at >= first]
            gaps = [b[0] - a[0] for a, b in itertools.pairwise(full)]
            lines.append(
                f"{process} from the first burst on: {len(full)} full collections"
                + (f", median {statistics.median(t for _, t in full):.1f} ms, max "
                   f"{max(t for _, t in full):.1f} ms" if full else "")
                + (f", every {statistics.median(gaps):.0f} s (median)" if gaps else "")
            )  # fmt: skip
    GC_WINDOWS.clear()
    return lines


def calls_beside(d: Deployment) -> list[str]:
    """The Slack Web API calls Handover made during each of its bursts and in the 5 s before
    (read once, after the load: the stand-in's record of every call is costly to read, and read
    between bursts it had the stand-in busy as the next began). A command's answer goes to its
    response_url, not the Web API: during a burst of commands each call is earlier work."""
    calls = [(c["timestamp"], c["method"]) for c in d.standin.calls()]
    lines = []
    for name, began, ended in WINDOWS:
        during = Counter(m for t, m in calls if began <= t <= ended)
        before = Counter(m for t, m in calls if began - 5 <= t < began)
        last = max((t for t, _ in calls if t < began), default=None)
        at = datetime.fromtimestamp(began).strftime("%H:%M:%S")
        lines.append(
            f"{name} at {at}: during {dict(during) or 'none'}; "
            f"in the 5 s before {dict(before) or 'none'}"
            + (f" (the last {began - last:.1f} s before)" if last else "")
        )
    WINDOWS.clear()
    return lines


def noop_burst(
    noop: subprocess.Popen, port: int, bodies: list[list[bytes]], app: str = "noop"
) -> Figures:
    """A no-op app's burst (`app`: "noop", or "control" for --control's) and its CPU."""
    name = "no-op" if app == "noop" else app
    cpu_before = cpu_seconds(noop.pid)
    began_at = time.time()
    reference = load(port, bodies)
    number = sum(a == app for a, *_ in GC_WINDOWS) + 1
    GC_WINDOWS.append((app, f"{name} {number}", began_at, time.time()))
    BURSTS.append((app, f"{name} {number}", reference))
    print(reference.line(name))
    print(f"   the 10 slowest: {reference.slowest()} s")
    print(
        f"   CPU during the load: {name} {cpu_seconds(noop.pid) - cpu_before:.1f} s "
        f"over {reference.elapsed:.1f} s",
        flush=True,
    )
    return reference


def run_layout(args: argparse.Namespace, make, layout: str, rng: random.Random) -> None:
    """One deployment in `layout`, against the no-op app: rounds of clicks, then of commands.

    Each round sends one burst to each app, Handover's first in rounds 1, 3, 5, ... and the
    no-op's in rounds 2, 4, ... (Handover, no-op, no-op, Handover, ...), so that neither always
    meets the machine's load first; every burst starts with both apps' processes idle.
    Each round of clicks has its own `--referrals` referrals, so that every round clicks fresh
    prompts, as a single run did.
    """
    d = make(args.backend, START)
    gc_log = stall_log = watcher = None
    if args.gc_log is not None:
        gc_log = Path(tempfile.mkdtemp(prefix=f"gc-{layout}-", dir=args.gc_log or d.workdir))
    if args.stall_log is not None:
        stall_log = Path(
            tempfile.mkdtemp(prefix=f"stalls-{layout}-", dir=args.stall_log or d.workdir)
        )
        stalls.start(str(stall_log / "client"))
        watcher = subprocess.Popen(
            [sys.executable, str(ROOT / "benchmarks" / "gctrace" / "stalls.py"), "--machine",
             str(stall_log / "machine")]
        )  # fmt: skip
    d.extra_env.update(gc_env(gc_log, "handover", stall_log))
    start_layout(d, layout)
    noop, noop_port = start_noop(d, gc_log, stall_log, "noop")
    # --control: a second no-op app in Handover's place (Handover started, only delivering).
    control, control_port = (
        start_noop(d, gc_log, stall_log, "control") if args.control else (None, 0)
    )
    name = "control" if control else "handover"
    numbers = itertools.count(1)
    try:
        if control:
            print("== control: a second no-op app takes Handover's bursts (the ratio's noise)")
        print(
            f"== {LAYOUTS[layout]}: {args.clients} clients x {args.requests} requests, "
            f"{args.rounds} rounds, {args.backend} (load average {load_average()})"
        )
        prompts = []
        for phase in args.phases:
            handover, reference = [], []
            for round_ in range(args.rounds):
                clicking = ""
                if phase == "clicks":
                    began = time.perf_counter()
                    prompts = prepare(d, args.referrals, round_)
                    wait_until_all_idle(d)
                    clicking = (
                        f" ({len(prompts)} prompts to click, delivered and idle in "
                        f"{time.perf_counter() - began:.0f} s)"
                    )
                print(f"-- {phase}, round {round_ + 1}{clicking}")
                bodies = {app: bodies_for(d, phase, prompts, args, rng, numbers) for app in "hn"}
                for app in "hn" if round_ % 2 == 0 else "nh":
                    # Each burst starts with both apps idle: the one that went second in a round
                    # started at once after the other's burst, and took the round's tail.
                    wait_until_all_idle(d)
                    wait_until_idle(noop.pid)
                    if control:
                        wait_until_idle(control.pid)
                    if app == "h" and control:
                        handover.append(noop_burst(control, control_port, bodies["h"], "control"))
                    elif app == "h":
                        handover.append(handover_burst(d, phase, bodies["h"]))
                    else:
                        reference.append(noop_burst(noop, noop_port, bodies["n"]))
                print(f"   p99 ratio: {handover[-1].p99() / reference[-1].p99():.2f}")
            print(f"-- {phase}, all {args.rounds} rounds (load average {load_average()})")
            print("\n".join(summary(handover, reference, name)), flush=True)
        print("Slack calls beside Handover's bursts:\n   " + "\n   ".join(calls_beside(d)))
        if gc_log:
            print("Garbage collections during each burst:\n   "
                  + "\n   ".join(collections_during(gc_log)))  # fmt: skip
        if stall_log:
            PROCESS_LABELS.update({
                os.getpid(): "the client", d.standin.process.pid: "the stand-in",
                noop.pid: "no-op", d.processes[0].pid: "serve",
                **({control.pid: "control"} if control else {}),
                **({d.processes[1].pid: "dispatch"} if len(d.processes) > 1 else {}),
            })  # fmt: skip
            print("Stalls beside each burst's slowest requests:\n   "
                  + "\n   ".join(stalls_during(stall_log)))  # fmt: skip
        print(f"serve's memory after the load: {memory(d.processes[0].pid)}")
        print(f"the no-op app's memory: {memory(noop.pid)}")
    finally:
        for app in (noop, control, watcher):
            if app is not None:
                app.terminate()
                app.wait(timeout=10)
        d.stop_all()


def start_noop(
    d: Deployment, gc_log: Path | None, stall_log: Path | None, app: str
) -> tuple[subprocess.Popen, int]:
    """benchmarks/noop_bolt.py on a port of its own, once it listens; its process and port."""
    port = free_port()
    noop = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "noop_bolt.py"), "--port", str(port),
         "--signing-secret", SIGNING_SECRET, "--slack-api-url", d.standin.url],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, **gc_env(gc_log, app, stall_log)},
    )  # fmt: skip
    noop.stdout.readline()
    return noop, port


def load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20, help="per client and phase")
    parser.add_argument("--referrals", type=int, default=40, help="per round of clicks")
    parser.add_argument("--rounds", type=int, default=5, help="bursts to each app per phase")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument(
        "--phases", nargs="+", choices=PHASES, default=list(PHASES),
        help="clicks, then commands; either alone",
    )  # fmt: skip
    parser.add_argument(
        "--layouts", nargs="+", choices=tuple(LAYOUTS), default=list(LAYOUTS),
        help="single: serve alone; procfile: serve --no-dispatcher and handover dispatch",
    )  # fmt: skip
    parser.add_argument(
        "--gc-log", nargs="?", const="", metavar="DIR",
        help="list the garbage collections each app made during each burst (benchmarks/gctrace);"
        " with DIR, keep each process's log of them there",
    )  # fmt: skip
    parser.add_argument(
        "--stall-log", nargs="?", const="", metavar="DIR",
        help="list, beside each burst's 10 slowest requests, every stall of 20 ms or more of "
        "the app's processes and of this client, and what ran in it (benchmarks/gctrace/"
        "stalls.py); with DIR, keep each process's log of them there",
    )  # fmt: skip
    parser.add_argument(
        "--control", action="store_true",
        help="a second no-op app in Handover's place: the ratio two identical apps show",
    )  # fmt: skip
    args = parser.parse_args()
    rng = random.Random(13)
    with tempfile.TemporaryDirectory() as tmp, deployments(Path(tmp)) as make:
        for layout in args.layouts:
            run_layout(args, make, layout, rng)
    print(f"load average at the end: {load_average()}")


if __name__ == "__main__":
    main()
