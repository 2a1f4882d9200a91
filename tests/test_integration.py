"""End to end: `paper-digest run --once` against real servers on 127.0.0.1.

Feeds and the Slack webhook are served by a real HTTP server, mail goes to a real SMTP
server (aiosmtpd), and the store is a real SQLite file.
"""

from __future__ import annotations

import email
import json
from email.policy import default as default_policy

import pytest
from conftest import SAMPLES, Route, write_config

from digest.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(tmp_path, http_server, smtp_server, monkeypatch):
    inbox, smtp_port = smtp_server
    rss_url = http_server.route("/rss/cs.CL+cs.LG", Route(
        body=(SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml").read_bytes(),
        headers={"Content-Type": "application/rss+xml", "ETag": '"day-1"'}))
    hf_url = http_server.route("/api/daily_papers", Route(
        body=(SAMPLES / "hf_daily_papers_2026-11-19.json").read_bytes(),
        headers={"Content-Type": "application/json"}))
    hook_url = http_server.route("/services/T1/B1/token", Route(body=b"ok"))
    monkeypatch.setenv("TEST_SLACK_HOOK", hook_url)
    config = write_config(tmp_path, f"""
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
retry_backoff_seconds = 0
timeout_seconds = 5
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL", "cs.LG"]
url = "{rss_url}"
[[sources]]
name = "hf-daily"
kind = "hf_daily"
url = "{hf_url}"
[[watchlists]]
name = "efficient-llms"
keywords = ["LoRA", {{ term = "key-value cache", weight = 2 }}, "quantization"]
exclude = ["survey"]
channels = ["mail", "chat"]
[[watchlists]]
name = "people"
authors = ["Sinong Wang"]
channels = ["mail"]
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from = "Paper Digest <digest@example.org>"
to = ["team@example.org"]
unsubscribe = "mailto:admin@example.org"
timeout_seconds = 5
[channels.chat]
kind = "slack"
webhook_url_env = "TEST_SLACK_HOOK"
timeout_seconds = 5
""")
    return config, inbox, http_server


def mails(inbox):
    return [email.message_from_bytes(content, policy=default_policy)
            for _, _, content in inbox.messages]


def test_run_once_delivers_email_and_slack_then_nothing_twice(setup, capsys):
    config, inbox, server = setup
    assert main(["run", "--once", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "arxiv-cs: 25 read, 25 new, 0 already known" in out
    assert "hf-daily: 11 read, 5 new, 6 already known" in out

    messages = mails(inbox)
    subjects = sorted(m["Subject"] for m in messages)
    assert subjects[0].startswith("efficient-llms: ") and subjects[1].startswith("people: ")
    efficient = next(m for m in messages if m["Subject"].startswith("efficient-llms"))
    text = efficient.get_body(("plain",)).get_content()
    html = efficient.get_body(("html",)).get_content()
    assert "Compressing the Key-Value Cache of Long-Context Transformers" in text
    assert 'Why: "key-value cache" in title' in text
    assert "A Survey of Parameter-Efficient Fine-Tuning" not in text  # excluded
    assert "Curiosity-Driven Exploration" not in text  # LoRA is not in "exploration"
    assert "▲ 120 upvotes on Hugging Face" in text  # merged from the HF listing
    assert ">LoRA</mark>" in html
    assert efficient["List-Unsubscribe"] == "<mailto:admin@example.org>"
    people = next(m for m in messages if m["Subject"].startswith("people"))
    people_text = people.get_body(("plain",)).get_content()
    assert "author Sinong Wang" in people_text
    assert "Model Merging with Task Arithmetic" not in people_text  # Sinong Zhan

    posts = server.hits("/services/T1/B1/token")
    assert posts, "the webhook received nothing"
    for post in posts:
        body = post.json()
        assert body["text"] and 1 < len(body["blocks"]) <= 50
        assert post.headers["Content-Type"] == "application/json"
    sent_titles = json.dumps([p.json() for p in posts])
    assert "LoRA-Flow" in sent_titles

    # the same papers again: nothing new, nothing sent, a conditional request for the feed
    inbox.messages.clear()
    before = len(posts)
    assert main(["run", "--once", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "0 new papers" in out
    assert inbox.messages == [] and len(server.hits("/services/T1/B1/token")) == before
    assert server.hits("/rss/cs.CL+cs.LG")[-1].headers.get("If-None-Match") == '"day-1"'


def test_a_failing_channel_keeps_its_digest_for_the_next_run(setup, capsys):
    config, inbox, server = setup
    server.route("/services/T1/B1/token", Route(status=500, body=b"oops"))
    assert main(["run", "--once", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "efficient-llms -> chat" in out and "failed_temporary" in out
    assert len(inbox.messages) == 2  # mail went out regardless
    server.route("/services/T1/B1/token", Route(status=429, headers={"Retry-After": "0"}),
                 Route(body=b"ok"))
    assert main(["run", "--once", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "(recorded earlier, sent again)" in out
    assert len(inbox.messages) == 2  # and mail got nothing twice
    accepted = [h for h in server.hits("/services/T1/B1/token")]
    # once among the blocks, once in the plain text that lists the papers
    assert json.dumps(accepted[-1].json()["blocks"]).count("LoRA-Flow") == 1
    assert accepted[-1].json()["text"].count("LoRA-Flow") == 1


def test_a_failing_source_is_named_and_the_rest_goes_on(setup, capsys):
    config, inbox, server = setup
    server.route("/rss/cs.CL+cs.LG", Route(status=200, body=b"<html><body>Oops</body></html>"))
    assert main(["run", "--once", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "arxiv-cs: FAILED arXiv RSS: got an HTML page, not a feed" in out
    assert "hf-daily: 11 read, 11 new" in out
    assert inbox.messages  # Hugging Face papers still went out


def test_unreachable_smtp_is_retried_next_run_without_duplicates(setup, capsys, tmp_path):
    config, inbox, server = setup
    from conftest import free_port

    text = config.read_text()
    real_port = text.split("smtp_port = ")[1].split("\n")[0]
    config.write_text(text.replace(f"smtp_port = {real_port}", f"smtp_port = {free_port()}"))
    assert main(["run", "--once", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "connection refused" in out and inbox.messages == []
    config.write_text(text)
    assert main(["run", "--once", "--config", str(config)]) == 0
    subjects = sorted(m["Subject"] for m in mails(inbox))
    assert len(subjects) == 2 and len(set(subjects)) == 2
