"""Faults in what one source or channel receives, tried against real servers on 127.0.0.1.

Wrong JSON types, JSON nested too deep, a broken gzip body, a redirect loop, a UTF-16 feed
and a bug nobody planned for: each is that source's or channel's own failure, or no failure
at all; the other sources are still read and every digest is still delivered in the same
run. The README's fault table lists the same cases.
"""

from __future__ import annotations

import codecs
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLES, Route, write_config

from digest.cli import main
from digest.config import load_settings
from digest.deliver import slack
from digest.deliver.base import WebhookPoster
from digest.errors import StoreError
from digest.models import Paper
from digest.pipeline import run_once
from digest.sources import arxiv_rss, feed, hf_daily
from digest.store import Store

pytestmark = pytest.mark.integration

RSS = SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml"
WEB = "/web"
HOOK = "/services/T9/B9/hook-secret-token"
JSON_FEED = "https://jsonfeed.org/version/1.1"
DEEP = b"[" * 100_000 + b"]" * 100_000


def config_for(tmp_path: Path, *, sources: str, channels: str, watchlists: str) -> Path:
    return write_config(tmp_path, f"""
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
retry_backoff_seconds = 0
max_retries = 1
timeout_seconds = 1
max_body_mb = 1
{sources}
{watchlists}
{channels}
""")


def web_source(url: str, kind: str) -> str:
    categories = 'categories = ["cs.CL"]\n' if kind == "arxiv_rss" else ""
    return f'\n[[sources]]\nname = "web"\nkind = "{kind}"\nurl = "{url}"\n{categories}'


LOCAL_SOURCE = f"""
[[sources]]
name = "local-copy"
kind = "arxiv_rss"
categories = ["cs.CL"]
url = "{RSS}"
"""


def watchlist(name: str, keywords: str, channels: str) -> str:
    return f'\n[[watchlists]]\nname = "{name}"\nkeywords = [{keywords}]\nchannels = [{channels}]\n'


def mail_channel(port: int) -> str:
    return f"""
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
security = "none"
from = "digest@example.org"
to = ["team@example.org"]
timeout_seconds = 1
"""


CHAT_CHANNEL = """
[channels.chat]
kind = "slack"
webhook_url_env = "T_HOOK"
timeout_seconds = 1
"""


