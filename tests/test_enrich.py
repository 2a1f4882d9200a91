"""Papers a source lists without categories or with a partial author list get arXiv's
categories and authors before scoring: asked by id_list in batches, paced, kept in the
store, and never a reason for a run to fail. A real HTTP server plays the arXiv API."""

from __future__ import annotations

import email
import json
import logging
from datetime import UTC, datetime
from email.policy import default as default_policy
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from conftest import ROOT, Route, write_config

from digest.config import load_settings
from digest.http import Fetcher
from digest.models import Paper
from digest.pipeline import Seams, enrich_from_arxiv, run_once
from digest.sources import arxiv_api
from digest.sources.base import SourceState
from digest.store import Store

NOW = datetime(2026, 11, 19, 12, 0, tzinfo=UTC)

# What Hugging Face lists: no categories, and for the first paper only its first author.
LISTED = [
    ("2611.05001", "Jailbreak Defences for Chat Models", ["Ann Author"]),
    ("2611.05002", "Jailbreak Prompts for Image Generators", ["Bo Writer"]),
    ("2611.05003", "A Paper arXiv Has Not Heard Of", ["Cy Nobody"]),
]
# What arXiv says of the first two; it does not know the third.
ARXIV = {
    "2611.05001": (["cs.CL", "cs.CR"], ["Ann Author", "Sinong Wang", "Dee Third"]),
    "2611.05002": (["cs.CV"], ["Bo Writer", "Eve Other"]),
}


def hf_listing() -> bytes:
    return json.dumps([
        {"paper": {"id": arxiv_id, "title": title, "summary": f"{title}: a jailbreak study.",
                   "authors": [{"name": name} for name in authors], "upvotes": 4,
                   "submittedOnDailyAt": "2026-11-19T01:00:00.000Z"},
         "publishedAt": "2026-11-18T18:00:00.000Z"}
        for arxiv_id, title, authors in LISTED]).encode()


def atom(ids: list[str]) -> bytes:
    """An arXiv API answer for an id_list: an entry for each id arXiv knows."""
    entries = []
    for arxiv_id in ids:
        if arxiv_id not in ARXIV:
            continue
        categories, authors = ARXIV[arxiv_id]
        title = next(t for i, t, _ in LISTED if i == arxiv_id)
        entries.append(
            f"<entry><id>http://arxiv.org/abs/{arxiv_id}v1</id><title>{title}</title>"
            f"<summary>{title}: a jailbreak study.</summary>"
            f"<published>2026-11-18T18:00:00Z</published>"
            + "".join(f"<author><name>{name}</name></author>" for name in authors)
            + f'<arxiv:primary_category term="{categories[0]}"/>'
            + "".join(f'<category term="{c}"/>' for c in categories) + "</entry>")
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<feed xmlns="http://www.w3.org/2005/Atom" xmlns:arxiv="http://arxiv.org/schemas/atom"'
        ' xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">'
        f"<opensearch:totalResults>{len(entries)}</opensearch:totalResults>"
        + "".join(entries) + "</feed>").encode()


def asked_ids(requests) -> list[list[str]]:
    return [parse_qs(urlsplit(r.path).query)["id_list"][0].split(",") for r in requests]


def config(tmp_path: Path, hf_url: str, api_url: str) -> Path:
    return write_config(tmp_path, f"""
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
retry_backoff_seconds = 0
max_retries = 0
timeout_seconds = 5
[[sources]]
name = "hf"
kind = "hf_daily"
url = "{hf_url}"
[[sources]]
name = "arxiv-api"
kind = "arxiv_api"
query = "cat:cs.CL"
url = "{api_url}"
enabled = false
[[watchlists]]
name = "safety"
keywords = ["jailbreak"]
categories = ["cs.CL"]
channels = ["mail"]
[[watchlists]]
name = "people"
authors = ["Sinong Wang"]
channels = ["mail"]
[channels.mail]
kind = "email"
from = "digest@example.org"
to = ["reader@example.org"]
""")


@pytest.fixture
def world(tmp_path: Path, http_server):
    hf_url = http_server.route("/api/daily_papers", Route(body=hf_listing()))
    ids = [arxiv_id for arxiv_id, _, _ in LISTED]
    api_url = http_server.route("/api/query", Route(body=atom(ids)))
    settings = load_settings(config(tmp_path, hf_url, api_url), env={})
    return settings, http_server


def digest_texts(outbox: Path) -> dict[str, str]:
    """The plain text of each digest written to the outbox, by watchlist."""
    out = {}
    for path in sorted(outbox.glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=default_policy)
        out[path.stem.split("-", 1)[1].rsplit("-", 1)[0]] = message.get_body(
            ("plain",)).get_content()
    return out


@pytest.mark.integration
def test_listed_papers_get_arxiv_categories_and_authors_before_scoring(world, tmp_path):
    settings, server = world
    report = run_once(settings, outbox=tmp_path / "outbox", seams=Seams(now=lambda: NOW))
    assert report.ok
    assert asked_ids(server.hits("/api/query")) == [["2611.05001", "2611.05002", "2611.05003"]]
    with Store.open(settings.store.path) as store:
        enriched = store.paper("arxiv:2611.05001")
        assert enriched is not None
        assert enriched.categories == ("cs.CL", "cs.CR")
        assert enriched.primary_category == "cs.CL"
        assert enriched.authors == ("Ann Author", "Sinong Wang", "Dee Third")
        assert enriched.upvotes == 4  # what the listing said is kept
        asked = dict(store.db.execute("SELECT key, found FROM arxiv_lookups").fetchall())
    assert asked == {"arxiv:2611.05001": 1, "arxiv:2611.05002": 1, "arxiv:2611.05003": 0}
    texts = digest_texts(tmp_path / "outbox")
    # The category filter now sees cs.CL; the image paper (cs.CV) stays out.
    assert "Jailbreak Defences for Chat Models" in texts["safety"]
    assert "Jailbreak Prompts for Image Generators" not in texts["safety"]
    # The author only arXiv named is found, and shown beside the channel's other reasons.
    assert "author Sinong Wang" in texts["safety"]


