"""arXiv RSS listings: real captured feeds and the announce-type filter."""

from collections import Counter

import httpx
import pytest

from digest.config import HttpSettings, SourceSettings
from digest.errors import ParseError
from digest.http import Fetcher
from digest.sources import arxiv_rss
from digest.sources.base import SourceState, split_authors


def test_quant_ph_listing_counts_and_fields(real):
    papers = arxiv_rss.parse(real("arxiv_rss_quant-ph_2025-04-28.xml"))
    assert len(papers) == 81
    assert Counter(p.announce_type for p in papers) == {
        "new": 40, "cross": 10, "replace": 22, "replace-cross": 9}
    assert sum(1 for p in papers if p.doi) == 10
    assert sum(1 for p in papers if p.journal_ref) == 9
    first = papers[0]
    assert first.key == "arxiv:2504.17830" and first.version == 1
    assert first.title == "Self-Adjoint Time Operator in a Weighted Energy Space"
    assert first.abstract.startswith("We introduce a self-adjoint time operator")
    assert "Announce Type" not in first.abstract
    assert first.authors == ("Radmir Kokoulin",)
    assert first.categories == ("quant-ph",)


def test_all_archives_listing_is_read_whole(real):
    papers = arxiv_rss.parse(real("arxiv_rss_all-archives_2024-11-28.xml"))
    assert len(papers) == 1504
    assert Counter(p.announce_type for p in papers) == {"new": 926, "cross": 9, "replace": 569}
    assert len({p.key for p in papers}) == 1504
    assert sum(1 for p in papers if p.doi) == 111


def test_affiliations_with_commas_do_not_split_authors(real):
    papers = arxiv_rss.parse(real("arxiv_rss_all-archives_2024-11-28.xml"))
    paper = next(p for p in papers if "Mohammed Riadh Berramdane" in p.authors)
    assert paper.authors == ("Mohammed Riadh Berramdane", "Alexandre Battiston",
                             "Michele Bardi", "Nicolas Blet", "Benjamin Rémy",
                             "Matthieu Urbain")


@pytest.mark.parametrize("name", ["arxiv_rss_empty_cs.CL_saturday_2026-08-01.xml",
                                  "arxiv_rss_empty_test-archive_2024-11-28.xml"])
def test_weekend_and_empty_listings_have_no_papers(real, name):
    assert arxiv_rss.parse(real(name)) == []


def test_error_feed_is_a_parse_error_with_arxivs_reason(real):
    with pytest.raises(ParseError, match="Bad archive 'astroph'"):
        arxiv_rss.parse(real("arxiv_rss_error_bad-archive_2024-11-28.xml"))


@pytest.mark.parametrize("name", ["arxiv_rss_cs.LG_2026-04-27_TRIMMED_3items.xml",
                                  "arxiv_rss_cs.CL_2026-04-27_TRIMMED_3items.xml"])
def test_reserialised_listings(real, name):
    papers = arxiv_rss.parse(real(name))
    assert len(papers) == 3 and all(p.announce_type == "new" and p.arxiv_id for p in papers)


@pytest.mark.parametrize(
    ("line", "authors"),
    [
        ("A. One, B. Two", ("A. One", "B. Two")),
        ("A. One (MIT, USA), B. Two (ETH)", ("A. One", "B. Two")),
        ("A. One and B. Two", ("A. One", "B. Two")),
        ("Benjamin R\\'emy, J\\\"org M\\\"uller", ("Benjamin Rémy", "Jörg Müller")),
        ("", ()),
    ],
)
def test_split_authors(line, authors):
    assert split_authors(line) == authors


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty response"),
        (b"<rss><channel><item>", "malformed XML"),
        (b"<!DOCTYPE html><html><body>Service unavailable</body></html>", "HTML page"),
        (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><rss/>', "entities"),
        (b"<feed/>", "expected <rss><channel>"),
    ],
)
def test_malformed_input_is_a_clear_parse_error(content, message):
    with pytest.raises(ParseError, match=message):
        arxiv_rss.parse(content)


def test_listing_url_joins_categories():
    assert arxiv_rss.listing_url(("cs.CL", "cs.LG")) == "https://rss.arxiv.org/rss/cs.CL+cs.LG"


def test_source_keeps_only_the_announce_types_asked_for(real):
    body = real("arxiv_rss_quant-ph_2025-04-28.xml")
    seen = []

    def handler(request):
        seen.append(str(request.url))
        return httpx.Response(200, content=body, headers={"ETag": '"v1"'})

    fetcher = Fetcher(HttpSettings(arxiv_interval_seconds=0),
                      transport=httpx.MockTransport(handler))
    source = arxiv_rss.ArxivRssSource(
        SourceSettings(name="q", kind="arxiv_rss", categories=("quant-ph",)))
    batch = source.fetch(fetcher, SourceState())
    assert seen == ["https://rss.arxiv.org/rss/quant-ph"]
    assert len(batch.papers) == 50 and batch.skipped == 31
    assert batch.state.etag == '"v1"'
    everything = arxiv_rss.ArxivRssSource(SourceSettings(
        name="q", kind="arxiv_rss", categories=("quant-ph",),
        announce_types=("new", "cross", "replace", "replace-cross")))
    assert len(everything.fetch(fetcher, SourceState()).papers) == 81
