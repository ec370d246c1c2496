"""The arithmetic of bench_clicks.py's headline: the p99 of the rounds pooled, and their ratios."""

from collections import Counter

from benchmarks.bench_clicks import Figures, p99, pooled, summary


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

    headline = summary(handover, noop)[-1]

    assert headline.startswith("p99 ratio of the 3 rounds pooled: 1.50 (goal ≤ 1.5)")
    assert headline.endswith("median of the round ratios 1.00 (1.00, 3.00, 1.00)")
