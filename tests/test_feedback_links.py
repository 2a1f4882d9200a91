"""Rating links in digests: one row per paper in every format, signed for that paper.

Golden files pin the linked variant (regenerate with UPDATE_GOLDEN=1); the end-to-end
tests read what a real SMTP server and a real webhook received from `run --once`.
"""

from __future__ import annotations

import email
import json
import logging
import re
from dataclasses import replace
from datetime import UTC, datetime
from email.policy import default as default_policy
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import SAMPLES, Route, html_bytes, write_config
from test_render import check_golden, sample_digest

from digest.cli import main
from digest.config import ChannelSettings, Secret, Settings, WebSettings
from digest.deliver.email import MAX_HTML_BYTES, EmailChannel, EmailOptions
from digest.deliver.slack import (
    SLACK_MAX_BLOCKS,
    SLACK_MAX_SECTION_CHARS,
    SLACK_MAX_TEXT_CHARS,
    slack_messages,
)
from digest.feedback import ACTIONS, LinkSigner, rating_urls
from digest.models import Digest, Match, Paper, Reason
from digest.pipeline import feedback_links
from digest.render import RATING_LABELS, Renderer

KEY = "k" * 40  # a signing key of the length `check` asks for
BASE = "https://papers.example.org/digest"
WHEN = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
LABEL_ACTION = {label: action for action, label in RATING_LABELS.items()}
SLACK_LINK = re.compile(r"<([^|<>]+)\|([^<>]+)>")


def linked(digest: Digest, key: str = KEY) -> Digest:
    signer = LinkSigner(key)
    return replace(digest, feedback={
        m.paper.key: rating_urls(signer, BASE, watchlist=digest.watchlist, paper_key=m.paper.key)
        for m in digest.matches})


def check_token(url: str, *, watchlist: str, paper_key: str, action: str) -> None:
    assert url.startswith(BASE + "/r/"), url
    link = LinkSigner(KEY).verify(url.rsplit("/", 1)[1])
    assert link is not None, f"token does not verify: {url}"
    assert (link.watchlist, link.paper_key, link.action, link.recipient) == (
        watchlist, paper_key, action, "")


