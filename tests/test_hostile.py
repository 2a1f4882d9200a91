"""Hostile feeds: whatever a title, author or abstract holds is shown as text everywhere,
and secrets never leave the environment."""

from __future__ import annotations

import email
import json
import logging
from email.policy import default as default_policy

import pytest
from conftest import Route, write_config

from digest.cli import main

pytestmark = pytest.mark.integration

LONG = "LoRA " + "very-long-word " * 2000
HOSTILE_ITEMS = [
    ("2611.09001", "LoRA <script>alert('x')</script> & <b>bold</b>",
     "Ann <img src=x onerror=alert(1)>", "An abstract about LoRA with <iframe src=evil>."),
    ("2611.09002", "LoRA for <!channel> and <@U123ABC> via <https://evil.example|click>",
     "Bob *Bold*", "Slack markup: <!here> *bold* _italic_ ~strike~ `code` > quote LoRA."),
    ("2611.09003", "LoRA\r\nBcc: victim@example.org\r\nSubject: injected",
     "Carol\r\nX-Evil: 1", "Line\r\nbreaks\nin LoRA abstract."),
    ("2611.09004", "LoRA [link](https://evil.example) **markdown** # heading",
     "Dan", "Markdown [x](javascript:alert(1)) in LoRA."),
    ("2611.09005", LONG, "E" * 5000, LONG),
]


def hostile_rss() -> bytes:
    from xml.sax.saxutils import escape

    items = "".join(
        f"<item><title>{escape(title)}</title><link>https://arxiv.org/abs/{i}</link>"
        f"<description>arXiv:{i}v1 Announce Type: new \nAbstract: {escape(abstract)}"
        f"</description><guid>oai:arXiv.org:{i}v1</guid><category>cs.CL</category>"
        f"<arxiv:announce_type>new</arxiv:announce_type>"
        f"<dc:creator>{escape(author)}</dc:creator></item>"
        for i, title, author, abstract in HOSTILE_ITEMS)
    return ('<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
            'xmlns:arxiv="http://arxiv.org/schemas/atom" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/"><channel><title>cs.CL</title>'
            f"{items}</channel></rss>").encode()


@pytest.fixture
def smtp_with_login():
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult
    from conftest import SmtpInbox, free_port

    logins = []

    def authenticate(server, session, envelope, mechanism, auth_data):
        logins.append(auth_data.login)
        return AuthResult(success=auth_data.password == b"very-secret-smtp-password")

    inbox, port = SmtpInbox(), free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, auth_require_tls=False,
                            authenticator=authenticate)
    controller.start()
    yield inbox, port, logins
    controller.stop()


@pytest.fixture
def delivered(tmp_path, http_server, smtp_with_login, monkeypatch, capsys, caplog):
    inbox, port, logins = smtp_with_login
    feed = http_server.route("/rss/cs.CL", Route(body=hostile_rss()))
    hook_path = "/services/T1/B1/very-secret-hook-token"
    hook = http_server.route(hook_path, Route(body=b"ok"))
    monkeypatch.setenv("H_HOOK", hook)
    monkeypatch.setenv("H_USER", "digest-user")
    monkeypatch.setenv("H_PASS", "very-secret-smtp-password")
    config = write_config(tmp_path, f"""
[http]
arxiv_interval_seconds = 0
[[sources]]
name = "hostile"
kind = "arxiv_rss"
categories = ["cs.CL"]
url = "{feed}"
[[watchlists]]
name = "lora"
keywords = ["LoRA"]
channels = ["mail", "chat"]
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
security = "none"
username_env = "H_USER"
password_env = "H_PASS"
from = "digest@example.org"
to = ["team@example.org"]
[channels.chat]
kind = "slack"
webhook_url_env = "H_HOOK"
""")
    caplog.set_level(logging.INFO)
    assert main(["run", "--once", "--verbose", "--config", str(config)]) == 0
    out = capsys.readouterr()
    assert logins == [b"digest-user"]
    message = email.message_from_bytes(inbox.messages[0][2], policy=default_policy)
    posts = [h.json() for h in http_server.hits(hook_path)]
    return {"message": message, "raw": inbox.messages[0][2], "posts": posts,
            "output": out.out + out.err + caplog.text, "db": (tmp_path / "digest.db")}


def test_html_email_shows_markup_as_text(delivered):
    html = delivered["message"].get_body(("html",)).get_content()
    for raw in ("<script>", "<b>bold</b>", "<img src=x", "<iframe"):
        assert raw not in html
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in html  # quotes need no escape in text
    assert "Ann &lt;img src=x onerror=alert" in html
    assert 'href="javascript' not in html


def test_text_email_keeps_each_field_on_its_line(delivered):
    text = delivered["message"].get_body(("plain",)).get_content()
    assert "\nBcc: victim@example.org" not in text
    assert "LoRA Bcc: victim@example.org Subject: injected" in text


def test_no_feed_text_reaches_a_mail_header(delivered):
    headers = delivered["raw"].split(b"\r\n\r\n", 1)[0].decode()
    assert "victim@example.org" not in headers and "X-Evil" not in headers
    assert delivered["message"]["Bcc"] is None


def test_slack_cannot_be_made_to_mention_link_or_format(delivered):
    body = json.dumps(delivered["posts"], ensure_ascii=False)
    for raw in ("<!channel>", "<!here>", "<@U123ABC>", "<https://evil.example|click>",
                "*bold*", "_italic_", "~strike~", "`code`", "*Bold*"):
        assert raw not in body, raw
    for message in delivered["posts"]:
        assert len(message["blocks"]) <= 50
        for block in message["blocks"]:
            if block["type"] == "section":
                assert len(block["text"]["text"]) <= 3000
                # the only link is the paper's own, built by us
                assert block["text"]["text"].count("<https://arxiv.org/abs/") == 1


def test_very_long_strings_are_cut(delivered):
    html = delivered["message"].get_body(("html",)).get_content()
    assert "very-long-word " * 100 not in html
    assert "E" * 400 not in html
    assert len(delivered["raw"]) < 100_000


def test_secrets_never_appear_in_output_logs_or_store(delivered):
    assert "very-secret-hook-token" not in delivered["output"]
    assert "very-secret-smtp-password" not in delivered["output"]
    db = b"".join(p.read_bytes() for p in delivered["db"].parent.glob("digest.db*"))
    assert b"very-secret-hook-token" not in db
    assert b"very-secret-smtp-password" not in db
