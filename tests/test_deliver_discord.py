"""Discord channel: embeds within Discord's limits, escaping, 429 retry_after, gone hooks,
and runs through the CLI beside a mail channel, against real servers on 127.0.0.1.

Regenerate the golden files after an intended change with UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from conftest import SAMPLES, Route, write_config
from test_render import check_golden, full_digest, full_paper, sample_digest, with_links

from digest.cli import main
from digest.config import ChannelSettings, HttpSettings, Secret, parse_settings
from digest.deliver import CHANNELS
from digest.deliver.base import settings_fingerprint
from digest.deliver.discord import (
    DISCORD_MAX_CONTENT_CHARS,
    DISCORD_MAX_DESCRIPTION_CHARS,
    DISCORD_MAX_EMBED_CHARS,
    DISCORD_MAX_EMBEDS,
    DISCORD_MAX_TITLE_CHARS,
    DISCORD_MAX_USERNAME_CHARS,
    MESSAGE_INTERVAL_SECONDS,
    DiscordChannel,
    DiscordOptions,
    discord_messages,
    discord_text,
    link_url,
    message_body,
)
from digest.errors import ConfigError, DeliveryError
from digest.models import Digest, Match, Paper, Reason
from digest.store import Store
from digest.store.db import unpack_payload

HOOK = "https://discord.com/api/webhooks/1234/sekrit-token"
HOOK_PATH = "/api/webhooks/1234/sekrit-token"
WHEN = sample_digest().created_at
# What Discord's markdown gives a meaning to; the escaping must leave none of them bare.
SPECIAL = set("\\*_~`|>#[]()<")


# ------------------------------------------------------------------ how Discord counts

def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def counted(embed: dict) -> int:
    """An embed's share of a message's 6,000 characters, as Discord's Embed Limits list it."""
    texts = [embed.get("title", ""), embed.get("description", ""),
             embed.get("footer", {}).get("text", ""), embed.get("author", {}).get("name", "")]
    texts += [part for item in embed.get("fields", []) for part in (item["name"], item["value"])]
    return sum(utf16(text) for text in texts)


def assert_within_limits(message: dict) -> None:
    assert message["allowed_mentions"] == {"parse": []}
    assert 0 < utf16(message["content"]) <= DISCORD_MAX_CONTENT_CHARS
    assert 0 < utf16(message["username"]) <= DISCORD_MAX_USERNAME_CHARS
    assert len(message["embeds"]) <= DISCORD_MAX_EMBEDS
    assert sum(counted(embed) for embed in message["embeds"]) <= DISCORD_MAX_EMBED_CHARS
    for embed in message["embeds"]:
        assert utf16(embed.get("title", "")) <= DISCORD_MAX_TITLE_CHARS
        assert 0 < utf16(embed["description"]) <= DISCORD_MAX_DESCRIPTION_CHARS
    text = json.dumps(message, ensure_ascii=False)
    assert "@everyone" not in text and "@here" not in text
    assert not re.search(r"(?<!\\)<[@#]", text)


def bare(text: str) -> str:
    """``text`` without its escapes: what must hold no markdown character at all."""
    return re.sub(r"\\.", "", text)


# ------------------------------------------------------------------ a channel

def settings_for(url: str | None, *, username: str = "paper-digest",
                 timeout: float = 5.0) -> ChannelSettings:
    return ChannelSettings(name="team-discord", kind="discord", timeout_seconds=timeout,
                           options=DiscordOptions(
                               webhook_url_env="HOOK", username=username,
                               webhook_url=Secret(url, "HOOK") if url else None))


def mock_channel(handler, sleeps: list[float] | None = None, *,
                 interval: float = MESSAGE_INTERVAL_SECONDS, **http) -> DiscordChannel:
    sleeps = sleeps if sleeps is not None else []
    return DiscordChannel(settings_for(HOOK),
                          http=HttpSettings(**{"retry_backoff_seconds": 1.0, **http}),
                          transport=httpx.MockTransport(handler), sleep=sleeps.append,
                          interval=interval)


