"""Rendering: email bodies and Slack payloads against golden files, escaping, limits.

Regenerate the golden files after an intended change with UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import email
import json
import os
import re
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import html_bytes

from digest.config import ChannelSettings
from digest.deliver.email import MAX_HTML_BYTES, EmailChannel, EmailOptions
from digest.deliver.slack import (
    SLACK_MAX_BLOCKS,
    SLACK_MAX_SECTION_CHARS,
    slack_escape,
    slack_messages,
)
from digest.feedback import LinkSigner, rating_urls
from digest.models import Digest, Match, Paper, Reason
from digest.render import Renderer, digest_subject, highlight, plural, trim

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
    assert re.search(r"&lt;script&gt;alert\(1\)&lt;/script&gt; &amp; <mark[^>]*>LoRA</mark>", html)
    assert 'href="https://arxiv.org/abs/2611.04001"' in html
    assert "▲ 120 upvotes" in html
    assert 'Why: "LoRA" in title; author Sinong Wang' in html


def test_a_field_is_highlighted_for_the_terms_that_counted_in_it():
    """The highlights show what the Why line says: a term that counted in the title only
    (a title: term, or one the matcher found nowhere else) is not marked in the abstract,
    and a term that counted in both is marked in both."""
    _, html = Renderer().email(sample_digest(), subject="s")
    first, second = html.split('id="p2"')[0].split('id="p1"')[1], html.split('id="p2"')[1]
    title_one, abstract_one = first.split('class="a"')
    assert "<mark" in title_one and "<mark" not in abstract_one
    title_two, abstract_two = second.split('class="a"')[:2]
    assert "<mark" in title_two and "<mark" in abstract_two


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
    # the contents list links the entry below it, and nothing links the javascript: URL
    assert re.findall(r'<a href="([^"]*)"', html) == ["#p1"]
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


# ----------------------------------------------------------------- what a digest shows

SIGNING_KEY = "k" * 40
WEB = "https://papers.example.org/digest"


def full_paper(**fields) -> Paper:
    """A paper with every field a digest can show."""
    base = {"key": "arxiv:2611.04001", "arxiv_id": "2611.04001",
            "url": "https://huggingface.co/papers/2611.04001",
            "title": "LoRA-Flow: Dynamic Low-Rank Adapters",
            "abstract": "We study LoRA adapters whose rank changes per layer.",
            "authors": ("Mei Lin", "Sinong Wang"), "categories": ("cs.CL", "cs.LG"),
            "announce_type": "new", "upvotes": 120,
            "comment": "Accepted at ICLR 2027; 9 pages", "journal_ref": "TMLR 2026",
            "hf_url": "https://huggingface.co/papers/2611.04001",
            "code_url": "https://github.com/example-lab/lora-flow", "code_stars": 1284,
            "project_url": "https://example-lab.github.io/lora-flow/",
            "summary": "Adaptive ranks match full fine-tuning with 0.4% of the weights.",
            "summary_source": "Hugging Face AI"}
    return Paper(**{**base, **fields})


def with_links(digest: Digest) -> Digest:
    signer = LinkSigner(SIGNING_KEY)
    return replace(digest, feedback={
        m.paper.key: rating_urls(signer, WEB, watchlist=digest.watchlist, paper_key=m.paper.key)
        for m in digest.matches})


def full_digest() -> Digest:
    """Two papers, every field, rating links, and 13 more matches than it carries."""
    sample = sample_digest()
    first = Match(full_paper(), "efficient-llms", 6.5, sample.matches[0].reasons)
    return with_links(replace(sample, matches=(first, sample.matches[1]), matched=15,
                              timezone="Europe/Berlin"))


class Links(HTMLParser):
    """Every <a href> with its text, and every id, of an HTML body."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self.ids: set[str] = set()
        self._href: str | None = None
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "a":
            self._href, self._text = found.get("href") or "", ""

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._text, self._href))
            self._href = None


def parsed(html: str) -> Links:
    parser = Links()
    parser.feed(html)
    return parser


ROW = [("Abstract", "https://arxiv.org/abs/2611.04001"),
       ("PDF", "https://arxiv.org/pdf/2611.04001"),
       ("HTML", "https://arxiv.org/html/2611.04001"),
       ("Hugging Face", "https://huggingface.co/papers/2611.04001"),
       ("Code (★ 1,284)", "https://github.com/example-lab/lora-flow"),
       ("Project page", "https://example-lab.github.io/lora-flow/")]


