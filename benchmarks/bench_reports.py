"""`handover report` and `handover log` over a growing audit log (10k, 100k, 1M rows).

    python benchmarks/bench_reports.py [--rows 10000 100000 1000000] [--database-url sqlite|URL]

Each size gets a fresh database (a SQLite file, or PostgreSQL beside HANDOVER_TEST_PG_URL's, or
beside the PostgreSQL URL given),
the sample rota, and an audit log of realistic referrals (received, three prompts scheduled and
sent, two answered, a reminder and a breach for the third) written straight into `audit_log`
(the hash chain is not what is measured). Then the installed commands run as processes:
`handover report`, `handover report` over one week (`--since`/`--until`, read through the `at`
index) and `handover log` (to /dev/null) in each format, over one week and for one referral.
Prints each process's wall time, its CPU time, its own peak RSS and the time per row, so growth
is read across the sizes; on PostgreSQL the CPU time of the server's backends for the command
too (read from /proc: the server must run on this machine), the part of the work the command's
own CPU time leaves out; and the load average, since the machine may be shared.

`--baseline DIR` also runs each `log` and `report` command with another checkout's code
(DIR/.venv's Python, in DIR), in turn with this one's (`--repeat N` times each, the order
alternating), and prints the two side by side with the ratio of their CPU times: `--baseline
/work/main` compares a branch with main in one sitting; each `log` must then print, byte for
byte, what the baseline's prints, and each `report` the same table, CSV and JSON.
`--log-only` skips `report`, `--report-only` skips `log`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, func, insert, make_url, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_dispatch  # noqa: E402
from bench_dispatch import drop_database, fresh_database  # noqa: E402

from bot.db import BATCH_TIMEOUTS, create_db_engine  # noqa: E402
from bot.migrate import upgrade  # noqa: E402
from bot.models import AuditEvent  # noqa: E402

START = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)
TARGETS = ["person:hv-kpatel", "team:gp-northgate", "role:police_dau"]
RECIPIENTS = ["hv-kpatel", "gp-drshah", "pol-pc-ahmed"]
ROWS_PER_REFERRAL = 10


def referral_rows(n: int) -> list[dict]:
    """The ten audit rows of referral number `n`."""
    referral_id = f"HO-{n:06d}"[:32]
    at = START + timedelta(minutes=7 * n)
    rows = [dict(at=at, referral_id=referral_id, event="referral_received", actor="edt-amy")]
    for target, recipient in zip(TARGETS, RECIPIENTS, strict=True):
        rows.append(dict(at=at, referral_id=referral_id, event="prompt_scheduled",
                         target=target, recipient=recipient))  # fmt: skip
    sent = at + timedelta(hours=15)
    for target, recipient in zip(TARGETS, RECIPIENTS, strict=True):
        rows.append(dict(at=sent, referral_id=referral_id, event="prompt_sent",
                         target=target, recipient=recipient))  # fmt: skip
    rows.append(dict(at=sent + timedelta(minutes=20), referral_id=referral_id,
                     event="acknowledged", target=TARGETS[0], actor=RECIPIENTS[0]))  # fmt: skip
    rows.append(dict(at=sent + timedelta(minutes=50), referral_id=referral_id,
                     event="not_known", target=TARGETS[1], actor=RECIPIENTS[1]))  # fmt: skip
    rows.append(dict(at=sent + timedelta(hours=4), referral_id=referral_id, event="breach",
                     target=TARGETS[2], recipient=RECIPIENTS[2]))  # fmt: skip
    return rows


def fill(url: str, count: int) -> None:
    engine = create_db_engine(url, timeouts=BATCH_TIMEOUTS)
    batch: list[dict] = []
    with engine.begin() as conn:
        # Ids follow the rota import's row: the log's writer gives ids itself, so a PostgreSQL
        # sequence has not moved past them.
        row_id = conn.scalar(select(func.coalesce(func.max(AuditEvent.id), 0)))
        for n in range(count // ROWS_PER_REFERRAL):
            for row in referral_rows(n):
                row_id += 1
                batch.append({
                    "id": row_id, "actor": None, "recipient": None, "target": None,
                    "detail": json.dumps({"bench": True}), "rota_version": 1,
                    "prev_id": row_id - 1 or None, "prev_hash": "0" * 64, "row_hash": "0" * 64,
                    **row,
                })  # fmt: skip
            if len(batch) >= 20_000:
                conn.execute(insert(AuditEvent), batch)
                batch.clear()
        if batch:
            conn.execute(insert(AuditEvent), batch)
    engine.dispose()


def peak_rss_mb(pid: int) -> float:
    """The process's own high-water mark of resident memory so far (Linux), in MB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
    return int(found.group(1)) / 1024 if found else 0.0