def real_channel(url: str, sleeps: list[float], *, timeout: float = 5.0,
                 **http) -> DiscordChannel:
    return DiscordChannel(settings_for(url, timeout=timeout),
                          http=HttpSettings(**{"retry_backoff_seconds": 0.0, **http}),
                          sleep=sleeps.append)


def simple_digest(count: int) -> Digest:
    matches = tuple(Match(Paper(key=f"arxiv:{i}", title=f"Paper {i}", url="https://a.example/b",
                                abstract="word " * 200), "w", 1.0,
                          (Reason("term", "x", "title", 1.0),)) for i in range(count))
    return Digest("w", "team-discord", matches, WHEN)


def big_digest(count: int = 40) -> Digest:
    """Papers as long as a feed can make them, hostile text, every link, rating links."""
    hostile = "@everyone <@123> [click](https://evil.example) **bold** ||spoiler|| # head "
    papers = [full_paper(
        key=f"arxiv:2611.{i:05d}", arxiv_id=f"2611.{i:05d}",
        url=f"https://arxiv.org/abs/2611.{i:05d}",
        title=f"{hostile}Paper {i} " + "long title words " * 30,
        abstract=("We study sparse mixture-of-experts models under fixed compute. " * 40),
        authors=tuple(f"Author {j} @here" for j in range(300)),
        comment="Accepted at ICML 2026; " + "many pages " * 40,
        summary=("A summary sentence with * and _ marks. " * 20),
        code_url=f"https://github.com/example-lab/project-{i}") for i in range(count)]
    matches = tuple(Match(paper, "efficient-llms", 5.0 - i / 100,
                          tuple(Reason("term", f"term {k}", "abstract", 1.0) for k in range(30)))
                    for i, paper in enumerate(papers))
    return with_links(Digest("efficient-llms", "team-discord", matches, WHEN,
                             notes=("arxiv-cs could not be read (HTTP 503). " * 100,),
                             matched=count + 20, more_url="https://papers.example.org/more/1"))


# ------------------------------------------------------------------ what a digest shows

def test_payloads_match_golden_files():
    check_golden("discord.json", json.dumps(discord_messages(sample_digest()), indent=2,
                                            ensure_ascii=False) + "\n")
    full = replace(full_digest(), notes=("arxiv-cs could not be read in the last 2 runs "
                                         "(HTTP 503 <x>).",),
                   more_url="https://papers.example.org/digest/more/7")
    check_golden("discord_full.json", json.dumps(discord_messages(full), indent=2,
                                                 ensure_ascii=False) + "\n")


def test_each_paper_is_an_embed_with_its_title_linked_and_its_links():
    [message] = discord_messages(full_digest())
    first, second, more = message["embeds"]
    assert first["title"] == "1. LoRA-Flow: Dynamic Low-Rank Adapters"
    assert first["url"] == "https://arxiv.org/abs/2611.04001"
    lines = first["description"].split("\n")
    assert lines[0].startswith("Mei Lin, Sinong Wang · cs.CL, cs.LG")
    assert lines[1] == ("*Summary \\(Hugging Face AI\\):* Adaptive ranks match full "
                        "fine-tuning with 0.4% of the weights.")
    assert lines[2].startswith("[PDF](https://arxiv.org/pdf/2611.04001) · ")
    assert "[Code \\(★ 1,284\\)](https://github.com/example-lab/lora-flow)" in lines[2]
    assert lines[3] == 'Why: "LoRA" in title; author Sinong Wang'
    assert re.fullmatch(r"\[More like this\]\(https://papers\.example\.org/digest/r/\S+\) · "
                        r"\[Not for me\]\(\S+\) · \[Save\]\(\S+\)", lines[4])
    assert "[Abstract]" not in first["description"]  # the title links it already
    assert more == {"description": "13 more matched; they did not fit here and wait for the "
                                   "next digest."}
    assert second["title"].startswith("2. Scaling ")


