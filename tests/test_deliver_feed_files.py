"""Feed files: each watchlist's digests as Atom 1.0 and JSON Feed 1.1, merged run after run,
written atomically, read back by the product's own feed reader and served by the web app.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import feedparser
import httpx
import pytest
from conftest import Route, free_port
from lxml import etree
from test_faults_inputs import (
    LOCAL_SOURCE,
    config_for,
    delivered,
    json_feed,
    json_item,
    mail_channel,
    run,
    watchlist,
    web_source,
)
from test_render import check_golden, full_digest, sample_digest
from test_web import _raw

from digest.config import ChannelSettings, Settings, parse_settings
from digest.deliver import CHANNELS
from digest.deliver.feed_files import (
    ATOM_NS,
    JSON_FEED_VERSION,
    FeedFilesChannel,
    FeedFilesOptions,
    entry_id,
    feed_name,
    served_feeds,
)
from digest.errors import ConfigError, DeliveryError
from digest.models import Digest, Match, Paper, Reason
from digest.sources import feed as feed_source
from digest.web.server import BackgroundServer, start_in_background

WHEN = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
WATCHLIST = "efficient-llms"
BASE = "https://papers.example.org/feeds"
A = f"{{{ATOM_NS}}}"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def channel(directory: Path, **options: Any) -> FeedFilesChannel:
    return FeedFilesChannel(ChannelSettings(
        name="feeds", kind="feed_files",
        options=FeedFilesOptions(directory=directory, **options)))


def paper(number: int, title: str | None = None, **fields: Any) -> Paper:
    arxiv_id = f"2611.{number:05d}"
    return Paper(key=f"arxiv:{arxiv_id}", arxiv_id=arxiv_id,
                 url=f"https://arxiv.org/abs/{arxiv_id}",
                 title=title or f"LoRA paper number {number}",
                 abstract=f"We study LoRA, part {number}.", authors=("Mei Lin", "Ann Lee"),
                 categories=("cs.CL",), **fields)


def digest_of(*numbers: int, at: datetime = WHEN, name: str = WATCHLIST) -> Digest:
    reasons = (Reason("term", "LoRA", "title", 2.0),)
    return Digest(watchlist=name, channel="feeds", created_at=at,
                  matches=tuple(Match(paper(n), name, 1.0, reasons) for n in numbers))


def deliver(feeds: FeedFilesChannel, digest: Digest) -> dict[str, Any]:
    payload = feeds.compose(digest).payload
    json.dumps(payload)  # recorded in the store as JSON
    feeds.send(payload, parts_sent=0)
    return payload


def written(directory: Path, name: str = WATCHLIST) -> tuple[bytes, dict[str, Any]]:
    atom = (directory / f"{name}.atom").read_bytes()
    return atom, json.loads((directory / f"{name}.json").read_text(encoding="utf-8"))


def titles(document: dict[str, Any]) -> list[str]:
    return [item["title"] for item in document["items"]]


# ------------------------------------------------------------------------------ options


def settings_text(tmp_path: Path, channel_table: str, *, web: str = "") -> str:
    return f"""version = 1
[store]
path = "{tmp_path / 'digest.db'}"
{web}
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[watchlists]]
name = "{WATCHLIST}"
keywords = ["LoRA"]
channels = ["feeds"]
[channels.feeds]
kind = "feed_files"
{channel_table}
"""


def test_options_are_read_with_their_defaults(tmp_path):
    settings = parse_settings(settings_text(tmp_path, 'directory = "~/public/feeds"'),
                              path=tmp_path / "digest.toml", env={})
    options = settings.channels["feeds"].options
    assert options == FeedFilesOptions(directory=Path("~/public/feeds").expanduser(),
                                       max_entries=100, base_url=None,
                                       title="{watchlist} · paper-digest")
    settings = parse_settings(settings_text(tmp_path, f"""directory = "{tmp_path}"
