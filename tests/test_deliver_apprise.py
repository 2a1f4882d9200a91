"""Apprise channel: messages within 4,000 characters, split between papers, hostile text
kept plain, URLs checked by position without being shown, progress kept per URL, and real
deliveries through Apprise's json:// and form:// services to a server on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from conftest import SAMPLES, Route, free_port, write_config
from test_render import check_golden, full_digest, full_paper, sample_digest, with_links

from digest.cli import main
from digest.config import ChannelSettings, Secret, parse_settings
from digest.deliver import CHANNELS
from digest.deliver.apprise_channel import (
    APPRISE_MAX_CHARS,
    MISSING_EXTRA,
    AppriseChannel,
    AppriseOptions,
    apprise_messages,
    link_url,
    load_apprise,
    markdown_text,
    mask,
    plain_text,
    split_urls,
    units,
)
from digest.deliver.base import settings_fingerprint
from digest.errors import DeliveryError
from digest.models import Digest, Match, Reason
from digest.store import Store

needs_apprise = pytest.mark.skipif(load_apprise() is None,
                                   reason="the apprise extra is not installed")
TOKEN = "sekrit-token-4711"
HOOK = f"/hook/{TOKEN}"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Apprise posts through requests, which would follow a proxy from the environment."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                 "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def json_url(http_server, path: str = HOOK, *responses: Route, query: str = "") -> str:
    http_server.route(path, *(responses or (Route(body=b"ok"),)))
    port = http_server.httpd.server_address[1]
    return f"json://127.0.0.1:{port}{path}{query}"


def channel_for(urls: str, *, fmt: str = "markdown", timeout: float = 5.0) -> AppriseChannel:
    return AppriseChannel(ChannelSettings(
        name="alerts", kind="apprise", timeout_seconds=timeout,
        options=AppriseOptions(urls_env="T_APPRISE", format=fmt,
                               urls=Secret(urls, "T_APPRISE"))))


def big_digest(count: int) -> Digest:
    """``count`` papers with every field at its longest real size, and rating links."""
    base = sample_digest()
    matches = tuple(Match(full_paper(
        key=f"arxiv:2611.{i:05d}", arxiv_id=f"2611.{i:05d}", title=f"Paper {i}: " + "Long " * 50,
        abstract="An abstract that runs on and on. " * 40, summary="A summary. " * 40,
        authors=tuple(f"Author Number{j}" for j in range(30))), "efficient-llms", 1.0,
        (Reason("term", "LoRA", "title", 1.0),)) for i in range(1, count + 1))
    return with_links(replace(base, matches=matches, matched=count + 7,
                              notes=("Source arxiv failed: HTTP 503.",),
                              more_url="https://papers.example.org/digest/more/12"))


def papers_in(body: str) -> list[int]:
    return [int(m) for m in re.findall(r"^\*\*(\d+)\. ", body, flags=re.MULTILINE)]


# ------------------------------------------------------------------ composing


def test_payloads_match_golden_files():
    for name, digest, fmt in (("apprise.json", sample_digest(), "markdown"),
                              ("apprise_full.json", full_digest(), "markdown"),
                              ("apprise_text.json", full_digest(), "text")):
        payload = channel_for("", fmt=fmt).compose(digest).payload
        check_golden(name, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def test_each_paper_shows_its_title_linked_why_and_every_link():
    [message] = apprise_messages(full_digest())
    assert message["title"] == "efficient-llms: 2 new papers, Fri 20 Nov"
    first = message["body"].split("\n\n")[0].splitlines()
    assert first[0] == ("**1. [LoRA-Flow: Dynamic Low-Rank Adapters]"
                        "(https://arxiv.org/abs/2611.04001)**")
    assert first[2] == ("_Summary (Hugging Face AI):_ Adaptive ranks match full fine-tuning "
                        "with 0.4% of the weights.")
    assert "[PDF](https://arxiv.org/pdf/2611.04001) · [HTML]" in first[4]
    assert first[5] == 'Why: "LoRA" in title; author Sinong Wang'
    assert first[6].startswith("[More like this](https://papers.example.org/digest/r/")
    assert " · [Not for me](" in first[6] and " · [Save](" in first[6]
    assert message["body"].endswith(
        "13 more matched; they did not fit here and wait for the next digest.")


def test_without_rating_links_there_is_no_rating_row():
    [message] = apprise_messages(sample_digest())
    assert "More like this" not in message["body"]


def test_text_format_writes_urls_out_and_no_markdown():
    [message] = apprise_messages(full_digest(), "text")
    lines = message["body"].splitlines()
    assert lines[:2] == ["1. LoRA-Flow: Dynamic Low-Rank Adapters",
                         "https://arxiv.org/abs/2611.04001"]
    assert "PDF: https://arxiv.org/pdf/2611.04001" in lines
    assert any(line.startswith("Save: https://papers.example.org/digest/r/") for line in lines)
    assert "**" not in message["body"] and "](" not in message["body"]


def test_a_heartbeat_is_one_short_message():
    quiet = replace(sample_digest(), matches=(), notes=("Source hf failed: HTTP 503.",),
                    heartbeat="nothing matched today (812 new papers read)")
    [message] = apprise_messages(quiet)
    assert message["title"] == "efficient-llms: nothing matched today (812 new papers read)"
    assert message["body"].splitlines() == [
        "Fri 20 Nov: nothing matched today (812 new papers read).",
        "Source hf failed: HTTP 503."]


@pytest.mark.parametrize("text, shown", [
    ("A *bold* _claim_ about `code`", r"A \*bold\* \_claim\_ about \`code\`"),
    ("[click](https://evil.example)", r"\[click\](https://evil.example)"),
    ("<script>alert(1)</script>", "\uff1cscript\uff1ealert(1)\uff1c/script\uff1e"),
    ("ping @everyone and <@U123>", "ping @\u2060everyone and \uff1c@\u2060U123\uff1e"),
    ("# Not a heading", r"\# Not a heading"),
    ("- not a list", r"\- not a list"),
    ("1. not a list", r"1\. not a list"),
    ("a|b ~~gone~~ back\\slash", r"a\|b \~\~gone\~\~ back\\slash"),
    ("two\nlines", "two lines"),
])
def test_markdown_text_shows_feed_text_as_written(text, shown):
    assert markdown_text(text) == shown


def test_plain_text_can_neither_link_nor_mention():
    assert plain_text("[x](https://evil.example) @here <b>") == (
        "[x] (https://evil.example) @\u2060here \uff1cb\uff1e")


@pytest.mark.parametrize("url, expected", [
    ("https://arxiv.org/abs/2611.04001", "https://arxiv.org/abs/2611.04001"),
    ("https://x.example/a)(b c", "https://x.example/a%29%28b%20c"),
    ("https://x.example/@everyone", "https://x.example/%40everyone"),
    ("javascript:alert(1)", ""),
    ("https://x.example/" + "a" * 1000, ""),
])
def test_link_urls_cannot_break_out_of_a_link(url, expected):
    assert link_url(url) == expected


@pytest.mark.parametrize("fmt", ["markdown", "text"])
def test_a_big_digest_is_split_between_papers_within_the_limit(fmt):
    digest = big_digest(60)
    messages = apprise_messages(digest, fmt)
    assert len(messages) > 1
    for number, message in enumerate(messages, start=1):
        assert message["title"] == f"efficient-llms: 60 new papers, Fri 20 Nov " \
                                   f"({number}/{len(messages)})"
        assert units(f"# {message['title']}\n{message['body']}") <= APPRISE_MAX_CHARS
    bodies = [m["body"] for m in messages]
    if fmt == "markdown":
        assert [n for body in bodies for n in papers_in(body)] == list(range(1, 61))
        # every paper is whole: its title, reasons and rating links in one message
        for body in bodies:
            for block in body.split("\n\n"):
                if block.startswith("**"):
                    assert "\nWhy: " in block and "[Save](" in block
    assert bodies[0].startswith("Source arxiv failed: HTTP 503.")
    assert bodies[-1].endswith("(https://papers.example.org/digest/more/12)" if fmt == "markdown"
                               else "https://papers.example.org/digest/more/12")


def test_a_paper_too_big_for_a_message_gives_up_its_abstract_first():
    # three links just under the length that drops a link, and every text at its longest
    huge = full_paper(abstract="word " * 2000, summary="gist " * 2000,
                      code_url="https://github.com/x/" + "c" * 900,
                      project_url="https://example.org/" + "p" * 900,
                      hf_url="https://huggingface.co/" + "h" * 900)
    digest = with_links(replace(sample_digest(), matches=(
        Match(huge, "efficient-llms", 1.0, (Reason("term", "LoRA", "title", 1.0),)),)))
    [message] = apprise_messages(digest)
    body = message["body"]
    assert units(f"# {message['title']}\n{body}") <= APPRISE_MAX_CHARS
    assert body.startswith("**1. [LoRA-Flow") and "[Save](" in body and "Why: " in body
    assert "word word" not in body  # the abstract went first
    assert "gist gist" in body and "c" * 900 in body and "p" * 900 in body


# ------------------------------------------------------------------ options and check


def test_the_kind_is_registered_with_its_options():
    assert CHANNELS["apprise"] is AppriseChannel
    settings = parse_settings(f"""version = 1
