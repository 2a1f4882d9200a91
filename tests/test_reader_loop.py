"""The reader's loop end to end: a delivered digest's links, clicked on the real web app.

A real SMTP server (aiosmtpd) and a local webhook receive `run --once`'s digests; the
links in the delivered email and Slack payload are followed on the web app served by
uvicorn on 127.0.0.1, as `serve` runs it; the next run and `explain` listen.
"""

from __future__ import annotations

import email
import os
import re
import signal
import subprocess
import sys
import time
from email.policy import default as default_policy
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from conftest import SAMPLES, Route, free_port, write_config

from digest.cli import main
from digest.config import load_settings
from digest.feedback import LinkSigner
from digest.store import Store
from digest.web.server import start_in_background

pytestmark = pytest.mark.integration

KEY = "reader-loop-" + "k" * 32
RSS = SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml"
SLACK_LINK = re.compile(r"<([^|<>]+)\|([^<>]+)>")


class Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href, self._text = dict(attrs).get("href") or "", ""

    def handle_data(self, data):
        if self._href is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.links.append((self._href, self._text.strip()))
            self._href = None


def config_text(tmp_path: Path, *, smtp_port: int, web_port: int, hook: str = "") -> Path:
    chat = """
[channels.chat]
kind = "slack"
webhook_url_env = "READER_LOOP_HOOK"
""" if hook else ""
    return write_config(tmp_path, f"""
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
[web]
base_url = "http://127.0.0.1:{web_port}"
host = "127.0.0.1"
port = {web_port}
secret_env = "READER_LOOP_KEY"
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL", "cs.LG"]
url = "{RSS}"
[[watchlists]]
name = "efficient-llms"
keywords = ["LoRA", "quantization", "key-value cache"]
channels = ["mail"{', "chat"' if hook else ''}]
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from = "digest@example.org"
to = ["team@example.org"]
{chat}""")


def slack_texts(blocks: list[dict]) -> list[str]:
    """The mrkdwn of every section and context block of a Slack message."""
    out = []
    for block in blocks:
        if "text" in block:
            out.append(block["text"]["text"])
        out += [element.get("text", "") for element in block.get("elements", [])]
    return out


def click(url: str) -> httpx.Response:
    """What a browser does with a rating link: GET the page, then submit its form."""
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200, page.text
    form = re.search(r'<form[^>]*method="post"[^>]*>', page.text)
    assert form, page.text
    action = re.search(r'action="([^"]+)"', form.group(0))
    target = httpx.URL(url).join(action.group(1).replace("&amp;", "&")) if action else url
    return httpx.post(str(target), timeout=10)


def test_links_in_a_delivered_email_and_slack_payload_record_ratings(
        tmp_path, smtp_server, http_server, monkeypatch, capsys):
    inbox, smtp_port = smtp_server
    hook = http_server.route("/hook", Route(status=200, body=b"ok"))
    monkeypatch.setenv("READER_LOOP_KEY", KEY)
    monkeypatch.setenv("READER_LOOP_HOOK", hook)
    path = config_text(tmp_path, smtp_port=smtp_port, web_port=free_port(), hook=hook)
    assert main(["run", "--once", "--config", str(path)]) == 0
    capsys.readouterr()

    (_, _, raw), = inbox.messages
    message = email.message_from_bytes(raw, policy=default_policy)
    html = message.get_body(("html",)).get_content()
    anchors = Anchors()
    anchors.feed(html)
    not_for_me = [href for href, text in anchors.links if text == "Not for me"]
    more_like = [href for href, text in anchors.links if text == "More like this"]
    assert len(not_for_me) == len(more_like) >= 2

    settings = load_settings(path)
    signer = LinkSigner(KEY)
    disliked = signer.verify(not_for_me[0].rsplit("/", 1)[1])
    liked = signer.verify(more_like[1].rsplit("/", 1)[1])
    assert disliked is not None and liked is not None

    slack_urls = [url for body in (r.json() for r in http_server.hits("/hook"))
                  for text in slack_texts(body["blocks"])
                  for url, label in SLACK_LINK.findall(text) if label == "Save"]
    assert slack_urls
    saved = signer.verify(slack_urls[-1].rsplit("/", 1)[1])
    assert saved is not None

    web = start_in_background(settings)
    try:
        answer = click(not_for_me[0])
        assert answer.status_code == 200 and "Recorded" in answer.text
        assert "Undo" in answer.text
        again = click(not_for_me[0])
        # Nothing new; the click in force can still be taken back, with the first's undo.
        assert "Already recorded" in again.text and "Undo" in again.text
        assert click(more_like[1]).status_code == 200
        assert click(slack_urls[-1]).status_code == 200
        forged = not_for_me[0][:-3] + ("aaa" if not not_for_me[0].endswith("aaa") else "bbb")
        assert httpx.post(forged, timeout=10).status_code == 403
    finally:
        web.stop()

    with Store.open(settings.store.path) as store:
        ratings = store.ratings("efficient-llms")["efficient-llms"]
        origins = {r[0] for r in store.db.execute("SELECT origin FROM ratings")}
        events = store.db.execute("SELECT count(*) FROM rating_events WHERE paper_key = ?",
                                  [disliked.paper_key]).fetchone()[0]
    assert ratings[disliked.paper_key] == -1
    assert ratings[liked.paper_key] == 1 and ratings[saved.paper_key] == 1
    assert origins == {"web"} and events == 1

    assert main(["explain", "--config", str(path), disliked.paper_key]) == 0
    explained = capsys.readouterr().out
    assert "efficient-llms" in explained and "disliked" in explained.lower()


def test_serve_runs_the_web_app_beside_the_scheduler(tmp_path, smtp_server):
    _, smtp_port = smtp_server
    web_port = free_port()
    path = config_text(tmp_path, smtp_port=smtp_port, web_port=web_port)
    env = {**os.environ, "READER_LOOP_KEY": KEY}
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", "serve", "--config", str(path)], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 20
        answer = None
        while time.monotonic() < deadline:
            try:
                answer = httpx.get(f"http://127.0.0.1:{web_port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert answer is not None and answer.status_code == 200 and answer.text == "ok"
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    assert process.returncode == 0, output
    assert f"serving rating links at http://127.0.0.1:{web_port}" in output
    assert KEY not in output
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{web_port}/healthz", timeout=2)
