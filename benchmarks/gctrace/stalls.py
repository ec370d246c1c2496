"""bench_clicks.py --stall-log: when a process stops running Python for a while, who ran instead.

A watcher thread wakes every TICK; a wake-up later than THRESHOLD past the one before is a stall
of the whole interpreter (another thread held the interpreter lock, a garbage collection ran, or
the process was not scheduled). Each stall is appended to `PATH.PID` as one JSON line: when it
began (wall clock), how long it lasted, the process's CPU over it (each thread's, from its own
CPU clock: about the stall's length if a thread of the process held the lock, near nothing if
the machine ran something else), the garbage collections in it, the machine's busy share of its
2 cores (/proc/stat), and the innermost frames of the threads that used the most CPU. Every
ACCOUNT, a line of each thread's CPU so far and the machine's busy and total jiffies, from which
bench_clicks.py tells what ran during a burst.

Loaded by benchmarks/gctrace/sitecustomize.py in the apps' processes (the product unchanged) and
started directly in bench_clicks.py's own, the client sending the load.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time

TICK = 0.002
THRESHOLD = 0.015
SNAPSHOT = 0.010  # how often each thread's CPU clock is read between stalls
ACCOUNT = 0.050  # how often each thread's CPU so far is logged (a line `{"cpu_at": ...}`)


def _machine() -> tuple[int, int]:
    """The machine's busy and total jiffies so far (/proc/stat's first line)."""
    with open("/proc/stat", encoding="ascii") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return sum(fields) - idle, sum(fields)


def _thread_cpu() -> dict[int, tuple[str, float]]:
    """Each live thread's name and CPU seconds so far."""
    cpu = {}
    for thread in threading.enumerate():
        try:
            clock = time.pthread_getcpuclockid(thread.ident)
            cpu[thread.ident] = (thread.name, time.clock_gettime(clock))
        except (OSError, TypeError, ValueError):  # the thread ended meanwhile
            continue
    return cpu


def _frames(ident: int, frames: dict) -> list[str]:
    frame, out = frames.get(ident), []
    while frame is not None and len(out) < 8:
        code = frame.f_code
        out.append(f"{code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno}:{code.co_name}")
        frame = frame.f_back
    return out


def start(path: str) -> None:
    """Watch this process's stalls, appending them to `path`.PID."""
    log = open(f"{path}.{os.getpid()}", "a", buffering=1)  # noqa: SIM115 (for the process)
    log.write(f"# {' '.join(sys.argv)}\n")
    collections: list[tuple[float, float, int]] = []  # (wall start, ms, generation)
    began = [0.0, 0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            began[:] = [time.time(), time.perf_counter()]
        else:
            took = (time.perf_counter() - began[1]) * 1000
            collections.append((began[0], took, info["generation"]))
            del collections[:-200]

    gc.callbacks.append(on_gc)

    def watch() -> None:
        me = threading.get_ident()
        snapshot, snapshot_at, machine = _thread_cpu(), time.perf_counter(), _machine()
        last, last_wall = time.perf_counter(), time.time()
        accounted = last
        while True:
            time.sleep(TICK)
            now = time.perf_counter()
            if now - last >= THRESHOLD:
                frames = sys._current_frames()
                cpu, busy = _thread_cpu(), _machine()
                used = {
                    ident: (name, (seconds - snapshot.get(ident, (name, 0.0))[1]) * 1000)
                    for ident, (name, seconds) in cpu.items()
                    if ident != me
                }
                top = sorted(used.items(), key=lambda kv: -kv[1][1])[:3]
                jiffies = busy[1] - machine[1]
                log.write(
                    json.dumps(
                        {
                            "at": round(last_wall, 4),
                            "ms": round((now - last) * 1000, 1),
                            "window_ms": round((now - snapshot_at) * 1000, 1),
                            "cpu_ms": round(sum(ms for _, ms in used.values()), 1),
                            "machine_busy": round((busy[0] - machine[0]) / jiffies, 2)
                            if jiffies
                            else None,
                            "gc": [
                                [round(at - last_wall, 4), round(ms, 1), generation]
                                for at, ms, generation in collections
                                if at >= last_wall - 0.001
                            ],
                            "threads": [
                                {"name": name, "cpu_ms": round(ms, 1), "frames": _frames(i, frames)}
                                for i, (name, ms) in top
                            ],
                        }
                    )
                    + "\n"
                )
                del frames
                snapshot, snapshot_at, machine = cpu, time.perf_counter(), busy
            elif now - snapshot_at >= SNAPSHOT:
                snapshot, snapshot_at, machine = _thread_cpu(), now, _machine()
            if now - accounted >= ACCOUNT:
                accounted = now
                log.write(
                    json.dumps(
                        {
                            "cpu_at": round(time.time(), 4),
                            "machine": machine,
                            "cpu_ms": {name: round(s * 1000, 1) for name, s in snapshot.values()},
                        }
                    )
                    + "\n"
                )
            last, last_wall = time.perf_counter(), time.time()

    threading.Thread(target=watch, name="bench-stall-watch", daemon=True).start()


def _process_jiffies() -> dict[int, int]:
    """Every process's CPU so far (utime + stime, in clock ticks), by its id."""
    jiffies = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:  # it ended meanwhile
            continue
        jiffies[int(entry.name)] = int(fields[11]) + int(fields[12])
    return jiffies


def _name_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    words = [w.rsplit("/", 1)[-1] for w in words if w][:4]
    return " ".join(words)[:60] or "?"


def watch_machine(path: str, every: float = 0.05) -> None:
    """Log every process's CPU as it changes, every `every` seconds, to `path`: each line
    `{"at": wall clock, "cpu": {pid: ticks so far}}` with only the processes whose CPU moved,
    and `{"names": {pid: command line}}` the first time a process is seen. Run as its own
    process (`python stalls.py --machine PATH`), so that its reads stall neither an app nor
    the client; bench_clicks.py tells from it who had the cores while an app had not."""
    last: dict[int, int] = {}
    with open(path, "a", buffering=1) as log:
        while True:
            now = _process_jiffies()
            moved = {pid: ticks for pid, ticks in now.items() if last.get(pid) != ticks}
            new = {pid: _name_of(pid) for pid in moved if pid not in last}
            if new:
                log.write(json.dumps({"names": new}) + "\n")
            log.write(json.dumps({"at": round(time.time(), 4), "cpu": moved}) + "\n")
            last = now
            time.sleep(every)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--machine"]:
        watch_machine(sys.argv[2])