@pytest.mark.integration
def test_a_paper_once_asked_is_not_asked_again_even_when_arxiv_did_not_know_it(world,
                                                                                tmp_path):
    settings, server = world
    run_once(settings, outbox=tmp_path / "outbox", seams=Seams(now=lambda: NOW))
    again = run_once(settings, outbox=tmp_path / "outbox", seams=Seams(now=lambda: NOW))
    assert again.ok
    assert len(server.hits("/api/query")) == 1


@pytest.mark.integration
def test_a_failed_lookup_is_a_warning_and_is_asked_again_next_run(world, tmp_path, caplog):
    settings, server = world
    server.route("/api/query", Route(status=503, body=b"busy"),
                 Route(body=atom([i for i, _, _ in LISTED])))
    with caplog.at_level(logging.WARNING, logger="digest.pipeline"):
        report = run_once(settings, outbox=tmp_path / "outbox", seams=Seams(now=lambda: NOW))
    assert report.ok and not any(s.error for s in report.sources)
    assert "cannot look up 3 papers on arXiv for their categories and authors" in caplog.text
    with Store.open(settings.store.path) as store:
        assert store.db.execute("SELECT count(*) FROM arxiv_lookups").fetchone()[0] == 0
        assert store.paper("arxiv:2611.05001").categories == ()
    run_once(settings, outbox=tmp_path / "outbox", seams=Seams(now=lambda: NOW))
    assert len(server.hits("/api/query")) == 2
    with Store.open(settings.store.path) as store:
        assert store.paper("arxiv:2611.05001").categories == ("cs.CL", "cs.CR")


def test_lookups_are_batched_by_id_list_and_paced_as_arxiv(tmp_path, monkeypatch):
    """Through arXiv's own address, the shared arXiv pacer spaces the batches."""
    monkeypatch.setattr(arxiv_api, "LOOKUP_BATCH", 2)
    asked: list[list[str]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "export.arxiv.org"
        ids = request.url.params["id_list"].split(",")
        asked.append(ids)
        return httpx.Response(200, content=atom(ids))

    path = write_config(tmp_path, """
[http]
arxiv_interval_seconds = 3
[[sources]]
name = "hf"
kind = "hf_daily"
[[watchlists]]
name = "w"
keywords = ["jailbreak"]
channels = ["mail"]
[channels.mail]
kind = "email"
from = "digest@example.org"
to = ["reader@example.org"]
""")
    settings = load_settings(path, env={})
    slept: list[float] = []
    with Store.open(settings.store.path) as store, Fetcher(
            settings.http, transport=httpx.MockTransport(answer), clock=lambda: 100.0,
            sleep=slept.append) as fetcher:
        papers = [Paper(key=f"arxiv:{i}", title=t, url="", arxiv_id=i) for i, t, _ in LISTED]
        store.record_batch("hf", papers, SourceState(), NOW)
        assert enrich_from_arxiv(settings, store, fetcher, now=NOW) == 2
    assert asked == [["2611.05001", "2611.05002"], ["2611.05003"]]
    assert slept == [3.0]  # one pause between the two requests, none before the first


def test_papers_an_arxiv_listing_described_are_not_asked_about(tmp_path):
    with Store.open(tmp_path / "digest.db") as store:
        listed = Paper(key="arxiv:2611.05001", title="t", url="", arxiv_id="2611.05001",
                       categories=("cs.CL",), authors=("A B",))
        bare = Paper(key="arxiv:2611.05002", title="t", url="", arxiv_id="2611.05002")
        store.record_batch("arxiv-cs", [listed], SourceState(), NOW)
        store.record_batch("hf", [listed, bare], SourceState(), NOW)
        since = datetime(2026, 11, 1, tzinfo=UTC)
        assert store.lacking_arxiv_facts(since, ["arxiv-cs"]) == ["2611.05002"]
        # Without an arXiv source, whatever a feed listed may lack authors: ask.
        assert store.lacking_arxiv_facts(since, []) == ["2611.05001", "2611.05002"]


def test_runs_on_sample_data_stay_offline(tmp_path):
    """Sources that read local files, and no arxiv_api source to name where to ask: no
    lookup, though the Hugging Face papers lack categories."""
    samples = ROOT / "config" / "sample-data"
    settings = load_settings(write_config(tmp_path, f"""
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL", "cs.LG"]
url = "{samples / 'arxiv_rss_cs.CL+cs.LG.xml'}"
[[sources]]
name = "hf"
kind = "hf_daily"
url = "{samples / 'hf_daily_papers_2026-11-19.json'}"
[[watchlists]]
name = "w"
keywords = ["LoRA"]
channels = ["mail"]
[channels.mail]
kind = "email"
from = "digest@example.org"
to = ["reader@example.org"]
"""), env={})
    asked: list[str] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        asked.append(str(request.url))
        return httpx.Response(503)

    report = run_once(settings, outbox=tmp_path / "outbox",
                      seams=Seams(transport=httpx.MockTransport(refuse)))
    assert report.ok and report.new_papers > 0 and asked == []
    with Store.open(settings.store.path) as store:
        since = datetime(2000, 1, 1, tzinfo=UTC)
        assert store.lacking_arxiv_facts(since, ["arxiv-cs"])  # there was something to ask