def test_a_digest_without_rating_links_shows_none():
    [message] = discord_messages(sample_digest())
    for embed in message["embeds"]:
        assert "More like this" not in embed["description"]


def test_a_heartbeat_is_one_short_message_without_embeds():
    digest = Digest("efficient-llms", "team-discord", (), WHEN,
                    heartbeat="nothing matched today (812 new papers read)",
                    notes=("arxiv-cs could not be read.",))
    [message] = discord_messages(digest, username="Papers")
    assert message["embeds"] == [] and message["username"] == "Papers"
    assert message["content"] == ("efficient-llms · Fri 20 Nov: nothing matched today \\(812 "
                                  "new papers read\\).\nNote: arxiv-cs could not be read.")
    assert_within_limits(message)


# ------------------------------------------------------------------ escaping

@pytest.mark.parametrize(("text", "escaped"), [
    pytest.param("*bold* and _italic_", "\\*bold\\* and \\_italic\\_", id="emphasis"),
    pytest.param("~~struck~~ `code`", "\\~\\~struck\\~\\~ \\`code\\`", id="strike-code"),
    pytest.param("||spoiler||", "\\|\\|spoiler\\|\\|", id="spoiler"),
    pytest.param("[click](https://evil.example)", "\\[click\\]\\(https://evil.example\\)",
                 id="masked-link"),
    pytest.param("# Heading", "\\# Heading", id="heading"),
    pytest.param("> quoted", "\\> quoted", id="quote"),
    pytest.param("- item", "\\- item", id="list"),
    pytest.param("1. first", "1\\. first", id="numbered-list"),
    pytest.param("a \\ b", "a \\\\ b", id="backslash"),
    pytest.param("a\n# b\n\n> c", "a \\# b \\> c", id="newlines-flattened"),
    pytest.param("ping @everyone and @here", "ping @\u200beveryone and @\u200bhere",
                 id="broadcasts"),
    pytest.param("@EVERYONE", "@\u200bEVERYONE", id="broadcast-any-case"),
    pytest.param("<@123> <@&456> <#789> <t:1700000000>",
                 "\\<@123\\> \\<@&456\\> \\<\\#789\\> \\<t:1700000000\\>",
                 id="mentions-and-tags"),
    pytest.param("plain text, 3.5% better", "plain text, 3.5% better", id="plain"),
])
def test_discord_text_escapes_markdown_and_mentions(text, escaped):
    assert discord_text(text) == escaped


@pytest.mark.parametrize("title", [
    "[Free Nitro](https://evil.example) **now**",
    "@everyone look <@123> <#42>",
    "Paper with a \\ backslash at the end \\",
    "# Heading\n> quote\n- list",
    "x" * 1000 + "*",
    "(" * 200 + "]" * 200,
])
def test_a_title_can_neither_forge_a_link_nor_format(title):
    paper = Paper(key="guid:x", title=title, url="https://arxiv.org/abs/1", abstract=title,
                  authors=(title,))
    [message] = discord_messages(Digest("w", "c", (Match(paper, "w", 1.0, ()),), WHEN))
    embed = message["embeds"][0]
    assert utf16(embed["title"]) <= DISCORD_MAX_TITLE_CHARS
    assert not SPECIAL & set(bare(embed["title"]))
    for line in embed["description"].split("\n"):
        assert not SPECIAL & set(bare(line))
    assert_within_limits(message)


