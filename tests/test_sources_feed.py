"""Generic feeds: RSS 1.0 (bioRxiv), Atom, RSS 2.0 and JSON Feed, with stable identity."""

import httpx
import pytest

from digest.config import HttpSettings, SourceSettings
from digest.errors import ParseError
from digest.http import Fetcher
from digest.sources import feed
from digest.sources.base import SourceState


def test_biorxiv_rss1_gets_a_doi_identity(real):
    (paper,) = feed.parse(real("biorxiv_rss1.0_subject_genomics_2023-12-16_1item.xml"))
    assert paper.key == "doi:10.1101/2023.12.16.571984"
    assert paper.title.startswith("Complete genome of the Medicago anthracnose fungus")
    assert paper.abstract.startswith("Colletotrichum destructivum (Cd)")
    assert paper.published is not None


def test_arxiv_listing_through_the_generic_parser_keeps_arxiv_identity(real):
    papers = feed.parse(real("arxiv_rss_quant-ph_2025-04-28.xml"))
    assert len(papers) == 81 and papers[0].key == "arxiv:2504.17830"


@pytest.mark.parametrize(("name", "keys"), [
    ("jsonfeed_1.1_spec_simple_example.json",
     ["url:https://example.org/second-item", "url:https://example.org/initial-post"]),
    ("jsonfeed_1.1_spec_microblog_example.json", ["url:https://example.org/2347259"]),
    ("jsonfeed_1.1_spec_podcast_example.json", ["url:http://therecord.co/chris-parrish"]),
])
def test_json_feed_examples(real, name, keys):
    papers = feed.parse(real(name))
    assert [p.key for p in papers] == keys
    assert all(p.title for p in papers)


def test_atom_feed_with_html_summary_becomes_text():
    body = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Lab blog</title>
<entry><id>tag:lab.example,2026:7</id><title>New &amp; improved</title>
<link href="https://lab.example/posts/7"/><updated>2026-11-20T10:00:00Z</updated>
<summary type="html">&lt;p&gt;We &lt;b&gt;release&lt;/b&gt; a model.&lt;/p&gt;</summary>
<author><name>Ada Lovelace</name></author></entry></feed>"""
    (paper,) = feed.parse(body)
    assert paper.key == "guid:tag:lab.example,2026:7"
    assert paper.title == "New & improved"
    assert paper.abstract == "We release a model."
    assert paper.authors == ("Ada Lovelace",)


@pytest.mark.parametrize(("content", "message"), [
    (b"this is not a feed", "malformed XML"),
    (b'{"version": "https://jsonfeed.org/version/1.1"}', "'items' must be a list"),
    (b'{"title": "x"}', "unknown 'version'"),
    (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><rss/>',
     "entities"),
])
def test_bad_feeds_are_parse_errors(content, message):
    with pytest.raises(ParseError, match=message):
        feed.parse(content)


def test_source_uses_conditional_requests():
    seen = []

    def handler(request):
        seen.append(request.headers.get("If-None-Match"))
        return httpx.Response(304)

    fetcher = Fetcher(HttpSettings(interval_seconds=0), transport=httpx.MockTransport(handler))
    source = feed.FeedSource(SourceSettings(name="blog", kind="feed",
                                            url="https://lab.example/feed"))
    batch = source.fetch(fetcher, SourceState(etag='"e1"'))
    assert batch.not_modified and batch.papers == [] and batch.state.etag == '"e1"'
    assert seen == ['"e1"']
