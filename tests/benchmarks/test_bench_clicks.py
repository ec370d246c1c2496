"""The arithmetic of bench_clicks.py's headline: the p99 of the rounds pooled, and their ratios;
its garbage collections' log (--gc-log, benchmarks/gctrace)."""

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from benchmarks.bench_clicks import (
    GC_WINDOWS,
    Figures,
    collections_during,
    gc_env,
    p99,
    pooled,
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