def run(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(["run", "--once", "--config", str(config)])
    return status, capsys.readouterr().out


def stored(tmp_path: Path, source: str) -> list[Paper]:
    with Store.open(tmp_path / "digest.db") as store:
        keys = {row[0] for row in store.db.execute(
            "SELECT paper_key FROM sightings WHERE source = ?", [source]).fetchall()}
        return sorted(store.papers(keys).values(), key=lambda paper: paper.key)


def health(tmp_path: Path, source: str) -> dict[str, Any]:
    with Store.open(tmp_path / "digest.db") as store:
        return next(row for row in store.source_health() if row["source"] == source)


def delivered(tmp_path: Path, channel: str) -> set[str]:
    with Store.open(tmp_path / "digest.db") as store:
        return store.delivered_keys(channel)


# ------------------------------------------------------------------------------ sources


def source_config(tmp_path: Path, url: str, kind: str, smtp_port: int, *,
                  local: bool = True) -> Path:
    return config_for(tmp_path, sources=web_source(url, kind) + (LOCAL_SOURCE if local else ""),
                      watchlists=watchlist("efficient-llms", '"LoRA", "quantization"', '"mail"'),
                      channels=mail_channel(smtp_port))


def hf_entry(arxiv_id: str, **fields: Any) -> dict[str, Any]:
    """One Daily Papers entry, shaped like the real API's; ``fields`` replace paper fields."""
    title = f"LoRA adapters at scale, part {arxiv_id}"
    paper = {"id": arxiv_id, "title": title, "summary": "We study LoRA.",
             "authors": [{"_id": "a1", "name": "Mei Lin", "hidden": False}], "upvotes": 7,
             "publishedAt": "2026-11-18T00:00:00.000Z",
             "submittedOnDailyAt": "2026-11-19T01:00:00.000Z"}
    paper.update(fields)
    return {"paper": paper, "publishedAt": "2026-11-18T00:00:00.000Z", "title": title,
            "summary": "We study LoRA."}


def json_feed(*items: Any, **top: Any) -> bytes:
    return json.dumps({"version": JSON_FEED, "title": "Lab notes",
                       "authors": [{"name": "Lab Team"}], **top, "items": list(items)}).encode()


def json_item(number: int, **fields: Any) -> dict[str, Any]:
    item = {"id": f"note-{number}", "url": f"https://lab.example.org/notes/{number}",
            "title": f"LoRA note {number}", "summary": "A short note on LoRA.",
            "content_text": "The whole note on LoRA.", "authors": [{"name": "Ann Lee"}],
            "tags": ["adapters"], "date_published": "2026-11-19T08:00:00Z"}
    item.update(fields)
    return item


@pytest.mark.parametrize(
    ("kind", "route", "seen", "requests"),
    [
        pytest.param("hf_daily", Route(body=b'{"papers": []}'),
                     "Hugging Face daily papers: expected a JSON list of entries, got an object",
                     1, id="hf-object-not-list"),
        pytest.param("hf_daily", Route(body=b'[1, "two", {"paper": [3]}]'),
                     "Hugging Face daily papers: none of the 3 entries yields a paper "
                     "(entry 3 holds no 'paper' object)", 1, id="hf-no-entry-is-a-paper"),
        pytest.param("hf_daily", Route(body=DEEP),
                     "Hugging Face daily papers: JSON nested too deeply to read", 1,
                     id="hf-nested-100000-deep"),
        pytest.param("feed", Route(body=json.dumps({"version": JSON_FEED,
                                                    "items": {"a": 1}}).encode()),
                     "JSON Feed: 'items' must be a list, got an object", 1,
                     id="jsonfeed-items-object"),
        pytest.param("feed", Route(body=json_feed(1, "two")),
                     "JSON Feed: none of the 2 items yields a paper "
                     "(item 2 is a string, not an object)", 1, id="jsonfeed-no-item-is-a-paper"),
        pytest.param("feed", Route(body=b'{"version": "%s", "items": %s}' % (
                         JSON_FEED.encode(), DEEP)),
                     "JSON Feed: JSON nested too deeply to read", 1,
                     id="jsonfeed-nested-100000-deep"),
        pytest.param("hf_daily", Route(body=b"this is not gzip",
                                       headers={"Content-Encoding": "gzip"}),
                     "cannot decode the response body as its Content-Encoding says (Error -3 "
                     "while decompressing data: incorrect header check)", 1, id="broken-gzip"),
        pytest.param("feed", Route(302, headers={"Location": WEB}),
                     "too many redirects (more than 20), likely a redirect loop", 21,
                     id="redirect-loop"),
    ],
)
def test_a_broken_answer_is_that_sources_failure(tmp_path, capsys, http_server, smtp_server,
                                                 kind, route, seen, requests):
    inbox, port = smtp_server
    config = source_config(tmp_path, http_server.route(WEB, route), kind, port)
    code, out = run(config, capsys)
    assert code == 1
    assert f"  web: FAILED {seen}\n" in out
    assert "local-copy: 25 read, 25 new" in out  # the other source went on
    assert len(inbox.messages) == 1  # and so did the digest
    assert len(http_server.hits(WEB)) == requests  # not asked again within the run
    row = health(tmp_path, "web")
    assert row["consecutive_failures"] == 1 and row["last_error"] == seen


@pytest.mark.parametrize(
    ("fields", "check"),
    [
        pytest.param({"title": 42}, lambda p: p.title == "LoRA adapters at scale, part 2611.00001",
                     id="title-a-number"),
        pytest.param({"summary": ["We", "study"]}, lambda p: p.abstract == "We study LoRA.",
                     id="summary-a-list"),
        pytest.param({"authors": 5}, lambda p: p.authors == (), id="authors-not-a-list"),
        pytest.param({"authors": [{"name": 5}, "Jo Park", {"name": "Ann Lee"}]},
                     lambda p: p.authors == ("Ann Lee",), id="author-name-a-number"),
        pytest.param({"upvotes": "12"}, lambda p: p.upvotes is None, id="upvotes-a-string"),
        pytest.param({"upvotes": 10**30}, lambda p: p.upvotes is None, id="upvotes-too-big"),
    ],
)
def test_hf_wrong_typed_optional_fields_are_ignored(tmp_path, capsys, http_server, smtp_server,
                                                    fields, check):
    inbox, port = smtp_server
    body = json.dumps([hf_entry("2611.00001", **fields), hf_entry("2611.00002")]).encode()
    config = source_config(tmp_path, http_server.route(WEB, Route(body=body)), "hf_daily", port,
                           local=False)
    code, out = run(config, capsys)
    assert code == 0 and "web: 2 read, 2 new" in out
    papers = {p.key: p for p in stored(tmp_path, "web")}
    assert check(papers["arxiv:2611.00001"])
    assert papers["arxiv:2611.00002"].upvotes == 7  # the well-formed entry is untouched
    assert len(inbox.messages) == 1


def test_hf_entries_that_yield_no_paper_are_skipped_with_a_warning(
        tmp_path, capsys, caplog, http_server, smtp_server):
    inbox, port = smtp_server
    body = json.dumps([
        "not an entry",
        {"paper": ["2611.00009"]},
        {"paper": {"id": 2611.0003, "title": ["LoRA"],  # neither id nor title is text
                   "submittedOnDailyAt": "2026-11-19T01:00:00.000Z"}},
        # No usable day: a number read as text ("20261119") sorts after "2026-11-19" and
        # would have become the latest day, hiding every real paper.
        {"paper": {**hf_entry("2611.00004")["paper"], "submittedOnDailyAt": 20261119,
                   "publishedAt": None}},
        hf_entry("2611.00001"),
    ]).encode()
    config = source_config(tmp_path, http_server.route(WEB, Route(body=body)), "hf_daily", port,
                           local=False)
    code, out = run(config, capsys)
    assert code == 0 and "web: 1 read, 1 new" in out
    assert [p.key for p in stored(tmp_path, "web")] == ["arxiv:2611.00001"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "source=web entry 1 holds no 'paper' object; skipped" in warnings
    assert "source=web entry 2 holds no 'paper' object; skipped" in warnings
    assert "source=web entry 3 has neither an id nor a title; skipped" in warnings
    assert "source=web entry 4 has no submittedOnDailyAt date; skipped" in warnings
    assert len(inbox.messages) == 1


@pytest.mark.parametrize(
    ("fields", "check"),
    [
        pytest.param({"title": 42}, lambda p: p.title == "A short note on LoRA.",
                     id="title-a-number"),
        pytest.param({"url": 5}, lambda p: p.url == "" and p.title == "LoRA note 1",
                     id="url-a-number"),
        pytest.param({"summary": ["x"]}, lambda p: p.abstract == "The whole note on LoRA.",
                     id="summary-a-list"),
        pytest.param({"content_text": None, "content_html": 5, "summary": None},
                     lambda p: p.abstract == "", id="content-a-number"),
        pytest.param({"authors": "Ann Lee"}, lambda p: p.authors == ("Lab Team",),
                     id="authors-not-a-list"),
        pytest.param({"authors": [{"name": 5}]}, lambda p: p.authors == ("Lab Team",),
                     id="author-name-a-number"),
        pytest.param({"tags": "LoRA"}, lambda p: p.categories == (), id="tags-a-string"),
        pytest.param({"tags": 5}, lambda p: p.categories == (), id="tags-a-number"),
        pytest.param({"date_published": 20261119}, lambda p: p.published is None,
                     id="date-a-number"),
    ],
)
def test_json_feed_wrong_typed_optional_fields_are_ignored(tmp_path, capsys, http_server,
                                                           smtp_server, fields, check):
    inbox, port = smtp_server
    body = json_feed(json_item(1, **fields), json_item(2))
    config = source_config(tmp_path, http_server.route(WEB, Route(body=body)), "feed", port,
                           local=False)
    code, out = run(config, capsys)
    assert code == 0 and "web: 2 read, 2 new" in out
    first, second = sorted(stored(tmp_path, "web"), key=lambda p: p.title == "LoRA note 2")
    assert check(first)
    assert second.authors == ("Ann Lee",) and second.categories == ("adapters",)
    assert len(inbox.messages) == 1


def test_json_feed_items_that_yield_no_paper_are_skipped_with_a_warning(
        tmp_path, capsys, caplog, http_server, smtp_server):
    inbox, port = smtp_server
    body = json_feed("not an item", {"id": [1], "title": {"text": "LoRA"}, "url": 7},
                     json_item(3), authors=5)  # feed-level authors of the wrong type too
    config = source_config(tmp_path, http_server.route(WEB, Route(body=body)), "feed", port,
                           local=False)
    code, out = run(config, capsys)
    assert code == 0 and "web: 1 read, 1 new" in out
    (paper,) = stored(tmp_path, "web")
    assert paper.title == "LoRA note 3" and paper.authors == ("Ann Lee",)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "source=web JSON Feed item 1 is a string, not an object; skipped" in warnings
    assert "source=web JSON Feed item 2 has no title, text, url or id; skipped" in warnings


def encoded(body: bytes, codec: str) -> bytes:
    """The UTF-8 sample re-encoded, a byte order mark first, its declaration to match."""
    name = codec.rsplit("-", 1)[0]  # utf-16-be -> utf-16
    text = body.decode("utf-8").replace("encoding='UTF-8'", f"encoding='{name.upper()}'")
    marks = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE,
             "utf-32-le": codecs.BOM_UTF32_LE}
    return marks[codec] + text.encode(codec)


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le"])
@pytest.mark.parametrize(("kind", "parse"), [("arxiv_rss", arxiv_rss.parse),
                                             ("feed", feed.parse)])
def test_utf16_and_utf32_feeds_parse(tmp_path, capsys, http_server, smtp_server, codec, kind,
                                      parse):
    inbox, port = smtp_server
    route = Route(body=encoded(RSS.read_bytes(), codec), headers={"Content-Type": "text/xml"})
    config = source_config(tmp_path, http_server.route(WEB, route), kind, port, local=False)
    code, out = run(config, capsys)
    assert code == 0 and "web: FAILED" not in out
    papers = {p.key: p.authors for p in stored(tmp_path, "web")}
    from_utf8 = {p.key: p.authors for p in parse(RSS.read_bytes(), source="web")}
    assert papers and papers == {key: from_utf8[key] for key in papers}
    authors = " ".join(name for names in papers.values() for name in names)
    assert all(name in authors for name in ("José García", "Jörg Müller", "Jakub Wójcik"))
    assert len(inbox.messages) == 1


def test_utf16_does_not_hide_entity_declarations(tmp_path, capsys, http_server, smtp_server):
    inbox, port = smtp_server
    bomb = ('<?xml version="1.0" encoding="UTF-16"?>\n<!DOCTYPE rss [<!ENTITY a "aaaaaaaa">]>\n'
            '<rss version="2.0"><channel><title>&a;&a;</title></channel></rss>').encode("utf-16")
    config = source_config(tmp_path, http_server.route(WEB, Route(body=bomb)), "arxiv_rss",
                           port)
    code, out = run(config, capsys)
    assert code == 1
    assert "web: FAILED arXiv RSS: XML declares entities; refused (possible entity bomb)" in out
    assert "local-copy: 25 read, 25 new" in out and len(inbox.messages) == 1


@pytest.mark.parametrize(
    "bug",
    [KeyError("paper"), TypeError("'int' object is not subscriptable"),
     RecursionError("maximum recursion depth exceeded")],
    ids=lambda bug: type(bug).__name__,
)
def test_a_bug_inside_one_source_is_that_sources_failure(tmp_path, capsys, caplog, monkeypatch,
                                                         http_server, smtp_server, bug):
    """Whatever a parser raises (here a bug planted in it) costs only that source."""
    inbox, port = smtp_server
    caplog.set_level(logging.DEBUG, logger="digest.pipeline")
    body = json.dumps([hf_entry("2611.00001")]).encode()
    config = source_config(tmp_path, http_server.route(WEB, Route(body=body)), "hf_daily", port)

    def parse_with_a_bug(content: bytes, **options: Any) -> list[Paper]:
        raise bug

    with monkeypatch.context() as patch:
        patch.setattr(hf_daily, "parse", parse_with_a_bug)
        code, out = run(config, capsys)
    line = f"{type(bug).__name__}: {bug}"
    assert code == 1 and f"  web: FAILED {line}\n" in out
    assert "local-copy: 25 read, 25 new" in out and len(inbox.messages) == 1
    assert health(tmp_path, "web")["last_error"] == line
    logged = [r for r in caplog.records if r.name == "digest.pipeline"]
    assert any(r.levelno == logging.WARNING and r.getMessage() == f"source=web failed: {line}"
               for r in logged)
    assert any(r.levelno == logging.DEBUG and r.exc_info and r.exc_info[1] is bug
               for r in logged)
    code, out = run(config, capsys)  # the next run reads the source again
    assert code == 0 and "web: 1 read, 1 new" in out
    assert health(tmp_path, "web")["consecutive_failures"] == 0


def test_an_interrupt_inside_a_source_still_stops_the_run(tmp_path, monkeypatch, http_server,
                                                          smtp_server):
    inbox, port = smtp_server
    config = source_config(tmp_path, http_server.route(WEB, Route(body=b"[]")), "hf_daily",
                           port)

    def interrupted(content: bytes, **options: Any) -> list[Paper]:
        raise KeyboardInterrupt

    monkeypatch.setattr(hf_daily, "parse", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_once(load_settings(config))
    assert inbox.messages == []
    with Store.open(tmp_path / "digest.db") as store:
        assert store.source_health() == []  # not taken for a failure of the source


def test_a_store_failure_while_recording_a_source_stops_the_run(tmp_path, capsys, monkeypatch,
                                                                http_server, smtp_server):
    """The store is broken, not the source: nothing else can be recorded, so stop."""
    inbox, port = smtp_server
    body = json.dumps([hf_entry("2611.00001")]).encode()
    config = source_config(tmp_path, http_server.route(WEB, Route(body=body)), "hf_daily", port)

    def record_batch(self: Store, source: str, *args: Any) -> tuple[int, int]:
        raise StoreError(f"cannot record papers from {source}: disk I/O error")

    monkeypatch.setattr(Store, "record_batch", record_batch)
    code = main(["run", "--once", "--config", str(config)])
    captured = capsys.readouterr()
    assert code == 1
    assert "paper-digest: cannot record papers from web: disk I/O error" in captured.err
    assert "local-copy" not in captured.out and inbox.messages == []


# ------------------------------------------------------------------------------ channels


def channel_config(tmp_path: Path, http_server, monkeypatch, smtp_port: int) -> Path:
    monkeypatch.setenv("T_HOOK", http_server.url + HOOK)
    return config_for(
        tmp_path, sources=LOCAL_SOURCE, channels=mail_channel(smtp_port) + CHAT_CHANNEL,
        watchlists=watchlist("lora", '"LoRA"', '"chat", "mail"')
        + watchlist("quantized", '"quantization"', '"chat"'))


@pytest.mark.parametrize("status, outcome", [(302, "failed_temporary"),
                                             (307, "failed_temporary"),
                                             (301, "failed_permanent"),
                                             (308, "failed_permanent")])
def test_a_webhook_redirect_is_not_followed(tmp_path, capsys, monkeypatch, http_server,
                                            smtp_server, status, outcome):
    """Following would turn the POST into a GET: the message lost, yet counted as sent."""
    inbox, port = smtp_server
    config = channel_config(tmp_path, http_server, monkeypatch, port)
    http_server.route(HOOK, Route(status, headers={"Location": HOOK}))
    code, out = run(config, capsys)
    assert code == 1
    assert (f"lora -> chat: 3 papers, {outcome}: Slack webhook answered HTTP {status} with a "
            "redirect; set $T_HOOK to the address it redirects to") in out
    assert "lora -> mail: 3 papers, sent" in out and len(inbox.messages) == 1
    # Each digest asked once and never as a GET; after a temporary failure the channel's
    # other digest waits for the next run.
    tries = 1 if outcome == "failed_temporary" else 2
    assert [hit.method for hit in http_server.hits(HOOK)] == ["POST"] * tries
    if outcome == "failed_permanent":
        monkeypatch.setenv("T_HOOK", http_server.url + HOOK + "?moved=1")  # the new address
    assert "hook-secret-token" not in out
    http_server.route(HOOK, Route(body=b"ok"))
    code, out = run(config, capsys)
    assert code == 0
    assert "lora -> chat: 3 papers, sent (recorded earlier, sent again)" in out
    assert "quantized -> chat: 2 papers, sent (recorded earlier, sent again)" in out
    assert len(delivered(tmp_path, "chat")) == 5


@pytest.mark.parametrize(
    "route",
    [
        pytest.param(Route(200, b"not gzip at all", {"Content-Encoding": "gzip"}),
                     id="200-broken-gzip"),
        pytest.param(Route(202, b"\xff\xfe accepted \xc3", {"Content-Type": "text/plain"}),
                     id="202-invalid-bytes"),
        pytest.param(Route(204), id="204-no-body"),
    ],
)
def test_a_webhook_2xx_is_accepted_whatever_its_body(tmp_path, capsys, monkeypatch, http_server,
                                                     smtp_server, route):
    inbox, port = smtp_server
    config = channel_config(tmp_path, http_server, monkeypatch, port)
    http_server.route(HOOK, route)
    code, out = run(config, capsys)
    assert code == 0
    assert "lora -> chat: 3 papers, sent" in out and "quantized -> chat: 2 papers, sent" in out
    assert len(delivered(tmp_path, "chat")) == 5
    posts = len(http_server.hits(HOOK))
    assert posts == 2  # one message per digest, each posted once
    code, out = run(config, capsys)
    assert code == 0 and "sent again" not in out
    assert len(http_server.hits(HOOK)) == posts  # recorded as sent: nothing posted twice


def test_a_webhook_error_with_an_unreadable_body_is_a_temporary_failure(
        tmp_path, capsys, monkeypatch, http_server, smtp_server):
    inbox, port = smtp_server
    config = channel_config(tmp_path, http_server, monkeypatch, port)
    http_server.route(HOOK, Route(500, b"not gzip at all", {"Content-Encoding": "gzip"}))
    code, out = run(config, capsys)
    assert code == 1
    assert "lora -> chat: 3 papers, failed_temporary: Slack did not accept message 1/1: " \
           "HTTP 500\n" in out
    assert len(http_server.hits(HOOK)) == 2  # retried once (max_retries = 1), then left
    assert "lora -> mail: 3 papers, sent" in out and len(inbox.messages) == 1


def test_a_bug_inside_one_channel_is_a_temporary_failure(tmp_path, capsys, caplog, monkeypatch,
                                                        http_server, smtp_server):
    """Whatever a channel's send raises (here a bug planted in it) costs only its digests."""
    inbox, port = smtp_server
    config = channel_config(tmp_path, http_server, monkeypatch, port)
    http_server.route(HOOK, Route(body=b"ok"))
    caplog.set_level(logging.DEBUG, logger="digest.pipeline")
    calls = []

    def post_with_a_bug(self: WebhookPoster, body: bytes, **kwargs: Any) -> None:
        calls.append(body)
        raise KeyError("blocks")

    with monkeypatch.context() as patch:
        patch.setattr(WebhookPoster, "post", post_with_a_bug)
        code, out = run(config, capsys)
    assert code == 1
    assert "lora -> chat: 3 papers, failed_temporary: KeyError: 'blocks'" in out
    assert "lora -> mail: 3 papers, sent" in out and len(inbox.messages) == 1
    # a channel that failed once is not tried again in the same run
    assert "quantized -> chat: 2 papers, failed_temporary: not tried: KeyError: 'blocks'" in out
    assert len(calls) == 1
    with Store.open(tmp_path / "digest.db") as store:
        rows = store.db.execute("SELECT watchlist, status, last_error FROM digests "
                                "WHERE channel = 'chat' ORDER BY id").fetchall()
    assert [tuple(row) for row in rows] == [("lora", "failed_temporary", "KeyError: 'blocks'"),
                                            ("quantized", "pending", None)]
    assert any(r.levelno == logging.DEBUG and r.exc_info for r in caplog.records
               if r.name == "digest.pipeline")
    code, out = run(config, capsys)  # mended: both digests go, unchanged
    assert code == 0
    assert "lora -> chat: 3 papers, sent (recorded earlier, sent again)" in out
    assert "quantized -> chat: 2 papers, sent (recorded earlier, sent again)" in out
    assert len(delivered(tmp_path, "chat")) == 5 and len(inbox.messages) == 1


def test_a_bug_while_composing_leaves_that_digest_for_the_next_run(tmp_path, capsys,
                                                                   monkeypatch, http_server,
                                                                   smtp_server):
    inbox, port = smtp_server
    config = channel_config(tmp_path, http_server, monkeypatch, port)
    http_server.route(HOOK, Route(body=b"ok"))

    def messages_with_a_bug(digest: Any) -> list[dict[str, Any]]:
        raise TypeError("'NoneType' object is not iterable")

    with monkeypatch.context() as patch:
        patch.setattr(slack, "slack_messages", messages_with_a_bug)
        code, out = run(config, capsys)
    assert code == 1
    assert ("lora -> chat: 3 papers, failed_temporary: cannot compose: TypeError: 'NoneType' "
            "object is not iterable") in out
    assert "lora -> mail: 3 papers, sent" in out and len(inbox.messages) == 1
    assert delivered(tmp_path, "chat") == set() and http_server.hits(HOOK) == []
    code, out = run(config, capsys)
    assert code == 0 and "lora -> chat: 3 papers, sent" in out
    assert len(delivered(tmp_path, "chat")) == 5


def test_a_store_failure_inside_a_channel_stops_the_run(tmp_path, capsys, monkeypatch,
                                                        http_server, smtp_server):
    """The store is broken, not the channel: the run stops rather than lose track."""
    inbox, port = smtp_server
    config = channel_config(tmp_path, http_server, monkeypatch, port)
    http_server.route(HOOK, Route(body=b"ok"))

    def send(self: slack.SlackChannel, payload: dict[str, Any], **options: Any) -> None:
        raise StoreError("cannot record message 1 as sent: disk I/O error")

    monkeypatch.setattr(slack.SlackChannel, "send", send)
    code = main(["run", "--once", "--config", str(config)])
    captured = capsys.readouterr()
    assert code == 1
    assert "paper-digest: cannot record message 1 as sent: disk I/O error" in captured.err
    assert "deliveries:" not in captured.out and inbox.messages == []

