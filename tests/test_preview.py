"""Previewing a watchlist: what it would have matched over the store's last days, what
changed since its last preview, how its rules treat rated papers; and the same as a page
of the web app, opened only by a signed, expiring link, run for real on 127.0.0.1."""

from __future__ import annotations

import html
import re
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import write_config

from digest.cli import main
from digest.config import load_settings, parse_watchlist
from digest.models import Paper
from digest.preview import PreviewLinks, config_table, run_preview, watchlist_toml
from digest.sources.base import SourceState
from digest.store import Store
from digest.web.server import BackgroundServer, start_in_background

KEY = "p" * 20 + "0123456789abcdef"
NOW = datetime.now(UTC).replace(microsecond=0)

PAPERS = [
    Paper(key="arxiv:2611.00001", title="LoRA adapters for speech", url="",
          arxiv_id="2611.00001", abstract="Low-rank adapters."),
    Paper(key="arxiv:2611.00002", title="Quantised LoRA on one GPU", url="",
          arxiv_id="2611.00002", abstract="We quantise LoRA weights to 4 bits."),
    Paper(key="arxiv:2611.00003", title="Prefix tuning revisited", url="",
          arxiv_id="2611.00003", abstract="Soft prompts."),
    Paper(key="arxiv:2611.00004", title="LoRaWAN links for farm sensors", url="",
          arxiv_id="2611.00004", abstract="Radio."),
]


def config_text(tmp_path: Path, keywords: str, *, extra: str = "") -> str:
    return f"""
[web]
base_url = "https://papers.example.org/digest"
host = "127.0.0.1"
port = 8080
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[watchlists]]
name = "peft"
keywords = {keywords}
{extra}
channels = ["mail"]
[channels.mail]
kind = "email"
from = "digest@example.org"
to = ["reader@example.org"]
"""


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "digest.db"
    with Store.open(path) as store:
        store.record_batch("arxiv-cs", PAPERS, SourceState(), NOW - timedelta(days=1))
    return path


def preview(tmp_path: Path, keywords: str, capsys, *args: str, extra: str = "") -> str:
    config = write_config(tmp_path, config_text(tmp_path, keywords, extra=extra))
    assert main(["preview", "--config", str(config), "--watchlist", "peft", *args]) == 0
    return capsys.readouterr().out


def test_preview_ranks_with_reasons_then_tells_what_changed(tmp_path, store_path, capsys):
    out = preview(tmp_path, '["LoRA"]', capsys, "--days", "3")
    lines = out.splitlines()
    assert lines[0] == "preview of peft over the last 3 days: 4 papers read, 2 match"
    assert "first preview" in lines[1]
    ranked = [line for line in lines if re.match(r"^.\s*\d+\. ", line)]
    assert "arxiv:2611.00002" in ranked[0]  # in title and abstract, twice: first
    assert "arxiv:2611.00001" in ranked[1]
    assert '"LoRA" in title and abstract' in out
    assert "LoRaWAN" not in out

    out = preview(tmp_path, '["quantiz*", "prefix tuning"]', capsys, "--days", "3")
    assert "since the last preview" in out and "+1 gained, -1 lost" in out
    assert re.search(r"^\+\s*\d+\. .*arxiv:2611.00003", out, re.M)  # gained, marked +
    assert re.search(r"^-\s+arxiv:2611.00001", out, re.M)  # lost, listed
    assert '"quantiz*" in title and abstract' in out  # Quantised, quantise


def test_preview_says_how_the_rules_treat_rated_papers(tmp_path, store_path, capsys):
    with Store.open(store_path) as store:
        for key, action in [("arxiv:2611.00001", "like"), ("arxiv:2611.00003", "like"),
                            ("arxiv:2611.00004", "dislike")]:
            store.rate(watchlist="peft", paper_key=key, action=action, origin="cli", now=NOW)
    out = preview(tmp_path, '["LoRA"]', capsys)
    assert "ratings: keeps 1 of 2 liked papers, keeps 0 of 1 disliked papers (drops 1)" in out
    # A disliked paper the rules keep is counted as kept: the veto is not the rules' doing.
    out = preview(tmp_path, '["LoRA", "LoRaWAN"]', capsys)
    assert "keeps 1 of 1 disliked papers (drops 0)" in out


def test_preview_warns_about_phrase_text_that_looks_like_a_query(tmp_path, store_path,
                                                                 capsys):
    out = preview(tmp_path, '["LoRA"]', capsys, extra="query = 'LoRA and speech'")
    assert "warning: query: 'and' in \"LoRA and speech\"" in out
    assert "0 match" in out.splitlines()[0]  # as written, the query needs that phrase


