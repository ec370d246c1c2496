"""The signed case-system API at 20 concurrent clients: referrals posted to `handover serve`.

    python benchmarks/bench_api.py [--clients 20] [--requests 10] [--backend sqlite|postgresql]

`handover serve` (HTTP mode, its dispatcher in-process, the stand-in as Slack) with the sample
rota; each client thread posts its referrals one after another, all starting together. Prints
p50, p99, throughput and the answers other than 201.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import deployments  # noqa: E402

START = datetime(2027, 1, 5, 10, 0, tzinfo=ZoneInfo("Europe/London"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, deployments(Path(tmp)) as make:
        d = make(args.backend, START)
        d.start_server()
        latencies: list[float] = []
        statuses: Counter = Counter()
        lock = threading.Lock()
        start = threading.Barrier(args.clients + 1)

        def client(c: int) -> None:
            start.wait()
            for r in range(args.requests):
                body = {
                    "external_ref": f"API-{c}-{r}",
                    "category": "neglect",
                    "urgency": "standard",
                    "referrer": "edt-amy",
                    "notify": ["person:hv-kpatel", "role:police_dau"],
                    "summary": "bench",
                }
                began = time.perf_counter()
                status, _ = d.api("POST", "/api/referrals", body)
                took = time.perf_counter() - began
                with lock:
                    latencies.append(took)
                    statuses[status] += 1

        threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        ordered = sorted(latencies)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        print(
            f"{args.clients} clients x {args.requests} referrals, {args.backend}: "
            f"p50 {statistics.median(ordered) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, "
            f"{len(ordered) / elapsed:.0f} req/s; answers {dict(statuses)}"
        )


if __name__ == "__main__":
    main()
