"""Teams channel: Adaptive Cards within Teams' size limit, escaping, pacing, Retry-After,
gone workflows, resuming, and whole runs against a real HTTP server on 127.0.0.1.

Regenerate the golden files after an intended change with UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from conftest import SAMPLES, Route, write_config
from test_render import check_golden, full_digest, sample_digest, with_links

from digest.cli import main
from digest.config import ChannelSettings, HttpSettings, Secret, parse_settings
from digest.deliver import CHANNELS
from digest.deliver.teams import (
    CARD_TYPE,
    TEAMS_MAX_MESSAGE_BYTES,
    TeamsChannel,
    TeamsOptions,
    message_bytes,
    teams_messages,
    teams_text,
)
from digest.errors import DeliveryError
from digest.models import Digest, Match, Paper, Reason

HOOK = ("https://prod-12.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/"
        "invoke?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=sekrit-sig")
WHEN = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
LINK = re.compile(r"\[([^\]]*)\]\(([^)\s]*)\)")


def channel_with(handler, sleeps: list[float] | None = None, **http) -> TeamsChannel:
    sleeps = sleeps if sleeps is not None else []
    settings = ChannelSettings(name="team-teams", kind="teams", options=TeamsOptions(
        webhook_url_env="HOOK", webhook_url=Secret(HOOK, "HOOK")))
    return TeamsChannel(settings, http=HttpSettings(**{"retry_backoff_seconds": 1.0, **http}),
                        transport=httpx.MockTransport(handler), sleep=sleeps.append)


def digest(count: int, **paper) -> Digest:
    matches = tuple(Match(Paper(**{"key": f"arxiv:2611.{i:05d}", "arxiv_id": f"2611.{i:05d}",
                                   "title": f"Paper {i}", "url": "https://a/b",
                                   "abstract": "We study adapters. " * 30, **paper}),
                          "w", 1.0, (Reason("term", "adapters", "abstract", 1.0),))
                    for i in range(count))
    return Digest("w", "team-teams", matches, WHEN)


def cards(messages: list[dict]) -> list[dict]:
    return [m["attachments"][0]["content"] for m in messages]


def texts(element: dict) -> list[str]:
    """Every TextBlock's text inside a card element, in order."""
    if element.get("type") == "TextBlock":
        return [element["text"]]
    return [t for item in element.get("items", element.get("body", [])) for t in texts(item)]


# ------------------------------------------------------------------ the cards


def test_cards_match_golden_files():
    for name, shown in (("teams.json", sample_digest()), ("teams_full.json", full_digest())):
        check_golden(name, json.dumps(teams_messages(shown), indent=2, ensure_ascii=False)
                     + "\n")
    heartbeat = replace(sample_digest(), matches=(), heartbeat="nothing matched today "
                        "(812 new papers read)", notes=("arxiv-cs could not be read.",))
    check_golden("teams_heartbeat.json", json.dumps(teams_messages(heartbeat), indent=2,
                                                    ensure_ascii=False) + "\n")


def test_each_message_is_a_workflows_message_with_one_full_width_adaptive_card():
    (message,) = teams_messages(full_digest())
    assert message["type"] == "message" and len(message["attachments"]) == 1
    attachment = message["attachments"][0]
    assert attachment["contentType"] == CARD_TYPE == "application/vnd.microsoft.card.adaptive"
    assert attachment["contentUrl"] is None
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["version"] == "1.4"
    assert card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert card["msteams"] == {"width": "Full"}
    heading, first, second, more = card["body"]
    assert heading["text"] == "efficient-llms: 2 new papers, Fri 20 Nov"
    assert first["type"] == second["type"] == "Container"
    assert more["text"] == "13 more matched; they did not fit here and wait for the next digest."


def test_a_paper_shows_its_title_link_facts_summary_reasons_and_links():
    first = cards(teams_messages(full_digest()))[0]["body"][1]
    title, meta, summary, why, reading, ratings = texts(first)
    # the rank is followed by a no-break space, so that "1. " does not open a list
    assert title == ("1.\u00a0[LoRA-Flow: Dynamic Low-Rank Adapters]"
                     "(https://arxiv.org/abs/2611.04001)")
    assert meta.startswith("Mei Lin, Sinong Wang · cs.CL, cs.LG · ▲ 120 upvotes")
    assert "Comments: Accepted at ICLR 2027; 9 pages · Journal ref: TMLR 2026" in meta
    assert summary == ("_Summary (Hugging Face AI):_ Adaptive ranks match full fine-tuning "
                       "with 0.4% of the weights.")
    assert why == 'Why: "LoRA" in title; author Sinong Wang'
    # the title links the abstract; the row holds the other places to read it
    assert [label for label, _ in LINK.findall(reading)] == [
        "PDF", "HTML", "Hugging Face", "Code (★ 1,284)", "Project page"]
    assert [label for label, _ in LINK.findall(ratings)] == ["More like this", "Not for me",
                                                             "Save"]
    assert all(url.startswith("https://papers.example.org/digest/")
               for _, url in LINK.findall(ratings))


