"""serve: one job per schedule, never two passes at once, clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from digest.config import parse_settings
from digest.schedule import build_scheduler, schedule_groups, serve

CONFIG = """
version = 1
[schedule]
cron = "0 7 * * *"
timezone = "UTC"
[[sources]]
name = "a"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[watchlists]]
name = "default-one"
keywords = ["x"]
channels = ["m"]
[[watchlists]]
name = "default-two"
keywords = ["y"]
channels = ["m"]
[[watchlists]]
name = "berlin"
keywords = ["z"]
channels = ["m"]
schedule = "30 6 * * 1-5"
timezone = "Europe/Berlin"
[channels.m]
kind = "email"
from = "a@example.org"
to = ["b@example.org"]
"""


def settings():
    return parse_settings(CONFIG, path=Path("x.toml"), env={})


def test_watchlists_sharing_a_schedule_share_a_pass():
    assert schedule_groups(settings()) == {
        ("0 7 * * *", "UTC"): ["default-one", "default-two"],
        ("30 6 * * 1-5", "Europe/Berlin"): ["berlin"],
    }


def test_jobs_fire_in_their_own_timezone():
    scheduler = build_scheduler(settings(), lambda names: None)
    triggers = {job.name: job.trigger for job in scheduler.get_jobs()}
    berlin = triggers["berlin"]
    after = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # a Monday
    fire = berlin.get_next_fire_time(None, after)
    assert fire.utcoffset().total_seconds() == 3600 and (fire.hour, fire.minute) == (6, 30)


def test_two_passes_never_overlap():
    spans: list[tuple[float, float]] = []
    done = threading.Event()

    def run(names):
        start = time.monotonic()
        time.sleep(0.3)
        spans.append((start, time.monotonic()))
        if len(spans) == 2:
            done.set()

    scheduler = build_scheduler(settings(), run)
    scheduler.start(paused=True)
    now = datetime.now(UTC)
    for job in scheduler.get_jobs():
        job.modify(next_run_time=now)
    scheduler.resume()
    assert done.wait(5)
    scheduler.shutdown(wait=True)
    (a_start, a_end), (b_start, b_end) = sorted(spans)
    assert b_start >= a_end


def test_serve_returns_when_asked_to_stop():
    stop = threading.Event()
    lines: list[str] = []
    stop.set()
    serve(settings(), lambda names: None, stop=stop, announce=lines.append,
          install_signals=False)
    assert any(line.startswith("scheduled [berlin]") for line in lines)
    assert lines[-1] == "stopped"


def test_serve_stops_cleanly_on_sigterm(tmp_path):
    config = tmp_path / "digest.toml"
    store = f'version = 1\n[store]\npath = "{tmp_path}/d.db"'
    config.write_text(CONFIG.replace("version = 1", store))
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", "serve", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:
            seen.append(line)
            if line.startswith("serving"):
                break
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0
    assert "stopped" in rest