def test_preview_of_an_unknown_watchlist_names_the_known_ones(tmp_path, store_path, capsys):
    config = write_config(tmp_path, config_text(tmp_path, '["LoRA"]'))
    assert main(["preview", "--config", str(config), "--watchlist", "nope"]) == 2
    assert "known: peft" in capsys.readouterr().err


def test_the_definition_round_trips_through_toml():
    settings_text = config_text(Path("."), '["LoRA", { term = "title:adapter*", weight = 2 }]',
                                extra='query = \'(LoRA OR "low-rank") AND NOT "C++"\'\n'
                                      'exclude = ["survey"]\nauthors = [{ name = "S. Wang", '
                                      'initials = true }]\ncategories = ["cs.CL"]\n'
                                      'min_score = 1.5\ncategory_boost = { "cs.CL" = 0.5 }')
    path = Path("/tmp") / f"preview-roundtrip-{id(settings_text)}.toml"
    path.write_text("version = 1\n" + settings_text, encoding="utf-8")
    try:
        (original,) = load_settings(path, env={}).watchlists
    finally:
        path.unlink()
    again, problems = parse_watchlist(watchlist_toml(original), name="peft",
                                      channels=("mail",))
    assert problems == [] and again == original


def test_preview_links_expire_and_cannot_be_forged():
    links = PreviewLinks(KEY)
    token = links.token("peft", now=NOW, seconds=60)
    assert links.verify(token, now=NOW + timedelta(seconds=59)) == "peft"
    assert links.verify(token, now=NOW + timedelta(seconds=61)) is None
    assert PreviewLinks("x" * 40).verify(token, now=NOW) is None
    assert links.verify(token[:-2] + "xx", now=NOW) is None


def test_the_entry_to_paste_keeps_the_keys_the_text_box_leaves_out():
    configured, problems = parse_watchlist(
        'keywords = ["LoRA"]\nfeedback_weight = 2\nsimilar_to = ["2611.04001"]\n'
        'previous_names = ["llm-eff"]\nschedule = "0 7 * * 1-5"\n'
        'timezone = "Europe/Berlin"\nheartbeat = true\n', name="peft", channels=("mail",))
    assert problems == [] and configured is not None
    definition = watchlist_toml(configured).replace('"LoRA"', '"prefix tuning"')
    edited, problems = parse_watchlist(definition, name="peft", channels=("mail",))
    assert problems == [] and edited is not None
    pasted = config_table(configured, edited, tomllib.loads(definition))
    [entry] = tomllib.loads(pasted)["watchlists"]
    assert entry["name"] == "peft" and entry["channels"] == ["mail"]
    body = "\n".join(line for line in pasted.splitlines()
                     if not line.startswith(("[[watchlists]]", "name =", "channels =")))
    again, problems = parse_watchlist(body, name="peft", channels=("mail",))
    # Everything the config said, with the edited keywords: nothing lost by pasting it.
    assert problems == [] and again == replace(configured, keywords=edited.keywords)

    # A key the edit sets itself is the edit's, written once.
    schedule = definition + 'schedule = "0 9 * * *"\nheartbeat = false\n'
    edited, _ = parse_watchlist(schedule, name="peft", channels=("mail",))
    assert edited is not None
    text = config_table(configured, edited, tomllib.loads(schedule))
    [entry] = tomllib.loads(text)["watchlists"]
    assert entry["schedule"] == "0 9 * * *" and "heartbeat" not in entry
    assert entry["timezone"] == "Europe/Berlin" and entry["previous_names"] == ["llm-eff"]


def test_preview_rules_only_no_store_writes_when_asked_not_to(tmp_path, store_path):
    settings = load_settings(write_config(tmp_path, config_text(tmp_path, '["LoRA"]')), env={})
    with Store.open(store_path) as store:
        result = run_preview(settings, settings.watchlists[0], store, days=3, now=NOW,
                             record=False)
        assert [m.paper.key for m in result.matches] == ["arxiv:2611.00002", "arxiv:2611.00001"]
        assert store.last_preview("peft") is None


# --------------------------------------------------------------------- the web page


