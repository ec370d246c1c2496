"""The arithmetic of bench_clicks.py's headline: the p99 of the rounds pooled, and their ratios;
its garbage collections' log (--gc-log, benchmarks/gctrace) and its stalls' (--stall-log)."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from benchmarks.bench_clicks import (
    BURSTS,
    GC_WINDOWS,
    PROCESS_LABELS,
    Figures,
    collections_during,
    cpu_between,
    gc_env,
    machine_between,
    p99,
    pooled,
    stalls_during,
    summary,
)


def burst(latencies: list[float], statuses: Counter | None = None) -> Figures:
    return Figures(latencies, statuses or Counter({200: len(latencies)}), 1.0, [])


def test_p99_is_the_tenth_slowest_of_1000_and_the_fiftieth_of_5000() -> None:
    assert p99([float(n) for n in range(1, 1001)]) == 991.0
    assert p99([float(n) for n in range(5000, 0, -1)]) == 4951.0


def test_pooling_puts_every_rounds_samples_and_failures_together() -> None:
    first = burst([0.1] * 990 + [1.0] * 10, Counter({200: 998, 404: 2}))
    second = burst([0.2] * 1000, Counter({200: 999, "timeout": 1}))

    both = pooled([first, second])

    assert len(both.latencies) == 2000
    assert both.statuses == Counter({200: 1997, 404: 2, "timeout": 1})
    assert both.elapsed == 2.0
    # One round's 10 slow samples are under 1% of the pool: its p99 is not theirs.
    assert first.p99() == 1.0
    assert both.p99() == 0.2


def test_summary_gives_the_pooled_ratio_and_the_round_ratios_median() -> None:
    handover = [burst([0.1] * 1000), burst([0.3] * 1000), burst([0.2] * 1000)]
    noop = [burst([0.1] * 1000), burst([0.1] * 1000), burst([0.2] * 1000)]

    *_, p50, headline = summary(handover, noop)

    assert p50 == "p50 ratio of the 3 rounds pooled: 2.00"

    assert headline.startswith("p99 ratio of the 3 rounds pooled: 1.50 (goal ≤ 1.5)")
    assert headline.endswith("median of the round ratios 1.00 (1.00, 3.00, 1.00)")


def test_the_slowest_requests_are_named_with_when_they_began() -> None:
    figures = Figures([0.1, 0.3, 0.05, 0.2], Counter({200: 4}), 1.0, [], [0.0, 0.5, 0.7, 1.25])

    assert figures.slowest(2) == "300 ms at +0.50, 200 ms at +1.25"
    # Pooled, each sample keeps its own start.
    assert pooled([figures, figures]).slowest(3) == (
        "300 ms at +0.50, 300 ms at +0.50, 200 ms at +1.25"
    )


def test_the_gc_trace_logs_each_collection_but_the_youngest(tmp_path: Path) -> None:
    script = "import gc; gc.collect(0); gc.collect(1); gc.collect(2)"
    subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, **gc_env(tmp_path, "handover")},
        check=True,
    )

    [log] = tmp_path.glob("handover.*")
    header, *rows = log.read_text().splitlines()
    assert header == "# -c"
    generations = [row.split()[1] for row in rows]
    # The script's two, one after the other (Python's own at start-up and exit around them).
    assert ["1", "2"] in [generations[i : i + 2] for i in range(len(generations))]
    assert all(generation in ("1", "2") for generation in generations)
    full = rows[generations.index("2")].split()
    assert len(full) == 5 and int(full[4]) > 0  # the objects left in the oldest generation


def test_collections_are_counted_in_the_burst_they_began_in(tmp_path: Path) -> None:
    (tmp_path / "handover.41").write_text(
        "# /x/bot/__main__.py serve\n"
        "99.0 2 50.00 10 30000\n"  # before the first burst: start-up's, left out
        "100.5 2 12.00 3 24000\n"
        "100.6 1 1.00 0\n"
        "120.5 2 8.00 1 24100\n"
    )
    (tmp_path / "noop.42").write_text("# noop_bolt.py --port 1\n105.2 2 31.00 0 86000\n")
    GC_WINDOWS[:] = [
        ("handover", "commands 1", 100.0, 101.5),
        ("noop", "no-op 1", 105.0, 106.0),
        ("handover", "commands 2", 110.0, 111.5),
    ]

    lines = collections_during(tmp_path)

    assert lines[0] == (
        "commands 1   serve (41): 1 full (12 ms at +0.5 s, 24000 left), 1 of generation 1 (1 ms)"
    )
    assert lines[1] == (
        "no-op 1      noop (42): 1 full (31 ms at +0.2 s, 86000 left), 0 of generation 1 (0 ms)"
    )
    assert lines[2] == "commands 2   serve (41): 0 full, 0 of generation 1 (0 ms)"
    assert lines[3] == (
        "serve (41) from the first burst on: 2 full collections, median 10.0 ms, "
        "max 12.0 ms, every 20 s (median)"
    )
    assert GC_WINDOWS == []


def test_the_stall_log_is_set_for_an_apps_processes_beside_the_gc_log(tmp_path: Path) -> None:
    env = gc_env(None, "noop", tmp_path)

    assert env["BENCH_STALL_LOG"] == str(tmp_path / "noop")
    assert "BENCH_GC_LOG" not in env
    assert env["PYTHONPATH"].split(os.pathsep)[0].endswith("gctrace")
    assert gc_env(None, "noop") == {}


def account(at: float, busy: int, total: int, **cpu_ms: float) -> str:
    return json.dumps({"cpu_at": at, "machine": [busy, total], "cpu_ms": cpu_ms})


def test_a_threads_cpu_is_read_between_the_accounts_around_a_span() -> None:
    rows = [
        json.loads(account(100.0, 10, 100, **{"waitress-1": 5.0, "waitress-2": 1.0, "w": 0.0})),
        json.loads(account(100.5, 50, 200, **{"waitress-1": 65.0, "waitress-2": 31.0, "w": 8.0})),
        json.loads(account(101.0, 90, 300, **{"waitress-1": 99.0, "waitress-2": 99.0, "w": 9.0})),
    ]

    used, busy = cpu_between(rows, 100.1, 100.4)

    # From the account before the span (100.0) to the one after it (100.5); waitress as one.
    assert used == {"waitress-*": 90.0, "w": 8.0}
    assert busy == 0.4
    # No account before the span: nothing can be said.
    assert cpu_between(rows, 99.0, 100.4)[0] == {}


def test_the_machine_log_names_who_had_the_cores_the_most_first(tmp_path: Path) -> None:
    machine = tmp_path / "machine"
    machine.write_text(
        "\n".join(
            [
                json.dumps({"names": {"7": "python -m bot serve", "8": "postgres: idle"}}),
                json.dumps({"at": 10.0, "cpu": {"7": 100, "8": 50}}),
                json.dumps({"at": 10.1, "cpu": {"7": 105}}),
                json.dumps({"at": 10.2, "cpu": {"7": 109, "8": 60}}),
                json.dumps({"at": 10.3, "cpu": {"8": 70}}),
            ]
        )
        + "\n"
    )
    tick = 1000 / os.sysconf("SC_CLK_TCK")

    line = machine_between(machine, 10.05, 10.15, {8: "the database"})

    # From the sample at or before 10.05 (10.0) to the first at or after 10.15 (10.2).
    assert line == (
        f"{19 * tick:.0f} ms of CPU over 200 ms: the database {10 * tick:.0f}, "
        f"python -m bot serve {9 * tick:.0f}"
    )


def test_a_stall_beside_the_slowest_requests_is_shown_with_the_threads_that_ran(
    tmp_path: Path,
) -> None:
    stall = {
        "at": 200.30, "ms": 60.0, "window_ms": 65.0, "cpu_ms": 58.0, "machine_busy": 0.5,
        "gc": [[0.001, 55.0, 2]],
        "threads": [{"name": "waitress-3", "cpu_ms": 57.0, "frames": ["a.py:1:f", "b.py:2:g"]}],
    }  # fmt: skip
    early = {**stall, "at": 200.05, "ms": 30.0}  # in the burst, before its slowest began
    (tmp_path / "noop.42").write_text(
        "# noop_bolt.py --port 1\n"
        + "\n".join(
            [
                account(199.9, 0, 100, **{"waitress-3": 0.0}),
                json.dumps(early),
                json.dumps(stall),
                account(201.1, 80, 300, **{"waitress-3": 300.0}),
            ]
        )
        + "\n"
    )
    (tmp_path / "client.40").write_text("# bench_clicks.py\n")
    latencies, began = [0.02] * 90 + [0.1] * 10, [0.1] * 90 + [0.25] * 10
    figures = Figures(latencies, Counter({200: 100}), 1.0, [], began, zero=200.0)
    BURSTS[:] = [("noop", "no-op 1", figures)]
    PROCESS_LABELS.clear()

    lines = stalls_during(tmp_path)

    assert lines[0] == "no-op 1: its 10 slowest in flight +0.25 to +0.35 s"
    assert lines[1].startswith("   noop (42): the burst's CPU 300 ms over 1000 ms (waitress-* 300)")
    assert lines[2] == "   noop (42): 2 stalls in the burst (90 ms), 1 of 20 ms+ beside the slowest"
    assert lines[3] == (
        "      +0.30 s 60 ms: process CPU 58 ms over 65 ms, machine 50% busy, gc gen 2 55 ms; "
        "waitress-3 57 ms [a.py:1:f < b.py:2:g]"
    )
    assert lines[4] == (
        "   client (40): 0 stalls in the burst (0 ms), 0 of 20 ms+ beside the slowest"
    )
    assert BURSTS == []
