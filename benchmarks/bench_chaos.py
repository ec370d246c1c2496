"""Faults an auditor would try, counted: tried, survived, lost, doubled.

    python benchmarks/bench_chaos.py [--stall-seconds 70] [--referrals 100] [--commands 40]
                                     [--events 40] [--replays 60] [--log-rows 1000]
                                     [--overruns 11] [--only-overruns]

1. A stalled PostgreSQL (a proxy that stops forwarding: packets dropped, not refused) under
   `handover serve` at its default settings, while referrals, commands and events arrive and
   url_verification, a bad signature and /healthz are probed; then the case system's retries.
2. Every file of the hostile Slack corpus (tests/chaos/corpus), signed, on SQLite and PostgreSQL.
3. Signed Slack requests (close, log, clicks) each replayed twice within the signature window.
4. Tampering: every statement the runtime role might try against the log, and rows deleted or
   altered by a superuser, each checked with `handover log verify`'s chain check.
5. Overruns: a `handover dispatch` SIGSTOPped past its claim in the middle of posting a prompt,
   another taking the rows over and sending them, then the frozen post landing late
   (tests/chaos/overrun_scenario.py), once per referral; `--only-overruns` runs this part alone.

Databases are created beside HANDOVER_TEST_PG_URL's (as the tests do) and dropped after.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bot.db import create_db_engine, make_session_factory  # noqa: E402
from bot.migrate import upgrade  # noqa: E402
from bot.models import AuditEvent  # noqa: E402
from bot.services import audit  # noqa: E402
from tests.chaos.make_corpus import CORPUS, RESPONSE_URL  # noqa: E402
from tests.chaos.overrun_scenario import Overruns, copies_by_row  # noqa: E402
from tests.chaos.stall_proxy import StallProxy  # noqa: E402
from tests.chaos.stall_scenario import run_stall  # noqa: E402
from tests.chaos.test_corpus import CONTENT_TYPES  # noqa: E402
from tests.chaos.test_tamper import ATTEMPTS  # noqa: E402
from tests.conftest import PG_URL, postgres_database  # noqa: E402
from tests.e2e.harness import deployments, slack_user_of  # noqa: E402
from tests.handlers.slack_payloads import (  # noqa: E402
    build_scenario,
    running_bot,
    sign,
    slack_user,
    slash_command,
)

START = datetime(2026, 12, 26, 10, 0, tzinfo=ZoneInfo("Europe/London"))
# A working Tuesday morning: Jo Smith's deputy Kiran Patel is prompted at once.
OVERRUN_START = datetime(2026, 12, 29, 10, 0, tzinfo=ZoneInfo("Europe/London"))
OVERRUN_TARGETS = ["person:hv-jsmith", "person:prob-tward", "team:hv-north"]
FORM = "application/x-www-form-urlencoded"
Row = tuple[str, int, int, int, int]  # fault, tried, survived, lost, doubled


def stall(args: argparse.Namespace) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp, deployments(Path(tmp)) as make:
        deployment = make("postgresql", START)
        direct = deployment.database_url
        url = make_url(direct)
        with StallProxy(target=(url.host or "127.0.0.1", url.port or 5432)) as proxy:
            deployment.database_url = url.set(host="127.0.0.1", port=proxy.port).render_as_string(
                hide_password=False
            )
            deployment.start_server()
            report = run_stall(
                deployment, proxy, direct, stall_seconds=args.stall_seconds,
                referrals=args.referrals, commands=args.commands, events=args.events,
            )  # fmt: skip
        tracebacks = deployment.logs().count("Traceback")
    print(report.figures())
    print(f"tracebacks in the server's log: {tracebacks}")
    bounded = sum(1 for a in report.attempts if (a.status is not None and a.status < 500)
                  or a.status == 503)  # fmt: skip
    limits = {"url_verification": 1.0, "bad signature": 1.0, "healthz": 2.0}
    in_time = sum(1 for p in report.probes if p.seconds < limits[p.kind])
    return [
        ("requests during a stall (answered, none 500)", len(report.attempts), bounded, 0, 0),
        ("probes during a stall (in 1 s / 2 s)", len(report.probes), in_time, 0, 0),
        ("referrals across the stall (after retries)", report.refs_sent, report.refs_stored,
         report.lost, report.refs_doubled),
    ]  # fmt: skip


def corpus(backend_url: str) -> Row:
    engine = create_db_engine(backend_url)
    factory = make_session_factory(engine)
    statuses: Counter[int] = Counter()
    files = sorted(CORPUS.iterdir())
    try:
        with running_bot(factory) as bot:
            build_scenario(factory, bot.client)
            for path in files:
                url = bot.catcher.new_url().encode()
                body = path.read_bytes().replace(RESPONSE_URL.encode(), url)
                statuses[bot.post(body, CONTENT_TYPES[path.suffix], sign(body)).status] += 1
    finally:
        engine.dispose()
    print(f"corpus on {make_url(backend_url).get_backend_name()}: {dict(sorted(statuses.items()))}")
    survived = sum(n for status, n in statuses.items() if status < 500)
    return (f"hostile Slack bodies, {make_url(backend_url).get_backend_name()}", len(files),
            survived, 0, 0)  # fmt: skip


def replays(backend_url: str, count: int) -> Row:
    """Each signed command sent once and replayed twice: answered once, or lost, or doubled."""
    engine = create_db_engine(backend_url)
    factory = make_session_factory(engine)
    commands = [("edt-mgr", "log open"), ("hv-jones", "oncall"), ("edt-bob", "help")]
    urls = []
    try:
        with running_bot(factory) as bot:
            build_scenario(factory, bot.client)
            for i in range(count):
                user, words = commands[i % len(commands)]
                url = bot.catcher.new_url()
                body = urlencode(slash_command(slack_user(user), words, response_url=url))
                headers = sign(body.encode())
                for _ in range(3):
                    bot.post(body.encode(), FORM, headers)
                urls.append(url)
            time.sleep(1.0)  # answers go out after the ack, from Bolt's threads
            answers = Counter(len(bot.catcher.answers(url)) for url in urls)
    finally:
        engine.dispose()
    survived = answers[1]
    doubled = sum(n for times, n in answers.items() if times > 1)
    return ("signed slash commands, each replayed twice", count, survived, answers[0], doubled)


def tamper(backend_url: str, rows: int) -> list[Row]:
    engine = create_db_engine(backend_url)
    factory = make_session_factory(engine)
    at = datetime(2026, 12, 26, tzinfo=UTC)
    with factory.begin() as session:
        for i in range(rows):
            audit.record(session, "prompt_sent", at=at + timedelta(seconds=i), actor="bench")
    rng = random.Random(14)
    detected = 0
    changes = 20
    for n in range(changes):
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            live = conn.execute(select(AuditEvent.id).order_by(AuditEvent.id)).scalars().all()
            victim = rng.choice(live[:-1])
            if n % 2:
                conn.execute(text("DELETE FROM audit_log WHERE id = :i"), {"i": victim})
            else:
                conn.execute(text("UPDATE audit_log SET actor = 'x' WHERE id = :i"), {"i": victim})
        with factory() as session:
            check = audit.verify_chain(session)
        detected += check.broken_row == victim
        with engine.begin() as conn:  # put the log back as it was for the next change
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text("TRUNCATE audit_log, audit_chain"))
        with factory.begin() as session:
            for i in range(rows):
                audit.record(session, "prompt_sent", at=at + timedelta(seconds=i), actor="bench")
    engine.dispose()
    refused = _runtime_role_refusals(backend_url)
    return [
        ("runtime role's tampering statements", len(ATTEMPTS), refused, 0, 0),
        (f"superuser deletions/alterations in a {rows}-row log (named by verify)", changes,
         detected, 0, 0),
    ]  # fmt: skip


def _runtime_role_refusals(url: str) -> int:
    from bot.dbroles import create_runtime_role

    role = f"handover_bench_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    owner_engine = create_db_engine(url)
    try:
        create_runtime_role(owner_engine, role)
        runtime = create_db_engine(make_url(url).set(username=role).render_as_string(False))
        refused = 0
        for statement in ATTEMPTS.values():
            try:
                with runtime.begin() as conn:
                    conn.execute(text(statement))
            except Exception as exc:
                refused += getattr(getattr(exc, "orig", None), "sqlstate", None) == "42501"
        runtime.dispose()
        return refused
    finally:
        owner_engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def overruns(rounds: int) -> Row:
    """`rounds` referrals, each with a dispatcher frozen past its claim while posting one of
    its prompts; what Slack holds at the end."""
    with tempfile.TemporaryDirectory() as tmp, deployments(Path(tmp)) as make:
        deployment = make("postgresql", OVERRUN_START)
        deployment.start_server("--no-dispatcher")
        scenario = Overruns(deployment)
        for n in range(rounds):

            def post_referral(n: int = n) -> None:
                status, answer = deployment.api("POST", "/api/referrals", {
                    "external_ref": f"LCS-2026-OVR{n:03d}", "category": "neglect",
                    "urgency": "standard", "referrer": "edt-ben", "notify": OVERRUN_TARGETS,
                })  # fmt: skip
                assert status == 201, answer

            scenario.round(slack_user_of("hv-kpatel"), post_referral)
        deployment.settle()
        scenario.stop()
        copies = copies_by_row(deployment)
        prompts = deployment.prompt_ids()
        report = scenario.report
    lost = sum(1 for row in prompts if copies[("handover_prompt", row)] == 0)
    doubled = sum(1 for count in copies.values() if count > 1)
    freezes = sorted(report.freeze_seconds)
    print(
        f"overruns: {report.rounds} freezes ({freezes[0]:.1f}-{freezes[-1]:.1f} s real time), "
        f"{len(report.deleted)} late copies deleted, {len(prompts)} prompts, "
        f"{sum(copies.values())} messages in Slack of {len(copies)} rows"
    )
    # Survived: the frozen dispatcher's late copy was found and deleted.
    return (
        f"dispatchers SIGSTOPped past their claim mid-delivery ({len(prompts)} prompts, "
        f"{len(copies)} messages)", report.rounds, len(report.deleted), lost, doubled,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stall-seconds", type=float, default=70)
    parser.add_argument("--referrals", type=int, default=100)
    parser.add_argument("--commands", type=int, default=40)
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--replays", type=int, default=60)
    parser.add_argument("--log-rows", type=int, default=1000)
    parser.add_argument("--overruns", type=int, default=11)
    parser.add_argument("--only-overruns", action="store_true")
    args = parser.parse_args()
    if args.only_overruns:
        _print_rows([overruns(args.overruns)])
        return
    rows: list[Row] = stall(args)
    name = f"{make_url(PG_URL).database}_bench_chaos_{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp, postgres_database(name) as pg_url:
        sqlite_url = f"sqlite:///{Path(tmp) / 'chaos.db'}"
        for url in (sqlite_url, pg_url):
            upgrade(url)
        rows.append(corpus(sqlite_url))
        rows.append(corpus(pg_url))
        with create_engine(pg_url).begin() as conn:  # a clean database for each part
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text("TRUNCATE referrals, targets, prompts, responses, audit_log, "
                              "audit_chain, slack_requests, slack_events, people, teams, shifts, "
                              "absences, closures, rota_versions CASCADE"))  # fmt: skip
        rows.append(replays(pg_url, args.replays))
        with create_engine(pg_url).begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))
            conn.execute(text("TRUNCATE audit_log, audit_chain"))
        rows += tamper(pg_url, args.log_rows)
    rows.append(overruns(args.overruns))
    _print_rows(rows)


def _print_rows(rows: list[Row]) -> None:
    print()
    print("| fault | tried | survived | lost | doubled |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for fault, tried, survived, lost, doubled in rows:
        print(f"| {fault} | {tried} | {survived} | {lost} | {doubled} |")


if __name__ == "__main__":
    main()