def test_full_digest_matches_golden_files():
    digest = full_digest()
    text, html = Renderer().email(digest, subject=digest_subject(
        "{watchlist}: {papers}, {date}", digest))
    check_golden("email_full.txt", text)
    check_golden("email_full.html", html)
    check_golden("slack_full.json", json.dumps(slack_messages(digest), indent=2,
                                               ensure_ascii=False) + "\n")


def test_each_paper_has_its_row_of_links_in_every_format():
    digest = full_digest()
    text, html = Renderer().email(digest, subject="s")
    links = parsed(html).links
    start = links.index(ROW[0])
    assert links[start:start + len(ROW)] == ROW
    assert [label for label, _ in links[start + len(ROW):start + len(ROW) + 3]] == [
        "More like this", "Not for me", "Save"]
    # the plain text: the abstract under the title, then one labelled line per link
    entry = text.split("\n1. LoRA-Flow", 1)[1].split("\n2. ", 1)[0]
    assert "\n   https://arxiv.org/abs/2611.04001\n" in entry
    for label, url in ROW[1:]:
        assert re.search(rf"\n   {re.escape(label)}: +{re.escape(url)}\n", entry), label
    section = slack_messages(digest)[0]["blocks"][1]["text"]["text"]
    assert section.startswith("*1. <https://arxiv.org/abs/2611.04001|LoRA-Flow")
    assert section.rsplit("\n", 1)[1] == " · ".join(f"<{url}|{label}>" for label, url in ROW[1:])


def test_a_paper_without_extras_links_only_what_arxiv_offers():
    digest = sample_digest()
    _, html = Renderer().email(digest, subject="s")
    labels = [label for label, _ in parsed(html).links]
    assert labels.count("PDF") == labels.count("HTML") == 2
    assert "Hugging Face" not in labels and "Project page" not in labels
    assert not any(label.startswith("Code") for label in labels)
    feed_only = Paper(key="guid:x", title="A blog post", url="https://blog.example.org/post",
                      abstract="LoRA, again.")
    _, html = Renderer().email(Digest("w", "c", (Match(feed_only, "w", 1.0, ()),), WHEN),
                               subject="s")
    assert ("Abstract", "https://blog.example.org/post") in parsed(html).links
    assert "PDF" not in [label for label, _ in parsed(html).links]


def test_comment_journal_ref_and_summary_show_with_their_labels():
    digest = full_digest()
    text, html = Renderer().email(digest, subject="s")
    for body in (" ".join(text.split()), html):  # the text part wraps at 79 columns
        assert "Comments: Accepted at ICLR 2027; 9 pages" in body
        assert "Journal ref: TMLR 2026" in body
    assert ("Summary (Hugging Face AI): Adaptive ranks match full fine-tuning with 0.4% of "
            "the weights.") in " ".join(text.split())
    assert re.search(r"<b>Summary \(Hugging Face AI\):</b> Adaptive ranks", html)
    slack = json.dumps(slack_messages(digest), ensure_ascii=False)
    assert "Comments: Accepted at ICLR 2027; 9 pages · Journal ref: TMLR 2026" in slack
    assert "_Summary (Hugging Face AI):_ Adaptive ranks" in slack


def test_the_email_opens_with_contents_linking_each_entry_and_the_count():
    digest = full_digest()
    text, html = Renderer().email(digest, subject="s")
    found = parsed(html)
    contents = [(label, href) for label, href in found.links if href.startswith("#")]
    assert contents == [("LoRA-Flow: Dynamic Low-Rank Adapters", "#p1"),
                        ("Scaling <script>alert(1)</script> & LoRA <!channel> <@U123>", "#p2")]
    assert {"p1", "p2"} <= found.ids
    assert html.index('href="#p2"') < html.index('id="p1"')  # the list comes first
    assert "2 of 15 matched papers · Fri 20 Nov" in html
    lines = text.splitlines()
    assert lines[2] == "2 of 15 matched papers · Fri 20 Nov"
    assert lines[4:7] == ["Contents", "  1. LoRA-Flow: Dynamic Low-Rank Adapters",
                          "  2. Scaling <script>alert(1)</script> & LoRA <!channel> <@U123>"]


