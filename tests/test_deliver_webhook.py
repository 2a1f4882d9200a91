"""Generic JSON webhook: the documented, versioned document, its HMAC signature checked the
way a receiver would, stable delivery ids across retries, and whole runs against a real
HTTP server on 127.0.0.1.

Regenerate the golden files after an intended change with UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import SAMPLES, Route, write_config
from test_render import check_golden, full_digest, sample_digest, with_links

from digest.cli import main
from digest.config import ChannelSettings, HttpSettings, Secret, parse_settings
from digest.deliver import CHANNELS, webhook
from digest.deliver.webhook import (
    WebhookChannel,
    WebhookOptions,
    body_bytes,
    delivery_id,
    webhook_document,
)
from digest.errors import DeliveryError
from digest.models import Digest, Match, Paper, Reason

HOOK = "https://hooks.example.org/catch/123/sekrit-token/"
SECRET = "whsec-" + "k" * 40
WHEN = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
PATH = "/webhook/paper-digest"

# ---------------------------------------------------------------- the documented format

# The field table of the README, as a receiver would check it: name -> allowed JSON types.
OPTIONAL_STR = (str, type(None))
OPTIONAL_INT = (int, type(None))
DOCUMENT_FIELDS: dict[str, tuple[type, ...]] = {
    "type": (str,), "version": (int,), "watchlist": (str,), "channel": (str,),
    "created_at": (str,), "timezone": (str,), "heartbeat": OPTIONAL_STR, "notes": (list,),
    "matched": (int,), "more_url": OPTIONAL_STR, "papers": (list,),
}
PAPER_FIELDS: dict[str, tuple[type, ...]] = {
    "rank": (int,), "key": (str,), "arxiv_id": OPTIONAL_STR, "version": OPTIONAL_INT,
    "doi": OPTIONAL_STR, "title": (str,), "authors": (list,), "author_count": (int,),
    "abstract": (str,), "summary": OPTIONAL_STR, "summary_source": OPTIONAL_STR,
    "url": OPTIONAL_STR, "pdf_url": OPTIONAL_STR, "categories": (list,),
    "primary_category": OPTIONAL_STR, "announce_type": OPTIONAL_STR,
    "published": OPTIONAL_STR, "comment": OPTIONAL_STR, "journal_ref": OPTIONAL_STR,
    "upvotes": OPTIONAL_INT, "code_stars": OPTIONAL_INT, "source": OPTIONAL_STR,
    "score": (int, float), "reasons": (list,), "links": (dict,), "reading_links": (list,),
}
UTC_STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def _typed(where: str, value: Any, kinds: tuple[type, ...]) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, kinds):
        return [f"{where}: {type(value).__name__}"]
    return []


def format_problems(document: Mapping[str, Any]) -> list[str]:
    """Everything in a body that the documented format does not allow."""
    problems = [f"unknown field {key}" for key in document if key not in DOCUMENT_FIELDS]
    problems += [f"missing field {key}" for key in DOCUMENT_FIELDS if key not in document]
    for key, kinds in DOCUMENT_FIELDS.items():
        if key in document:
            problems += _typed(key, document[key], kinds)
    if document.get("type") != "paper-digest.digest" or document.get("version") != 1:
        problems.append("not a paper-digest.digest version 1")
    if not UTC_STAMP.match(str(document.get("created_at"))):
        problems.append("created_at is not ISO 8601 UTC")
    problems += [f"notes[{i}]" for i, note in enumerate(document.get("notes", []))
                 if not isinstance(note, str)]
    papers = document.get("papers", [])
    if isinstance(document.get("matched"), int) and document["matched"] < len(papers):
        problems.append("matched counts fewer papers than the body holds")
    for i, paper in enumerate(papers):
        where = f"papers[{i}]"
        problems += [f"{where}: unknown field {k}" for k in paper if k not in PAPER_FIELDS]
        problems += [f"{where}: missing field {k}" for k in PAPER_FIELDS if k not in paper]
        for key, kinds in PAPER_FIELDS.items():
            if key in paper:
                problems += _typed(f"{where}.{key}", paper[key], kinds)
        if paper.get("rank") != i + 1:
            problems.append(f"{where}.rank is not {i + 1}")
        for key in ("authors", "categories", "reasons"):
            problems += [f"{where}.{key}" for item in paper.get(key, [])
                         if not isinstance(item, str)]
        if set(paper.get("links", {})) - {"like", "dislike", "save"}:
            problems.append(f"{where}.links holds an unknown action")
        for link in paper.get("reading_links", []):
            if set(link) != {"label", "url"} or not all(isinstance(v, str) for v in
                                                        link.values()):
                problems.append(f"{where}.reading_links")
        if paper.get("published") is not None and not UTC_STAMP.match(paper["published"]):
            problems.append(f"{where}.published is not ISO 8601 UTC")
    return problems


# The README's verification example, as a receiver runs it.
def verify(secret: str, headers: Mapping[str, str], body: bytes, *,
           now: float | None = None, tolerance: int = 600) -> bool:
    timestamp = headers.get("X-Paper-Digest-Timestamp", "")
    signature = headers.get("X-Paper-Digest-Signature", "")
    if not timestamp.isdigit() or abs((now or time.time()) - int(timestamp)) > tolerance:
        return False
    expected = "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body,
                                    hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


def digest(count: int, **paper: Any) -> Digest:
    matches = tuple(Match(Paper(**{"key": f"arxiv:2611.{i:05d}", "arxiv_id": f"2611.{i:05d}",
                                   "title": f"Paper {i}", "url": "https://a/b",
                                   "abstract": "We study adapters. " * 30, **paper}),
                          "w", 1.0 + i, (Reason("term", "adapters", "abstract", 1.0),))
                    for i in range(count))
    return Digest("w", "hook", matches, WHEN)


def channel_with(handler, *, secret: str | None = SECRET, sleeps: list[float] | None = None,
                 clock=lambda: 1_795_000_000.0, **http) -> WebhookChannel:
    options = WebhookOptions(url_env="HOOK", url=Secret(HOOK, "HOOK"),
                             secret_env="HOOK_SECRET" if secret else None,
                             secret=Secret(secret, "HOOK_SECRET") if secret else None)
    settings = ChannelSettings(name="hook", kind="webhook", options=options)
    return WebhookChannel(settings, http=HttpSettings(**{"retry_backoff_seconds": 1.0, **http}),
                          transport=httpx.MockTransport(handler),
                          sleep=(sleeps if sleeps is not None else []).append, clock=clock)


# ------------------------------------------------------------------ the document


def test_documents_match_golden_files():
    check_golden("webhook.json", json.dumps(webhook_document(full_digest()), indent=2,
                                            ensure_ascii=False) + "\n")
    heartbeat = replace(sample_digest(), matches=(), heartbeat="nothing matched today "
                        "(812 new papers read)", notes=("arxiv-cs could not be read.",))
    check_golden("webhook_heartbeat.json", json.dumps(webhook_document(heartbeat), indent=2,
                                                      ensure_ascii=False) + "\n")


@pytest.mark.parametrize("shown", [
    pytest.param(full_digest(), id="full"),
    pytest.param(sample_digest(), id="sample"),
    pytest.param(replace(sample_digest(), matches=(), heartbeat="nothing matched today"),
                 id="heartbeat"),
])
def test_every_body_follows_the_documented_format(shown):
    document = json.loads(body_bytes(webhook_document(shown)))
    assert format_problems(document) == []


def test_the_format_check_catches_what_the_format_does_not_allow():
    document = json.loads(body_bytes(webhook_document(full_digest())))
    broken = {**document, "extra": 1, "matched": "15"}
    broken["papers"] = [{**document["papers"][0], "rank": 2, "score": "high"}]
    del broken["papers"][0]["title"]
    assert format_problems(broken) == [
        "unknown field extra", "matched: str", "papers[0]: missing field title",
        "papers[0].score: str", "papers[0].rank is not 1"]


def test_a_paper_carries_what_an_automation_needs():
    first, second = webhook_document(full_digest())["papers"]
    assert first["key"] == "arxiv:2611.04001" and first["arxiv_id"] == "2611.04001"
    assert first["url"] == "https://arxiv.org/abs/2611.04001"
    assert first["pdf_url"] == "https://arxiv.org/pdf/2611.04001"
    assert first["authors"] == ["Mei Lin", "Sinong Wang"] and first["author_count"] == 2
    assert first["reasons"] == ['"LoRA" in title', "author Sinong Wang"]
    assert first["score"] == 6.5 and second["score"] == 3.0
    assert set(first["links"]) == {"like", "dislike", "save"}
    assert all(url.startswith("https://papers.example.org/digest/r/")
               for url in first["links"].values())
    assert [link["label"] for link in first["reading_links"]] == [
        "Abstract", "PDF", "HTML", "Hugging Face", "Code (★ 1,284)", "Project page"]
    assert first["summary_source"] == "Hugging Face AI"
    # feed text is data here, not markup: it arrives exactly as the feed had it
    assert second["title"] == "Scaling <script>alert(1)</script> & LoRA <!channel> <@U123>"
    assert webhook_document(sample_digest())["papers"][0]["links"] == {}


def test_the_digest_fields_say_when_what_and_how_many():
    shown = replace(full_digest(), notes=("arxiv-cs could not be read.",),
                    more_url="https://papers.example.org/digest/more/7")
    document = webhook_document(shown)
    assert document["created_at"] == "2026-11-20T07:00:00Z"
    assert document["timezone"] == "Europe/Berlin"
    assert document["matched"] == 15 and len(document["papers"]) == 2
    assert document["more_url"] == "https://papers.example.org/digest/more/7"
    assert document["notes"] == ["arxiv-cs could not be read."]
    assert document["heartbeat"] is None


def test_only_web_links_are_given():
    evil = Paper(key="guid:x", title="Click me", url="javascript:alert(1)", abstract="a",
                 code_url="data:text/html,boom", published=datetime(2026, 11, 19, 23, 30))
    document = webhook_document(replace(Digest("w", "c", (Match(evil, "w", 1.0, ()),), WHEN),
                                        more_url="javascript:alert(2)"))
    paper = document["papers"][0]
    assert paper["url"] is None and paper["reading_links"] == []
    assert document["more_url"] is None
    assert paper["published"] == "2026-11-19T23:30:00Z"  # a time without zone is UTC


def test_broken_feed_text_still_makes_valid_utf8_json():
    broken = Paper(key="guid:z", title="Half \ud800 a character", url="https://a/b",
                   abstract="bell\x07 and \"quotes\" \\ backslash")
    body = body_bytes(webhook_document(Digest("w", "c", (Match(broken, "w", 1.0, ()),), WHEN)))
    document = json.loads(body.decode("utf-8"))
    assert document["papers"][0]["title"] == "Half ? a character"
    assert document["papers"][0]["abstract"] == "bell\x07 and \"quotes\" \\ backslash"


def test_a_swollen_digest_keeps_its_top_papers_under_the_body_limit(monkeypatch):
    monkeypatch.setattr(webhook, "WEBHOOK_MAX_BODY_BYTES", 12_000)
    channel = channel_with(lambda r: httpx.Response(200))
    composed = channel.compose(digest(20))
    body = body_bytes(composed.payload["document"])
    kept = len(composed.digest.matches)
    assert 1 < kept < 20 and len(body) <= 12_000
    document = json.loads(body)
    assert document["matched"] == 20 and len(document["papers"]) == kept
    assert [p["key"] for p in document["papers"]] == [
        m.paper.key for m in digest(20).matches[:kept]]
    assert format_problems(document) == []


def test_a_real_size_digest_is_far_under_the_limit():
    shown = with_links(digest(500, authors=tuple(f"Author {j}" for j in range(12)),
                              categories=("cs.CL", "cs.LG"), comment="12 pages"))
    composed = channel_with(lambda r: httpx.Response(200)).compose(shown)
    assert len(composed.digest.matches) == 500
    assert len(body_bytes(composed.payload["document"])) < webhook.WEBHOOK_MAX_BODY_BYTES / 2


# ------------------------------------------------------------------ sending (in process)


def test_one_signed_request_per_digest():
    seen: list[httpx.Request] = []

    def handler(request):
        seen.append(request)
        return httpx.Response(202)

    channel = channel_with(handler)
    payload = channel.compose(full_digest()).payload
    parts: list[int] = []
    channel.send(payload, on_part_sent=parts.append)
    (request,) = seen
    assert parts == [1]
    assert request.content == WebhookChannel.outbox_files(payload)[".json"]
    assert request.headers["Content-Type"] == "application/json; charset=utf-8"
    assert request.headers["X-Paper-Digest-Delivery"] == delivery_id(request.content)
    assert request.headers["X-Paper-Digest-Timestamp"] == "1795000000"
    assert verify(SECRET, request.headers, request.content, now=1_795_000_030)
    assert request.headers["User-Agent"].startswith("paper-digest/")


def test_without_a_secret_nothing_is_signed():
    seen: list[httpx.Request] = []
    channel = channel_with(lambda r: seen.append(r) or httpx.Response(200), secret=None)
    channel.send(channel.compose(digest(1)).payload)
    assert "X-Paper-Digest-Signature" not in seen[0].headers
    assert "X-Paper-Digest-Timestamp" not in seen[0].headers
    assert seen[0].headers["X-Paper-Digest-Delivery"] == delivery_id(seen[0].content)


def test_a_named_secret_that_is_not_set_stops_the_send():
    options = WebhookOptions(url_env="HOOK", url=Secret(HOOK, "HOOK"), secret_env="HOOK_SECRET")
    channel = WebhookChannel(ChannelSettings(name="hook", kind="webhook", options=options),
                             http=HttpSettings(),
                             transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    with pytest.raises(DeliveryError, match="HOOK_SECRET is not set"):
        channel.send(channel.compose(digest(1)).payload)


def test_a_digest_sent_already_is_not_sent_again():
    calls = []
    channel = channel_with(lambda r: calls.append(r) or httpx.Response(200))
    channel.send(channel.compose(digest(1)).payload, parts_sent=1)
    assert calls == []


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_any_2xx_is_delivered(status):
    channel = channel_with(lambda r: httpx.Response(status))
    parts: list[int] = []
    channel.send(channel.compose(digest(1)).payload, on_part_sent=parts.append)
    assert parts == [1]


def test_429_waits_for_retry_after_and_the_retry_sends_the_same_bytes():
    seen: list[httpx.Request] = []
    answers = iter([httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200)])
    sleeps: list[float] = []

    def handler(request):
        seen.append(request)
        return next(answers)

    channel = channel_with(handler, sleeps=sleeps)
    channel.send(channel.compose(digest(2)).payload)
    assert 7.0 in sleeps
    first, second = seen
    assert first.content == second.content
    for header in ("X-Paper-Digest-Delivery", "X-Paper-Digest-Signature"):
        assert first.headers[header] == second.headers[header]


@pytest.mark.parametrize(("status", "words", "permanent"), [
    (404, "Webhook webhook is gone", True), (410, "Webhook webhook is gone", True),
    (401, "Webhook rejected message 1/1", True), (413, "Webhook rejected message 1/1", True),
    (500, "HTTP 500", False),
])
def test_failures_name_the_webhook_and_never_its_url(status, words, permanent):
    def handler(request):
        return httpx.Response(status, text=f"nothing at {request.url}")

    channel = channel_with(handler, max_retries=1)
    with pytest.raises(DeliveryError, match=words) as caught:
        channel.send(channel.compose(digest(1)).payload)
    assert caught.value.permanent is permanent
    assert "sekrit" not in str(caught.value) and "$HOOK" in str(caught.value)


def test_timeouts_are_temporary():
    def handler(request):
        raise httpx.ReadTimeout("slow", request=request)

    channel = channel_with(handler, max_retries=1)
    with pytest.raises(DeliveryError, match="within .* s; it may have arrived") as caught:
        channel.send(channel.compose(digest(1)).payload)
    assert not caught.value.permanent


# ------------------------------------------------------------------ options


CONFIG = """
version = 1
[[sources]]
name = "arxiv"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[watchlists]]
name = "w"
keywords = ["LoRA"]
channels = ["automation"]
[channels.automation]
kind = "webhook"
url_env = "AUTOMATION_URL"
"""


@pytest.mark.parametrize(("extra", "env", "problems"), [
    pytest.param("", {"AUTOMATION_URL": HOOK}, [], id="https"),
    pytest.param("", {"AUTOMATION_URL": "http://n8n.lan:5678/webhook/sekrit"}, [], id="lan"),
    pytest.param("", {"AUTOMATION_URL": "ftp://example.org/sekrit"},
                 ["$AUTOMATION_URL is not a valid webhook URL (https://host/path, port "
                  "1-65535)"], id="not-http"),
    pytest.param("", {}, ["environment variable AUTOMATION_URL is not set"], id="unset"),
    pytest.param('secret_env = "AUTOMATION_SECRET"\n',
                 {"AUTOMATION_URL": HOOK, "AUTOMATION_SECRET": SECRET}, [], id="signed"),
    pytest.param('secret_env = "AUTOMATION_SECRET"\n', {"AUTOMATION_URL": HOOK},
                 ["environment variable AUTOMATION_SECRET is not set"], id="secret-unset"),
    pytest.param('secret_env = "AUTOMATION_SECRET"\n',
                 {"AUTOMATION_URL": HOOK, "AUTOMATION_SECRET": "sekrit-short"},
                 ["$AUTOMATION_SECRET is 12 characters; use at least 32 random ones "
                  "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"],
                 id="secret-short"),
])
def test_the_url_and_secret_are_checked_without_being_shown(extra, env, problems):
    settings = parse_settings(CONFIG + extra, path=Path("x.toml"), env=env)
    found = settings.missing_secrets()
    assert found == [("channels.automation", p) for p in problems]
    assert "sekrit" not in repr(found)
    assert CHANNELS["webhook"] is WebhookChannel


def test_only_its_own_keys_are_accepted():
    text = CONFIG + 'headers_env = "X"\n'
    with pytest.raises(Exception, match="unknown key"):
        parse_settings(text, path=Path("x.toml"), env={"AUTOMATION_URL": HOOK})


# ------------------------------------------------------------------ a real HTTP server


def real_channel(url: str, *, secret: str | None = SECRET, timeout: float = 5.0,
                 clock=time.time, **http) -> WebhookChannel:
    options = WebhookOptions(url_env="HOOK", url=Secret(url, "HOOK"),
                             secret_env="HOOK_SECRET" if secret else None,
                             secret=Secret(secret, "HOOK_SECRET") if secret else None)
    settings = ChannelSettings(name="hook", kind="webhook", timeout_seconds=timeout,
                               options=options)
    return WebhookChannel(settings, http=HttpSettings(**{"retry_backoff_seconds": 0, **http}),
                          interval=0, clock=clock)


def test_a_real_receiver_verifies_the_signature_and_refuses_a_tampered_body(http_server):
    url = http_server.route(PATH, Route(status=204))
    channel = real_channel(url)
    payload = channel.compose(full_digest()).payload
    try:
        channel.send(payload)
    finally:
        channel.close()
    (hit,) = http_server.hits(PATH)
    assert hit.body == WebhookChannel.outbox_files(payload)[".json"]
    assert verify(SECRET, hit.headers, hit.body)
    assert format_problems(hit.json()) == []
    assert hit.headers["X-Paper-Digest-Delivery"] == delivery_id(hit.body)
    assert hit.headers["User-Agent"].startswith("paper-digest/")
    # what a receiver must refuse: a changed body, another key, an old timestamp
    tampered = hit.body.replace(b'"matched":15', b'"matched":16')
    assert tampered != hit.body and not verify(SECRET, hit.headers, tampered)
    assert not verify("another-key-" + "x" * 30, hit.headers, hit.body)
    assert not verify(SECRET, hit.headers, hit.body, now=time.time() + 3600)


def test_two_sends_of_a_recorded_payload_carry_the_same_body_and_delivery_id(http_server):
    url = http_server.route(PATH, Route(status=200))
    recorded = json.loads(json.dumps(real_channel(url).compose(full_digest()).payload))
    for clock in (lambda: 1_795_000_000.0, lambda: 1_795_000_900.0):  # two runs, 15 min apart
        channel = real_channel(url, clock=clock)
        channel.send(json.loads(json.dumps(recorded)))  # read back from the store each time
        channel.close()
    first, second = http_server.hits(PATH)
    assert first.body == second.body
    assert first.headers["X-Paper-Digest-Delivery"] == second.headers["X-Paper-Digest-Delivery"]
    assert first.headers["X-Paper-Digest-Timestamp"] == "1795000000"
    assert second.headers["X-Paper-Digest-Timestamp"] == "1795000900"
    assert verify(SECRET, first.headers, first.body, now=1_795_000_001)
    assert verify(SECRET, second.headers, second.body, now=1_795_000_901)


def test_a_real_429_then_5xx_then_success(http_server):
    url = http_server.route(PATH, Route(status=429, headers={"Retry-After": "0"}),
                            Route(status=502, body=b"bad gateway"), Route(status=200))
    channel = real_channel(url)
    try:
        channel.send(channel.compose(digest(3)).payload)
    finally:
        channel.close()
    hits = http_server.hits(PATH)
    assert len(hits) == 3 and len({hit.body for hit in hits}) == 1


def test_a_real_timeout_is_temporary_and_posts_no_copy_in_the_same_run(http_server):
    # A hook that takes the message and answers late: retrying at once would post it again.
    url = http_server.route(PATH, Route(status=200, delay=2.0))
    channel = real_channel(url + "?token=sekrit", timeout=0.3, max_retries=2)
    with pytest.raises(DeliveryError, match="did not answer") as caught:
        channel.send(channel.compose(digest(1)).payload)
    channel.close()
    assert not caught.value.permanent and "sekrit" not in str(caught.value)
    assert len(http_server.hits(PATH)) == 1


def test_a_real_deleted_hook_is_gone(http_server):
    url = http_server.route(PATH, Route(status=410, body=b"hook deleted"))
    channel = real_channel(url)
    with pytest.raises(DeliveryError, match="gone") as caught:
        channel.send(channel.compose(digest(1)).payload)
    channel.close()
    assert caught.value.permanent and len(http_server.hits(PATH)) == 1


def test_a_redirect_is_not_followed(http_server):
    url = http_server.route(PATH, Route(status=302, headers={"Location": "/elsewhere"}))
    channel = real_channel(url)
    with pytest.raises(DeliveryError, match="redirect"):
        channel.send(channel.compose(digest(1)).payload)
    channel.close()
    assert http_server.hits("/elsewhere") == []


# ------------------------------------------------------------------ whole runs


def run_config(tmp_path: Path) -> Path:
    return write_config(tmp_path, f"""
