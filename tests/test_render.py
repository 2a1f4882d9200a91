"""Rendering: email bodies and Slack payloads against golden files, escaping, limits.

Regenerate the golden files after an intended change with UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.models import Digest, Match, Paper, Reason
from digest.render import (
    SLACK_MAX_BLOCKS,
    SLACK_MAX_SECTION_CHARS,
    Renderer,
    highlight,
    slack_escape,
    slack_messages,
    trim,
)

GOLDEN = Path(__file__).parent / "golden"
WHEN = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"golden file {name} missing: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


def sample_digest() -> Digest:
    lora = Paper(key="arxiv:2611.04001", arxiv_id="2611.04001", url="https://arxiv.org/abs/2611.04001",
                 title="LoRA-Flow: Dynamic Low-Rank Adapters",
                 abstract="We study LoRA adapters whose rank changes per layer. " * 3,
                 authors=("Mei Lin", "Sinong Wang"), categories=("cs.CL", "cs.LG"),
                 announce_type="new", upvotes=120)
    hostile = Paper(key="arxiv:2611.04017", arxiv_id="2611.04017",
                    url="https://arxiv.org/abs/2611.04017",
                    title="Scaling <script>alert(1)</script> & LoRA <!channel> <@U123>",
                    abstract="Tricks: <https://x|y> *bold* & more about LoRA.",
                    authors=("Tom <b>Becker</b>",), categories=("cs.LG",), announce_type="cross")
    return Digest(watchlist="efficient-llms", channel="team", created_at=WHEN, matches=(
        Match(lora, "efficient-llms", 6.5, (Reason("term", "LoRA", "title", 2.0),
                                             Reason("author", "Sinong Wang", "authors", 3.0))),
        Match(hostile, "efficient-llms", 3.0, (Reason("term", "LoRA", "title", 2.0),
                                                Reason("term", "LoRA", "abstract", 1.0))),
    ))


def test_email_bodies_match_golden_files():
    text, html = Renderer().email(sample_digest(), subject="efficient-llms: 2 new papers")
    check_golden("email.txt", text)
    check_golden("email.html", html)


def test_email_html_escapes_feed_text_and_highlights_terms():
    _, html = Renderer().email(sample_digest(), subject="s")
    assert "<script>" not in html and "<b>Becker" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; <mark>LoRA</mark>" in html
    assert 'href="https://arxiv.org/abs/2611.04001"' in html
    assert "▲ 120 upvotes" in html
    assert "Why: &#34;LoRA&#34; in title; author Sinong Wang" in html


def test_email_text_shows_reasons_and_links():
    text, _ = Renderer().email(sample_digest(), subject="s")
    assert "1. LoRA-Flow: Dynamic Low-Rank Adapters" in text
    assert '   Why: "LoRA" in title; author Sinong Wang (score 6.50)' in text
    assert "https://arxiv.org/abs/2611.04017" in text


def test_slack_payload_matches_golden_file():
    check_golden("slack.json", json.dumps(slack_messages(sample_digest()), indent=2,
                                          ensure_ascii=False) + "\n")


def test_only_web_links_become_links():
    evil = Paper(key="guid:x", title="Click me", url="javascript:alert(document.cookie)",
                 abstract="a")
    digest = Digest("w", "c", (Match(evil, "w", 1.0, ()),), WHEN)
    text, html = Renderer().email(digest, subject="s")
    assert "javascript:" not in html and "javascript:" not in text
    assert "<a href" not in html.split("<body")[1].split("Sent by")[0]
    assert "javascript:" not in json.dumps(slack_messages(digest))


def test_notes_about_failing_sources_show_in_every_format():
    digest = sample_digest()
    noted = Digest(digest.watchlist, digest.channel, digest.matches, digest.created_at,
                   notes=("arxiv-cs could not be read in the last 2 runs (HTTP 503 <x>).",))
    text, html = Renderer().email(noted, subject="s")
    assert "Note: arxiv-cs could not be read in the last 2 runs (HTTP 503 <x>)." in text
    assert "arxiv-cs could not be read in the last 2 runs (HTTP 503 &lt;x&gt;)." in html
    messages = slack_messages(noted)
    assert messages[0]["blocks"][1]["type"] == "context"
    assert "HTTP 503 &lt;x&gt;" in messages[0]["blocks"][1]["elements"][0]["text"]


def test_slack_text_cannot_mention_or_link():
    payload = json.dumps(slack_messages(sample_digest()))
    assert "<!channel>" not in payload and "<@U123>" not in payload
    assert "<https://x|y>" not in payload
    assert "&lt;!channel&gt;" in payload


def test_slack_splits_long_digests_within_limits():
    digest = sample_digest()
    many = tuple(
        Match(Paper(key=f"arxiv:{i}", title=f"Paper {i} " + "long " * 40, url="https://a/b",
                    abstract="word " * 2000, authors=tuple(f"Author {j}" for j in range(300))),
              "w", 1.0, (Reason("term", "word", "abstract", 1.0),)) for i in range(60))
    messages = slack_messages(Digest("w", "c", many, WHEN))
    assert len(messages) == 3
    for message in messages:
        assert len(message["blocks"]) <= SLACK_MAX_BLOCKS
        for block in message["blocks"]:
            if block["type"] == "section":
                assert len(block["text"]["text"]) <= SLACK_MAX_SECTION_CHARS
    assert messages[0]["blocks"][0]["text"]["text"].endswith("(1/3)")
    assert sum(1 for m in messages for b in m["blocks"] if b["type"] == "section") == 60
    assert digest.matches  # the sample is untouched


@pytest.mark.parametrize(("text", "escaped"), [
    ("a & b", "a &amp; b"), ("<!here>", "&lt;!here&gt;"), ("x > y < z", "x &gt; y &lt; z")])
def test_slack_escape(text, escaped):
    assert slack_escape(text) == escaped


def test_trim_cuts_at_a_word():
    assert trim("one two three four", 9) == "one two …"
    assert trim("short", 10) == "short"


def test_highlight_escapes_around_marks():
    assert str(highlight("<LoRA> & LoRA", ("LoRA",))) == (
        "&lt;<mark>LoRA</mark>&gt; &amp; <mark>LoRA</mark>")