@pytest.mark.parametrize(("more_url", "expected"), [
    pytest.param(None, "13 more matched; they did not fit here and wait for the next digest.",
                 id="no web app"),
    pytest.param(f"{WEB}/more", "13 more matched: read them on the web.", id="web app"),
])
def test_a_cut_digest_says_how_many_more_and_where(more_url, expected):
    digest = replace(full_digest(), more_url=more_url)
    text, html = Renderer().email(digest, subject="s")
    assert expected in text and expected in html
    if more_url:
        assert (expected, more_url) in parsed(html).links
        assert f"{expected} {more_url}" in text
    messages = slack_messages(digest)
    tail = messages[-1]["blocks"][-1]["elements"][0]["text"]
    assert tail == (f"<{more_url}|{expected}>" if more_url else expected)
    assert messages[-1]["text"].endswith(expected)


def test_a_digest_that_is_not_cut_says_nothing_more():
    text, html = Renderer().email(sample_digest(), subject="s")
    assert "more matched" not in text + html
    assert "2 papers matched · Fri 20 Nov" in text


def test_shrinking_for_size_counts_what_was_left_out():
    channel = EmailChannel(ChannelSettings(
        name="mail", kind="email", options=EmailOptions(sender="d@example.org",
                                           to=("t@example.org",))), renderer=Renderer())
    papers = tuple(Match(full_paper(key=f"arxiv:2611.{i:05d}", arxiv_id=f"2611.{i:05d}",
                                    abstract="We study low-rank adapters. " * 60),
                         "efficient-llms", 5.0 - i / 100, (Reason("term", "LoRA", "title", 2.0),))
                   for i in range(120))
    composed = channel.compose(with_links(Digest("efficient-llms", "mail", papers, WHEN)))
    kept = len(composed.digest.matches)
    assert 25 <= kept < 120 and composed.digest.matched == 120
    message = email.message_from_string(composed.payload["message"], policy=default_policy)
    assert html_bytes(message) <= MAX_HTML_BYTES
    text = message.get_body(("plain",)).get_content()
    assert f"{120 - kept} more matched; they did not fit here" in text
    assert f"{kept} of 120 matched papers" in text


@pytest.mark.parametrize(("template", "timezone", "count", "subject"), [
    pytest.param("{watchlist}: {papers}, {date}", "UTC", 8,
                 "efficient-llms: 8 new papers, Tue 24 Nov", id="default"),
    pytest.param("{watchlist}: {papers}, {date}", "UTC", 1,
                 "efficient-llms: 1 new paper, Tue 24 Nov", id="one paper"),
    pytest.param("{watchlist}: {papers}, {date}", "America/Los_Angeles", 2,
                 "efficient-llms: 2 new papers, Mon 23 Nov", id="the reader's day"),
    pytest.param("[{watchlist}] {count} on {iso_date}", "Asia/Tokyo", 3,
                 "[efficient-llms] 3 on 2026-11-24", id="count and iso date"),
])
def test_subject_uses_the_watchlist_timezone_and_a_clear_form(template, timezone, count,
                                                             subject):
    matches = sample_digest().matches[:1] * count
    digest = Digest("efficient-llms", "mail", matches,
                    datetime(2026, 11, 24, 3, 30, tzinfo=UTC), timezone=timezone)
    assert digest_subject(template, digest) == subject


def test_the_email_subject_comes_from_the_channel_template():
    channel = EmailChannel(ChannelSettings(
        name="mail", kind="email", options=EmailOptions(sender="d@example.org",
                                           to=("t@example.org",))), renderer=Renderer())
    digest = replace(sample_digest(), matches=sample_digest().matches[:1],
                     timezone="Pacific/Auckland")
    assert channel.subject(digest) == "efficient-llms: 1 new paper, Fri 20 Nov"
    assert slack_messages(digest)[0]["blocks"][0]["text"]["text"] == (
        "efficient-llms: 1 new paper, Fri 20 Nov")


@pytest.mark.parametrize(("count", "noun", "many", "expected"), [
    (0, "paper", None, "0 papers"), (1, "paper", None, "1 paper"), (2, "paper", None, "2 papers"),
    (1, "watchlist", None, "1 watchlist"), (3, "entry", "entries", "3 entries"),
    (1, "entry", "entries", "1 entry")])
