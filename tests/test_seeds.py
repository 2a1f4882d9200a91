"""similar_to seeds: looked up on arXiv once, kept as reference papers, never sent as alike.

A real HTTP server on 127.0.0.1 plays the arXiv API (Atom shaped like the captured
`arxiv_api_query_*.atom.xml` responses) and the Slack webhook; the store is a real file.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from html import escape

import pytest
from conftest import Route, write_config

from digest.cli import main
from digest.config import WatchlistSettings, load_settings
from digest.models import Paper
from digest.pipeline import run_once
from digest.scoring import Matcher
from digest.similarity import SimilarityIndex
from digest.store import Store

SEED = "2611.07001"
NEIGHBOUR = "2611.07002"
UNRELATED = "2611.07003"
API = "/api/query"
HOOK = "/services/T1/B1/seeds"


def atom(*entries: tuple[str, str, str], published: datetime) -> bytes:
    """An arXiv API answer with these (id, title, abstract) entries, as arXiv shapes it."""
    stamp = published.strftime("%Y-%m-%dT%H:%M:%SZ")
    body = "".join(f"""
  <entry>
    <id>http://arxiv.org/abs/{arxiv_id}v1</id>
    <title>{escape(title)}</title>
    <updated>{stamp}</updated>
    <link href="https://arxiv.org/abs/{arxiv_id}v1" rel="alternate" type="text/html"/>
    <link href="https://arxiv.org/pdf/{arxiv_id}v1" rel="related" type="application/pdf"
          title="pdf"/>
    <summary>{escape(abstract)}</summary>
    <category term="cs.CL" scheme="http://arxiv.org/schemas/atom"/>
    <published>{stamp}</published>
    <arxiv:primary_category term="cs.CL"/>
    <author>
      <name>Ada Example</name>
    </author>
  </entry>""" for arxiv_id, title, abstract in entries)
    return f"""<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/"
      xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns="http://www.w3.org/2005/Atom">
  <id>https://arxiv.org/api/test</id>
  <title>arXiv Query</title>
  <updated>{stamp}</updated>
  <opensearch:itemsPerPage>{len(entries)}</opensearch:itemsPerPage>
  <opensearch:totalResults>{len(entries)}</opensearch:totalResults>
  <opensearch:startIndex>0</opensearch:startIndex>{body}
</feed>""".encode()


SEED_ENTRY = (SEED, "Low-rank adapters for speech recognition",
              "We tune speech recognition models with low-rank adapters.")
LISTING = (
    (NEIGHBOUR, "Speech recognition with low-rank adapters, revisited",
     "Low-rank adapters tune speech recognition models cheaply."),
    (UNRELATED, "Lenses and mirrors", "An optics study of curved mirrors and lenses."),
)


def config_text(server_url: str) -> str:
    return f"""
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
max_retries = 0
[[sources]]
name = "arxiv-api"
kind = "arxiv_api"
query = "cat:cs.CL"
url = "{server_url}{API}"
[[watchlists]]
name = "like-these"
similar_to = ["{SEED}"]
min_similarity = 0.3
channels = ["chat"]
[channels.chat]
kind = "slack"
webhook_url_env = "SEEDS_HOOK"
"""


def lookups(server) -> list[str]:
    return [r.path for r in server.hits(API) if "id_list=" in r.path]


@pytest.fixture
def published() -> datetime:
    # Recent on purpose: inside the lookback window, the seed could be sent like any paper.
    return datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)


def test_a_missing_seed_is_fetched_once_kept_and_never_sent_as_like_itself(
        tmp_path, http_server, caplog, published):
    listing = Route(body=atom(*LISTING, published=published))
    http_server.route(API, listing, Route(body=atom(SEED_ENTRY, published=published)), listing)
    http_server.route(HOOK, Route(body=b"ok"))
    settings = load_settings(write_config(tmp_path, config_text(http_server.url)),
                             env={"SEEDS_HOOK": http_server.url + HOOK})
    caplog.set_level(logging.WARNING)

    report = run_once(settings)
    assert report.ok
    (asked,) = lookups(http_server)
    assert f"id_list={SEED}" in asked
    assert "not in the store" not in caplog.text
    (message,) = http_server.hits(HOOK)
    assert NEIGHBOUR in message.body.decode() and "like the seed papers" in message.body.decode()
    assert SEED not in message.body.decode() and UNRELATED not in message.body.decode()
    with Store.open(settings.store.path) as store:
        seed = store.paper(f"arxiv:{SEED}")
        assert seed is not None and seed.title == SEED_ENTRY[1]
        assert store.sources_of(f"arxiv:{SEED}") == []  # a reference, not a listing

    caplog.clear()
    again = run_once(settings)
    assert again.ok
    assert len(lookups(http_server)) == 1  # kept: not asked for again
    assert len(http_server.hits(API)) == 3  # the second run read only its source
    assert caplog.text == ""
    assert len(http_server.hits(HOOK)) == 1  # and the seed is still not sent


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(Route(status=503, body=b"busy"), id="http-error"),
        pytest.param(Route(body=b"<html><body>maintenance</body></html>",
                           headers={"Content-Type": "text/html"}), id="not-atom"),
    ],
)
def test_a_failed_seed_lookup_is_a_warning_not_a_failed_run(tmp_path, http_server, caplog,
                                                            published, answer):
    http_server.route(API, Route(body=atom(*LISTING, published=published)), answer)
    http_server.route(HOOK, Route(body=b"ok"))
    settings = load_settings(write_config(tmp_path, config_text(http_server.url)),
                             env={"SEEDS_HOOK": http_server.url + HOOK})
    report = run_once(settings)
    assert report.ok and [s.error for s in report.sources] == [None]
    assert f"cannot look up seed papers {SEED}" in caplog.text
    assert f"seed {SEED} is not in the store yet; skipped" in caplog.text


def test_an_unexpected_error_in_the_seed_lookup_spares_the_run(tmp_path, http_server, caplog,
                                                               published, monkeypatch):
    """Whatever the lookup raises, the seeds wait for the next run and the digests go."""
    import digest.pipeline as pipeline

    def broken(*args, **kwargs):
        raise ValueError("invalid literal for int() with base 10: '²'")

    monkeypatch.setattr(pipeline.arxiv_api, "lookup", broken)
    http_server.route(API, Route(body=atom(*LISTING, published=published)))
    http_server.route(HOOK, Route(body=b"ok"))
    settings = load_settings(write_config(tmp_path, config_text(http_server.url)),
                             env={"SEEDS_HOOK": http_server.url + HOOK})
    report = run_once(settings)
    assert report.ok and [s.error for s in report.sources] == [None]
    assert f"cannot look up seed papers {SEED}: ValueError: invalid literal" in caplog.text


def test_a_total_in_other_digits_is_no_total(published):
    """'²' passes str.isdigit() but not int(): the page's papers count, the total not."""
    from digest.sources import arxiv_api

    body = atom(*LISTING, published=published).replace(
        b"<opensearch:totalResults>2<", "<opensearch:totalResults>\u00b2<".encode())
    papers, total = arxiv_api.parse(body)
    assert [p.arxiv_id for p in papers] == [NEIGHBOUR, UNRELATED] and total is None