@pytest.mark.parametrize(("url", "expected"), [
    pytest.param("https://github.com/a/b) [evil](https://evil.example",
                 "https://github.com/a/b%29%20%5Bevil%5D%28https://evil.example", id="paren"),
    pytest.param("https://example.org/a>b<c|d\\e", "https://example.org/a%3Eb%3Cc%7Cd%5Ce",
                 id="angles-pipe-backslash"),
    pytest.param("https://example.org/caf\u00e9?q=1#top", "https://example.org/caf%C3%A9?q=1#top",
                 id="unicode"),
    pytest.param("https://example.org/already%20quoted", "https://example.org/already%20quoted",
                 id="kept"),
    pytest.param("javascript:alert(1)", "", id="javascript"),
    pytest.param("data:text/html,<b>", "", id="data"),
    pytest.param("https://", "", id="no-host"),
    pytest.param("https://example.org/" + "a" * 600, "", id="too-long"),
])
def test_link_urls_cannot_break_out_of_a_link(url, expected):
    assert link_url(url) == expected


def test_a_feed_url_cannot_end_the_link_it_sits_in():
    evil = "https://github.com/a/b) [Free Nitro](https://evil.example"
    digest = Digest("w", "c", (Match(full_paper(code_url=evil, project_url="javascript:x()"),
                                     "w", 1.0, ()),), WHEN)
    [message] = discord_messages(digest)
    description = message["embeds"][0]["description"]
    assert "](https://evil.example" not in description and "javascript:" not in description
    assert "(https://github.com/a/b%29%20%5BFree%20Nitro%5D%28https://evil.example)" in description


def test_links_of_huge_urls_give_way_so_the_description_fits():
    long_url = "https://example.org/" + "a" * 480
    paper = full_paper(code_url=long_url + "/code", project_url=long_url + "/project",
                       hf_url=long_url + "/hf", title="t " * 500, abstract="b " * 5000)
    digest = with_links(Digest("w", "c", (Match(paper, "w", 1.0, ()),), WHEN))
    [message] = discord_messages(digest)
    assert_within_limits(message)
    assert "[Save](" in message["embeds"][0]["description"]


# ------------------------------------------------------------------ Discord's limits

def test_a_big_digest_is_split_into_messages_within_every_limit():
    digest = big_digest(40)
    messages = discord_messages(digest)
    assert len(messages) > 4
    for message in messages:
        assert_within_limits(message)
        for embed in message["embeds"]:
            assert not SPECIAL & set(bare(embed.get("title", "")))
    embeds = [embed for message in messages for embed in message["embeds"]]
    titles = [embed["title"] for embed in embeds if "title" in embed]
    assert [int(t.split(".")[0]) for t in titles] == list(range(1, 41))  # each once, in order
    assert all("[Save](https://papers.example.org/digest/r/" in e["description"]
               for e in embeds if "title" in e)
    assert embeds[-1] == {"description": "[20 more matched: read them on the web.]"
                                         "(https://papers.example.org/more/1)"}
    total = len(messages)
    assert messages[0]["content"].startswith(f"**efficient-llms: 40 new papers, Fri 20 Nov "
                                             f"\\(1/{total}\\)**\nNote: arxiv-cs could not")
    assert "Note:" not in messages[1]["content"]
    assert messages[-1]["content"].endswith(f"\\({total}/{total}\\)**")


def test_embeds_fill_a_message_up_to_ten():
    messages = discord_messages(simple_digest(25))
    assert [len(m["embeds"]) for m in messages] == [10, 10, 5]
    for message in messages:
        assert_within_limits(message)


REAL_API = "arxiv_api_query_cs.AI_OR_cs.LG_50entries_2026-07-13.atom.xml"
REAL_HF = "hf_daily_papers_2026-06-12_30items.json"


@pytest.mark.real_fixtures
def test_real_papers_fit_discords_limits(real):
    from digest.sources import arxiv_api, hf_daily

    papers = arxiv_api.parse(real(REAL_API))[0][:40] + hf_daily.parse(real(REAL_HF))
    matches = tuple(Match(p, "w", 5.0, (Reason("term", "language model", "abstract", 1.0),))
                    for p in papers)
    messages = discord_messages(with_links(Digest("w", "c", matches, WHEN)))
    for message in messages:
        assert_within_limits(message)
    shown = [e for m in messages for e in m["embeds"]]
    assert len(shown) == len(papers) == 70
    assert sum(1 for e in shown if "[Code" in e["description"]) == 16


