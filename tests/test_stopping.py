"""Stopping cleanly: Ctrl-C to `run --once`, SIGTERM to `serve` mid-wait, and stop checks.

Whatever the moment, a stop keeps what was recorded and records nothing that did not
happen; the next run goes on from there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import SAMPLES, Lines, Route, write_config

from digest.cli import INTERRUPTED
from digest.config import load_settings, parse_settings
from digest.pipeline import Seams, run_once
from digest.schedule import serve
from digest.store import Store

RSS = (SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml").read_bytes()
HOOK = "/services/T1/B1/stopping"


def config_text(tmp_path: Path, feed_url: str, *, extra: str = "") -> str:
    return f"""
[store]
path = "{tmp_path / 'digest.db'}"
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
{extra}
[schedule]
cron = "0 0 1 1 *"
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL", "cs.LG"]
url = "{feed_url}"
[[watchlists]]
name = "efficient"
keywords = ["LoRA", "quantization"]
max_papers = 10
channels = ["chat"]
[channels.chat]
kind = "slack"
webhook_url_env = "STOP_HOOK"
"""


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "digest", *args]


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.mark.integration
def test_ctrl_c_while_fetching_prints_one_line_and_exits_130(tmp_path, http_server):
    feed = http_server.route("/rss/cs.CL+cs.LG", Route(body=RSS, delay=12))
    config = write_config(tmp_path, config_text(tmp_path, feed))
    env = {**os.environ, "STOP_HOOK": http_server.url + HOOK, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command("run", "--once", "--config", str(config)), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        err = Lines(process.stderr)
        assert err.wait_for(lambda line: line.startswith("fetching arxiv-cs"), timeout=20)
        wait_until(lambda: http_server.hits("/rss/cs.CL+cs.LG"), timeout=10)  # in the read
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 130
        after = err.rest()
        out = process.stdout.read() if process.stdout else ""
    finally:
        process.kill()
        process.wait()
    assert after == [INTERRUPTED]
    assert "Traceback" not in "\n".join(err.lines) + out
    # The source interrupted mid-fetch recorded nothing, not even a failure.
    with Store.open(tmp_path / "digest.db") as store:
        assert store.source_health() == [] and store.papers_count() == 0
    assert http_server.hits(HOOK) == []


@pytest.mark.integration
def test_sigterm_to_serve_in_a_retry_wait_ends_fast_and_the_next_run_sends_once(
        tmp_path, http_server):
    http_server.route(HOOK, Route(status=429, headers={"Retry-After": "100"}, body=b"slow down"),
                      Route(body=b"ok"))
    config = write_config(tmp_path, config_text(
        tmp_path, str(SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml"),
        extra="max_retry_after_seconds = 200"))
    env = {**os.environ, "STOP_HOOK": http_server.url + HOOK, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command("serve", "--now", "-v", "--config", str(config)),
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        out = Lines(process.stdout)
        # the Slack channel was told to wait 100 s and is waiting
        assert out.wait_for(lambda line: "retrying channel=chat message=1/1 attempt=1" in line
                            and "wait=100.0s" in line, timeout=30)
        assert len(http_server.hits(HOOK)) == 1
        asked = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=10)
        took = time.monotonic() - asked
        rest = out.rest()
    finally:
        process.kill()
        process.wait()
    assert status == 0 and took < 10, (status, took, out.lines)
    text = "\n".join(out.lines)
    assert "interrupted: stopped before the end" in text  # the pass's summary says so
    assert "stopped" in rest and "Traceback" not in text
    assert len(http_server.hits(HOOK)) == 1
    with Store.open(tmp_path / "digest.db") as store:
        (digest,) = store.open_digests()  # recorded, not delivered: it waits, unchanged

    done = subprocess.run(command("run", "--once", "--config", str(config)), env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "(recorded earlier, sent again)" in done.stdout
    assert "1 digest delivered" in done.stdout
    first, second = http_server.hits(HOOK)
    assert second.json() == first.json()  # the very payload that was recorded
    assert second.json() == digest.payload["messages"][0]
    with Store.open(tmp_path / "digest.db") as store:
        assert store.open_digests() == []
    again = subprocess.run(command("run", "--once", "--config", str(config)), env=env,
                           capture_output=True, text=True, timeout=60)
    assert "0 digests delivered" in again.stdout and len(http_server.hits(HOOK)) == 2


@pytest.mark.integration
def test_sigterm_to_serve_stuck_in_a_network_read_still_ends_within_10_s(tmp_path, http_server):
    http_server.route(HOOK, Route(body=b"ok", delay=25))  # answers after the 10 s grace
    config = write_config(tmp_path, config_text(
        tmp_path, str(SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml")))
    env = {**os.environ, "STOP_HOOK": http_server.url + HOOK, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command("serve", "--now", "--config", str(config)), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = Lines(process.stdout)
        assert out.wait_for(lambda line: line.startswith("sending digest"), timeout=30)
        wait_until(lambda: http_server.hits(HOOK), timeout=10)
        asked = time.monotonic()
        process.send_signal(signal.SIGTERM)
        status = process.wait(timeout=10)
        took = time.monotonic() - asked
        rest = out.rest()
    finally:
        process.kill()
        process.wait()
    assert status == 0 and took < 10, (status, took, out.lines)
    assert rest[-1].startswith("stopped without waiting longer than 8 s for the run in progress")
    with Store.open(tmp_path / "digest.db") as store:
        assert len(store.open_digests()) == 1  # the next run sends it


# ------------------------------------------------------------------ in-process


def in_process_config(tmp_path: Path) -> Path:
    return write_config(tmp_path, """
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
max_retry_after_seconds = 300
[[sources]]
name = "first"
kind = "feed"
url = "https://slow.example/feed"
[[sources]]
name = "second"
kind = "feed"
url = "https://other.example/feed"
[[watchlists]]
name = "all"
keywords = ["LoRA"]
channels = ["chat"]
[channels.chat]
kind = "slack"
webhook_url_env = "HOOK"
""")


def test_a_run_asked_to_stop_starts_no_source_and_no_digest(tmp_path):
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(200, content=RSS)

    settings = load_settings(in_process_config(tmp_path), env={"HOOK": "https://hooks.example/x"})
    stop = threading.Event()
    stop.set()
    report = run_once(settings, seams=Seams(transport=httpx.MockTransport(handler), stop=stop))
    assert report.interrupted and report.sources == [] and report.deliveries == []
    assert asked == []


def test_a_source_stopped_in_its_retry_wait_records_nothing_and_the_rest_waits(tmp_path):
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(503, headers={"Retry-After": "250"})

    settings = load_settings(in_process_config(tmp_path), env={"HOOK": "https://hooks.example/x"})
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    report = run_once(settings, seams=Seams(transport=httpx.MockTransport(handler), stop=stop))
    assert time.monotonic() - started < 5  # not the 250 s the server asked for
    assert report.interrupted and report.sources == []
    assert asked == ["https://slow.example/feed"]  # the second source was never started
    with Store.open(settings.store.path) as store:
        assert store.source_health() == []  # an interruption is not the source's failure


SERVE_CONFIG = """
version = 1
[schedule]
cron = "0 0 1 1 *"
[[sources]]
name = "a"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[watchlists]]
name = "one"
keywords = ["x"]
channels = ["m"]
[[watchlists]]
name = "two"
keywords = ["y"]
channels = ["m"]
schedule = "0 0 2 1 *"
[channels.m]
kind = "email"
from = "a@example.org"
to = ["b@example.org"]
"""


def test_serve_now_runs_every_watchlist_once_at_start():
    settings = parse_settings(SERVE_CONFIG, path=Path("x.toml"), env={})
    stop = threading.Event()
    passes: list[list[str]] = []

    def run(names: list[str]) -> None:
        passes.append(names)
        stop.set()

    lines: list[str] = []
    assert serve(settings, run, stop=stop, announce=lines.append, install_signals=False,
                 first_pass=True)
    assert passes == [["one", "two"]]
    assert "first pass now for one, two" in lines and lines[-1] == "stopped"


def test_serve_gives_a_stuck_pass_a_bounded_grace_and_skips_the_passes_after_it():
    settings = parse_settings(SERVE_CONFIG, path=Path("x.toml"), env={})
    stop = threading.Event()
    stuck = threading.Event()
    release = threading.Event()
    passes: list[list[str]] = []

    def run(names: list[str]) -> None:  # a pass inside a call that ignores the stop
        passes.append(names)
        stuck.set()
        release.wait(30)

    lines: list[str] = []

    def stop_once_stuck() -> None:
        stuck.wait(10)
        stop.set()

    threading.Thread(target=stop_once_stuck, daemon=True).start()
    started = time.monotonic()
    try:
        finished = serve(settings, run, stop=stop, announce=lines.append,
                         install_signals=False, first_pass=True, grace=0.5)
        waited = time.monotonic() - started
    finally:
        release.set()
    assert finished is False and waited < 5
    assert lines[-1].startswith("stopped without waiting longer than 0.5 s")
    time.sleep(0.2)
    assert passes == [["one", "two"]]


def test_the_summary_of_an_interrupted_pass_says_so():
    from datetime import UTC, datetime

    from digest.cli import format_report
    from digest.models import RunReport

    report = RunReport(started_at=datetime(2026, 11, 20, tzinfo=UTC), interrupted=True)
    assert "interrupted: stopped before the end" in format_report(report)
    assert "interrupted" not in format_report(RunReport(started_at=report.started_at))