def python_of(checkout: Path | None) -> str:
    """The Python that runs a checkout's code (this one's without a checkout)."""
    return sys.executable if checkout is None else str(checkout / ".venv" / "bin" / "python")


class ServerCpu:
    """CPU seconds of the PostgreSQL backends serving one database on this machine, read from
    /proc while a command runs: the server's share of its work, which the command's own CPU
    time leaves out (and which a shared machine's wall time hides)."""

    def __init__(self, url: str) -> None:
        self._engine = create_engine(url, isolation_level="AUTOCOMMIT")
        self._conn = self._engine.connect()
        self._database = make_url(url).database
        self._seen: dict[int, float] = {}  # backend pid -> its CPU seconds when last read

    def sample(self) -> None:
        """Read the CPU time of each backend of the database (but this reader's own)."""
        pids = self._conn.scalars(
            text(
                "SELECT pid FROM pg_stat_activity WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": self._database},
        )
        for pid in pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone, or not on this machine
                continue
            self._seen[pid] = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")

    def total(self) -> float:
        """The CPU seconds read, summed over the backends; the reader is closed."""
        self._conn.close()
        self._engine.dispose()
        return sum(self._seen.values())


def timed(url: str, *args: str, checkout: Path | None = None) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak RSS (MB) of `handover ARGS`, its output thrown away;
    with `checkout`, that checkout's code runs it (its .venv's Python, in its folder)."""
    return timed_with_server(url, *args, checkout=checkout)[:3]


def timed_with_server(
    url: str, *args: str, checkout: Path | None = None
) -> tuple[float, float, float, float | None]:
    """`timed`, and on PostgreSQL the CPU seconds of the server's backends for the command
    (`ServerCpu`; None on SQLite): read at each poll, so the last 20 ms may be missed.

    The peak is read from the process's own VmHWM while it runs: the rusage of a child counts
    the memory of this process at the fork (grown by `fill`) as the child's."""
    server = ServerCpu(url) if url.startswith("postgresql") else None
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "HANDOVER_"))}
    env["DATABASE_URL"] = url
    started = time.perf_counter()
    process = subprocess.Popen(
        [python_of(checkout), "-m", "bot", *args], env=env, cwd=checkout,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    peak = 0.0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, peak_rss_mb(process.pid))
        if server is not None:
            server.sample()
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"handover {' '.join(args)} failed")
    process.returncode = os.waitstatus_to_exitcode(status)
    server_cpu = server.total() if server is not None else None
    return elapsed, usage.ru_utime + usage.ru_stime, peak, server_cpu


def log_commands(week: list[str]) -> list[tuple[str, list[str]]]:
    """`handover log` in each format over the whole log, and jsonl over a window and a referral."""
    referral = ["--referral", "HO-000100"]  # in every size's log
    return [
        ("log --format jsonl", ["log", "--format", "jsonl"]),
        ("log --format csv", ["log", "--format", "csv"]),
        ("log (table)", ["log"]),
        ("log jsonl, one week", ["log", "--format", "jsonl", *week]),
        ("log jsonl, referral", ["log", "--format", "jsonl", *referral]),
    ]


def report_commands(week: list[str]) -> list[tuple[str, list[str]]]:
    """`handover report` over the whole log and over a week."""
    return [("report", ["report"]), ("report, one week", ["report", *week])]


def figures(seconds: float, cpu: float, rss: float, server: float | None, count: int) -> str:
    on_server = "" if server is None else f", server CPU {server:6.2f} s"
    return (
        f"{seconds:6.2f} s (CPU {cpu:6.2f} s, {cpu / count * 1e6:5.1f} µs a row{on_server})  "
        f"peak RSS {rss:4.0f} MB"
    )