# ------------------------------------------------------------------ sending (in-process)

def test_posts_each_message_paced_with_wait_and_the_outbox_bytes():
    requests: list[httpx.Request] = []

    def handler(request):
        requests.append(request)
        return httpx.Response(204)

    sleeps: list[float] = []
    # A long interval, so that no pause of this machine can make a wait unnecessary.
    channel = mock_channel(handler, sleeps, interval=30.0)
    payload = channel.compose(simple_digest(25)).payload
    parts: list[int] = []
    channel.send(payload, on_part_sent=parts.append)
    assert parts == [1, 2, 3] and len(requests) == 3
    assert all(str(r.url) == HOOK + "?wait=true" for r in requests)
    assert all(r.headers["Content-Type"] == "application/json" for r in requests)
    files = DiscordChannel.outbox_files(payload)
    assert list(files) == [".1.json", ".2.json", ".3.json"]
    assert [r.content for r in requests] == list(files.values())
    assert len(sleeps) == 2 and all(0 < s <= 30.0 for s in sleeps)


def test_a_digest_of_one_message_is_one_outbox_file():
    payload = mock_channel(lambda r: httpx.Response(204)).compose(sample_digest()).payload
    files = DiscordChannel.outbox_files(payload)
    assert list(files) == [".json"]
    assert json.loads(files[".json"]) == payload["messages"][0]


def test_a_query_of_the_users_own_is_kept():
    seen: list[str] = []

    def handler(request):
        seen.append(str(request.url))
        return httpx.Response(200, json={"id": "1"})

    channel = DiscordChannel(settings_for(HOOK + "?thread_id=42"), http=HttpSettings(),
                             transport=httpx.MockTransport(handler), sleep=lambda s: None)
    channel.send(channel.compose(simple_digest(1)).payload)
    assert seen == [HOOK + "?thread_id=42&wait=true"]


def test_resuming_skips_the_parts_already_accepted():
    bodies: list[bytes] = []

    def handler(request):
        bodies.append(request.content)
        return httpx.Response(204)

    channel = mock_channel(handler)
    payload = channel.compose(simple_digest(25)).payload
    channel.send(payload, parts_sent=2)
    assert bodies == [message_body(payload["messages"][2])]


def test_the_username_goes_with_every_message():
    channel = DiscordChannel(settings_for(HOOK, username="ML papers"), http=HttpSettings())
    payload = channel.compose(simple_digest(25)).payload
    assert {m["username"] for m in payload["messages"]} == {"ML papers"}


def test_a_missing_webhook_secret_is_reported():
    channel = DiscordChannel(settings_for(None), http=HttpSettings())
    with pytest.raises(DeliveryError, match="HOOK is not set"):
        channel.send(channel.compose(simple_digest(1)).payload)


@pytest.mark.parametrize("status", [404, 400, 500])
def test_an_error_answer_that_quotes_the_hook_never_shows_it(status):
    def handler(request):
        return httpx.Response(status, text=f"no hook at {request.url} (see docs)")

    channel = mock_channel(handler, max_retries=0)
    with pytest.raises(DeliveryError) as caught:
        channel.send(channel.compose(simple_digest(1)).payload)
    assert "sekrit" not in str(caught.value) and "$HOOK" in str(caught.value)


# ------------------------------------------------------------------ sending (a real server)