def test_without_a_summary_the_abstract_is_shown_trimmed():
    (message,) = teams_messages(digest(1))
    _, abstract, _, reading = texts(cards([message])[0]["body"][1])  # no authors, no ratings
    assert reading.startswith("[PDF](https://arxiv.org/pdf/2611.00000)")
    assert abstract.startswith("We study adapters.") and abstract.endswith(" …")
    assert len(abstract) <= 402


@pytest.mark.parametrize(("title", "forbidden"), [
    pytest.param("*Bold* and _italic_ ~~struck~~ `code`", "*_~`", id="emphasis"),
    pytest.param("Click [here](https://evil.example) now", "[]", id="forged-link"),
    pytest.param("Escape me\\](https://evil.example)", "\\[]", id="backslash-escape"),
    pytest.param("&#42;&#42;bold&#42;&#42; &#91;x&#93;", "", id="entities"),
    pytest.param("<at>Everyone</at> <script>alert(1)</script>", "<>", id="tags"),
])
def test_feed_text_can_never_format_link_or_mention(title, forbidden):
    paper = Paper(key="arxiv:2611.00001", arxiv_id="2611.00001",
                  url="https://arxiv.org/abs/2611.00001", title=title, abstract=title,
                  authors=(title,))
    shown = with_links(Digest("w", "c", (Match(paper, "w", 1.0,
                                               (Reason("author", title, "authors"),)),), WHEN))
    container = cards(teams_messages(shown))[0]["body"][1]
    title_line, *rest = texts(container)
    # exactly one link in the title line: the abstract, around the whole title
    assert LINK.findall(title_line) == [(teams_text(title), "https://arxiv.org/abs/2611.00001")]
    inner = LINK.sub("", title_line)
    for line in (teams_text(title), inner, *rest[:3]):  # facts, abstract, reasons
        assert not any(ch in line for ch in forbidden), line
        assert not re.search(r"&#?\w+;", line)


@pytest.mark.parametrize(("text", "shown"), [
    ("1. Introduction", "1.\u00a0Introduction"),
    ("- not a list", "-\u00a0not a list"),
    ("# Not a heading", "#\u00a0Not a heading"),
    ("line\nbreaks\tand\x07 bells", "line breaks and bells"),
    ("Q&A for R&D", "Q&A for R&D"),
])
def test_a_block_of_feed_text_cannot_become_a_list_or_heading(text, shown):
    assert teams_text(text) == shown


def test_only_web_links_become_links():
    evil = Paper(key="guid:x", title="Click me", url="javascript:alert(document.cookie)",
                 abstract="a", code_url="data:text/html,boom")
    payload = json.dumps(teams_messages(Digest("w", "c", (Match(evil, "w", 1.0, ()),), WHEN)),
                         ensure_ascii=False)
    assert "javascript:" not in payload and "data:" not in payload
    assert "1.\u00a0Click me" in payload


def test_broken_feed_text_still_makes_valid_utf8_json():
    broken = Paper(key="guid:z", title="Half \ud800 a character", url="https://a/b",
                   abstract="a")
    (message,) = teams_messages(Digest("w", "c", (Match(broken, "w", 1.0, ()),), WHEN))
    assert "Half ? a character" in message_bytes(message).decode("utf-8")


def test_urls_cannot_break_out_of_a_markdown_link():
    odd = Paper(key="guid:y", title="Odd", url="https://example.org/a (b)<c>",
                abstract="a", project_url="https://example.org/" + "x" * 2000)
    title = texts(cards(teams_messages(Digest("w", "c", (Match(odd, "w", 1.0, ()),),
                                              WHEN)))[0]["body"][1])[0]
    assert LINK.findall(title) == [("Odd", "https://example.org/a%20%28b%29%3Cc%3E")]
    assert "x" * 2000 not in json.dumps(teams_messages(Digest("w", "c", (Match(
        odd, "w", 1.0, ()),), WHEN)))  # a link too long to carry is left out


