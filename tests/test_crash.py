"""SIGKILL during each stage of `paper-digest run --once`, then runs until done.

Each run aims at a stage (fetch, store, scoring, composing, sending), waits for the
progress line that starts it and kills the process a moment later; the last line the run
printed tells which stage the kill really hit. Afterwards every matched paper has reached
every channel of its watchlists; no paper was sent in two different messages (a message
may arrive twice only in the documented window: killed after the server accepted it,
before the store recorded it); the store is intact.
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
from collections.abc import Callable
from datetime import UTC, datetime
from email.policy import default as default_policy

import pytest
from conftest import SAMPLES, Lines, Route, write_config

from digest.config import load_settings
from digest.scoring import Matcher
from digest.store import Store

pytestmark = pytest.mark.integration

RSS = (SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml").read_bytes()
ARXIV_LINK = re.compile(r"arxiv\.org/abs/(\d{4}\.\d{4,5})")
KILLS = int(os.environ.get("CRASH_KILLS", "10"))
# The progress line that starts each stage; a kill after it and before the next line
# landed in that stage.
STAGES = {"fetching ": "fetch", "recording ": "store", "scoring ": "scoring",
          "composing ": "composing", "sending digest ": "sending",
          "resending digest ": "sending"}
REQUIRED = ("store", "scoring", "composing", "sending")
# How long after its line a kill may come: within the stage's usual length on this data
# (recording the 400 other papers, scoring thousands, rendering an email, pacing Slack).
WINDOW = {"fetch": 0.005, "store": 0.03, "scoring": 0.06, "composing": 0.012,
          "sending": 0.3}
OTHER_PAPERS = 400  # papers per run that no watchlist wants: real work for store and scoring


def config_text(feed_url: str, store: str, smtp_port: int, physics_url: str) -> str:
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
[[sources]]
name = "arxiv-physics"
kind = "arxiv_rss"
categories = ["quant-ph"]
url = "{physics_url}"
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


def physics_listing(day: int) -> bytes:
    """A day of quant-ph papers with fresh ids, none of which any watchlist matches."""
    items = "".join(
        f"""<item><title>Entangled photon pairs in lattice {n} of a trapped-ion register</title>
<link>https://arxiv.org/abs/2613.{day:02d}{n:03d}</link>
<description>arXiv:2613.{day:02d}{n:03d}v1 Announce Type: new
Abstract: We prepare entangled states across {n} trapped ions, measure their coherence under
laser noise, and bound the fidelity of a two-qubit gate by tomography of the register.
</description>
<guid isPermaLink="false">oai:arXiv.org:2613.{day:02d}{n:03d}v1</guid>
<category>quant-ph</category><arxiv:announce_type>new</arxiv:announce_type>
<dc:creator>Ines Quantum{n}, Olof Photon</dc:creator></item>""" for n in range(OTHER_PAPERS))
    return (f'<?xml version="1.0"?><rss version="2.0" xmlns:arxiv="http://arxiv.org/schemas/'
            f'atom" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>quant-ph'
            f"</title>{items}</channel></rss>").encode()


def stage_of(line: str) -> str | None:
    return next((stage for prefix, stage in STAGES.items() if line.startswith(prefix)), None)


def aimed_at(stage: str) -> Callable[[str], bool]:
    """The line after which to kill: composing an email, not a Slack payload, takes long
    enough to be hit; a run records the large physics listing last."""
    if stage == "composing":
        return lambda line: line.startswith("composing ") and line.endswith(" for mail")
    if stage == "store":
        return lambda line: line.startswith("recording ") and line.endswith("arxiv-physics")
    return lambda line: stage_of(line) == stage


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
                                                smtp_port, http_server.url + "/rss/quant-ph"))
    env = {**os.environ, "CRASH_HOOK": http_server.url + hook_path, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "digest", "run", "--once", "--config", str(config)]
    began = time.monotonic()
    killed = 0
    hits: dict[str, int] = {}  # stage -> kills that landed in it
    aims: list[str] = []
    day = 0
    # Aim at a stage not hit yet, else at any; a short stage may take a few tries.
    while day < KILLS or (day < 2 * KILLS and set(REQUIRED) - set(hits)):
        http_server.route("/rss/cs.CL+cs.LG", Route(body=listing(day)))
        http_server.route("/rss/quant-ph", Route(body=physics_listing(day)))
        day += 1
        target = rng.choice([s for s in REQUIRED if s not in hits] or sorted(WINDOW))
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        try:
            output = Lines(process.stderr)
            started = output.wait_for(aimed_at(target), timeout=60)
            if started is not None:
                time.sleep(rng.uniform(0, WINDOW[target]))
                process.send_signal(signal.SIGKILL)
            returncode = process.wait(timeout=60)
            lines = output.lines + output.rest()
        finally:
            process.kill()
            process.wait()
            if process.stderr is not None:
                process.stderr.close()
        if returncode == -signal.SIGKILL:
            killed += 1
            landed = stage_of(lines[-1]) if lines else None
            hits[landed or "between stages"] = hits.get(landed or "between stages", 0) + 1
            aims.append(f"{target}->{landed or 'between'}")
        else:
            aims.append(f"{target}->finished")
    # Then run until a run has nothing left to send: a backlog larger than max_papers or
    # than an email's size limit waits for the next digest, by design.
    killing = time.monotonic() - began
    finishing = 0
    while finishing < max(6, day // 2):  # an email carries ~85 papers; more runs, more backlog
        finishing += 1
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode == 0 and "0 digests delivered" in done.stdout:
            break
    assert "0 digests delivered" in done.stdout, f"seed {seed}: {done.stdout}{done.stderr}"
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
    print(f"seed {seed}: {killed} of {day} runs killed ({killing:.0f} s), then {finishing} "
          f"to finish; kills per stage: {hits}; aimed->hit: {', '.join(aims)}; messages "
          f"that arrived twice (killed inside the window): {repeated}")
    missed = set(REQUIRED) - set(hits)
    assert not missed, f"seed {seed}: no kill landed in {sorted(missed)}: {aims}"