def test_429_waits_for_the_bodys_retry_after_then_succeeds(http_server):
    url = http_server.route(HOOK_PATH, Route(
        429, body=b'{"message": "You are being rate limited.", "retry_after": 1.234, '
                  b'"global": false}',
        headers={"Content-Type": "application/json", "Retry-After": "2"}),
        Route(204))
    sleeps: list[float] = []
    channel = real_channel(url, sleeps)
    payload = channel.compose(simple_digest(1)).payload
    channel.send(payload)
    hits = http_server.hits(HOOK_PATH)
    assert len(hits) == 2 and hits[0].body == hits[1].body == message_body(payload["messages"][0])
    assert hits[0].path == HOOK_PATH + "?wait=true"
    assert 1.234 in sleeps and 2.0 not in sleeps  # the body's exact wait, not the header's


def test_429_without_a_json_body_waits_for_the_header(http_server):
    url = http_server.route(HOOK_PATH, Route(429, body=b"<html>rate limited</html>",
                                             headers={"Retry-After": "3"}),
                            Route(200, body=b'{"id": "1"}'))
    sleeps: list[float] = []
    channel = real_channel(url, sleeps)
    channel.send(channel.compose(simple_digest(1)).payload)
    assert 3.0 in sleeps and len(http_server.hits(HOOK_PATH)) == 2


def test_a_wait_longer_than_allowed_leaves_the_digest_for_the_next_run(http_server):
    url = http_server.route(HOOK_PATH, Route(429, body=b'{"retry_after": 3600.5}'))
    channel = real_channel(url, [], max_retry_after_seconds=60)
    with pytest.raises(DeliveryError, match="giving up until next run") as caught:
        channel.send(channel.compose(simple_digest(1)).payload)
    assert not caught.value.permanent and len(http_server.hits(HOOK_PATH)) == 1


def test_a_server_error_is_retried_then_succeeds(http_server):
    url = http_server.route(HOOK_PATH, Route(502, body=b"bad gateway"), Route(204))
    sleeps: list[float] = []
    channel = real_channel(url, sleeps)
    channel.send(channel.compose(simple_digest(1)).payload)
    assert len(http_server.hits(HOOK_PATH)) == 2


def test_a_timeout_is_temporary_and_keeps_the_url_secret(http_server):
    url = http_server.route(HOOK_PATH, Route(204, delay=1.0))
    channel = real_channel(url, [], timeout=0.2, max_retries=0)
    with pytest.raises(DeliveryError, match="did not answer message 1/1 within") as caught:
        channel.send(channel.compose(simple_digest(1)).payload)
    assert not caught.value.permanent and "sekrit" not in str(caught.value)


@pytest.mark.parametrize("status", [404, 410])
def test_a_deleted_hook_is_permanent_and_not_retried(http_server, status):
    url = http_server.route(HOOK_PATH, Route(status, body=b'{"message": "Unknown Webhook", '
                                                          b'"code": 10015}'))
    channel = real_channel(url, [])
    with pytest.raises(DeliveryError, match="Discord webhook is gone") as caught:
        channel.send(channel.compose(simple_digest(1)).payload)
    assert caught.value.permanent and len(http_server.hits(HOOK_PATH)) == 1
    assert "Unknown Webhook" in str(caught.value) and "sekrit" not in str(caught.value)


def test_a_rejected_message_is_permanent(http_server):
    url = http_server.route(HOOK_PATH, Route(400, body=b'{"embeds": ["0"], "message": '
                                                       b'"Invalid Form Body"}'))
    channel = real_channel(url, [])
    with pytest.raises(DeliveryError, match="Discord rejected message 1/1") as caught:
        channel.send(channel.compose(simple_digest(1)).payload)
    assert caught.value.permanent and len(http_server.hits(HOOK_PATH)) == 1


@pytest.mark.parametrize(("status", "permanent"), [(302, False), (307, False), (301, True)])
def test_a_redirect_is_not_followed(http_server, status, permanent):
    http_server.route("/elsewhere", Route(204))
    url = http_server.route(HOOK_PATH, Route(status, headers={
        "Location": http_server.url + "/elsewhere"}))
    channel = real_channel(url, [], max_retries=0)
    with pytest.raises(DeliveryError, match="redirect") as caught:
        channel.send(channel.compose(simple_digest(1)).payload)
    assert caught.value.permanent is permanent
    assert http_server.hits("/elsewhere") == [] and len(http_server.hits(HOOK_PATH)) == 1