def test_explain_does_not_fetch_seeds(tmp_path, http_server, caplog, capsys, published):
    http_server.route(API, Route(body=atom(SEED_ENTRY, published=published)))
    config = write_config(tmp_path, config_text(http_server.url))
    with Store.open(tmp_path / "digest.db") as store:
        store.record_references([Paper(key=f"arxiv:{NEIGHBOUR}", title=LISTING[0][1],
                                       url="u", abstract=LISTING[0][2], arxiv_id=NEIGHBOUR)],
                                published)
    assert main(["explain", "--config", str(config), NEIGHBOUR]) == 0
    assert http_server.requests == []
    assert f"seed {SEED} is not in the store yet; skipped" in caplog.text
    assert "like-these" in capsys.readouterr().out


def test_a_seed_paper_gets_no_similarity_from_its_own_watchlist():
    texts = [f"{SEED_ENTRY[1]}. {SEED_ENTRY[2]}", *(f"{t}. {a}" for _, t, a in LISTING)]
    watchlist = WatchlistSettings(name="w", channels=("c",), similar_to=(SEED,),
                                  min_similarity=0.3)
    seed = Paper(key=f"arxiv:{SEED}", title=SEED_ENTRY[1], url="u", abstract=SEED_ENTRY[2])
    twin = Paper(key="doi:10.1/twin", title=SEED_ENTRY[1], url="u", abstract=SEED_ENTRY[2])
    now = datetime(2026, 11, 20, tzinfo=UTC)

    def matched(paper: Paper, **seed_keys: set[str]) -> bool:
        matcher = Matcher([watchlist], similarity=SimilarityIndex(texts),
                          seeds={"w": texts[:1]}, seed_keys=seed_keys)
        return bool(matcher.match(paper, now=now))

    assert matched(seed) and matched(twin)  # without naming the seed, it is "like" itself
    assert not matched(seed, w={seed.key}) and matched(twin, w={seed.key})


def test_a_seed_id_in_the_store_is_not_looked_up(tmp_path, http_server, published):
    http_server.route(API, Route(body=atom(*LISTING, SEED_ENTRY, published=published)))
    http_server.route(HOOK, Route(body=b"ok"))
    settings = load_settings(write_config(tmp_path, config_text(http_server.url)),
                             env={"SEEDS_HOOK": http_server.url + HOOK})
    assert run_once(settings).ok
    assert lookups(http_server) == []  # the source listed the seed itself
    body = http_server.hits(HOOK)[0].body.decode()
    assert NEIGHBOUR in body and SEED not in body