max_entries = 7
base_url = "{BASE}/"
title = "{{watchlist}} papers ({{channel}})"
"""), path=tmp_path / "digest.toml", env={})
    options = settings.channels["feeds"].options
    assert (options.max_entries, options.base_url) == (7, BASE)
    head = channel(tmp_path, title=options.title).compose(digest_of(1)).payload["feed"]
    assert head["title"] == "efficient-llms papers (feeds)"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        pytest.param("", "channels.feeds.directory: is required", id="no-directory"),
        pytest.param('directory = ""', "channels.feeds.directory: must be a folder's path",
                     id="empty-directory"),
        pytest.param('directory = "f"\nmax_entries = 0',
                     "channels.feeds.max_entries: must be 1-10000", id="max-entries-zero"),
        pytest.param('directory = "f"\nbase_url = "ftp://x.org/feeds"',
                     "channels.feeds.base_url: unsupported URL scheme 'ftp:'", id="base-url-ftp"),
        pytest.param('directory = "f"\nbase_url = "https://x.org/feeds?a=1"',
                     "channels.feeds.base_url: must not carry a query or fragment",
                     id="base-url-query"),
        pytest.param('directory = "f"\ntitle = "{name}"',
                     "channels.feeds.title: unknown placeholder 'name'", id="title-placeholder"),
        pytest.param('directory = "f"\nmax_entrys = 5',
                     "channels.feeds.max_entrys: unknown key (did you mean 'max_entries'?)",
                     id="misspelt-key"),
    ],
)
def test_option_problems_name_the_key(tmp_path, table, problem):
    with pytest.raises(ConfigError) as caught:
        parse_settings(settings_text(tmp_path, table), path=tmp_path / "digest.toml", env={})
    assert problem in str(caught.value)


def test_the_kind_is_registered():
    assert CHANNELS["feed_files"] is FeedFilesChannel


# ------------------------------------------------------------------------------ compose


def test_payload_matches_golden_file():
    payload = channel(Path("unused"), base_url=BASE).compose(full_digest()).payload
    check_golden("feed_files.json", json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def test_one_entry_per_paper_with_everything_a_reader_needs():
    payload = channel(Path("unused"), base_url=BASE).compose(full_digest()).payload
    first, second = payload["items"]
    assert first["title"] == "LoRA-Flow: Dynamic Low-Rank Adapters"
    assert first["url"] == "https://arxiv.org/abs/2611.04001"
    assert first["authors"] == [{"name": "Mei Lin"}, {"name": "Sinong Wang"}]
    assert first["tags"] == ["cs.CL", "cs.LG"]
    assert first["date_published"] == first["date_modified"] == "2026-11-20T07:00:00Z"
    html = first["content_html"]
    for shown in ("Mei Lin, Sinong Wang", "Journal ref: TMLR 2026",
                  "<strong>Summary (Hugging Face AI):</strong> Adaptive ranks",
                  "We study LoRA adapters", "<em>Why: &#34;LoRA&#34; in title; author Sinong Wang",
                  '<a href="https://arxiv.org/pdf/2611.04001">PDF</a>',
                  '<a href="https://github.com/example-lab/lora-flow">Code (★ 1,284)</a>',
                  ">More like this</a>", ">Not for me</a>", ">Save</a>"):
        assert shown in html, shown
    assert "More like this" not in channel(Path("u")).compose(sample_digest()).payload[
        "items"][0]["content_html"]  # no web app, no rating links
    assert second["title"].startswith("Scaling <script>")  # text; escaped where written


def test_entry_ids_are_stable_and_per_watchlist():
    feeds = channel(Path("unused"))
    once = feeds.compose(digest_of(1, 2)).payload["items"]
    later = feeds.compose(digest_of(2, 1, at=WHEN + timedelta(days=3))).payload["items"]
    assert {i["id"] for i in once} == {i["id"] for i in later}
    assert once[0]["id"] == entry_id(WATCHLIST, "arxiv:2611.00001")
    assert once[0]["id"].startswith("urn:uuid:")
    assert entry_id("other", "arxiv:2611.00001") != once[0]["id"]


@pytest.mark.parametrize(("name", "stem"), [("efficient-llms", "efficient-llms"),
                                           ("LoRA_v2.1", "LoRA_v2.1"),
                                           ("../../etc/passwd", "etc-passwd"),
                                           ("a b/c\\d", "a-b-c-d"), ("..", "watchlist"),
                                           (".hidden", "hidden")])
def test_file_names_are_safe(name, stem):
    assert feed_name(name) == stem


# ------------------------------------------------------------------------------ validity


def atom_problems(content: bytes) -> list[str]:
    """The RFC 4287 rules a feed reader relies on, checked on the parsed document."""
    root = etree.fromstring(content)
    problems = []
    if root.tag != f"{A}feed":
        return [f"root is {root.tag}"]

    def once(parent: Any, tag: str, where: str) -> None:
        if len(parent.findall(f"{A}{tag}")) != 1:
            problems.append(f"{where}: needs exactly one {tag}")

    for tag in ("id", "title", "updated"):
        once(root, tag, "feed")
    if not root.findall(f"{A}link[@rel='self']"):
        problems.append("feed: no self link")
    entries = root.findall(f"{A}entry")
    if not root.findall(f"{A}author") and any(not e.findall(f"{A}author") for e in entries):
        problems.append("feed: no author, and an entry without one")
    for stamp in root.iter(f"{A}updated", f"{A}published"):
        if not RFC3339.match(stamp.text or ""):
            problems.append(f"date {stamp.text!r} is not RFC 3339")
    for number, entry in enumerate(entries, 1):
        for tag in ("id", "title", "updated"):
            once(entry, tag, f"entry {number}")
        content = entry.findall(f"{A}content")
        if len(content) != 1 or content[0].get("type") != "html":
            problems.append(f"entry {number}: needs one content of type html")
        for author in entry.findall(f"{A}author"):
            once(author, "name", f"entry {number} author")
    return problems


def json_feed_problems(document: Any) -> list[str]:
    """JSON Feed 1.1 (https://jsonfeed.org/version/1.1), field by field."""
    problems = []

    def string(holder: dict[str, Any], key: str, where: str, *, required: bool = False) -> None:
        if key not in holder:
            if required:
                problems.append(f"{where}: {key} is required")
        elif not isinstance(holder[key], str):
            problems.append(f"{where}: {key} must be a string")

    def authors(holder: dict[str, Any], where: str) -> None:
        people = holder.get("authors", [])
        if not isinstance(people, list):
            problems.append(f"{where}: authors must be an array")
            return
        for person in people:
            if not isinstance(person, dict) or not any(
                    isinstance(person.get(k), str) for k in ("name", "url", "avatar")):
                problems.append(f"{where}: an author needs a name, url or avatar")

    if not isinstance(document, dict):
        return ["a feed is a JSON object"]
    if document.get("version") != JSON_FEED_VERSION:
        problems.append("version must be the 1.1 URL")
    string(document, "title", "feed", required=True)
    for key in ("home_page_url", "feed_url", "description", "user_comment", "next_url",
                "icon", "favicon", "language"):
        string(document, key, "feed")
    for key in ("home_page_url", "feed_url"):
        if isinstance(document.get(key), str) and not document[key].startswith(("http://",
                                                                               "https://")):
            problems.append(f"feed: {key} must be a URL")
    if "expired" in document and not isinstance(document["expired"], bool):
        problems.append("feed: expired must be a boolean")
    authors(document, "feed")
    items = document.get("items")
    if not isinstance(items, list):
        return [*problems, "items must be an array"]
    seen: set[str] = set()
    for number, item in enumerate(items, 1):
        where = f"item {number}"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be an object")
            continue
        string(item, "id", where, required=True)
        if item.get("id") in seen:
            problems.append(f"{where}: id repeats")
        seen.add(str(item.get("id")))
        for key in ("url", "external_url", "title", "content_html", "content_text", "summary",
                    "image", "banner_image", "language", "date_published", "date_modified"):
            string(item, key, where)
        if "content_html" not in item and "content_text" not in item:
            problems.append(f"{where}: needs content_html or content_text")
        for key in ("date_published", "date_modified"):
            if isinstance(item.get(key), str) and not RFC3339.match(item[key]):
                problems.append(f"{where}: {key} is not RFC 3339")
        authors(item, where)
        tags = item.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            problems.append(f"{where}: tags must be an array of strings")
    return problems


@pytest.mark.parametrize("base_url", [BASE, None], ids=["public-address", "relative-links"])
def test_the_atom_file_is_valid_and_every_entry_reads_back(tmp_path, base_url):
    deliver(channel(tmp_path, base_url=base_url), full_digest())
    atom, _ = written(tmp_path)
    assert atom_problems(atom) == []
    parsed = feedparser.parse(atom)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    assert parsed.feed.title == "efficient-llms · paper-digest"
    self_link = next(link.href for link in parsed.feed.links if link.rel == "self")
    assert self_link == (f"{BASE}/efficient-llms.atom" if base_url else "efficient-llms.atom")
    views = full_digest().matches
    assert [e.title for e in parsed.entries] == [m.paper.title for m in views]
    assert [e.link for e in parsed.entries] == [m.paper.abs_url for m in views]
    for entry, match in zip(parsed.entries, views, strict=True):
        assert entry.id == entry_id(WATCHLIST, match.paper.key)
        assert entry.content[0].type == "text/html"
        assert "Why: " in entry.content[0].value
        assert [a.name for a in entry.authors] == list(match.paper.authors)


@pytest.mark.parametrize("base_url", [BASE, None], ids=["public-address", "relative-links"])
def test_the_json_feed_follows_the_spec_field_by_field(tmp_path, base_url):
    deliver(channel(tmp_path, base_url=base_url), full_digest())
    _, document = written(tmp_path)
    assert json_feed_problems(document) == []
    assert document["version"] == "https://jsonfeed.org/version/1.1"
    assert document.get("feed_url") == (f"{BASE}/efficient-llms.json" if base_url else None)
    assert [item["id"] for item in document["items"]] == [
        entry_id(WATCHLIST, m.paper.key) for m in full_digest().matches]


SPEC_EXAMPLES = ("simple", "microblog", "podcast")
# Every field JSON Feed 1.1 defines, at the top and in an item.
SPEC_FEED_KEYS = {"version", "title", "home_page_url", "feed_url", "description",
                  "user_comment", "next_url", "icon", "favicon", "authors", "language",
                  "expired", "hubs", "items"}
SPEC_ITEM_KEYS = {"id", "url", "external_url", "title", "content_html", "content_text",
                  "summary", "image", "banner_image", "date_published", "date_modified",
                  "authors", "tags", "language", "attachments"}


@pytest.mark.real_fixtures
def test_the_json_feed_uses_the_field_names_and_types_of_the_spec_examples(tmp_path, real):
    examples = [json.loads(real(f"jsonfeed_1.1_spec_{name}_example.json"))
                for name in SPEC_EXAMPLES]
    for example in examples:  # the checks above accept the spec's own documents
        assert json_feed_problems(example) == []
    deliver(channel(tmp_path, base_url=BASE), full_digest())
    _, ours = written(tmp_path)
    assert set(ours) <= SPEC_FEED_KEYS
    assert {key for item in ours["items"] for key in item} <= SPEC_ITEM_KEYS
    kinds: dict[str, set[type]] = {}
    for example in examples:
        for key, value in example.items():
            kinds.setdefault(f"feed.{key}", set()).add(type(value))
        for item in example["items"]:
            for key, value in item.items():
                kinds.setdefault(f"item.{key}", set()).add(type(value))
            for person in item.get("authors", []) + example.get("authors", []):
                for key, value in person.items():
                    kinds.setdefault(f"author.{key}", set()).add(type(value))
    shared = 0
    for key, value in ours.items():
        if f"feed.{key}" in kinds:
            assert type(value) in kinds[f"feed.{key}"], key
            shared += 1
    for item in ours["items"]:
        for key, value in item.items():
            if f"item.{key}" in kinds:
                assert type(value) in kinds[f"item.{key}"], key
                shared += 1
        for person in item["authors"]:
            assert all(type(v) in kinds[f"author.{k}"] for k, v in person.items())
    assert shared >= 10  # version, title, feed_url, items; id, url, title, content_html, ...
    assert ours["version"] == examples[0]["version"]


def test_both_files_read_back_through_the_products_own_feed_reader(tmp_path):
    deliver(channel(tmp_path, base_url=BASE), full_digest())
    deliver(channel(tmp_path, base_url=BASE), digest_of(1, 2, at=WHEN + timedelta(days=1)))
    atom, document = written(tmp_path)
    expected = [item["title"] for item in document["items"]]
    assert len(expected) == 4
    for content in (atom, json.dumps(document).encode()):
        papers = feed_source.parse(content, source="own-feed")
        assert [p.title for p in papers] == expected
        assert [p.url for p in papers] == [item["url"] for item in document["items"]]
        assert papers[0].key == "arxiv:2611.00001"  # the same identity as in the store
        assert papers[0].abstract == "We study LoRA, part 1."
        assert papers[0].authors == ("Mei Lin", "Ann Lee")


# ------------------------------------------------------------------------------ merging


def test_two_digests_make_one_feed_newest_first(tmp_path):
    feeds = channel(tmp_path)
    deliver(feeds, digest_of(1, 2))
    deliver(feeds, digest_of(3, 4, at=WHEN + timedelta(hours=1)))
    atom, document = written(tmp_path)
    assert titles(document) == [f"LoRA paper number {n}" for n in (3, 4, 1, 2)]
    assert [e.title for e in feedparser.parse(atom).entries] == titles(document)
    assert document["items"][0]["date_published"] == "2026-11-20T08:00:00Z"
    assert feedparser.parse(atom).feed.updated == "2026-11-20T08:00:00Z"
    # A digest sent late (a channel that was down) falls into its place by time.
    deliver(feeds, digest_of(5, at=WHEN + timedelta(minutes=30)))
    assert titles(written(tmp_path)[1]) == [f"LoRA paper number {n}" for n in (3, 4, 5, 1, 2)]


def test_the_same_digest_twice_writes_the_same_files(tmp_path):
    feeds = channel(tmp_path)
    deliver(feeds, digest_of(1))
    payload = feeds.compose(digest_of(2, 3, at=WHEN + timedelta(hours=1))).payload
    feeds.send(payload, parts_sent=0)
    first = written(tmp_path)
    feeds.send(payload, parts_sent=0)  # a retry after a crash before it was recorded
    assert written(tmp_path) == first
    assert titles(first[1]) == [f"LoRA paper number {n}" for n in (2, 3, 1)]
    assert len({item["id"] for item in first[1]["items"]}) == 3


def test_an_entry_sent_again_replaces_the_old_one(tmp_path):
    feeds = channel(tmp_path)
    deliver(feeds, digest_of(1, 2))
    deliver(feeds, digest_of(2, at=WHEN + timedelta(hours=2)))
    document = written(tmp_path)[1]
    assert titles(document) == ["LoRA paper number 2", "LoRA paper number 1"]
    assert document["items"][0]["date_modified"] == "2026-11-20T09:00:00Z"


def test_max_entries_keeps_the_newest(tmp_path):
    feeds = channel(tmp_path, max_entries=3)
    deliver(feeds, digest_of(1, 2))
    deliver(feeds, digest_of(3, 4, at=WHEN + timedelta(hours=1)))
    atom, document = written(tmp_path)
    assert titles(document) == [f"LoRA paper number {n}" for n in (3, 4, 1)]
    assert len(feedparser.parse(atom).entries) == 3


def test_already_written_parts_are_not_written_again(tmp_path):
    calls: list[int] = []
    channel(tmp_path).send(channel(tmp_path).compose(digest_of(1)).payload, parts_sent=1,
                           on_part_sent=calls.append)
    assert list(tmp_path.iterdir()) == [] and calls == []
    channel(tmp_path).send(channel(tmp_path).compose(digest_of(1)).payload, parts_sent=0,
                           on_part_sent=calls.append)
    assert calls == [1]


def test_each_watchlist_has_its_own_files(tmp_path):
    feeds = channel(tmp_path)
    deliver(feeds, digest_of(1))
    deliver(feeds, digest_of(2, name="agents"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "agents.atom", "agents.json", "efficient-llms.atom", "efficient-llms.json"]
    assert titles(written(tmp_path, "agents")[1]) == ["LoRA paper number 2"]


def test_a_heartbeat_adds_no_entry_but_the_feed_exists(tmp_path):
    quiet = replace(digest_of(), heartbeat="nothing matched today (812 new papers read)")
    deliver(channel(tmp_path), quiet)
    atom, document = written(tmp_path)
    assert document["items"] == [] and json_feed_problems(document) == []
    assert feedparser.parse(atom).bozo == 0 and atom_problems(atom) == []


# ------------------------------------------------------------------------------ hostile text


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def test_hostile_text_stays_text_and_the_xml_well_formed(tmp_path):
    title = "A <script>alert(1)</script> ]]> & \x00\x1b\x08bell\ufffe \ud800end"
    hostile = Paper(
        key="guid:x\x00<y>]]>", title=title, url="javascript:alert(1)",
        abstract="]]><img src=x onerror=alert(1)> <!-- c --> <![CDATA[ x ]]>\x0c",
        authors=("Eve <eve@example.org>\x07",), categories=('cs.<b>"LG"',))
    digest = Digest(watchlist=WATCHLIST, channel="feeds", created_at=WHEN, matches=(
        Match(hostile, WATCHLIST, 1.0, (Reason("term", "<script>", "title", 1.0),)),))
    payload = deliver(channel(tmp_path, title="<b>{watchlist}</b> ]]>"), digest)
    atom, document = written(tmp_path)
    etree.fromstring(atom)  # well-formed, strictly parsed
    parsed = feedparser.parse(atom)
    assert parsed.bozo == 0, parsed.get("bozo_exception")
    cleaned = "A <script>alert(1)</script> ]]> & bell end"
    assert parsed.entries[0].title == cleaned == document["items"][0]["title"]
    assert parsed.feed.title == "<b>efficient-llms</b> ]]>"
    assert parsed.entries[0].get("links", []) == [] and "url" not in document["items"][0]
    assert b"javascript" not in atom
    for html in (document["items"][0]["content_html"], parsed.entries[0].content[0].value):
        tags = Tags()
        tags.feed(html)
        assert set(tags.tags) <= {"p", "small", "em", "strong", "a"}, tags.tags
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "&lt;eve@example.org&gt;" in html
    assert parsed.entries[0].tags[0].term == 'cs.<b>"LG"'
    raw = (tmp_path / "efficient-llms.json").read_text(encoding="utf-8")
    assert not re.search(r"\\u00[01]", raw)  # no control character survived
    assert json_feed_problems(document) == [] and atom_problems(atom) == []
    assert payload["items"] == document["items"]
    assert [p.title for p in feed_source.parse(atom)] == [cleaned]


# ------------------------------------------------------------------------------ damage


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(b"{\"version\": \"https://jsonfeed.org/version/1.1\", \"items\": [",
                     id="cut-short"),
        pytest.param(b"\xff\xfe not text", id="not-utf8"),
        pytest.param(b"[]", id="a-list"),
        pytest.param(b'{"version": "https://jsonfeed.org/version/1", "items": []}',
                     id="another-version"),
        pytest.param(b'{"version": "https://jsonfeed.org/version/1.1", "items": {}}',
                     id="items-an-object"),
        pytest.param(b'{"version": "https://jsonfeed.org/version/1.1", "items": [{"title": 1}]}',
                     id="item-without-id"),
        pytest.param(b'{"version": "https://jsonfeed.org/version/1.1", "items": '
                     b'[{"id": "x", "date_modified": "yesterday"}]}', id="item-bad-date"),
        pytest.param(b'{"version": "https://jsonfeed.org/version/1.1", "items": '
                     b'[{"id": "x", "date_modified": "2026-11-20T07:00:00Z", "tags": [1]}]}',
                     id="item-bad-tags"),
        pytest.param(b"[" * 100_000, id="nested-too-deep"),
    ],
)
def test_a_damaged_json_file_is_kept_aside_and_the_feed_starts_afresh(tmp_path, caplog, damage):
    (tmp_path / "efficient-llms.json").write_bytes(damage)
    with caplog.at_level(logging.WARNING, logger="digest.deliver.feed_files"):
        deliver(channel(tmp_path), digest_of(1))
    assert (tmp_path / "efficient-llms.json.broken").read_bytes() == damage
    atom, document = written(tmp_path)
    assert titles(document) == ["LoRA paper number 1"]
    assert json_feed_problems(document) == [] and feedparser.parse(atom).bozo == 0
    assert any("is damaged" in r.getMessage() and "starting it afresh" in r.getMessage()
               for r in caplog.records)