# ------------------------------------------------------------------ options

def config_text(options: str) -> str:
    return f"""
version = 1
[[sources]]
name = "arxiv"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[watchlists]]
name = "w"
keywords = ["LoRA"]
channels = ["chat"]
[channels.chat]
kind = "discord"
webhook_url_env = "DISCORD_HOOK"
{options}
"""


def test_the_kind_is_registered_with_its_options():
    assert CHANNELS["discord"] is DiscordChannel
    settings = parse_settings(config_text('username = "  ML papers "'), path=Path("x.toml"),
                              env={"DISCORD_HOOK": HOOK})
    options = settings.channels["chat"].options
    assert isinstance(options, DiscordOptions) and options.username == "ML papers"
    assert options.webhook_url == Secret(HOOK, "DISCORD_HOOK")
    assert settings.missing_secrets() == []
    default = parse_settings(config_text(""), path=Path("x.toml"), env={})
    assert default.channels["chat"].options.username == "paper-digest"
    assert default.missing_secrets() == [("channels.chat",
                                          "environment variable DISCORD_HOOK is not set")]


@pytest.mark.parametrize(("username", "reason"), [
    ('""', "must not be empty"),
    ('"' + "n" * 81 + '"', "must be at most 80 characters"),
    ('"Discord digest"', "Discord refuses webhook names containing 'discord'"),
    ('"my CLYDE bot"', "Discord refuses webhook names containing 'clyde'"),
    ('"everyone"', "Discord refuses the webhook name 'everyone'"),
    ("3", "must be a string, got an integer"),
])
def test_a_name_discord_would_refuse_is_a_config_problem(username, reason):
    with pytest.raises(ConfigError) as caught:
        parse_settings(config_text(f"username = {username}"), path=Path("x.toml"), env={})
    assert ("channels.chat.username", reason) in caught.value.problems


@pytest.mark.parametrize(("url", "problem"), [
    pytest.param(HOOK, None, id="https"),
    pytest.param("http://127.0.0.1:8080/api/webhooks/1/t", None, id="loopback-http"),
    pytest.param("http://localhost/api/webhooks/1/t", None, id="localhost-http"),
    pytest.param("http://discord.com/api/webhooks/1/sekrit", "must be an https:// URL",
                 id="plain-http"),
    pytest.param("discord.com/api/webhooks/1/sekrit", "is not a valid webhook URL",
                 id="no-scheme"),
    pytest.param("https://discord.com/api/webhooks/1/sekrit/slack", "ends in /slack",
                 id="slack-endpoint"),
    pytest.param("https://discord.com/api/webhooks/1/sekrit/github/", "ends in /slack",
                 id="github-endpoint"),
])
def test_the_hook_url_is_checked_without_being_shown(url, problem):
    settings = parse_settings(config_text(""), path=Path("x.toml"), env={"DISCORD_HOOK": url})
    problems = settings.missing_secrets()
    if problem is None:
        assert problems == []
    else:
        [(where, reason)] = problems
        assert where == "channels.chat" and reason.startswith("$DISCORD_HOOK ")
        assert problem in reason and "sekrit" not in reason


def test_a_new_hook_retries_a_failed_digest_and_a_new_name_does_not():
    base = settings_for(HOOK)
    renamed = settings_for(HOOK, username="Other name")
    moved = settings_for("https://discord.com/api/webhooks/99/other")
    assert settings_fingerprint(base) == settings_fingerprint(renamed)
    assert settings_fingerprint(base) != settings_fingerprint(moved)


# ------------------------------------------------------------------ through the CLI