def test_a_large_hostile_digest_is_split_with_every_message_under_the_limit():
    huge = "漢字😀" * 3000
    paper = {"abstract": huge, "authors": tuple(huge[:400] for _ in range(500)),
             "categories": tuple(huge[:50] for _ in range(100)), "comment": huge,
             "journal_ref": huge, "summary": huge, "summary_source": huge,
             "hf_url": "https://h.example/" + "a" * 980,
             "code_url": "https://c.example/" + "b" * 980,
             "project_url": "https://p.example/" + "c" * 980}
    big = replace(with_links(digest(120, **paper)), notes=(huge,) * 5, matched=300,
                  more_url="https://papers.example.org/digest/more/7")
    big = replace(big, matches=tuple(
        replace(m, paper=replace(m.paper, title=f"{m.paper.title} {huge}"),
                reasons=tuple(Reason("term", huge[:200], f"f{j}", 1.0) for j in range(40)))
        for m in big.matches))
    messages = teams_messages(big)
    assert len(messages) > 10
    for number, message in enumerate(messages, start=1):
        assert len(message_bytes(message)) <= TEAMS_MAX_MESSAGE_BYTES
        heading = message["attachments"][0]["content"]["body"][0]["text"]
        assert heading.endswith(f"({number}/{len(messages)})")
    titles = [texts(element)[0] for card in cards(messages) for element in card["body"]
              if element["type"] == "Container"]
    assert [int(t.split(".", 1)[0]) for t in titles] == list(range(1, 121))
    last = cards(messages)[-1]["body"][-1]["text"]
    assert last == "[180 more matched: read them on the web.]" \
                   "(https://papers.example.org/digest/more/7)"


def test_notes_come_once_under_the_first_heading():
    noted = replace(digest(60), notes=("arxiv-cs could not be read (HTTP 503 <x>).",))
    bodies = [card["body"] for card in cards(teams_messages(noted))]
    assert len(bodies) > 1
    assert bodies[0][1]["text"] == "arxiv-cs could not be read (HTTP 503 ‹x›)."
    assert all(body[1]["type"] == "Container" for body in bodies[1:])


def test_a_heartbeat_is_one_short_card():
    beat = Digest("efficient-llms", "team-teams", (), WHEN,
                  heartbeat="nothing matched today (812 new papers read)",
                  notes=("arxiv-cs could not be read.",))
    (message,) = teams_messages(beat)
    body = message["attachments"][0]["content"]["body"]
    assert [b["text"] for b in body] == [
        "efficient-llms · Fri 20 Nov: nothing matched today (812 new papers read).",
        "arxiv-cs could not be read."]
    assert len(message_bytes(message)) < 1000


# ------------------------------------------------------------------ sending (in process)


def test_posts_each_message_paced_about_one_per_second():
    bodies, types, sleeps = [], [], []

    def handler(request):
        assert str(request.url) == HOOK.replace(":443", "")
        bodies.append(request.content)
        types.append(request.headers["Content-Type"])
        return httpx.Response(202)

    channel = channel_with(handler, sleeps)
    payload = channel.compose(digest(60)).payload
    assert len(payload["messages"]) > 1
    parts: list[int] = []
    channel.send(payload, on_part_sent=parts.append)
    assert parts == list(range(1, len(payload["messages"]) + 1))
    assert bodies == [message_bytes(m) for m in payload["messages"]]
    assert list(TeamsChannel.outbox_files(payload).values()) == bodies
    assert set(types) == {"application/json; charset=utf-8"}
    assert len(sleeps) == len(bodies) - 1 and all(0 < s <= 1.0 for s in sleeps)


def test_the_outbox_holds_one_file_per_message():
    payload = {"kind": "teams", "messages": teams_messages(digest(60))}
    files = TeamsChannel.outbox_files(payload)
    assert list(files) == [f".{n}.json" for n in range(1, len(payload["messages"]) + 1)]
    assert list(TeamsChannel.outbox_files({"messages": payload["messages"][:1]})) == [".json"]