def test_plural(count, noun, many, expected):
    assert plural(count, noun, many) == expected


def test_one_paper_reads_in_the_singular_everywhere():
    digest = replace(sample_digest(), matches=sample_digest().matches[:1])
    text, html = Renderer().email(digest, subject="s")
    assert "1 paper matched" in text and "1 paper matched" in html
    assert "1 papers" not in text + html
    assert slack_messages(digest)[0]["text"].startswith("efficient-llms: 1 new paper, Fri 20 Nov")


def test_styles_are_inlined_and_dark_mode_rules_kept():
    _, html = Renderer().email(full_digest(), subject="s")
    head, body = html.split("<body", 1)
    style = re.search(r"<style>(.*?)</style>", head, re.DOTALL)
    assert style is not None
    # only what no style attribute can hold stays in <style>
    assert re.sub(r"@media[^{]*\{(?:[^{}]*\{[^{}]*\})*[^{}]*\}", "", style.group(1)).strip() == ""
    assert "prefers-color-scheme:dark" in style.group(1)
    assert '<meta name="color-scheme" content="light dark">' in head
    assert 'class="paper" id="p1" style="' in body and "<mark style=\"background:" in body
    assert html.index("charset") < 1024  # browsers look for the charset that early
    assert re.search(r'<table class="card" role="presentation"[^>]*width="100%"', body)


def test_abstracts_highlight_each_term_once_and_titles_every_time():
    paper = full_paper(title="LoRA meets LoRA", abstract="LoRA here, LoRA there, lora again.")
    digest = Digest("w", "c", (Match(paper, "w", 1.0, (Reason("term", "LoRA", "title", 1.0),
                                                       Reason("term", "LoRA", "abstract", 1.0))),),
                    WHEN)
    _, html = Renderer().email(digest, subject="s")
    title = html.split('class="t"', 1)[1].split("</div>", 1)[0]
    abstract = html.split('class="a"', 1)[1].split("</div>", 1)[0]
    assert title.count("</mark>") == 2 and abstract.count("</mark>") == 1


def test_slack_fallback_text_lists_the_papers_of_each_message():
    many = tuple(Match(full_paper(key=f"arxiv:2611.{i:05d}", arxiv_id=f"2611.{i:05d}",
                                  title=f"Paper {i} about <LoRA> & *more*"),
                       "w", 1.0, ()) for i in range(30))
    messages = slack_messages(Digest("w", "c", many, WHEN))
    assert len(messages) == 2
    first, second = (m["text"].splitlines() for m in messages)
    assert first[0] == "w: 30 new papers, Fri 20 Nov (1/2)"
    assert first[1] == ("1. Paper 0 about &lt;LoRA&gt; &amp; ∗more∗ "
                        "https://arxiv.org/abs/2611.00000")
    assert len(first) - 1 + len(second) - 1 == 30
    assert second[1].startswith("25. Paper 24 ")
    for message in messages:  # each paper's blocks stay in one message, with its links
        sections = [b for b in message["blocks"] if b["type"] == "section"]
        assert len(sections) == len(message["text"].splitlines()) - 1
        assert all("|Project page>" in b["text"]["text"] for b in sections)


def test_slack_keeps_the_links_of_a_paper_with_a_huge_abstract():
    paper = full_paper(abstract="word " * 3000, authors=tuple(f"A{i}" for i in range(400)),
                       comment="c " * 400)
    blocks = slack_messages(Digest("w", "c", (Match(paper, "w", 1.0, ()),), WHEN))[0]["blocks"]
    text = blocks[1]["text"]["text"]
    assert len(text) <= SLACK_MAX_SECTION_CHARS
    assert text.endswith("|Project page>")


# ----------------------------------------------------------------- size with real papers

REAL_API = "arxiv_api_query_cs.AI_OR_cs.LG_50entries_2026-07-13.atom.xml"
REAL_HF = "hf_daily_papers_2026-06-12_30items.json"