def test_a_missing_json_file_beside_an_atom_file_starts_afresh(tmp_path):
    (tmp_path / "efficient-llms.atom").write_bytes(b"<feed/>")
    deliver(channel(tmp_path), digest_of(1))
    assert titles(written(tmp_path)[1]) == ["LoRA paper number 1"]
    assert not (tmp_path / "efficient-llms.json.broken").exists()


# ------------------------------------------------------------------------------ the disk


def test_files_are_replaced_whole_and_readable_by_a_web_server(tmp_path):
    deliver(channel(tmp_path / "new" / "feeds"), digest_of(1))  # folders are made
    directory = tmp_path / "new" / "feeds"
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.iterdir():
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in directory.iterdir()) == ["efficient-llms.atom",
                                                           "efficient-llms.json"]


@pytest.mark.parametrize("where", ["under-a-file", "is-a-file", "target-is-a-folder"])
def test_a_directory_that_cannot_be_written_is_a_temporary_failure(tmp_path, where):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    directory = {"under-a-file": blocker / "feeds", "is-a-file": blocker,
                 "target-is-a-folder": tmp_path / "public"}[where]
    if where == "target-is-a-folder":
        (directory / "efficient-llms.atom").mkdir(parents=True)
    with pytest.raises(DeliveryError) as caught:
        channel(directory).send(channel(directory).compose(digest_of(1)).payload, parts_sent=0)
    assert not caught.value.permanent and caught.value.channel == "feeds"
    assert str(caught.value).startswith(f"cannot write the feeds in {directory}: ")
    assert not list(tmp_path.rglob("*.tmp"))  # nothing half-written left behind