[[sources]]
name = "local-copy"
kind = "arxiv_rss"
categories = ["cs.CL"]
url = "{SAMPLES / 'arxiv_rss_cs.CL+cs.LG.xml'}"
[[watchlists]]
name = "lora"
keywords = ["LoRA"]
channels = ["alerts"]
[channels.alerts]
kind = "apprise"
urls_env = "T_APPRISE"
format = "text"
""", path=Path("x.toml"), env={"T_APPRISE": "ntfy://papers"})
    options = settings.channels["alerts"].options
    assert options == AppriseOptions(urls_env="T_APPRISE", format="text",
                                     urls=Secret("ntfy://papers", "T_APPRISE"))
    assert settings.channels["alerts"].secret_envs() == {
        "T_APPRISE": Secret("ntfy://papers", "T_APPRISE")}


def test_a_new_url_retries_a_failed_digest_and_a_new_format_does_not():
    def fingerprint(urls: str, fmt: str) -> str:
        return settings_fingerprint(channel_for(urls, fmt=fmt).settings)

    assert fingerprint("ntfy://a", "markdown") != fingerprint("ntfy://b", "markdown")
    assert fingerprint("ntfy://a", "markdown") == fingerprint("ntfy://a", "text")


@pytest.mark.parametrize("value, urls", [
    ("ntfy://a", ("ntfy://a",)),
    ("  ntfy://a   tgram://1:b/2 ", ("ntfy://a", "tgram://1:b/2")),
    ("ntfy://a,tgram://1:b/2, mmost://h/t", ("ntfy://a", "tgram://1:b/2", "mmost://h/t")),
    ("mailto://u:p@x.org?to=a@x.org,b@x.org ntfy://a",
     ("mailto://u:p@x.org?to=a@x.org,b@x.org", "ntfy://a")),
    (" , ", ()),
])
def test_urls_are_split_on_spaces_and_commas(value, urls):
    assert split_urls(value) == urls


@needs_apprise
@pytest.mark.parametrize("value, problem", [
    ("ntfy://papers tgram://123456789:AAE-sekrit_token-value/12345 mmost://chat.example.org/"
     "sekrit", None),
    ("ntfy://papers foo://sekrit-value",
     "$T_APPRISE: URL 2 of 2 starts with foo://, a service Apprise does not know"),
    ("sekrit-value", "$T_APPRISE: URL 1 of 1 is not a URL"),
    ("ntfy://papers json://", "$T_APPRISE: URL 2 of 2 (json://) is not one Apprise can use: "
                              "a token or target is missing or malformed"),
    (" , ", "$T_APPRISE holds no Apprise URL"),
])
def test_each_url_is_checked_by_position_without_being_shown(value, problem):
    problems = channel_for(value).options.secret_problems()
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith(problem)
        assert "sekrit" not in problems[0]


def test_without_the_extra_check_names_it_and_composing_still_works(monkeypatch):
    monkeypatch.setitem(sys.modules, "apprise", None)  # as if it were not installed
    channel = channel_for("ntfy://papers")
    assert channel.options.secret_problems() == [MISSING_EXTRA]
    payload = channel.compose(sample_digest()).payload  # --outbox needs no apprise
    assert AppriseChannel.outbox_files(payload)[".json"]
    with pytest.raises(DeliveryError, match=re.escape(MISSING_EXTRA)) as caught:
        channel.send(payload)
    assert not caught.value.permanent  # installing it changes no setting: try again then


def test_masking_hides_urls_and_their_tokens():
    urls = ("tgram://123456789:AAE-sekrit/12345", "json://127.0.0.1:80/hook/sekrit%2Fx")
    text = mask("failed at tgram://123456789:AAE-sekrit/12345, bot 123456789, "
                "path /hook/sekrit/x and AAE-sekrit", urls)
    assert "sekrit" not in text and "123456789" not in text


# ------------------------------------------------------------------ sending for real


@needs_apprise
@pytest.mark.integration
def test_every_message_arrives_with_its_title_and_body(http_server):
    url = json_url(http_server)
    channel = channel_for(url)
    payload = channel.compose(big_digest(12)).payload
    parts: list[int] = []
    channel.send(payload, on_part_sent=parts.append)
    channel.close()
    posts = [hit.json() for hit in http_server.hits(HOOK)]
    assert [(p["title"], p["message"]) for p in posts] == [
        (m["title"], m["body"]) for m in payload["messages"]]
    assert parts == list(range(1, len(payload["messages"]) + 1)) and len(parts) > 1
    assert all(hit.headers["User-Agent"] == "paper-digest" for hit in http_server.hits(HOOK))


@needs_apprise
@pytest.mark.integration
def test_form_urls_receive_the_same_message(http_server):
    http_server.route("/form", Route(body=b"ok"))
    port = http_server.httpd.server_address[1]
    channel = channel_for(f"form://127.0.0.1:{port}/form", fmt="text")
    [message] = channel.compose(full_digest()).payload["messages"]
    channel.send({"kind": "apprise", "format": "text", "messages": [message]})
    [hit] = http_server.hits("/form")
    assert hit.headers["Content-Type"] == "application/x-www-form-urlencoded"
    fields = parse_qs(hit.body.decode())
    assert fields["title"] == [message["title"]] and fields["message"] == [message["body"]]


@needs_apprise
@pytest.mark.integration
def test_each_url_gets_every_message_and_a_retry_resumes_at_the_failed_one(http_server):
    first = json_url(http_server, "/a/one-sekrit")
    second = json_url(http_server, "/b/two-sekrit", Route(500, body=b"oops"), Route(body=b"ok"))
    payload = {"kind": "apprise", "format": "text", "messages": [
        {"title": "T1", "body": "B1"}, {"title": "T2", "body": "B2"}]}
    parts: list[int] = []
    with pytest.raises(DeliveryError) as caught:
        channel_for(f"{first} {second}").send(payload, on_part_sent=parts.append)
    assert str(caught.value) == (
        "Apprise did not deliver message 1/2 to URL 2 of 2 in $T_APPRISE (json://): "
        "Failed to send JSON POST notification: Internal server error., error=500.")
    assert not caught.value.permanent and parts == [1, 2]
    channel_for(f"{first} {second}").send(payload, parts_sent=parts[-1],
                                          on_part_sent=parts.append)
    assert parts == [1, 2, 3, 4]
    assert [hit.json()["title"] for hit in http_server.hits("/a/one-sekrit")] == ["T1", "T2"]
    assert [hit.json()["title"] for hit in http_server.hits("/b/two-sekrit")] == [
        "T1", "T1", "T2"]  # T1 refused, then T1 and T2; URL 1 was not sent anything again


@needs_apprise
@pytest.mark.integration
def test_a_refused_connection_is_temporary_and_keeps_the_url_secret(caplog):
    url = f"json://127.0.0.1:{free_port()}/hook/{TOKEN}"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DeliveryError, match=r"to \$T_APPRISE \(json://\): ") as caught:
        channel_for(url).send(channel_for(url).compose(sample_digest()).payload)
    assert not caught.value.permanent and TOKEN not in str(caught.value)
    assert TOKEN not in caplog.text  # Apprise's own log lines never reach ours
    assert not [r for r in caplog.records if r.name.startswith("apprise")]


@needs_apprise
@pytest.mark.integration
def test_the_channel_timeout_is_applied_unless_the_url_sets_its_own(http_server):
    slow = json_url(http_server, "/slow", Route(body=b"ok", delay=1.5))
    with pytest.raises(DeliveryError, match="did not deliver message 1/1"):
        channel_for(slow, timeout=0.3).send(channel_for(slow).compose(sample_digest()).payload)
    own = slow + "?rto=10"
    channel_for(own, timeout=0.3).send(channel_for(own).compose(sample_digest()).payload)
    assert len(http_server.hits("/slow")) == 2


@needs_apprise
def test_an_unusable_url_at_send_time_is_permanent_and_not_shown():
    with pytest.raises(DeliveryError) as caught:
        channel_for("foo://sekrit-value").send(
            channel_for("").compose(sample_digest()).payload)
    assert caught.value.permanent and "sekrit" not in str(caught.value)
    assert "URL 1 of 1 starts with foo://" in str(caught.value)


def test_an_unset_variable_is_reported():
    channel = AppriseChannel(ChannelSettings(name="alerts", kind="apprise",
                                             options=AppriseOptions(urls_env="T_APPRISE")))
    with pytest.raises(DeliveryError, match="T_APPRISE is not set"):
        channel.send(channel.compose(sample_digest()).payload)


def test_the_outbox_holds_each_notify_call_and_a_readable_copy():
    payload = channel_for("").compose(full_digest()).payload
    files = AppriseChannel.outbox_files(payload)
    assert json.loads(files[".json"]) == [
        {**message, "body_format": "markdown"} for message in payload["messages"]]
    assert files[".md"].decode().startswith("# efficient-llms: 2 new papers, Fri 20 Nov\n\n**1.")
    text = channel_for("", fmt="text").compose(full_digest()).payload
    assert set(AppriseChannel.outbox_files(text)) == {".json", ".txt"}


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
channels = ["alerts", "mail"]
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from = "digest@example.org"
to = ["team@example.org"]
timeout_seconds = 2
[channels.alerts]
kind = "apprise"
urls_env = "T_APPRISE"
timeout_seconds = 2
""")


