"""Logs as JSON lines for collectors: fields from key=value context, secrets still masked."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ROOT, Route

from digest.cli import JsonLogFormatter, _parser, _RedactSecrets

SECRET = "xoxb-4242-very-secret-token"


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing JSON lines into a buffer, with the CLI's secret filter on."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLogFormatter())
    handler.addFilter(_RedactSecrets([SECRET]))
    logger = logging.getLogger("digest.test_logging")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_has_time_level_logger_message_and_the_context_as_fields(json_log):
    logger, stream = json_log
    before = datetime.now(UTC)
    logger.warning("channel=%s digest=%d failed: %s", "team-slack", 42, "HTTP 503")
    [entry] = lines(stream)
    when = datetime.fromisoformat(entry["time"])
    assert when.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= when <= datetime.now(UTC)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "digest.test_logging"
    assert entry["message"] == "channel=team-slack digest=42 failed: HTTP 503"
    assert entry["channel"] == "team-slack"
    assert entry["digest"] == 42


@pytest.mark.parametrize(("message", "args", "fields"), [
    pytest.param("retrying url=%s attempt=%d problem=%r wait=%.1fs",
                 ("https://export.arxiv.org/api/query?id_list=1", 2, "HTTP 503, busy", 4.0),
                 {"url": "https://export.arxiv.org/api/query?id_list=1", "attempt": 2,
                  "problem": "HTTP 503, busy", "wait": "4.0s"}, id="quoted-and-units"),
    pytest.param("channel=%s message=%d/%d retry", ("chat", 1, 3),
                 {"channel": "chat", "ctx_message": "1/3"}, id="a-taken-name"),
    pytest.param("rating watchlist=%s changed=%s ratio=%s", ("w", True, 0.5),
                 {"watchlist": "w", "changed": True, "ratio": 0.5}, id="typed"),
    pytest.param("web: store unavailable: %s", ("disk I/O error",), {}, id="no-context"),
])
def test_key_value_pairs_become_fields(json_log, message, args, fields):
    logger, stream = json_log
    logger.info(message, *args)
    [entry] = lines(stream)
    assert {k: v for k, v in entry.items()
            if k not in ("time", "level", "logger", "message")} == fields


def test_secrets_are_masked_in_the_message_its_fields_and_the_traceback(json_log):
    logger, stream = json_log
    url = f"https://hooks.slack.example/services/{SECRET}"
    try:
        raise RuntimeError(f"cannot reach {url}")
    except RuntimeError:
        logger.debug("channel=%s hook=%s failed unexpectedly", "chat", url, exc_info=True)
    [entry] = lines(stream)
    assert SECRET not in json.dumps(entry)
    assert entry["hook"] == "https://hooks.slack.example/services/***"
    assert "RuntimeError: cannot reach https://hooks.slack.example/services/***" in \
        entry["exception"]


def test_every_command_takes_the_log_format():
    commands = next(a for a in _parser()._actions if a.dest == "command")
    for name, sub in commands.choices.items():
        option = next((a for a in sub._actions if "--log-format" in a.option_strings), None)
        assert option is not None, name
        assert (option.choices, option.default) == (("text", "json"), "text")


# ------------------------------------------------------------------ the real command


def run_command(tmp_path: Path, http_server, *extra: str) -> subprocess.CompletedProcess:
    """'run --once' in a process of its own: one feed paper, a webhook that fails and
    answers with its own address (as some proxies do), so the logs meet the secret."""
    hook = http_server.url + f"/services/{SECRET}"
    http_server.route(f"/services/{SECRET}", Route(status=500, body=f"no route {hook}".encode()))
    feed = tmp_path / "feed.xml"
    feed.write_text("<rss version='2.0'><channel><title>b</title><item><title>LoRA at scale"
                    "</title><link>https://arxiv.org/abs/2611.00001v1</link></item>"
                    "</channel></rss>")
    config = tmp_path / "digest.toml"
    config.write_text(f"""
version = 1
[store]
path = "{tmp_path / 'digest.db'}"
[http]
max_retries = 1
retry_backoff_seconds = 0.01
interval_seconds = 0
[[sources]]
name = "blog"
kind = "feed"
url = "{feed}"
[[watchlists]]
name = "lora"
keywords = ["LoRA"]
channels = ["chat"]
[channels.chat]
kind = "slack"
webhook_url_env = "HOOK"
""")
    env = {**os.environ, "HOOK": hook}
    return subprocess.run([sys.executable, "-m", "digest", "run", "--once", "--config",
                           str(config), *extra], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


@pytest.mark.integration
def test_run_logs_json_lines_with_secrets_masked_and_progress_as_before(tmp_path,
                                                                       http_server):
    result = run_command(tmp_path, http_server, "--log-format", "json", "--verbose")
    assert result.returncode == 1  # the channel failed
    logged = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    progress = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert "fetching blog (feed)" in progress  # progress lines are left as they were
    failure = next(e for e in logged if e["level"] == "WARNING" and e["logger"] ==
                   "digest.pipeline")
    assert (failure["channel"], failure["digest"]) == ("chat", 1)
    # Fetching and every webhook retry through one helper, which logs each wait.
    retry = next(e for e in logged if e["logger"] == "digest.http" and e.get("channel") == "chat")
    # The channel names the variable where the server quoted the hook back.
    assert retry["attempt"] == 1 and "$HOOK" in retry["problem"]
    assert SECRET not in result.stderr and SECRET not in result.stdout


@pytest.mark.integration
def test_text_logs_stay_the_default(tmp_path, http_server):
    result = run_command(tmp_path, http_server)
    warning = next(line for line in result.stderr.splitlines() if line.startswith("WARNING"))
    assert warning.startswith("WARNING digest.pipeline: channel=chat digest=1 failed: ")
    assert SECRET not in result.stderr