@pytest.fixture
def web(tmp_path: Path, store_path: Path) -> Iterator[tuple[BackgroundServer, httpx.Client,
                                                             Path]]:
    from conftest import free_port

    text = config_text(tmp_path, '["LoRA"]').replace("port = 8080", f"port = {free_port()}")
    config = write_config(tmp_path, text)
    settings = load_settings(config, env={"DIGEST_WEB_SECRET": KEY})
    server = start_in_background(settings, now=lambda: NOW)
    try:
        with httpx.Client(base_url=server.url, timeout=20) as client:
            yield server, client, config
    finally:
        server.stop()


def link(capsys, config: Path) -> str:
    assert main(["preview", "--config", str(config), "--watchlist", "peft", "--link"]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    url = line.split(" at ", 1)[1]
    assert url.startswith("https://papers.example.org/digest/preview/")
    return urlsplit(url).path


@pytest.mark.integration
def test_the_preview_page_opens_with_the_printed_link_and_re_runs_an_edit(web, capsys,
                                                                          monkeypatch):
    _, client, config = web
    monkeypatch.setenv("DIGEST_WEB_SECRET", KEY)
    before = config.read_text()
    path = link(capsys, config)
    page = client.get(path)
    assert page.status_code == 200
    assert "content-security-policy" in page.headers
    assert "LoRA adapters for speech" in page.text and "2 match" in page.text
    textarea = re.search(r'<textarea id="definition"[^>]*>(.*?)</textarea>', page.text, re.S)
    assert html.unescape(textarea[1]) == 'keywords = ["LoRA"]\n'

    edited = client.post(path, data={"definition": 'keywords = ["prefix tuning"]\n',
                                     "days": "3"})
    assert edited.status_code == 200
    assert "Prefix tuning revisited" in edited.text
    assert "LoRA adapters for speech" in edited.text  # listed as lost
    assert "+1 gained, −2 lost" in edited.text
    paste = html.unescape(re.search(r'<pre id="paste">(.*?)</pre>', edited.text, re.S)[1])
    assert paste.startswith('[[watchlists]]\nname = "peft"\nkeywords = ["prefix tuning"]')
    assert config.read_text() == before  # only previewed, never saved


@pytest.mark.integration
def test_the_page_keeps_the_printed_days_and_an_edit_tried_there_is_not_the_last_preview(
        web, capsys, monkeypatch):
    _, client, config = web
    monkeypatch.setenv("DIGEST_WEB_SECRET", KEY)
    assert main(["preview", "--config", str(config), "--watchlist", "peft", "--days", "3",
                 "--link"]) == 0
    out = capsys.readouterr().out
    url = urlsplit(out.splitlines()[-1].split(" at ", 1)[1])
    assert url.query == "days=3"
    page = client.get(f"{url.path}?{url.query}")
    assert page.status_code == 200 and "Over the last 3 days" in page.text
    assert 'name="days" min="1" max="60" value="3"' in page.text
    assert "from 1 to 60" in client.get(f"{url.path}?days=0").text  # said, not a 500

    # An edit tried on the page (not saved to the config) ...
    tried = client.post(url.path, data={"definition": 'keywords = ["prefix tuning"]\n',
                                        "days": "3"})
    assert "+1 gained, −2 lost" in tried.text
    # ... leaves the config's own preview as the one to compare with: nothing changed.
    assert main(["preview", "--config", str(config), "--watchlist", "peft",
                 "--days", "3"]) == 0
    assert "+0 gained, -0 lost" in capsys.readouterr().out


@pytest.mark.integration
def test_the_preview_page_shows_problems_of_an_edit_and_runs_nothing(web, capsys,
                                                                     monkeypatch):
    _, client, config = web
    monkeypatch.setenv("DIGEST_WEB_SECRET", KEY)
    path = link(capsys, config)
    answer = client.post(path, data={"definition": 'query = "(LoRA"\n', "days": "99"})
    assert answer.status_code == 200
    assert "Nothing was previewed" in answer.text
    assert "unbalanced group" in answer.text and "from 1 to 60" in answer.text


@pytest.mark.integration
@pytest.mark.parametrize("token", [
    pytest.param(PreviewLinks("z" * 40).token("peft", now=NOW), id="other-key"),
    pytest.param(PreviewLinks(KEY).token("peft", now=NOW - timedelta(hours=2)), id="expired"),
    pytest.param(PreviewLinks(KEY).token("gone", now=NOW), id="unknown-watchlist"),
    pytest.param("junk", id="junk"),
])
def test_the_preview_page_refuses_without_a_valid_link(web, token):
    _, client, _ = web
    for answer in (client.get(f"/preview/{token}"),
                   client.post(f"/preview/{token}", data={"definition": ""})):
        assert answer.status_code == 403
        assert "LoRA adapters" not in answer.text