def compose_linked(papers: list[Paper], terms: tuple[str, ...]) -> tuple[int, EmailMessage]:
    """How many of ``papers`` an email with rating links carries, and the message."""
    matches = tuple(Match(p, "efficient-llms", 5.0 - i / 100,
                          tuple(Reason("term", t, "abstract", 1.0) for t in terms))
                    for i, p in enumerate(papers))
    channel = EmailChannel(ChannelSettings(name="mail", kind="email", options=EmailOptions(
                                           sender="Paper Digest <digest@example.org>",
                                           to=("team@example.org",))), renderer=Renderer())
    composed = channel.compose(with_links(Digest("efficient-llms", "mail", matches, WHEN)))
    message = email.message_from_string(composed.payload["message"], policy=default_policy)
    return len(composed.digest.matches), message


def project_papers(count: int) -> list[Paper]:
    """Papers of an arXiv listing's real size (the 50-entry API capture averages an
    84-character title, 4.4 authors, a 1,367-character abstract), 2 in 5 with a comment."""
    sentence = ("We evaluate sparse mixture-of-experts language models under a fixed compute "
                "budget and report how routing entropy, expert load and capacity factors "
                "interact with downstream accuracy on reasoning benchmarks. ")
    return [Paper(key=f"arxiv:2607.{i:05d}", arxiv_id=f"2607.{i:05d}",
                  url=f"https://arxiv.org/abs/2607.{i:05d}",
                  title=("Routing Entropy and Expert Load in Sparse Mixture-of-Experts Models "
                         f"({i})"),
                  abstract=(sentence * 7)[:1367],
                  authors=("Mei Lin", "Sinong Wang", "José García", "Yuki Sato"),
                  categories=("cs.LG", "cs.CL"), primary_category="cs.LG",
                  comment="Accepted at ICML 2026; 12 pages, 5 figures" if i % 5 < 2 else None)
            for i in range(count)]


def test_forty_papers_of_real_size_fit_with_their_links():
    kept, message = compose_linked(project_papers(40), ("mixture-of-experts", "routing"))
    assert kept == 40
    assert html_bytes(message) <= MAX_HTML_BYTES
    assert "more matched" not in message.get_body(("plain",)).get_content()


@pytest.mark.real_fixtures
def test_forty_real_arxiv_abstracts_fit_with_their_links(real):
    from digest.sources import arxiv_api

    papers, _ = arxiv_api.parse(real(REAL_API))
    kept, message = compose_linked(papers[:40], ("language model", "learning"))
    assert kept == 40
    assert html_bytes(message) <= MAX_HTML_BYTES
    html = message.get_body(("html",)).get_content()
    assert html.count(">More like this</a>") == 40
    assert html.count("Comments: ") == sum(1 for p in papers[:40] if p.comment)


@pytest.mark.real_fixtures
def test_real_hugging_face_papers_show_their_code_project_and_summary(real):
    from digest.sources import hf_daily

    papers = hf_daily.parse(real(REAL_HF))
    kept, message = compose_linked(papers, ("language model",))
    assert kept == 30
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    labels = [label for label, _ in parsed(html).links]
    assert sum(1 for label in labels if label.startswith("Code")) == 16
    assert labels.count("Project page") == 13 and labels.count("Hugging Face") == 30
    assert ("Code (★ 251)", "https://github.com/MiniMax-AI/MSA") in parsed(html).links
    assert html.count("<b>Summary (Hugging Face AI):</b>") == 30
    assert text.count("Summary (Hugging Face AI):") == 30
    assert html_bytes(message) <= MAX_HTML_BYTES


def test_the_stylesheet_is_read_once_and_again_when_its_file_changes(tmp_path):
    """Every digest email carries the stylesheet: it is read from the templates folder
    once, and read again when the file was edited (a long-running 'serve' picks it up)."""
    (tmp_path / "email").mkdir()
    sheet = tmp_path / "email" / "digest.css"
    sheet.write_text("h1 { color: red; }\n", encoding="utf-8")
    renderer = Renderer(tmp_path)
    first = renderer.stylesheet("email/digest.css")
    assert first == "h1{color:red}"
    assert renderer.stylesheet("email/digest.css") is first  # not read again

    sheet.write_text("h1 { color: blue; }\n", encoding="utf-8")
    later = sheet.stat().st_mtime + 5
    os.utime(sheet, (later, later))
    assert renderer.stylesheet("email/digest.css") == "h1{color:blue}"