@pytest.mark.parametrize("answer", [
    pytest.param(httpx.Response(429, headers={"Retry-After": "4"}), id="retry-after"),
    pytest.param(httpx.Response(429, json={"error": {
        "code": "WorkflowTriggerIsThrottled",
        "message": "Rate limit is exceeded. Try again in 4 seconds."}}), id="words-only"),
])
def test_429_waits_as_asked_then_succeeds(answer):
    answers = iter([answer, httpx.Response(202)])
    sleeps: list[float] = []
    channel = channel_with(lambda r: next(answers), sleeps)
    channel.send(channel.compose(digest(1)).payload)
    assert 4.0 in sleeps


@pytest.mark.parametrize("status", [404, 410])
def test_a_gone_workflow_is_permanent_and_not_retried(status):
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(status, text=f"no workflow at {request.url}")

    channel = channel_with(handler)
    with pytest.raises(DeliveryError, match="Teams webhook is gone") as caught:
        channel.send(channel.compose(digest(1)).payload)
    assert caught.value.permanent and len(calls) == 1
    assert "sekrit" not in str(caught.value) and "$HOOK" in str(caught.value)


def test_a_rejected_card_is_permanent():
    channel = channel_with(lambda r: httpx.Response(400, text="InvalidRequestContent"))
    with pytest.raises(DeliveryError, match="Teams rejected message 1/1") as caught:
        channel.send(channel.compose(digest(1)).payload)
    assert caught.value.permanent


def test_server_errors_are_retried_then_temporary():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(502, text="bad gateway")

    channel = channel_with(handler, max_retries=2)
    with pytest.raises(DeliveryError, match="HTTP 502") as caught:
        channel.send(channel.compose(digest(1)).payload)
    assert not caught.value.permanent and len(calls) == 3


def test_resuming_skips_the_parts_already_accepted():
    bodies = []

    def handler(request):
        bodies.append(request.content)
        return httpx.Response(202)

    channel = channel_with(handler)
    payload = json.loads(json.dumps(channel.compose(digest(60)).payload))  # as recorded
    channel.send(payload, parts_sent=1)
    assert bodies == [message_bytes(m) for m in payload["messages"][1:]]


def test_a_missing_webhook_secret_is_reported():
    settings = ChannelSettings(name="t", kind="teams",
                               options=TeamsOptions(webhook_url_env="HOOK"))
    channel = TeamsChannel(settings, http=HttpSettings())
    with pytest.raises(DeliveryError, match="HOOK is not set"):
        channel.send(channel.compose(digest(1)).payload)


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
channels = ["teams"]
[channels.teams]
kind = "teams"
webhook_url_env = "TEAMS_HOOK"
"""


@pytest.mark.parametrize(("url", "problems"), [
    pytest.param(HOOK, [], id="workflows-url"),
    pytest.param("http://127.0.0.1:8080/relay", [], id="local-relay"),
    pytest.param("http://prod-12.westeurope.logic.azure.com/workflows/sekrit",
                 ["$TEAMS_HOOK must be an https:// URL (plain http only to this machine)"],
                 id="plain-http"),
    pytest.param("https://prod.example:99999/sekrit",
                 ["$TEAMS_HOOK is not a valid webhook URL (https://host/path, port 1-65535)"],
                 id="bad-port"),
    pytest.param("prod.example/sekrit",
                 ["$TEAMS_HOOK is not a valid webhook URL (https://host/path, port 1-65535)"],
                 id="no-scheme"),
])
def test_the_workflow_url_is_checked_without_being_shown(url, problems):
    settings = parse_settings(CONFIG, path=Path("x.toml"), env={"TEAMS_HOOK": url})
    found = settings.missing_secrets()
    assert found == [("channels.teams", p) for p in problems]
    assert "sekrit" not in repr(found)


def test_an_unset_variable_is_reported_and_the_kind_is_registered():
    settings = parse_settings(CONFIG, path=Path("x.toml"), env={})
    assert settings.missing_secrets() == [
        ("channels.teams", "environment variable TEAMS_HOOK is not set")]
    assert CHANNELS["teams"] is TeamsChannel


# ------------------------------------------------------------------ a real HTTP server


PATH = "/workflows/abc/triggers/manual/paths/invoke"


def real_channel(url: str, *, timeout: float = 5.0, **http) -> TeamsChannel:
    settings = ChannelSettings(name="team-teams", kind="teams", timeout_seconds=timeout,
                               options=TeamsOptions(webhook_url_env="HOOK",
                                                    webhook_url=Secret(url, "HOOK")))
    return TeamsChannel(settings, http=HttpSettings(**{"retry_backoff_seconds": 0, **http}),
                        interval=0)


def test_a_real_workflow_endpoint_receives_every_card_byte_for_byte(http_server):
    url = http_server.route(PATH, Route(status=202))
    channel = real_channel(url + "?sig=sekrit")
    payload = channel.compose(with_links(digest(60))).payload
    try:
        channel.send(payload)
    finally:
        channel.close()
    hits = http_server.hits(PATH)
    assert [hit.body for hit in hits] == list(TeamsChannel.outbox_files(payload).values())
    for hit in hits:
        assert len(hit.body) <= TEAMS_MAX_MESSAGE_BYTES
        assert hit.headers["Content-Type"] == "application/json; charset=utf-8"
        assert hit.headers["User-Agent"].startswith("paper-digest/")
        assert hit.json()["attachments"][0]["content"]["type"] == "AdaptiveCard"


def test_a_real_429_then_5xx_then_success(http_server):
    url = http_server.route(PATH, Route(status=429, headers={"Retry-After": "0"}),
                            Route(status=503, body=b"busy"), Route(status=202))
    channel = real_channel(url)
    try:
        channel.send(channel.compose(digest(1)).payload)
    finally:
        channel.close()
    assert len(http_server.hits(PATH)) == 3


def test_a_real_timeout_is_temporary(http_server):
    url = http_server.route(PATH, Route(status=202, delay=2.0))
    channel = real_channel(url + "?sig=sekrit", timeout=0.3, max_retries=0)
    with pytest.raises(DeliveryError, match="did not answer message 1/1 within") as caught:
        channel.send(channel.compose(digest(1)).payload)
    channel.close()
    assert not caught.value.permanent and "sekrit" not in str(caught.value)


def test_a_real_deleted_workflow_is_gone(http_server):
    url = http_server.route(PATH, Route(status=404, body=b'{"error":{"code":"WorkflowNotFound"}}'))
    channel = real_channel(url)
    with pytest.raises(DeliveryError, match="gone") as caught:
        channel.send(channel.compose(digest(1)).payload)
    channel.close()
    assert caught.value.permanent and len(http_server.hits(PATH)) == 1


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
channels = ["teams", "chat"]
[channels.teams]
kind = "teams"
webhook_url_env = "T_TEAMS"
timeout_seconds = 2
[channels.chat]
kind = "slack"
webhook_url_env = "T_SLACK"
timeout_seconds = 2
""")