class Anchors(HTMLParser):
    """Every <a href> of an HTML body with its text, in document order."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[list[str]] = []
        self._open: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._open = [dict(attrs).get("href") or "", ""]

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open[1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.links.append(self._open)
            self._open = None


def html_ratings(html: str) -> dict[str, dict[str, str]]:
    """Rating URLs by the arXiv abs URL of the paper whose title link precedes them."""
    parser = Anchors()
    parser.feed(html)
    out: dict[str, dict[str, str]] = {}
    paper = ""
    for href, text in parser.links:
        if text in LABEL_ACTION:
            out.setdefault(paper, {})[LABEL_ACTION[text]] = href
        elif href.startswith("https://arxiv.org/abs/"):  # the title, or the "Abstract" link
            paper = href
    return out


def text_ratings(text: str) -> dict[str, dict[str, str]]:
    """Rating URLs by the paper URL line that precedes them in the plain-text part."""
    out: dict[str, dict[str, str]] = {}
    paper = ""
    for line in text.splitlines():
        if line.startswith("   https://arxiv.org/abs/"):
            paper = line.strip()
        label, _, url = line.strip().partition(": ")
        if label in LABEL_ACTION and url.strip().startswith("http"):
            out.setdefault(paper, {})[LABEL_ACTION[label]] = url.strip()
    return out


# ----------------------------------------------------------------------------- rendering


def test_linked_email_and_slack_match_golden_files():
    digest = linked(sample_digest())
    text, html = Renderer().email(digest, subject="efficient-llms: 2 new papers")
    check_golden("email_links.txt", text)
    check_golden("email_links.html", html)
    check_golden("slack_links.json", json.dumps(slack_messages(digest), indent=2,
                                                ensure_ascii=False) + "\n")


def test_each_format_carries_three_signed_links_per_paper():
    digest = linked(sample_digest())
    text, html = Renderer().email(digest, subject="s")
    papers = {m.paper.abs_url: m.paper.key for m in digest.matches}
    for found in (html_ratings(html), text_ratings(text)):
        assert set(found) == set(papers)
        for url, actions in found.items():
            assert set(actions) == set(ACTIONS)
            for action, link in actions.items():
                check_token(link, watchlist="efficient-llms", paper_key=papers[url],
                            action=action)
    assert "More like this" in html and "Not for me" in html and "Save</a>" in html
    assert "record your rating" in html and "record your rating" in text


def test_without_links_the_email_says_nothing_about_rating():
    text, html = Renderer().email(sample_digest(), subject="s")
    assert "More like this" not in html + text and "record your rating" not in html + text
    assert "/r/" not in html + text


def test_only_web_addresses_become_rating_links():
    digest = sample_digest()
    key = digest.matches[0].paper.key
    odd = replace(digest, feedback={key: {"like": "javascript:alert(1)",
                                          "dislike": f"{BASE}/r/token", "save": ""}})
    text, html = Renderer().email(odd, subject="s")
    assert "javascript:" not in text + html + json.dumps(slack_messages(odd))
    assert html_ratings(html) == {digest.matches[0].paper.abs_url: {"dislike": f"{BASE}/r/token"}}


def test_slack_links_keep_the_token_intact():
    # Tokens are URL-safe base64: '_' and '-' must not become look-alikes as feed text does.
    digest = linked(sample_digest())
    tokens = [url for urls in digest.feedback.values() for url in urls.values()]
    assert any("_" in t or "-" in t for t in tokens)  # the sample exercises the danger
    messages = slack_messages(digest)
    contexts = [b for m in messages for b in m["blocks"] if b["type"] == "context"]
    found = [(url, label) for block in contexts for element in block["elements"]
             for url, label in SLACK_LINK.findall(element["text"]) if label in LABEL_ACTION]
    assert sorted(url for url, _ in found) == sorted(tokens)
    for match in digest.matches:
        for action, url in digest.feedback[match.paper.key].items():
            assert (url, RATING_LABELS[action]) in found
            check_token(url, watchlist="efficient-llms", paper_key=match.paper.key,
                        action=action)


def test_slack_split_stays_within_limits_with_links():
    papers = tuple(
        Match(Paper(key=f"arxiv:2611.{i:05d}", arxiv_id=f"2611.{i:05d}",
                    title=f"Paper {i} " + "long " * 40, url=f"https://arxiv.org/abs/2611.{i:05d}",
                    abstract="word " * 2000, authors=tuple(f"Author {j}" for j in range(300))),
              "w", 1.0, tuple(Reason("term", f"word{j}" * 20, "abstract", 1.0)
                              for j in range(40)))
        for i in range(60))
    digest = linked(Digest("w", "c", papers, WHEN))
    messages = slack_messages(digest)
    seen = []
    for message in messages:
        assert len(message["blocks"]) <= SLACK_MAX_BLOCKS
        for block in message["blocks"]:
            if block["type"] == "section":
                assert len(block["text"]["text"]) <= SLACK_MAX_SECTION_CHARS
            if block["type"] == "context":
                text = block["elements"][0]["text"]
                assert len(text) <= SLACK_MAX_TEXT_CHARS
                links = SLACK_LINK.findall(text.rsplit("\n", 1)[1])
                assert [label for _, label in links] == list(RATING_LABELS.values())
                seen += [url for url, _ in links]
    assert sorted(seen) == sorted(u for urls in digest.feedback.values() for u in urls.values())
    assert messages[0]["blocks"][0]["text"]["text"].endswith(f"(1/{len(messages)})")


def real_size_papers(count: int) -> tuple[Match, ...]:
    """Papers the size of a real arXiv listing's: a 90-character title, five authors,
    a 1,400-character abstract, three categories (the real 50-entry API capture averages
    84, 4.4 and 1,367)."""
    abstract = ("We study parameter-efficient fine-tuning of large language models with "
                "low-rank adapters whose rank adapts per layer during training. ") * 10
    return tuple(
        Match(Paper(key=f"arxiv:2611.{i:05d}", arxiv_id=f"2611.{i:05d}",
                    url=f"https://arxiv.org/abs/2611.{i:05d}",
                    title=f"Adaptive Low-Rank Adapters for Efficient Fine-Tuning of Language "
                          f"Models, Part {i}",
                    abstract=abstract[:1400],
                    authors=("Mei Lin", "Sinong Wang", "José García", "Yuki Sato",
                             "Aleksandra Nowak"),
                    categories=("cs.CL", "cs.LG", "cs.AI"), announce_type="new"),
              "efficient-llms", 5.0 - i / 100,
              (Reason("term", "low-rank adapters", "title", 2.0),
               Reason("term", "fine-tuning", "abstract", 1.0),
               Reason("category", "cs.CL", "category", 0.5)))
        for i in range(count))


def test_email_with_links_fits_the_limit_and_keeps_every_link_when_shrunk():
    channel = EmailChannel(ChannelSettings(name="mail", kind="email", options=EmailOptions(
                                           sender="Paper Digest <digest@example.org>",
                                           to=("team@example.org",))), renderer=Renderer())
    composed = channel.compose(linked(Digest("efficient-llms", "mail", real_size_papers(80),
                                             WHEN)))
    raw = composed.payload["message"]
    message = email.message_from_string(raw, policy=default_policy)
    assert html_bytes(message) <= MAX_HTML_BYTES
    kept = composed.digest.matches
    # The default max_papers (25) always fits; the lowest-ranked of 80 wait for the next one.
    assert 25 <= len(kept) < 80
    assert kept == real_size_papers(80)[:len(kept)]
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    for found in (html_ratings(html), text_ratings(text)):
        assert set(found) == {m.paper.abs_url for m in kept}
        for match in kept:
            for action, url in found[match.paper.abs_url].items():
                check_token(url, watchlist="efficient-llms", paper_key=match.paper.key,
                            action=action)


# ----------------------------------------------------------------------------- pipeline


@pytest.mark.parametrize(("web", "expected"), [
    pytest.param(WebSettings(), False, id="no base_url"),
    pytest.param(WebSettings(base_url=BASE), False, id="base_url without a key"),
    pytest.param(WebSettings(base_url=BASE, secret=Secret(KEY, "DIGEST_WEB_SECRET")), True,
                 id="base_url and key"),
])
def test_links_only_with_an_address_and_a_key(web, expected, caplog):
    with caplog.at_level(logging.WARNING):
        links = feedback_links(Settings(path=Path("digest.toml"), web=web), "efficient-llms",
                               ["arxiv:2611.04001"])
    assert bool(links) is expected
    if expected:
        assert set(links["arxiv:2611.04001"]) == set(ACTIONS)
        for action, url in links["arxiv:2611.04001"].items():
            check_token(url, watchlist="efficient-llms", paper_key="arxiv:2611.04001",
                        action=action)


@pytest.fixture
def linked_run(tmp_path, http_server, smtp_server, monkeypatch):
    inbox, smtp_port = smtp_server
    rss_url = http_server.route("/rss/cs.CL+cs.LG", Route(
        body=(SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml").read_bytes(),
        headers={"Content-Type": "application/rss+xml"}))
    hook_url = http_server.route("/services/T1/B1/token", Route(body=b"ok"))
    monkeypatch.setenv("LINKS_SLACK_HOOK", hook_url)
    monkeypatch.setenv("LINKS_WEB_KEY", KEY)
    config = write_config(tmp_path, f"""
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
retry_backoff_seconds = 0
timeout_seconds = 5
[web]
base_url = "{BASE}/"
secret_env = "LINKS_WEB_KEY"
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL", "cs.LG"]
url = "{rss_url}"
[[watchlists]]
name = "efficient-llms"
keywords = ["LoRA", {{ term = "key-value cache", weight = 2 }}, "quantization"]
channels = ["mail", "chat"]
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from = "Paper Digest <digest@example.org>"
to = ["team@example.org", "lab@example.org"]
timeout_seconds = 5
[channels.chat]
kind = "slack"
webhook_url_env = "LINKS_SLACK_HOOK"
timeout_seconds = 5
""")
    return config, inbox, http_server


def test_a_missing_key_is_said_once_a_run_not_once_a_digest(linked_run, tmp_path, capsys,
                                                            caplog, monkeypatch):
    """Without its key (a run into an outbox needs no secrets), every digest goes out
    without rating links, and the log says why once, however many digests there are."""
    config, _, _ = linked_run
    monkeypatch.delenv("LINKS_WEB_KEY")
    with caplog.at_level(logging.WARNING):
        assert main(["run", "--once", "--config", str(config), "--outbox",
                     str(tmp_path / "out")]) == 0
    capsys.readouterr()
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert any(n.endswith(".eml") for n in written) and any(n.endswith(".json")
                                                            for n in written)
    warned = [r for r in caplog.records if "LINKS_WEB_KEY" in r.getMessage()]
    assert len(warned) == 1 and "without rating links" in warned[0].getMessage()
    assert KEY not in caplog.text


@pytest.mark.integration
def test_a_key_the_web_app_would_refuse_signs_no_link(linked_run, capsys, caplog,
                                                       monkeypatch):
    """A key shorter than the web app accepts: every link signed with it would be dead,
    so the digests go out without links, and the log says why once."""
    config, inbox, server = linked_run
    monkeypatch.setenv("LINKS_WEB_KEY", "short")
    with caplog.at_level(logging.WARNING):
        assert main(["run", "--once", "--config", str(config)]) == 0
    capsys.readouterr()
    [message] = [email.message_from_bytes(raw, policy=default_policy)
                 for _, _, raw in inbox.messages]
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    assert re.findall(r'<a href="(https://arxiv\.org/abs/[^"]+)"', html)  # papers went out
    assert html_ratings(html) == {} and text_ratings(text) == {}
    assert BASE not in html and BASE not in text
    posts = [hit.json() for hit in server.hits("/services/T1/B1/token")]
    assert posts and all(BASE not in str(post) for post in posts)
    warned = [r for r in caplog.records if "LINKS_WEB_KEY" in r.getMessage()]
    assert len(warned) == 1
    assert "5 characters, fewer than the 32" in warned[0].getMessage()
    assert "short" not in warned[0].getMessage()  # the key itself is never logged


@pytest.mark.integration
def test_run_once_delivers_signed_links_by_email_and_slack(linked_run, capsys):
    config, inbox, server = linked_run
    assert main(["run", "--once", "--config", str(config)]) == 0
    capsys.readouterr()

    assert len(inbox.messages) == 1
    message = email.message_from_bytes(inbox.messages[0][2], policy=default_policy)
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    # each paper links its abstract twice: from its title and from its row of links
    titles = list(dict.fromkeys(re.findall(r'<a href="(https://arxiv\.org/abs/[^"]+)"', html)))
    assert len(titles) >= 3
    for found in (html_ratings(html), text_ratings(text)):
        assert sorted(found) == sorted(titles)  # every paper, and only papers, carry links
        for url, actions in found.items():
            assert set(actions) == set(ACTIONS)
            for action, link in actions.items():
                check_token(link, watchlist="efficient-llms",
                            paper_key="arxiv:" + url.rsplit("/", 1)[1], action=action)

    posts = [hit.json() for hit in server.hits("/services/T1/B1/token")]
    assert posts
    rated = 0
    for post in posts:
        blocks = post["blocks"]
        for section, context in zip(blocks, blocks[1:], strict=False):
            if section["type"] != "section" or context["type"] != "context":
                continue
            paper_url = SLACK_LINK.search(section["text"]["text"]).group(1)
            links = SLACK_LINK.findall(context["elements"][0]["text"])
            assert [label for _, label in links] == list(RATING_LABELS.values())
            for url, label in links:
                check_token(url, watchlist="efficient-llms",
                            paper_key="arxiv:" + paper_url.rsplit("/", 1)[1],
                            action=LABEL_ACTION[label])
            rated += 1
    assert rated == len(titles)  # the same papers went to both channels
