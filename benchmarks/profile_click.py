"""One click's CPU in-process: `serve`'s web app against the no-op Bolt app, layer by layer.

    python benchmarks/profile_click.py [--clicks 2000] [--rounds 5] [--threads 50] [--profile]
        [--kind click|command]

Builds `serve`'s runtime (no dispatcher) and benchmarks/noop_bolt.py's app in this process, on
a SQLite database with the sample rota and the Slack stand-in, and sends each the same kind of
signed Acknowledge click straight through WSGI (no sockets), alternating rounds: one at a time,
or from `--threads` clients at once (50 is bench_clicks.py's burst, where the job writer's
batches gather; one at a time, each of the no-op's clicks also waits on Bolt's 10 ms poll for
its ack, which Handover's listeners, run on the request's thread, do not).
Prints the process CPU per click (every thread: the request's, Bolt's listener's and the job
writer's) for each and their ratio, the threads' shares, and Handover's layers (the guard in
front of Bolt, Bolt's dispatch up to the ack, and one at a time the rest of the request).
With `--profile`, cProfile's top functions of one round of each (CALLERS=pattern,... in the
environment also prints who called those). With `--kind command`, each request is
bench_clicks.py's `/handover oncall` instead of a click (its job written, not run: no
dispatcher here); the figures are then a command's.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_clicks import command_form  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402

from handlers import ids  # noqa: E402
from tests.e2e.harness import SIGNING_SECRET, deployments, slack_signature  # noqa: E402

START_ISO = "2027-01-05T10:00:00+00:00"


def click_body(n: int) -> bytes:
    payload = {
        "type": "block_actions",
        "team": {"id": "T0STANDIN", "domain": "handover-standin"},
        "user": {"id": "U0BENCH", "username": "bench", "name": "bench", "team_id": "T0STANDIN"},
        "api_app_id": "A0HANDOVER",
        "token": "verification-token-unused",
        "container": {
            "type": "message",
            "message_ts": "1700000000.000100",
            "channel_id": "D0BENCH",
            "is_ephemeral": False,
        },
        "trigger_id": f"{n}.1.bench",
        "channel": {"id": "D0BENCH", "name": "directmessage"},
        "message": {"type": "message", "ts": "1700000000.000100", "text": "A referral"},
        "response_url": f"http://127.0.0.1:9/response/click-{n}",
        "actions": [
            {
                "action_id": ids.ACK,
                "block_id": "handover_prompt_actions",
                "text": {"type": "plain_text", "text": "Acknowledge"},
                "value": str(1_000_000 + n),
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


def command_body(n: int) -> bytes:
    return command_form("U0BENCH", f"http://127.0.0.1:9/response/cmd-{n}", n)


BODIES = {"click": click_body, "command": command_body}


def environs(count: int, first: int, kind: str = "click") -> list[dict]:
    out = []
    for n in range(first, first + count):
        body = BODIES[kind](n)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        headers.update(slack_signature(body, secret=SIGNING_SECRET))
        out.append(
            EnvironBuilder(
                path="/slack/events", method="POST", data=body, headers=headers
            ).get_environ()
        )
    return out


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each of this process's threads so far, by thread name (numbers dropped)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = re.sub(r"[_-]?\d+(_\d+)?$", "", names.get(int(task.name), "?"))
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def call(app, environ: dict) -> None:
    status = []
    for _ in app(environ, lambda s, h, e=None: status.append(s)):
        pass
    assert status[0].startswith("200"), status


def send(app, batch: list[dict], threads: int) -> None:
    """Each of `threads` clients sends its share of `batch` one after another."""
    if threads == 1:
        for environ in batch:
            call(app, environ)
        return
    clients = [
        threading.Thread(target=lambda mine=batch[i::threads]: [call(app, e) for e in mine])
        for i in range(threads)
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=2000, help="per round and app")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--kind", choices=tuple(BODIES), default="click")
    parser.add_argument(
        "--threads", type=int, default=1, help="clients at once (50: bench_clicks.py's burst)"
    )
    args = parser.parse_args()
    from datetime import datetime

    from benchmarks.noop_bolt import build as build_noop
    from bot.settings import Settings
    from bot.web import http
    from bot.web.http import create_web_app
    from bot.web.server import DATABASE_SLOTS, build_runtime

    with tempfile.TemporaryDirectory() as tmp, deployments(Path(tmp)) as make:
        d = make("sqlite", datetime.fromisoformat(START_ISO))
        os.environ.update(d.env)
        settings = Settings.from_env()
        runtime = build_runtime(settings, with_dispatcher=False)
        handover = create_web_app(
            runtime.bolt_app, runtime.services, database_slots=DATABASE_SLOTS
        ).wsgi_app
        noop = build_noop(SIGNING_SECRET, d.standin.url).wsgi_app

        # The layers in Handover, each in the CPU time of the thread it runs in: the guard,
        # Bolt's dispatch (to the ack).
        layers = {"guard": 0, "dispatch": 0}

        def timed(layer: str, function):
            def run(*a, **k):
                t = time.thread_time_ns()
                try:
                    return function(*a, **k)
                finally:
                    layers[layer] += time.thread_time_ns() - t

            return run

        http.check_slack_request = timed("guard", http.check_slack_request)
        runtime.bolt_app.dispatch = timed("dispatch", runtime.bolt_app.dispatch)

        n = 0
        for app in (handover, noop):  # warm up
            for environ in environs(200, n, args.kind):
                call(app, environ)
            n += 200
        runtime.jobs.drain(30)
        idle = thread_cpu()
        time.sleep(2)
        idle = {k: v - idle.get(k, 0.0) for k, v in thread_cpu().items() if v - idle.get(k, 0.0)}
        print(f"idle threads' CPU over 2 s: {idle}")
        per_click = {"handover": [], "noop": []}
        by_thread: dict[str, dict[str, float]] = {"handover": {}, "noop": {}}
        thread = {"handover": [], "noop": []}
        split = []
        for _ in range(args.rounds):
            for name, app in (("handover", handover), ("noop", noop)):
                batch = environs(args.clicks, n, args.kind)
                n += args.clicks
                layers.update(guard=0, dispatch=0)
                threads_before = thread_cpu()
                cpu, own = time.process_time_ns(), time.thread_time_ns()
                send(app, batch, args.threads)
                if name == "handover":
                    runtime.jobs.drain(30)
                time.sleep(0.2)  # listeners' threads finish
                own = time.thread_time_ns() - own
                for k, v in thread_cpu().items():
                    used = v - threads_before.get(k, 0.0)
                    by_thread[name][k] = by_thread[name].get(k, 0.0) + used
                per_click[name].append((time.process_time_ns() - cpu) / args.clicks / 1000)
                thread[name].append(own / args.clicks / 1000)
                if name == "handover":
                    split.append(
                        (
                            layers["guard"] / args.clicks / 1000,
                            layers["dispatch"] / args.clicks / 1000,
                            (own - layers["guard"] - layers["dispatch"]) / args.clicks / 1000,
                        )
                    )
        med = {k: statistics.median(v) for k, v in per_click.items()}
        print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        for name in ("handover", "noop"):
            print(
                f"{name:<9} process CPU a {args.kind}: median {med[name]:6.0f} µs "
                f"(rounds: {', '.join(f'{x:.0f}' for x in per_click[name])})"
                + (f"; request thread {statistics.median(thread[name]):5.0f} µs"
                   if args.threads == 1 else "")
            )  # fmt: skip
        for name in ("handover", "noop"):
            clicks = args.clicks * args.rounds
            print(
                f"{name} CPU a {args.kind} by thread (µs, the pauses' included; not the clients'): "
                + ", ".join(
                    f"{k} {v / clicks * 1e6:.0f}"
                    for k, v in sorted(by_thread[name].items(), key=lambda kv: -kv[1])
                    if v
                )
            )
        ratios = [h / o for h, o in zip(per_click["handover"], per_click["noop"], strict=True)]
        print(
            f"ratio: median {statistics.median(ratios):.2f} "
            f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
        )
        guard, disp, rest = (statistics.median(x) for x in zip(*split, strict=True))
        print(
            f"handover, a {args.kind}: guard {guard:.0f} µs, "
            f"Bolt's dispatch to the ack {disp:.0f} µs"
            + (f", the rest of the request's thread (Flask, the counter) {rest:.0f} µs"
               if args.threads == 1 else "")
        )  # fmt: skip
        if args.profile:
            for name, app in (("handover", handover), ("noop", noop)):
                batch = environs(args.clicks, n, args.kind)
                n += args.clicks
                profiler = cProfile.Profile()
                profiler.enable()
                for environ in batch:
                    call(app, environ)
                profiler.disable()
                out = io.StringIO()
                stats = pstats.Stats(profiler, stream=out).sort_stats("tottime")
                stats.print_stats(45)
                if os.environ.get("CALLERS"):
                    stats.print_callers(*os.environ["CALLERS"].split(","))
                print(f"== {name}: cProfile, tottime")
                print(out.getvalue())
        runtime.shutdown()


if __name__ == "__main__":
    main()
