"""bioRxiv / medRxiv API: the real answer, authors split one by one, versions, paging over
a real server on 127.0.0.1, malformed answers, options, and a run that finds an author."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import REAL, Route, write_config

from digest.cli import main
from digest.config import AuthorRule, HttpSettings, SourceSettings, parse_settings
from digest.errors import ConfigError, ParseError
from digest.http import Fetcher
from digest.scoring import author_matches
from digest.sources import SOURCES, biorxiv, feed
from digest.sources.base import SourceState, listed_authors, semicolon_authors

FIXTURE = "biorxiv_api_details_2026-07-15_to_18_trimmed.json"
RSS_FIXTURE = "biorxiv_rss1.0_subject_genomics_2023-12-16_1item.xml"


def record(number: int, *, doi: str | None = None, version: Any = "1",
           category: str = "genomics", authors: Any = "Wang, S.; Other, A. B.",
           **fields: Any) -> dict[str, Any]:
    """One record shaped as the API writes it (every value a string)."""
    return {
        "doi": doi or f"10.1101/2026.11.{number:05d}", "title": f"Paper {number}",
        "authors": authors, "author_corresponding": "S. Wang",
        "author_corresponding_institution": "Somewhere", "date": "2026-11-18",
        "version": version, "type": "new results", "license": "cc_by",
        "category": category, "jatsxml": "https://www.biorxiv.org/x.source.xml",
        "abstract": f"Abstract  of\n paper {number}.", "funder": "NA", "published": "NA",
        "server": "bioRxiv", **fields,
    }


def answer(records: list[Any], *, cursor: int = 0, total: Any = None,
           status: str = "ok") -> bytes:
    message: dict[str, Any] = {"status": status, "category": "all", "cursor": cursor,
                               "count": len(records)}
    if total is not None:
        message["total"] = total
    return json.dumps({"messages": [message], "collection": records}).encode()


def numbered(start: int, count: int, **fields: Any) -> list[dict[str, Any]]:
    return [record(n, **fields) for n in range(start, start + count)]


# ------------------------------------------------------------------ the real answer

REAL_AUTHORS = {
    "doi:10.64898/2026.07.13.738145": ("T. Ghafari", "A. J. Quinn", "O. Jensen"),
    "doi:10.64898/2026.07.13.738249": ("C. Smith", "S. Inchyna", "B. Barrentine",
                                       "M. J. Nelson"),
    "doi:10.64898/2025.12.19.695336": (
        "Q. Dubois", "T. Brual", "M. Sprenger", "V. Utzinger", "R. Mercier", "J. Cigna",
        "A. Rodrigue", "K. Papenfort", "L. Attaiech", "E. Gueguen"),
}


def test_real_answer_gives_each_author_apart(real):
    page = biorxiv.parse(real(FIXTURE), source="bio")
    assert page.records == 3 and page.total == 3  # "total" is written as a string there
    assert {p.key: p.authors for p in page.papers} == REAL_AUTHORS
    assert [len(p.authors) for p in page.papers] == [3, 4, 10]
    first, _, third = page.papers
    assert first.title == ("Laterality of subcortical structures predicts spontaneous brain "
                           "dynamics")
    assert first.abstract.startswith("Subcortical structures play a key role")
    assert first.doi == "10.64898/2026.07.13.738145" and first.arxiv_id is None
    assert first.url == "https://www.biorxiv.org/content/10.64898/2026.07.13.738145v1"
    assert first.categories == ("neuroscience",) and first.primary_category is None
    assert first.published == datetime(2026, 7, 15, tzinfo=UTC)
    assert first.journal_ref is None and first.source == "bio"  # "published": "NA"
    assert third.version == 3 and third.categories == ("microbiology",)
    assert third.url.endswith("/2025.12.19.695336v3")  # its "funder" list is ignored


def test_medrxiv_papers_link_to_medrxiv(real):
    page = biorxiv.parse(real(FIXTURE), server="medrxiv")
    assert all(p.url.startswith("https://www.medrxiv.org/content/10.64898/")
               for p in page.papers)


@pytest.mark.parametrize(("rule", "matches"), [
    (AuthorRule("Tara Ghafari", initials=True), True),
    (AuthorRule("T. Ghafari"), True),
    (AuthorRule("Tara Ghafari"), False),  # a full given name needs initials = true
    (AuthorRule("A. J. Quinn"), True),
    (AuthorRule("Andrew J. Quinn", initials=True), True),
    (AuthorRule("Ole Jensen", initials=True), True),
    (AuthorRule("Ole Hansen", initials=True), False),
])
def test_split_authors_meet_the_watchlist_matcher(real, rule, matches):
    paper = biorxiv.parse(real(FIXTURE)).papers[0]
    assert any(author_matches(rule, author) for author in paper.authors) is matches


@pytest.mark.parametrize(("line", "authors"), [
    ("Wang, Sinong", ("Sinong Wang",)),
    ("Wang, S.; Other, A. B.", ("S. Wang", "A. B. Other")),
    ("  Wang ,  S. ;; ; Other, A. B.;", ("S. Wang", "A. B. Other")),
    ("The COVID-19 Genomics UK (COG-UK) Consortium; Doe, J.",
     ("The COVID-19 Genomics UK (COG-UK) Consortium", "J. Doe")),
    ("Smith, J., Jr.; Doe, J.", ("Smith, J., Jr.", "J. Doe")),  # not "Last, Given": whole
    ("", ()),
])
def test_the_api_author_line(line, authors):
    assert semicolon_authors(line) == authors


def test_both_written_forms_of_a_name_match_one_watchlist_entry():
    rule = AuthorRule("Sinong Wang", initials=True)
    for line in ("Wang, Sinong", "Wang, S.", "Wang, S"):
        (author,) = semicolon_authors(line)
        assert author_matches(rule, author), line


def test_the_biorxiv_rss_author_line_is_split_by_the_feed_source(real):
    (paper,) = feed.parse(real(RSS_FIXTURE), source="genomics")
    assert paper.authors == (
        "N. LAPALU", "A. SIMON", "A. Lu", "P.-L. Plaumann", "J. Amselem", "S. Pigne",
        "A. Auger", "C. Koch", "J.-F. Dallery", "R. J. O'Connell")
    assert paper.key == "doi:10.1101/2023.12.16.571984"
    assert author_matches(AuthorRule("Nicolas Lapalu", initials=True), paper.authors[0])


@pytest.mark.parametrize(("line", "authors"), [
    ("Ada Lovelace", ()),  # one name: the feed keeps it
    ("Ada Lovelace, Alan Turing", ()),  # not bioRxiv's shape: left as it was
    ("Lovelace, Ada", ()),
    ("Lovelace, A.", ("A. Lovelace",)),
    ("Lovelace, A., Turing, A. M.", ("A. Lovelace", "A. M. Turing")),
    ("Lovelace, A.; Turing, Alan", ("A. Lovelace", "Alan Turing")),
    ("Lovelace, A., Turing", ()),  # an odd number of parts is no list of pairs
])
def test_what_a_feed_author_line_is_split_into(line, authors):
    assert listed_authors(line) == authors


# ------------------------------------------------------------------ versions and fields


def test_several_versions_of_a_doi_are_one_paper_at_its_newest():
    body = answer([record(1, version="2"), record(2), record(1, version="3"),
                   record(1, version="1")])
    page = biorxiv.parse(body)
    assert page.records == 4
    assert [(p.key, p.version) for p in page.papers] == [
        ("doi:10.1101/2026.11.00001", 3), ("doi:10.1101/2026.11.00002", 1)]
    assert page.papers[0].url == "https://www.biorxiv.org/content/10.1101/2026.11.00001v3"


def test_a_field_of_the_wrong_type_is_left_out():
    bad = record(1, title=7, authors=["Wang, S."], version="9" * 30, date=20261118,
                 category=None, published=5, abstract={"text": "x"})
    page = biorxiv.parse(answer([bad, record(2, version=4, published="10.1038/X.1")]))
    first, second = page.papers
    assert first.key == "doi:10.1101/2026.11.00001"
    assert (first.title, first.authors, first.version, first.published, first.categories,
            first.journal_ref, first.abstract) == ("", (), None, None, (), None, "")
    assert first.url == "https://www.biorxiv.org/content/10.1101/2026.11.00001"
    assert second.version == 4 and second.journal_ref == "doi:10.1038/x.1"
    assert second.abstract == "Abstract of paper 2."
    for version in ("two", -1, 1.5, True, "٣"):
        (paper,) = biorxiv.parse(answer([record(3, version=version)])).papers
        assert paper.version is None, version


def test_a_record_without_a_doi_is_skipped_with_a_warning(caplog):
    caplog.set_level(logging.WARNING, logger="digest.sources.biorxiv")
    page = biorxiv.parse(answer([record(1, doi="NA"), "junk", record(2)]), source="bio")
    assert [p.key for p in page.papers] == ["doi:10.1101/2026.11.00002"]
    assert "source=bio record 1 has no DOI; skipped" in caplog.text
    assert "source=bio record 2 is a string, not an object; skipped" in caplog.text


def test_no_posts_found_is_an_empty_page():
    body = json.dumps({"messages": [{"status": "no posts found"}]}).encode()
    assert biorxiv.parse(body) == biorxiv.Page(papers=[], records=0, total=0)


@pytest.mark.parametrize(("content", "message"), [
    (b"<html>Service Unavailable</html>", "bioRxiv API: not JSON"),
    (b"[]", "expected a JSON object, got a list"),
    (b'{"collection": []}', "no 'messages' block \\(got null\\)"),
    (b'{"messages": [], "collection": []}', "no 'messages' block \\(got a list\\)"),
    (b'{"messages": {"status": "ok"}}', "no 'messages' block \\(got an object\\)"),
    (b'{"messages": [{"status": "Invalid interval"}]}', "reports: Invalid interval"),
    (b'{"messages": [{"count": 1}]}', "reports: no status"),
    (b'{"messages": [{"status": "ok"}], "collection": {"doi": "10.1101/1"}}',
     "'collection' must be a list, got an object"),
    (b'{"messages": [{"status": "ok"}]}', "'collection' must be a list, got null"),
    (b'{"messages": [{"status": "ok"}], "collection": [1, {"doi": 2}]}',
     "none of the 2 records yields a paper \\(record 2 has no DOI\\)"),
])
def test_malformed_answers_are_parse_errors(content, message):
    with pytest.raises(ParseError, match=message) as caught:
        biorxiv.parse(content, source="bio")
    assert caught.value.source == "bio"


# ------------------------------------------------------------------ paging on a real server


def fetcher() -> Fetcher:
    return Fetcher(HttpSettings(interval_seconds=0, max_retries=0, timeout_seconds=5))


def source(url: str, **options: Any) -> biorxiv.BiorxivSource:
    return biorxiv.BiorxivSource(SourceSettings(
        name="bio", kind="biorxiv", url=url, options=biorxiv.BiorxivOptions(**options)))


def serve(http_server: Any, pages: dict[int, bytes], *, server: str = "biorxiv",
          days: int = 2) -> str:
    for cursor, body in pages.items():
        http_server.route(f"/details/{server}/{days}d/{cursor}/json", Route(body=body))
    return http_server.url + "/details"


def asked(http_server: Any) -> list[str]:
    return [r.path for r in http_server.requests]


def test_the_cursor_is_followed_to_the_total(http_server):
    url = serve(http_server, {0: answer(numbered(0, 100), total="250"),
                              100: answer(numbered(100, 100), cursor=100, total="250"),
                              200: answer(numbered(200, 50), cursor=200, total="250")})
    with fetcher() as f:
        batch = source(url).fetch(f, SourceState())
    assert asked(http_server) == ["/details/biorxiv/2d/0/json", "/details/biorxiv/2d/100/json",
                                  "/details/biorxiv/2d/200/json"]
    assert len(batch.papers) == 250 and len({p.key for p in batch.papers}) == 250
    assert batch.papers[-1].key == "doi:10.1101/2026.11.00249"
    assert "paper-digest/" in http_server.requests[0].headers["User-Agent"]


def test_pages_smaller_than_documented_are_followed_by_the_total(http_server):
    url = serve(http_server, {0: answer(numbered(0, 30), total=70),
                              30: answer(numbered(30, 30), cursor=30, total=70),
                              60: answer(numbered(60, 10), cursor=60, total=70)})
    with fetcher() as f:
        assert len(source(url).fetch(f, SourceState()).papers) == 70
    assert asked(http_server)[1:] == ["/details/biorxiv/2d/30/json", "/details/biorxiv/2d/60/json"]


def test_without_a_total_a_short_page_is_the_last(http_server):
    url = serve(http_server, {0: answer(numbered(0, 100)),
                              100: answer(numbered(100, 30), cursor=100),
                              130: answer(numbered(500, 100), cursor=130)})
    with fetcher() as f:
        assert len(source(url).fetch(f, SourceState()).papers) == 130
    assert len(http_server.requests) == 2


def test_an_empty_page_ends_the_listing_whatever_the_total_says(http_server):
    no_posts = json.dumps({"messages": [{"status": "no posts found"}]}).encode()
    url = serve(http_server, {0: answer(numbered(0, 100), total=900), 100: no_posts})
    with fetcher() as f:
        assert len(source(url).fetch(f, SourceState()).papers) == 100
    assert len(http_server.requests) == 2


def test_max_results_stops_the_paging(http_server, caplog):
    url = serve(http_server, {c: answer(numbered(c, 100), cursor=c, total=1000)
                              for c in range(0, 1000, 100)})
    with fetcher() as f:
        batch = source(url, max_results=150).fetch(f, SourceState())
    assert asked(http_server) == ["/details/biorxiv/2d/0/json", "/details/biorxiv/2d/100/json"]
    assert len(batch.papers) == 150
    assert "max_results reached after 200 of 1000 records" in caplog.text


def test_medrxiv_and_days_shape_the_path_and_the_links(http_server):
    url = serve(http_server, {0: answer(numbered(0, 2), total=2)}, server="medrxiv", days=7)
    with fetcher() as f:
        batch = source(url, server="medrxiv", days=7).fetch(f, SourceState())
    assert asked(http_server) == ["/details/medrxiv/7d/0/json"]
    assert [p.url for p in batch.papers] == [
        "https://www.medrxiv.org/content/10.1101/2026.11.00000v1",
        "https://www.medrxiv.org/content/10.1101/2026.11.00001v1"]


def test_versions_met_on_different_pages_are_one_paper(http_server):
    url = serve(http_server, {0: answer([record(1, version="1")] + numbered(10, 99), total=101),
                              100: answer([record(1, version="2")], cursor=100, total=101)})
    with fetcher() as f:
        papers = source(url).fetch(f, SourceState()).papers
    assert len(papers) == 100
    assert [p.version for p in papers if p.key == "doi:10.1101/2026.11.00001"] == [2]


def test_each_category_is_one_query_and_other_subjects_are_left_out(http_server):
    route = "/details/biorxiv/2d/0/json"
    http_server.route(route, Route(body=answer(numbered(0, 3, category="cell biology") +
                                               numbered(3, 1, category="neuroscience"),
                                               total=4)),
                      Route(body=answer(numbered(10, 2, category="genomics"), total=2)))
    with fetcher() as f:
        batch = source(http_server.url + "/details",
                       categories=("cell biology", "genomics")).fetch(f, SourceState())
    assert [r.path for r in http_server.requests] == [
        route + "?category=cell_biology", route + "?category=genomics"]
    assert len(batch.papers) == 5
    assert {p.categories for p in batch.papers} == {("cell biology",), ("genomics",)}


def test_a_local_file_is_read_once_as_one_page(tmp_path, real):
    path = tmp_path / "details.json"
    path.write_bytes(answer(numbered(0, 100), total=5000))
    with fetcher() as f:
        batch = source(str(path), categories=("genomics", "zoology")).fetch(f, SourceState())
        assert len(batch.papers) == 100
        real(FIXTURE)  # skips when the real answers are not beside the repository
        batch = source((REAL / FIXTURE).as_uri(), categories=("Neuroscience",)).fetch(
            f, SourceState())
    assert [p.categories for p in batch.papers] == [("neuroscience",)] * 2


def test_a_broken_page_is_the_sources_parse_error(http_server):
    url = serve(http_server, {0: answer(numbered(0, 100), total=300),
                              100: b"<html>502 Bad Gateway</html>"})
    with fetcher() as f, pytest.raises(ParseError, match="bioRxiv API: not JSON") as caught:
        source(url).fetch(f, SourceState())
    assert caught.value.source == "bio"


# ------------------------------------------------------------------ options


SOURCE = """
version = 1
[[sources]]
name = "bio"
kind = "biorxiv"
{options}
[[watchlists]]
name = "w"
keywords = ["x"]
channels = ["m"]
[channels.m]
kind = "email"
from = "d@example.org"
to = ["t@example.org"]
"""


def settings_of(options: str) -> SourceSettings:
    return parse_settings(SOURCE.format(options=options), path=Path("x.toml"), env={}).sources[0]


def problems_of(options: str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        settings_of(options)
    return caught.value.problems


def test_the_kind_is_registered_with_its_defaults():
    assert SOURCES["biorxiv"] is biorxiv.BiorxivSource
    assert settings_of("").options == biorxiv.BiorxivOptions(
        server="biorxiv", days=2, categories=(), max_results=1000)


def test_options_are_read_and_subjects_written_one_way():
    options = settings_of('server = "medRxiv"\ndays = 7\nmax_results = 300\n'
                          'categories = ["Cell_Biology", "cell  biology", "genomics"]').options
    assert options == biorxiv.BiorxivOptions(
        server="medrxiv", days=7, categories=("cell biology", "genomics"), max_results=300)


@pytest.mark.parametrize(("options", "problem"), [
    ('server = "arxiv"', ("sources[0].server", "must be one of biorxiv, medrxiv")),
    ("server = 1", ("sources[0].server", "must be a string, got an integer")),
    ("days = 0", ("sources[0].days", "must be 1-365")),
    ('days = "2d"', ("sources[0].days", "must be an integer, got a string")),
    ("days = 400", ("sources[0].days", "must be 1-365")),
    ("max_results = 0", ("sources[0].max_results", "must be 1-100000")),
    ('categories = "genomics"', ("sources[0].categories", "must be a list, got a string")),
    ('categories = ["genomics", " "]', ("sources[0].categories[1]", "empty string")),
    ("day = 3", ("sources[0].day", "unknown key (did you mean 'days'?)")),
])
def test_bad_options_name_their_key(options, problem):
    assert problems_of(options) == [problem]


# ------------------------------------------------------------------ a whole run


def test_a_run_sends_the_paper_of_a_watched_author(tmp_path, http_server, capsys):
    ours = record(1, title="Cortical maps in mice", category="neuroscience",
                  authors="Ghafari, T.; Quinn, A. J.; Jensen, O.")
    others = numbered(2, 3, authors="Nobody, N.; Else, S. O.")
    url = serve(http_server, {0: answer([ours, *others], total=4)})
    config = write_config(tmp_path, f"""
[http]
interval_seconds = 0
retry_backoff_seconds = 0
max_retries = 0
timeout_seconds = 5
[[sources]]
name = "bio"
kind = "biorxiv"
url = "{url}"
[[watchlists]]
name = "people"
authors = [{{ name = "Tara Ghafari", initials = true }}]
channels = ["mail"]
[channels.mail]
kind = "email"
from = "digest@example.org"
to = ["team@example.org"]
""")
    outbox = tmp_path / "outbox"
    assert main(["run", "--once", "--config", str(config), "--outbox", str(outbox)]) == 0
    out = capsys.readouterr().out
    assert "bio: 4 read, 4 new" in out and "people -> mail: 1 paper" in out
    assert asked(http_server) == ["/details/biorxiv/2d/0/json"]
    (message,) = outbox.glob("*people-mail*.eml")
    text = message.read_text(encoding="utf-8")
    assert "Cortical maps in mice" in text and "author T. Ghafari" in text
    assert "https://www.biorxiv.org/content/10.1101/2026.11.00001v1" in text
    assert "Paper 2" not in text
