"""arXiv API: both Atom shapes, error entries, and paging within arXiv's limits."""

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from digest.config import HttpSettings, SourceSettings
from digest.errors import ParseError
from digest.http import Fetcher
from digest.sources import arxiv_api
from digest.sources.base import SourceState


def test_current_format_response(real):
    papers, total = arxiv_api.parse(real("arxiv_api_query_cs.LG_OR_cs.AI_2026-04-30.atom.xml"))
    assert len(papers) == 20 and total == 364218
    assert all(p.primary_category for p in papers)
    assert sum(1 for p in papers if p.comment) == 12
    assert sum(1 for p in papers if p.doi) == 2
    assert sum(1 for p in papers if p.journal_ref) == 1
    first = papers[0]
    assert first.key == "arxiv:2604.26951" and first.version == 1
    assert first.title.startswith("Turning the TIDE")
    assert first.authors == ("Gongbo Zhang", "Wen Wang", "Ye Tian", "Li Yuan")
    assert first.primary_category == "cs.CL"
    assert first.categories == ("cs.CL", "cs.AI", "cs.LG")
    assert first.url == "https://arxiv.org/abs/2604.26951v1"


def test_fifty_entry_response(real):
    body = real("arxiv_api_query_cs.AI_OR_cs.LG_50entries_2026-07-13.atom.xml")
    papers, _ = arxiv_api.parse(body)
    assert len(papers) == 50 and sum(1 for p in papers if p.comment) == 19


def test_legacy_format_response(real):
    body = real("arxiv_api_query_legacy_format_id_list_2020-09-04.atom.xml")
    papers, total = arxiv_api.parse(body)
    assert total == 1
    (paper,) = papers
    assert paper.key == "arxiv:1601.00001"
    assert paper.doi == "10.1063/1.4944470"
    assert paper.journal_ref == "J. Chem. Phys. 144, 124107 (2016)"
    assert paper.primary_category == "cond-mat.mes-hall"
    assert paper.title == ("Inelastic effects in molecular transport junctions: "
                           "The probe technique at high bias")


def test_legacy_docs_example(real):
    papers, _ = arxiv_api.parse(real("arxiv_api_query_legacy_format_docs_example.atom.xml"))
    assert papers[0].key == "arxiv:hep-ex/0307015" and papers[0].comment


def test_error_entry_is_a_parse_error(real):
    with pytest.raises(ParseError, match="incorrect id format for 1234.12345"):
        arxiv_api.parse(real("arxiv_api_error_incorrect_id_format_docs.atom.xml"))


def _page(start: int, count: int, total: int) -> bytes:
    entries = "".join(
        f"<entry><id>http://arxiv.org/abs/2611.{10000 + start + i}v1</id>"
        f"<title>Paper {start + i}</title><summary>s</summary>"
        f"<author><name>A B</name></author></entry>" for i in range(count))
    return (f'<feed xmlns="http://www.w3.org/2005/Atom" '
            f'xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">'
            f"<opensearch:totalResults>{total}</opensearch:totalResults>{entries}</feed>"
            ).encode()


def test_source_pages_through_results_politely():
    requests = []

    def handler(request):
        query = parse_qs(urlsplit(str(request.url)).query)
        requests.append(query)
        start, size = int(query["start"][0]), int(query["max_results"][0])
        return httpx.Response(200, content=_page(start, min(size, 250 - start), 250))

    sleeps = []
    fetcher = Fetcher(HttpSettings(), transport=httpx.MockTransport(handler),
                      sleep=sleeps.append)
    source = arxiv_api.ArxivApiSource(SourceSettings(
        name="au", kind="arxiv_api", options=arxiv_api.ArxivApiOptions(
            query='au:"Sinong Wang"', max_results=1000, page_size=100)))
    batch = source.fetch(fetcher, SourceState())
    assert len(batch.papers) == 250
    assert [q["start"][0] for q in requests] == ["0", "100", "200"]
    assert requests[0]["search_query"] == ['au:"Sinong Wang"']
    assert requests[0]["sortBy"] == ["submittedDate"]
    assert len(sleeps) == 2 and all(s > 2.9 for s in sleeps)  # one request per 3 s


def test_page_size_never_exceeds_arxivs_ceiling():
    settings = SourceSettings(name="x", kind="arxiv_api", options=arxiv_api.ArxivApiOptions(
        query="cat:cs.CL", max_results=5000, page_size=2000))
    seen = []

    def handler(request):
        seen.append(int(parse_qs(urlsplit(str(request.url)).query)["max_results"][0]))
        return httpx.Response(200, content=_page(0, 0, 0))

    Fetcher(HttpSettings(arxiv_interval_seconds=0), transport=httpx.MockTransport(handler))
    arxiv_api.ArxivApiSource(settings).fetch(
        Fetcher(HttpSettings(arxiv_interval_seconds=0), transport=httpx.MockTransport(handler)),
        SourceState())
    assert seen == [2000]