def test_outbox_files_hold_this_digests_entries_only(tmp_path):
    feeds = channel(tmp_path, base_url=BASE)
    deliver(feeds, digest_of(1))
    payload = feeds.compose(digest_of(2, 3, at=WHEN + timedelta(hours=1))).payload
    files = FeedFilesChannel.outbox_files(payload)
    assert set(files) == {".atom", ".json"}
    assert [e.title for e in feedparser.parse(files[".atom"]).entries] == [
        "LoRA paper number 2", "LoRA paper number 3"]
    assert titles(json.loads(files[".json"])) == ["LoRA paper number 2", "LoRA paper number 3"]
    assert json_feed_problems(json.loads(files[".json"])) == []
    assert atom_problems(files[".atom"]) == []


# ------------------------------------------------------------------------------ web app

KEY = "k" * 16 + "0123456789abcdef0123"
WEB_TABLE = """[web]
base_url = "{base_url}"
host = "127.0.0.1"
port = {port}
"""


def web_settings(tmp_path: Path, base_url: str = "https://papers.example.org") -> Settings:
    text = settings_text(
        tmp_path, f'directory = "{tmp_path / "public"}"\nbase_url = "{base_url}/feeds"',
        web=WEB_TABLE.format(base_url=base_url, port=free_port()))
    text += """
[[watchlists]]
name = "agents"
keywords = ["agent"]
channels = ["mail"]
[[watchlists]]
name = "quiet"
keywords = ["nothing"]
channels = ["feeds"]
[channels.mail]
kind = "email"
from = "digest@example.org"
to = ["reader@example.org"]
"""
    return parse_settings(text, path=tmp_path / "digest.toml", env={"DIGEST_WEB_SECRET": KEY})


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Settings, BackgroundServer, httpx.Client]]:
    settings = web_settings(tmp_path)
    (tmp_path / "digest.toml").write_text("SECRET-CONFIG\n")
    public = tmp_path / "public"
    deliver(FeedFilesChannel(settings.channels["feeds"]), digest_of(1, 2))
    (public / "efficient-llms.json.broken").write_text("OLD-BROKEN\n")
    server = start_in_background(settings)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            yield settings, server, client
    finally:
        server.stop()



