"""SIGKILL at random moments of `paper-digest run --once`, then runs until done.

Afterwards every matched paper has reached every channel of its watchlists; no paper was
sent in two different messages (a message may arrive twice only in the documented window:
killed after the server accepted it, before the store recorded it); the store is intact.
"""

from __future__ import annotations

import email
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from email.policy import default as default_policy

import pytest
from conftest import SAMPLES, Route, write_config

from digest.config import load_settings
from digest.scoring import Matcher
from digest.store import Store

pytestmark = pytest.mark.integration

RSS = (SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml").read_bytes()
ARXIV_LINK = re.compile(r"arxiv\.org/abs/(\d{4}\.\d{4,5})")
KILLS = int(os.environ.get("CRASH_KILLS", "12"))


def config_text(feed_url: str, store: str, smtp_port: int) -> str:
    return f"""
[store]
path = "{store}"
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL", "cs.LG"]
url = "{feed_url}"
[[sources]]
name = "hf-daily"
kind = "hf_daily"
url = "{SAMPLES / 'hf_daily_papers_2026-11-19.json'}"
[[watchlists]]
name = "everything"
categories = ["cs.CL", "cs.LG"]
max_papers = 100
channels = ["chat", "mail"]
[[watchlists]]
name = "efficient"
keywords = ["LoRA", "quantization", "key-value cache"]
max_papers = 100
channels = ["mail", "chat"]
[[watchlists]]
name = "people"
authors = ["Sinong Wang", "Yuki Sato"]
channels = ["mail"]
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from = "digest@example.org"
to = ["team@example.org"]
[channels.chat]
kind = "slack"
webhook_url_env = "CRASH_HOOK"
"""


def expected_per_channel(config) -> dict[str, set[str]]:
    """What each channel is owed: every stored paper its watchlists match."""
    settings = load_settings(config, env={"CRASH_HOOK": "x"})
    with Store.open(settings.store.path) as store:
        papers = store.recent(datetime(2000, 1, 1, tzinfo=UTC))
    owed: dict[str, set[str]] = {"mail": set(), "chat": set()}
    matcher = Matcher(settings.watchlists)
    now = datetime.now(UTC)
    for watchlist in settings.watchlists:
        matched = {p.arxiv_id for p in papers
                   if matcher.match(p, now=now, names=[watchlist.name])}
        for channel in watchlist.channels:
            owed[channel] |= matched
    return owed


def listing(day: int) -> bytes:
    """The sample listing with fresh ids, so that every run has new papers to deliver."""
    return RSS.replace(b"2611.040", b"2612.%03d" % day)


def received(inbox, server, hook_path) -> dict[str, list[tuple[str, set[str]]]]:
    """For each channel: (message identity, arXiv ids in it), once per arrival."""
    mail = []
    for _, _, content in inbox.messages:
        message = email.message_from_bytes(content, policy=default_policy)
        text = message.get_body(("plain",)).get_content()
        mail.append((message["Message-ID"], set(ARXIV_LINK.findall(text))))
    chat = []
    for hit in server.hits(hook_path):
        body = json.dumps(hit.json(), sort_keys=True)
        chat.append((body, set(ARXIV_LINK.findall(body))))
    return {"mail": mail, "chat": chat}


def test_killed_runs_lose_nothing_and_double_nothing(tmp_path, http_server, smtp_server):
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 100000))
    rng = random.Random(seed)
    inbox, smtp_port = smtp_server
    hook_path = "/services/T1/B1/crash"
    http_server.route(hook_path, Route(body=b"ok", delay=0.05))
    feed_url = http_server.url + "/rss/cs.CL+cs.LG"
    config = write_config(tmp_path, config_text(feed_url, str(tmp_path / "digest.db"),
                                                smtp_port))
    env = {**os.environ, "CRASH_HOOK": http_server.url + hook_path, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "digest", "run", "--once", "--config", str(config)]
    killed = 0
    for day in range(KILLS):
        http_server.route("/rss/cs.CL+cs.LG", Route(body=listing(day)))
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            process.wait(timeout=rng.uniform(0.2, 3.5))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            killed += 1
    # Then run until a run has nothing left to send: a backlog larger than max_papers or
    # than an email's size limit waits for the next digest, by design.
    for _ in range(6):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode == 0 and "0 digest(s) delivered" in done.stdout:
            break
    assert "0 digest(s) delivered" in done.stdout, f"seed {seed}: {done.stdout}{done.stderr}"
    expected = expected_per_channel(config)
    assert len(expected["mail"]) > 100 and len(expected["chat"]) > 100

    got = received(inbox, http_server, hook_path)
    repeated: dict[str, int] = {}
    with Store.open(tmp_path / "digest.db") as store:
        history = "\n".join(str(row) for row in store.db.execute(
            "SELECT id, channel, watchlist, status, parts_sent, attempts, last_error "
            "FROM digests ORDER BY id"))
    for channel, arrivals in got.items():
        delivered_ids = set().union(*(ids for _, ids in arrivals)) if arrivals else set()
        assert delivered_ids == expected[channel], (
            f"seed {seed}: {channel} lost {sorted(expected[channel] - delivered_ids)} "
            f"gained {sorted(delivered_ids - expected[channel])}\n{history}\n{done.stdout}")
        # a paper travels in one message only; a message may arrive again (the window)
        messages_of: dict[str, set[str]] = {}
        for identity, ids in arrivals:
            for paper in ids:
                messages_of.setdefault(paper, set()).add(identity)
        doubled = {p: m for p, m in messages_of.items() if len(m) > 1}
        assert not doubled, f"seed {seed}: {channel} sent a paper in two messages: {doubled}"
        repeats = len(arrivals) - len({identity for identity, _ in arrivals})
        assert repeats <= killed, f"seed {seed}: {repeats} repeats for {killed} kills"
        repeated[channel] = repeats

    with Store.open(tmp_path / "digest.db") as store:
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert store.open_digests() == []
        for channel in ("mail", "chat"):
            keys = {k.split(":", 1)[1] for k in store.delivered_keys(channel)}
            assert keys == expected[channel]
    print(f"seed {seed}: {killed} of {KILLS} runs killed; messages that arrived twice "
          f"(killed inside the window): {repeated}")
