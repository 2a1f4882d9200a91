"""arXiv RSS listings: real captured feeds and the announce-type filter."""

import io
from collections import Counter
from pathlib import Path

import httpx
import pytest

from digest.config import HttpSettings, SourceSettings
from digest.errors import ParseError
from digest.http import Fetcher
from digest.sources import arxiv_rss
from digest.sources.base import SourceState, parse_xml, split_authors


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


# ------------------------------------------------------------------ read item by item


def whole_document(content: bytes) -> list:
    """The papers as read from the whole parsed tree: what the listing holds, to compare
    the item-by-item reading with."""
    channel = parse_xml(content, what="arXiv RSS").find("channel")
    return [arxiv_rss._item(item, "arxiv_rss") for item in channel.iterfind("item")]


def many_items(count: int) -> bytes:
    """The sample listing's items repeated under fresh ids, ``count`` in all."""
    head, _, rest = SAMPLE.partition(b"<item>")
    items, _, tail = (b"<item>" + rest).rpartition(b"</item>")
    items += b"</item>"
    copies = [items.replace(b"2611.040", b"2%03d.%03d" % (n // 1000, n % 1000))
              for n in range(count // 26 + 1)]
    return head + b"\n".join(copies) + tail


@pytest.mark.parametrize("name", [
    "arxiv_rss_quant-ph_2025-04-28.xml", "arxiv_rss_all-archives_2024-11-28.xml",
    "arxiv_rss_cs.LG_2026-04-27_TRIMMED_3items.xml",
    "arxiv_rss_cs.CL_2026-04-27_TRIMMED_3items.xml",
    "arxiv_rss_empty_cs.CL_saturday_2026-08-01.xml",
    "arxiv_rss_empty_test-archive_2024-11-28.xml"])
def test_item_by_item_reading_gives_the_papers_of_the_whole_document(real, name):
    content = real(name)
    assert list(arxiv_rss.read(io.BytesIO(content))) == whole_document(content)


@pytest.mark.parametrize("content", [
    pytest.param(SAMPLE, id="sample-data"),
    pytest.param(SAMPLE.replace(b"Mei Lin", b"Mei L\xffn"), id="invalid-utf8"),
    pytest.param(SAMPLE.replace(b"encoding='UTF-8'", b"encoding='ISO-8859-1'"),
                 id="utf8-said-latin1"),
    pytest.param(SAMPLE.decode().encode("utf-16"), id="utf-16"),
    # several of the parser's reads, an item across each boundary between them
    pytest.param(many_items(2000), id="2000-items"),
])
def test_item_by_item_reading_gives_the_papers_of_the_whole_document_sample(content):
    papers = list(arxiv_rss.read(io.BytesIO(content)))
    assert papers == whole_document(content) and papers


def test_only_the_first_channels_own_items_are_read():
    listing = SAMPLE.replace(b"<channel>", b"<channel><extra><item><title>not listed</title>"
                             b"</item></extra>").replace(
        b"</channel>", b"</channel><channel><item><title>second</title></item></channel>")
    papers = list(arxiv_rss.read(io.BytesIO(listing)))
    assert papers == whole_document(listing) and len(papers) == 26


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(many_items(2000)[:-5000], "malformed XML", id="cut-off-near-the-end"),
        pytest.param(many_items(2000).replace(b"</rss>", b"</rss><rss>"),
                     "malformed XML", id="a-second-document-after-the-first"),
        pytest.param(many_items(2000).replace(b"<rss ", b"<feed ").replace(b"</rss>",
                                                                           b"</feed>"),
                     "expected <rss><channel>, got <feed>", id="not-rss"),
        pytest.param(b"<!DOCTYPE html><html><body>" + b"<p>busy</p>" * 20000, "HTML page",
                     id="html-cut-off"),
        pytest.param(b"", "empty response", id="empty"),
    ],
)
def test_a_broken_listing_gives_its_error_before_any_paper(content, message):
    """Nothing of a broken listing is read, however many good items come before the fault:
    the error comes from read() itself, as from parse()."""
    with pytest.raises(ParseError, match=message):
        arxiv_rss.parse(content)
    with pytest.raises(ParseError, match=message):
        arxiv_rss.read(io.BytesIO(content))


def test_the_source_streams_the_listing_and_closes_the_answer(real):
    body = real("arxiv_rss_quant-ph_2025-04-28.xml")
    fetcher = Fetcher(HttpSettings(arxiv_interval_seconds=0), transport=httpx.MockTransport(
        lambda request: httpx.Response(200, content=body, headers={"ETag": '"v2"'})))
    source = arxiv_rss.ArxivRssSource(
        SourceSettings(name="q", kind="arxiv_rss",
                       options=arxiv_rss.ArxivRssOptions(categories=("quant-ph",))))
    with source.stream(fetcher, SourceState()) as listing:
        assert (listing.read, listing.skipped) == (0, 0)  # nothing read yet
        papers = list(listing.papers)
        assert listing.state.etag == '"v2"' and not listing.not_modified
    assert (len(papers), listing.read, listing.skipped) == (50, 50, 31)
    assert listing.body is not None and listing.body.closed
    assert papers == source.fetch(fetcher, SourceState()).papers
