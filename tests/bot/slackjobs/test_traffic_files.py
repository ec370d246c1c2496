"""The busy web processes' files beside an SQLite database (bot/slackjobs/traffic_files.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import make_url

from bot.slackjobs.traffic_files import TrafficFiles


def test_the_files_are_beside_an_sqlite_file_and_nowhere_else(tmp_path: Path) -> None:
    files = TrafficFiles.beside(make_url(f"sqlite:///{tmp_path / 'handover.db'}"))
    assert files is not None
    assert files.directory == tmp_path / "handover.db.traffic"
    relative = TrafficFiles.beside(make_url("sqlite:///handover.db"))
    assert relative is not None and relative.directory == Path.cwd() / "handover.db.traffic"
    for url in ("sqlite://", "sqlite:///:memory:", "postgresql+psycopg://u@h/handover"):
        assert TrafficFiles.beside(make_url(url)) is None, url


def test_busy_creates_or_renews_the_senders_file_and_quiet_removes_it(tmp_path: Path) -> None:
    files = TrafficFiles(tmp_path / "handover.db.traffic")
    assert files.heartbeats() == {}  # no directory yet: nobody busy
    files.busy("web-1")
    files.busy("web-2")
    assert set(files.heartbeats()) == {"web-1", "web-2"}
    os.utime(files.directory / "web-1", (1_000_000.0, 1_000_000.0))
    files.busy("web-1")  # a heartbeat
    assert files.heartbeats()["web-1"] > time.time() - 60
    files.quiet("web-1")
    files.quiet("web-1")  # already gone: nothing to do
    assert set(files.heartbeats()) == {"web-2"}


def test_sweep_removes_only_the_files_whose_heartbeat_is_old(tmp_path: Path) -> None:
    files = TrafficFiles(tmp_path / "handover.db.traffic")
    files.busy("killed")
    files.busy("alive")
    old = time.time() - 10
    os.utime(files.directory / "killed", (old, old))
    files.sweep(older_than=5)
    assert set(files.heartbeats()) == {"alive"}


def test_leave_removes_the_senders_file_and_the_directory_once_empty(tmp_path: Path) -> None:
    files = TrafficFiles(tmp_path / "handover.db.traffic")
    files.busy("web-1")
    files.busy("web-2")
    files.leave("web-1")
    assert set(files.heartbeats()) == {"web-2"}
    files.leave("web-2")
    assert not files.directory.exists()
    files.leave("web-2")  # nothing left: nothing to do
    files.busy("web-3")  # a web process busy later makes the directory again
    assert set(files.heartbeats()) == {"web-3"}