def test_served_feeds_are_the_configured_ones_only(tmp_path):
    settings = web_settings(tmp_path)
    public = tmp_path / "public"
    assert served_feeds(settings) == {
        "efficient-llms.atom": (public / "efficient-llms.atom", "application/atom+xml; "
                                                                  "charset=utf-8"),
        "efficient-llms.json": (public / "efficient-llms.json", "application/feed+json"),
        "quiet.atom": (public / "quiet.atom", "application/atom+xml; charset=utf-8"),
        "quiet.json": (public / "quiet.json", "application/feed+json"),
    }


@pytest.mark.integration
def test_the_web_app_serves_both_feeds_with_their_types(served, tmp_path):
    _, _, client = served
    atom = client.get("/feeds/efficient-llms.atom")
    assert atom.status_code == 200
    assert atom.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert atom.content == (tmp_path / "public" / "efficient-llms.atom").read_bytes()
    assert feedparser.parse(atom.content).bozo == 0
    answer = client.get("/feeds/efficient-llms.json")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/feed+json"
    assert titles(answer.json()) == ["LoRA paper number 1", "LoRA paper number 2"]
    assert answer.headers["x-content-type-options"] == "nosniff"  # the app's usual headers
    assert client.get("/feeds/quiet.atom").status_code == 404  # configured, not written yet