def time_command(
    url: str, count: int, label: str, command: list[str], baseline: Path | None, repeat: int
) -> None:
    """One command's figures, beside the baseline checkout's when there is one, run `repeat`
    times in turn, the baseline's first then this one's first (a cache warmed by the first
    run, or a load that changes, favours neither); each figure is the lowest CPU time's run."""
    Run = tuple[float, float, float, float | None]
    mine: list[Run] = []
    theirs: list[Run] = []
    for turn in range(repeat):
        runs = [(mine, None), (theirs, baseline)] if baseline is not None else [(mine, None)]
        for results, checkout in runs[:: -1 if turn % 2 == 0 else 1]:
            results.append(timed_with_server(url, *command, checkout=checkout))
    seconds, cpu, rss, server = min(mine, key=lambda run: run[1])
    line = f"  {count:>9,} rows  {label:<19} {figures(seconds, cpu, rss, server, count)}"
    if theirs:
        before = min(theirs, key=lambda run: run[1])
        line += (
            f"  | baseline {figures(*before, count)}  CPU ratio {cpu / before[1]:.2f} "
            f"({before[1] / cpu:.1f}x faster)"
        )
        if server is not None and before[3] is not None:
            both, both_before = cpu + server, before[1] + before[3]
            line += f", with the server's {both / both_before:.2f}"
    print(f"{line}  load average {os.getloadavg()[0]:.1f}", flush=True)


def printed_digest(url: str, command: list[str], checkout: Path | None) -> str:
    """The SHA-256 of what `handover COMMAND` prints, run by a checkout's code (or this one's),
    read as it is printed: a million rows of log are hundreds of megabytes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "HANDOVER_"))}
    env["DATABASE_URL"] = url
    process = subprocess.Popen(
        [python_of(checkout), "-m", "bot", *command], env=env, cwd=checkout,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert process.stdout is not None
    digest = hashlib.sha256()
    while chunk := process.stdout.read(1 << 20):
        digest.update(chunk)
    if process.wait() != 0:
        raise SystemExit(f"handover {' '.join(command)} failed")
    return digest.hexdigest()


def same_output(url: str, count: int, commands: list[list[str]], baseline: Path) -> None:
    """Stop unless each command prints, byte for byte, what the baseline's code prints."""
    for command in commands:
        if printed_digest(url, command, None) != printed_digest(url, command, baseline):
            raise SystemExit(f"{' '.join(command)} differs from the baseline's at {count}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument(
        "--database-url",
        help="'sqlite' for a SQLite file, or a PostgreSQL URL to create the databases beside "
        "(default HANDOVER_TEST_PG_URL's)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout (with its .venv) whose code also runs each command, for the ratio",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="runs of each command (each side's, in turn, with --baseline); the lowest CPU counts",
    )
    parser.add_argument(
        "--db-prefix",
        default="handover_reports",
        help="the start of each database's (or SQLite file's) name (default handover_reports)",
    )
    parser.add_argument("--log-only", action="store_true", help="skip handover report")
    parser.add_argument("--report-only", action="store_true", help="skip handover log")
    args = parser.parse_args()
    backend = "SQLite" if args.database_url == "sqlite" else "PostgreSQL"
    if args.database_url and args.database_url != "sqlite":
        bench_dispatch.PG_URL = args.database_url  # the server to create the databases on
    print(f"handover report and handover log, {backend}")
    week = ["--since", "2026-03-02", "--until", "2026-03-08"]  # inside every size's log
    with tempfile.TemporaryDirectory() as tmp:
        for count in args.rows:
            name = f"{args.db_prefix}_{os.getpid()}_{count}"
            if args.database_url == "sqlite":
                url = f"sqlite:///{tmp}/{name}.db"
                upgrade(url)
            else:
                url = fresh_database(name)
            try:
                env = {**os.environ, "DATABASE_URL": url}
                subprocess.run(
                    [sys.executable, "-m", "bot", "rota", "import", str(ROOT / "rota" / "sample")],
                    env=env, check=True, stdout=subprocess.DEVNULL,
                )  # fmt: skip
                fill(url, count)
                for label, command in [] if args.report_only else log_commands(week):
                    time_command(url, count, label, command, args.baseline, args.repeat)
                    if args.baseline is not None:
                        same_output(url, count, [command], args.baseline)
                for label, command in [] if args.log_only else report_commands(week):
                    time_command(url, count, label, command, args.baseline, args.repeat)
                    if args.baseline is not None:
                        forms = ([], ["--format", "csv"], ["--format", "json"])
                        same_output(url, count, [command + form for form in forms], args.baseline)
            finally:
                if args.database_url != "sqlite":
                    drop_database(name)


if __name__ == "__main__":
    main()
