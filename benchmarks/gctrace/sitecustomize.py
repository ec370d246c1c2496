"""bench_clicks.py --gc-log: every garbage collection of generation 1 or 2 a process makes,
appended to BENCH_GC_LOG.PID as `wall-clock start, generation, ms, collected, objects left in
the oldest generation (after a full pass)`. Loaded by Python at start-up through PYTHONPATH
(`sitecustomize`), so the product's code is measured unchanged. With BENCH_GC_TYPES set, each
full pass also records the 8 commonest types left in the oldest generation (what lives long).
With BENCH_STALL_LOG set (--stall-log), the process's stalls are logged too (stalls.py)."""

import gc
import os
import sys
import time

if os.environ.get("BENCH_STALL_LOG"):
    sys.path.insert(0, os.path.dirname(__file__))
    import stalls

    stalls.start(os.environ["BENCH_STALL_LOG"])

_path = os.environ.get("BENCH_GC_LOG")
if _path:
    _log = open(f"{_path}.{os.getpid()}", "a", buffering=1)  # noqa: SIM115 (for the process)
    _types = bool(os.environ.get("BENCH_GC_TYPES"))
    _began = [0.0, 0.0]
    _log.write(f"# {' '.join(sys.argv)}\n")

    def _record(phase: str, info: dict) -> None:
        if phase == "start":
            _began[:] = [time.time(), time.perf_counter()]
            return
        generation = info["generation"]
        if generation == 0:
            return
        took = (time.perf_counter() - _began[1]) * 1000
        left = ""
        if generation == 2:
            oldest = gc.get_objects(2)
            left = f" {len(oldest)}"
            if _types:
                counts: dict[str, int] = {}
                for o in oldest:
                    name = type(o).__qualname__
                    counts[name] = counts.get(name, 0) + 1
                del oldest
                top = sorted(counts.items(), key=lambda kv: -kv[1])[:8]
                left += " " + ",".join(f"{k}={v}" for k, v in top)
            else:
                del oldest
        _log.write(f"{_began[0]:.3f} {generation} {took:.2f} {info['collected']}{left}\n")

    gc.callbacks.append(_record)