def cli_config(tmp_path: Path, smtp_port: int) -> Path:
    return write_config(tmp_path, f"""
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
retry_backoff_seconds = 0
max_retries = 1
timeout_seconds = 2
[[sources]]
name = "local-copy"
kind = "arxiv_rss"
categories = ["cs.CL"]
url = "{SAMPLES / 'arxiv_rss_cs.CL+cs.LG.xml'}"
[[watchlists]]
name = "lora"
keywords = ["LoRA"]
channels = ["chat", "mail"]
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from = "digest@example.org"
to = ["team@example.org"]
timeout_seconds = 2
[channels.chat]
kind = "discord"
webhook_url_env = "T_DISCORD_HOOK"
username = "Paper digest"
timeout_seconds = 2
""")


@pytest.mark.integration
def test_a_run_posts_the_digest_and_nothing_twice(tmp_path, capsys, monkeypatch, http_server,
                                                  smtp_server):
    inbox, port = smtp_server
    monkeypatch.setenv("T_DISCORD_HOOK", http_server.route(HOOK_PATH, Route(204)))
    config = cli_config(tmp_path, port)
    assert main(["run", "--once", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "lora -> chat: 3 papers, sent" in out and "lora -> mail: 3 papers, sent" in out
    posts = http_server.hits(HOOK_PATH)
    assert posts and all(p.path == HOOK_PATH + "?wait=true" for p in posts)
    for post in posts:
        message = post.json()
        assert_within_limits(message)
        assert message["username"] == "Paper digest"
    assert "LoRA-Flow" in json.dumps([p.json() for p in posts])
    assert len(inbox.messages) == 1
    assert main(["run", "--once", "--config", str(config)]) == 0
    capsys.readouterr()
    assert len(http_server.hits(HOOK_PATH)) == len(posts)


@pytest.mark.integration
def test_a_deleted_hook_fails_for_good_while_mail_still_goes(tmp_path, capsys, monkeypatch,
                                                             http_server, smtp_server):
    inbox, port = smtp_server
    monkeypatch.setenv("T_DISCORD_HOOK", http_server.route(HOOK_PATH, Route(
        404, body=b'{"message": "Unknown Webhook", "code": 10015}')))
    config = cli_config(tmp_path, port)
    assert main(["run", "--once", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert ("lora -> chat: 3 papers, failed_permanent: Discord webhook is gone (HTTP 404 "
            '{"message": "Unknown Webhook", "code": 10015}); create a new hook and set '
            "$T_DISCORD_HOOK") in out
    assert "lora -> mail: 3 papers, sent" in out and len(inbox.messages) == 1
    assert len(http_server.hits(HOOK_PATH)) == 1 and "sekrit" not in out


@pytest.mark.integration
def test_the_outbox_holds_the_exact_bodies_the_hook_receives(tmp_path, capsys, monkeypatch,
                                                             http_server, smtp_server):
    _, port = smtp_server
    monkeypatch.delenv("T_DISCORD_HOOK", raising=False)  # an outbox run needs no secret
    config = cli_config(tmp_path, port)
    outbox = tmp_path / "outbox"
    assert main(["run", "--once", "--config", str(config), "--outbox", str(outbox)]) == 0
    capsys.readouterr()
    written = sorted(outbox.glob("*-lora-chat*.json"))
    assert written and http_server.requests == []
    with Store.open(tmp_path / "digest.db") as store:
        [row] = store.db.execute(
            "SELECT payload FROM digests WHERE channel = 'chat'").fetchall()
    payload = unpack_payload(row[0])
    assert payload["kind"] == "discord"
    # the recorded payload, sent for real, arrives as exactly the bytes in the outbox
    url = http_server.route(HOOK_PATH, Route(204))
    real_channel(url, []).send(payload)
    assert [hit.body for hit in http_server.hits(HOOK_PATH)] == [
        path.read_bytes() for path in written]
    for path in written:
        assert_within_limits(json.loads(path.read_bytes()))