@needs_apprise
@pytest.mark.integration
def test_a_failing_service_waits_for_the_next_run_while_mail_goes(
        tmp_path, capsys, monkeypatch, http_server, smtp_server):
    inbox, port = smtp_server
    monkeypatch.setenv("T_APPRISE", json_url(http_server, HOOK, Route(500, body=b"oops")))
    config = cli_config(tmp_path, port)
    assert main(["run", "--once", "--config", str(config)]) == 1
    captured = capsys.readouterr()
    assert re.search(r"lora -> alerts: \d+ papers, failed_temporary: Apprise did not deliver "
                     r"message 1/1 to \$T_APPRISE \(json://\): Failed to send JSON POST "
                     r"notification: Internal server error\., error=500\.", captured.out)
    assert re.search(r"lora -> mail: \d+ papers, sent", captured.out)
    assert len(inbox.messages) == 1 and TOKEN not in captured.out + captured.err

    http_server.route(HOOK, Route(body=b"ok"))
    assert main(["run", "--once", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert re.search(r"lora -> alerts: \d+ papers, sent \(recorded earlier, sent again\)",
                     captured.out)
    posts = [hit.json() for hit in http_server.hits(HOOK)]
    assert len(posts) == 2 and posts[0] == posts[1]  # the recorded message, sent again
    assert posts[1]["title"].startswith("lora: ") and "LoRA" in posts[1]["message"]
    assert len(inbox.messages) == 1  # the email was not sent twice
    with Store.open(tmp_path / "digest.db") as store:
        assert store.delivered_keys("alerts") == store.delivered_keys("mail")


@needs_apprise
def test_check_names_the_bad_url_by_position_without_showing_it(tmp_path, capsys,
                                                               monkeypatch):
    monkeypatch.setenv("T_APPRISE", "ntfy://papers foo://sekrit-value")
    config = cli_config(tmp_path, 25)
    assert main(["check", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert ("channels.alerts: $T_APPRISE: URL 2 of 2 starts with foo://, a service Apprise "
            "does not know") in captured.err
    assert "sekrit" not in captured.out + captured.err


def test_without_the_extra_check_and_run_name_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "apprise", None)
    monkeypatch.setenv("T_APPRISE", "ntfy://papers")
    config = cli_config(tmp_path, 25)
    for command in (["check"], ["run", "--once"]):
        assert main([*command, "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert f"channels.alerts: {MISSING_EXTRA}" in err


@pytest.mark.integration
def test_the_outbox_needs_neither_the_secret_nor_a_server(tmp_path, capsys, monkeypatch,
                                                          http_server, smtp_server):
    _, port = smtp_server
    monkeypatch.delenv("T_APPRISE", raising=False)
    config = cli_config(tmp_path, port)
    outbox = tmp_path / "outbox"
    assert main(["run", "--once", "--config", str(config), "--outbox", str(outbox)]) == 0
    capsys.readouterr()
    [calls] = outbox.glob("*-lora-alerts.json")
    [readable] = outbox.glob("*-lora-alerts.md")
    messages = json.loads(calls.read_text(encoding="utf-8"))
    assert messages and all(m["body_format"] == "markdown" for m in messages)
    assert all(units(f"# {m['title']}\n{m['body']}") <= APPRISE_MAX_CHARS for m in messages)
    assert messages[0]["title"] in readable.read_text(encoding="utf-8")
    assert http_server.requests == []
