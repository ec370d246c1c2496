"""What starting `handover` costs: `handover --version`, two short commands on a small SQLite
database (`handover log`, `handover plan`), and `handover serve` until it prints "listening",
for this code and a baseline checkout side by side, in one sitting.

    python benchmarks/bench_startup.py --baseline-python OTHER_CHECKOUT/.venv/bin/python [--runs 7]

Each side runs as `PYTHON -m bot` from an empty working directory, so each resolves `bot` to
its own installed (editable) checkout; the script prints which. Each side has its own database
(migrated by its own `handover db upgrade`, the sample rota imported by its own `rota import`),
and `serve` talks to a local Slack stand-in. The runs alternate between the sides, and each
figure is the median of N: the child's CPU time (user + system, from its rusage; for `serve`
read from /proc at the moment it prints "listening") and the wall time. The load average is
printed before and after: on a shared machine the wall times move with it, the CPU times less.
PYTHONDONTWRITEBYTECODE is taken from the environment: when it is set, every process compiles
the project's own modules again; `--bytecode-cache` measures both sides with a bytecode cache
instead, as the test suite's processes run (tests/conftest.py). One untimed round comes first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.harness import SAMPLE_ROTA, free_port, start_standin  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Side:
    """One checkout: its interpreter, and a working directory and database of its own."""

    name: str
    python: str
    workdir: Path

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DATABASE_URL": f"sqlite:///{self.workdir / 'handover.db'}"}

    def command(self, *args: str) -> list[str]:
        return [self.python, "-m", "bot", *args]

    def run(self, *args: str, extra_env: dict[str, str] | None = None) -> tuple[float, float]:
        """Run `handover ARGS` to completion: its CPU seconds and wall seconds."""
        with tempfile.TemporaryFile() as stderr:
            started = time.perf_counter()
            process = subprocess.Popen(
                self.command(*args),
                cwd=self.workdir,
                env={**self.env, **(extra_env or {})},
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - started
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode != 0:
                stderr.seek(0)
                raise SystemExit(
                    f"{self.name}: handover {' '.join(args)} failed:\n{stderr.read().decode()}"
                )
        return usage.ru_utime + usage.ru_stime, wall

    def serve(self, env: dict[str, str]) -> tuple[float, float]:
        """Start `handover serve`: CPU and wall seconds until it prints "listening"."""
        started = time.perf_counter()
        process = subprocess.Popen(
            self.command("serve"),
            cwd=self.workdir,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert process.stdout is not None
            for line in process.stdout:
                if "listening" in line:
                    break
            else:
                raise SystemExit(f"{self.name}: serve exited with {process.wait()}")
            wall = time.perf_counter() - started
            cpu = process_cpu(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)
        return cpu, wall

    def where(self) -> str:
        """The file `bot` is imported from by this side's interpreter, in its working directory."""
        return subprocess.run(
            [self.python, "-c", "import bot; print(bot.__file__)"],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process and its threads so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def load() -> str:
    return " ".join(f"{figure:.2f}" for figure in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each command (median)")
    parser.add_argument(
        "--baseline-python",
        required=True,
        help="the baseline's interpreter (a venv with its checkout installed editable, e.g. "
        "another checkout of main's .venv/bin/python)",
    )
    parser.add_argument(
        "--bytecode-cache",
        action="store_true",
        help="let both sides keep compiled bytecode (in a cache of this run), as the test suite "
        "does when PYTHONDONTWRITEBYTECODE is set (tests/conftest.py)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        sides = []
        for name, python in (("baseline", args.baseline_python), ("this", sys.executable)):
            workdir = Path(tmp) / name
            workdir.mkdir()
            sides.append(Side(name, python, workdir))
        if args.bytecode_cache:
            os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
            os.environ["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "bytecode")
        for side in sides:
            print(f"{side.name:8}  {side.where()}")
            side.run("db", "upgrade")
            side.run("rota", "import", str(SAMPLE_ROTA))
        standin = start_standin(Path(tmp))
        serve_env = {
            "SLACK_API_URL": standin.url,
            "SLACK_BOT_TOKEN": "xoxb-bench-startup",
            "SLACK_SIGNING_SECRET": "bench-startup-secret",
        }
        commands: dict[str, object] = {
            "handover --version": lambda side: side.run("--version"),
            "handover log": lambda side: side.run("log"),
            "handover plan --notify person:…": lambda side: side.run(
                "plan", "--notify", "person:hv-fife-boyd"
            ),
            "handover serve (to listening)": lambda side: side.serve(
                {**serve_env, "PORT": str(free_port())}
            ),
        }
        bytecode = "off" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "on"
        print(f"runs: {args.runs} of each (median); bytecode cache writes: {bytecode}")
        print(f"load average before: {load()}")
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        try:
            for measure in commands.values():  # one untimed round: file and bytecode caches
                for side in sides:
                    measure(side)  # type: ignore[operator]
            for _ in range(args.runs):
                for label, measure in commands.items():
                    for side in sides:
                        results.setdefault((label, side.name), []).append(measure(side))  # type: ignore[operator]
        finally:
            standin.stop()
        print(f"load average after:  {load()}")
        print()
        print(
            f"{'command':36} {'CPU base':>9} {'CPU this':>9} {'ratio':>6}"
            f" {'wall base':>10} {'wall this':>10} {'ratio':>6}"
        )
        for label in commands:
            base = results[(label, "baseline")]
            this = results[(label, "this")]
            cpu_base = statistics.median(cpu for cpu, _ in base)
            cpu_this = statistics.median(cpu for cpu, _ in this)
            wall_base = statistics.median(wall for _, wall in base)
            wall_this = statistics.median(wall for _, wall in this)
            print(
                f"{label:36} {cpu_base:8.3f}s {cpu_this:8.3f}s {cpu_this / cpu_base:6.2f}"
                f" {wall_base:9.3f}s {wall_this:9.3f}s {wall_this / wall_base:6.2f}"
            )


if __name__ == "__main__":
    main()