@pytest.mark.integration
def test_conditional_get_answers_304_until_the_feed_changes(served):
    settings, _, client = served
    first = client.get("/feeds/efficient-llms.atom")
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    again = client.get("/feeds/efficient-llms.atom", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/feeds/efficient-llms.atom",
                      headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    assert client.get("/feeds/efficient-llms.atom",
                      headers={"If-Modified-Since": modified}).status_code == 304
    assert client.get("/feeds/efficient-llms.atom",
                      headers={"If-None-Match": '"other"'}).status_code == 200
    assert client.get("/feeds/efficient-llms.atom",
                      headers={"If-Modified-Since": "not a date"}).status_code == 200
    deliver(FeedFilesChannel(settings.channels["feeds"]),
            digest_of(3, at=WHEN + timedelta(hours=1)))
    changed = client.get("/feeds/efficient-llms.atom", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert [e.title for e in feedparser.parse(changed.content).entries][0] == \
        "LoRA paper number 3"


TRAVERSALS = ["/feeds/../digest.toml", "/feeds/..%2Fdigest.toml", "/feeds/%2e%2e%2fdigest.toml",
              "/feeds/..%5Cdigest.toml", "/feeds/%2E%2E/digest.toml",
              "/feeds/..%252Fdigest.toml", "/feeds/efficient-llms.json.broken",
              "/feeds/efficient-llms.atom%00", "/feeds/efficient-llms.atom/x",
              "/feeds/EFFICIENT-LLMS.ATOM", "/feeds/unknown.atom", "/feeds/agents.json",
              "/feeds/", "/feeds", "/feeds/.efficient-llms.atom.0a1b2c.tmp",
              "/public/efficient-llms.atom", "/feeds/digest.toml"]


@pytest.mark.integration
@pytest.mark.parametrize("path", TRAVERSALS)
def test_only_exact_known_feed_names_are_served(served, path):
    _, server, _ = served
    answer = _raw(server.url, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Connection: close\r\n\r\n".encode())
    status = int(answer.split(b" ", 2)[1])
    assert status == 404, answer[:200]
    assert b"SECRET-CONFIG" not in answer and b"OLD-BROKEN" not in answer
    assert b"<entry>" not in answer and b"Traceback" not in answer


@pytest.mark.integration
def test_feeds_are_served_under_the_base_path_too(tmp_path):
    settings = web_settings(tmp_path, base_url="https://papers.example.org/digest")
    deliver(FeedFilesChannel(settings.channels["feeds"]), digest_of(1))
    server = start_in_background(settings)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for path in ("/digest/feeds/efficient-llms.json", "/feeds/efficient-llms.json"):
                answer = client.get(path)
                assert answer.status_code == 200, path
                assert answer.json()["feed_url"] == \
                    "https://papers.example.org/digest/feeds/efficient-llms.json"
    finally:
        server.stop()


# ------------------------------------------------------------------------------ a full run

NOTES = "/notes.json"


def run_config(tmp_path: Path, http_server: Any, smtp_port: int, directory: Path) -> Path:
    feeds = f"""
[channels.feeds]
kind = "feed_files"
directory = "{directory}"
base_url = "{BASE}"
"""
    return config_for(
        tmp_path, sources=LOCAL_SOURCE + web_source(http_server.url + NOTES, "feed"),
        watchlists=watchlist("lora", '"LoRA"', '"feeds", "mail"'),
        channels=mail_channel(smtp_port) + feeds)


@pytest.mark.integration
def test_a_run_writes_the_feeds_beside_the_email_and_the_next_run_merges(
        tmp_path, capsys, http_server, smtp_server):
    inbox, port = smtp_server
    public = tmp_path / "public"
    http_server.route(NOTES, Route(body=json_feed(json_item(1))))
    config = run_config(tmp_path, http_server, port, public)
    code, out = run(config, capsys)
    assert code == 0, out
    assert "lora -> feeds: 4 papers, sent" in out and "lora -> mail: 4 papers, sent" in out
    assert len(inbox.messages) == 1
    atom, document = written(public, "lora")
    first = titles(document)
    assert len(first) == 4 and "LoRA note 1" in first
    assert json_feed_problems(document) == [] and atom_problems(atom) == []
    assert feedparser.parse(atom).bozo == 0

    http_server.route(NOTES, Route(body=json_feed(json_item(1), json_item(2))))
    code, out = run(config, capsys)
    assert code == 0, out
    assert "lora -> feeds: 1 paper, sent" in out and len(inbox.messages) == 2
    atom, document = written(public, "lora")
    assert titles(document) == ["LoRA note 2", *first]  # newest first, nothing twice
    assert [e.title for e in feedparser.parse(atom).entries] == titles(document)
    assert len(delivered(tmp_path, "feeds")) == 5


@pytest.mark.integration
def test_an_unwritable_directory_fails_only_the_feeds_until_it_is_fixed(
        tmp_path, capsys, http_server, smtp_server):
    inbox, port = smtp_server
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder should be")
    http_server.route(NOTES, Route(body=json_feed(json_item(1))))
    config = run_config(tmp_path, http_server, port, blocker / "feeds")
    code, out = run(config, capsys)
    assert code == 1
    assert (f"lora -> feeds: 4 papers, failed_temporary: cannot write the feeds in "
            f"{blocker / 'feeds'}: ") in out
    assert "lora -> mail: 4 papers, sent" in out and len(inbox.messages) == 1
    blocker.unlink()
    code, out = run(config, capsys)
    assert code == 0, out
    assert "lora -> feeds: 4 papers, sent (recorded earlier, sent again)" in out
    assert len(titles(written(blocker / "feeds", "lora")[1])) == 4
    assert len(inbox.messages) == 1  # the email was not sent twice


@pytest.mark.integration
def test_outbox_writes_the_feed_documents_and_not_the_real_files(tmp_path, capsys, http_server,
                                                                  smtp_server):
    from digest.cli import main

    _, port = smtp_server
    http_server.route(NOTES, Route(body=json_feed(json_item(1))))
    config = run_config(tmp_path, http_server, port, tmp_path / "public")
    outbox = tmp_path / "outbox"
    assert main(["run", "--once", "--config", str(config), "--outbox", str(outbox)]) == 0
    capsys.readouterr()
    atom = next(outbox.glob("*-lora-feeds.atom")).read_bytes()
    document = json.loads(next(outbox.glob("*-lora-feeds.json")).read_text(encoding="utf-8"))
    assert len(feedparser.parse(atom).entries) == len(document["items"]) == 4
    assert not (tmp_path / "public").exists()


def test_without_a_base_url_the_feeds_name_the_web_app_that_serves_them(tmp_path):
    from digest.config import HttpSettings
    from digest.deliver.base import ChannelContext
    from digest.render import Renderer

    settings = ChannelSettings(name="reader", kind="feed_files",
                               options=FeedFilesOptions(directory=tmp_path))
    context = ChannelContext(http=HttpSettings(), renderer=Renderer(),
                             web_base_url="https://papers.example.org/digest")
    served = FeedFilesChannel.create(settings, context).compose(digest_of(1)).payload["feed"]
    assert served["atom_url"] == f"https://papers.example.org/digest/feeds/{served['name']}.atom"
    alone = FeedFilesChannel.create(settings, replace(context, web_base_url=None))
    assert alone.compose(digest_of(1)).payload["feed"]["atom_url"] is None
    own = replace(settings, options=FeedFilesOptions(directory=tmp_path,
                                                     base_url="https://cdn.example.org/f"))
    head = FeedFilesChannel.create(own, context).compose(digest_of(1)).payload["feed"]
    assert head["atom_url"].startswith("https://cdn.example.org/f/")