@pytest.mark.integration
def test_a_failing_workflow_costs_only_its_own_digest(tmp_path, capsys, http_server,
                                                      monkeypatch):
    monkeypatch.setenv("T_TEAMS", http_server.route(PATH, Route(status=410)) + "?sig=sekrit")
    monkeypatch.setenv("T_SLACK", http_server.route("/slack/hook", Route(body=b"ok")))
    config = run_config(tmp_path)
    assert main(["run", "--once", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "lora -> teams:" in out and "failed_permanent: Teams webhook is gone" in out
    assert re.search(r"lora -> chat: \d+ papers, sent", out)
    assert "sekrit" not in out and http_server.hits("/slack/hook")
    # the workflow is recreated under the same variable: nothing is re-sent by itself, but
    # once the URL changes the digest that failed for good goes again
    monkeypatch.setenv("T_TEAMS", http_server.route("/new" + PATH, Route(status=202)))
    assert main(["run", "--once", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    hits = http_server.hits("/new" + PATH)
    assert hits and "LoRA" in json.dumps([hit.json() for hit in hits])


@pytest.mark.integration
def test_the_outbox_holds_the_cards_instead_of_sending_them(tmp_path, capsys, http_server,
                                                            monkeypatch):
    monkeypatch.setenv("T_TEAMS", http_server.route(PATH, Route(status=202)))
    monkeypatch.setenv("T_SLACK", http_server.route("/slack/hook", Route(body=b"ok")))
    outbox = tmp_path / "outbox"
    assert main(["run", "--once", "--config", str(run_config(tmp_path)),
                 "--outbox", str(outbox)]) == 0
    capsys.readouterr()
    written = sorted(outbox.glob("*-lora-teams*.json"))
    assert written and http_server.hits(PATH) == []
    for path in written:
        body = path.read_bytes()
        assert len(body) <= TEAMS_MAX_MESSAGE_BYTES
        assert json.loads(body)["attachments"][0]["contentType"] == CARD_TYPE