[http]
interval_seconds = 0
retry_backoff_seconds = 0
max_retries = 1
timeout_seconds = 2
[[sources]]
name = "local-copy"
kind = "arxiv_rss"
categories = ["cs.CL", "cs.LG"]
url = "{SAMPLES / 'arxiv_rss_cs.CL+cs.LG.xml'}"
[[watchlists]]
name = "lora"
keywords = ["LoRA", "quantization"]
channels = ["automation", "chat"]
[channels.automation]
kind = "webhook"
url_env = "T_WEBHOOK"
secret_env = "T_WEBHOOK_SECRET"
timeout_seconds = 2
[channels.chat]
kind = "slack"
webhook_url_env = "T_SLACK"
timeout_seconds = 2
""")


@pytest.mark.integration
def test_a_failing_receiver_costs_only_its_own_digest_and_gets_the_same_delivery_later(
        tmp_path, capsys, http_server, monkeypatch):
    monkeypatch.setenv("T_WEBHOOK", http_server.route(PATH, Route(status=503)) + "?t=sekrit")
    monkeypatch.setenv("T_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("T_SLACK", http_server.route("/slack/hook", Route(body=b"ok")))
    config = run_config(tmp_path)
    assert main(["run", "--once", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"lora -> automation: \d+ papers, failed_temporary: Webhook did not "
                     r"accept message 1/1: HTTP 503", out)
    assert re.search(r"lora -> chat: \d+ papers, sent", out)
    assert "sekrit" not in out
    failed = http_server.hits(PATH)
    assert len(failed) == 2  # retried once (max_retries = 1), then left for the next run
    http_server.route(PATH, Route(status=202))
    assert main(["run", "--once", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "lora -> automation:" in out and "(recorded earlier, sent again)" in out
    delivered = http_server.hits(PATH)[-1]
    assert delivered.body == failed[0].body
    ids = {hit.headers["X-Paper-Digest-Delivery"] for hit in http_server.hits(PATH)}
    assert ids == {delivery_id(delivered.body)}
    assert verify(SECRET, delivered.headers, delivered.body)
    document = delivered.json()
    assert format_problems(document) == []
    assert document["watchlist"] == "lora" and document["channel"] == "automation"
    assert document["papers"] and all("LoRA" in json.dumps(p) or "uantiz" in json.dumps(p)
                                      for p in document["papers"])


@pytest.mark.integration
def test_the_outbox_holds_the_exact_body_instead_of_sending_it(tmp_path, capsys, http_server,
                                                               monkeypatch):
    monkeypatch.setenv("T_WEBHOOK", http_server.route(PATH, Route(status=200)))
    monkeypatch.setenv("T_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("T_SLACK", http_server.route("/slack/hook", Route(body=b"ok")))
    outbox = tmp_path / "outbox"
    assert main(["run", "--once", "--config", str(run_config(tmp_path)),
                 "--outbox", str(outbox)]) == 0
    capsys.readouterr()
    (written,) = outbox.glob("*-lora-automation.json")
    assert http_server.hits(PATH) == []
    assert format_problems(json.loads(written.read_bytes())) == []
    assert written.read_bytes() == body_bytes(json.loads(written.read_bytes()))
