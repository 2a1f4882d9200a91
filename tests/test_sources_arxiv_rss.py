"""arXiv RSS listings: real captured feeds and the announce-type filter."""

from collections import Counter
from pathlib import Path

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
        SourceSettings(name="q", kind="arxiv_rss",
                       options=arxiv_rss.ArxivRssOptions(categories=("quant-ph",))))
    batch = source.fetch(fetcher, SourceState())
    assert seen == ["https://rss.arxiv.org/rss/quant-ph"]
    assert len(batch.papers) == 50 and batch.skipped == 31
    assert batch.state.etag == '"v1"'
    everything = arxiv_rss.ArxivRssSource(SourceSettings(
        name="q", kind="arxiv_rss", options=arxiv_rss.ArxivRssOptions(
            categories=("quant-ph",),
            announce_types=("new", "cross", "replace", "replace-cross"))))
    assert len(everything.fetch(fetcher, SourceState()).papers) == 81


SAMPLE = (Path(__file__).resolve().parent.parent / "config" / "sample-data"
          / "arxiv_rss_cs.CL+cs.LG.xml").read_bytes()


def test_invalid_utf8_bytes_are_replaced_not_fatal():
    papers = arxiv_rss.parse(SAMPLE.replace(b"Mei Lin", b"Mei L\xffn"))
    assert len(papers) == 26 and papers[0].authors[0] == "Mei L\ufffdn"


def test_utf8_mislabelled_as_latin1_is_read_as_utf8():
    papers = arxiv_rss.parse(SAMPLE.replace(b"encoding='UTF-8'", b"encoding='ISO-8859-1'"))
    assert "Jörg Müller" in {a for p in papers for a in p.authors}


def test_real_latin1_is_decoded_by_its_declaration():
    latin1 = SAMPLE.decode().encode("latin-1", errors="replace").replace(
        b"encoding='UTF-8'", b"encoding='ISO-8859-1'")
    assert "Jörg Müller" in {a for p in arxiv_rss.parse(latin1) for a in p.authors}


def test_latin1_without_a_declaration_loses_only_the_bad_bytes():
    undeclared = SAMPLE.split(b"\n", 1)[1].decode().encode("latin-1", errors="replace")
    papers = arxiv_rss.parse(undeclared)
    assert len(papers) == 26
    assert "J\ufffdrg M\ufffdller" in {a for p in papers for a in p.authors}


def test_truncated_listing_is_a_parse_error():
    with pytest.raises(ParseError, match="malformed XML"):
        arxiv_rss.parse(SAMPLE[: len(SAMPLE) // 2])


def test_entity_bomb_is_refused_before_parsing():
    levels = [b'<!ENTITY lol0 "lol">'] + [
        b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10) for i in range(1, 10)]
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [' + b"".join(levels)
            + b"]><rss><channel><title>&lol9;</title></channel></rss>")
    with pytest.raises(ParseError, match="refused"):
        arxiv_rss.parse(bomb)
