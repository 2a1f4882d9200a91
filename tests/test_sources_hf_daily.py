"""Hugging Face Daily Papers: the real response, the day filter, and upvotes."""

import json
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from digest.config import HttpSettings, SourceSettings
from digest.errors import ParseError
from digest.http import Fetcher
from digest.sources import hf_daily
from digest.sources.base import SourceState

FIXTURE = "hf_daily_papers_2026-06-12_30items.json"


def test_real_response_has_thirty_papers_with_upvotes(real):
    papers = hf_daily.parse(real(FIXTURE))
    assert len(papers) == 30
    assert all(p.upvotes is not None for p in papers)
    assert all(p.key == f"arxiv:{p.arxiv_id}" for p in papers)
    first = papers[0]
    assert first.key == "arxiv:2606.00467"
    assert first.title.startswith("On the Limits of LLM Adaptability")
    assert first.authors[:2] == ("Etienne Casanova", "Rafal Kocielnik")
    assert first.url == "https://huggingface.co/papers/2606.00467"
    assert first.upvotes == 0 and papers[1].upvotes == 5


def test_day_is_taken_from_submitted_on_daily_at(real):
    body = real(FIXTURE)
    assert len(hf_daily.parse(body, date="2026-06-12")) == 30
    assert hf_daily.parse(body, date="2026-06-11") == []
    # publishedAt says 2026-05-30 for the first paper: it must not decide the day
    assert hf_daily.parse(body, date="2026-05-30") == []


def _entry(arxiv_id: str, day: str, upvotes: int = 1) -> dict:
    return {"paper": {"id": arxiv_id, "title": f"T {arxiv_id}", "summary": "s",
                      "authors": [{"name": "A B"}], "upvotes": upvotes,
                      "submittedOnDailyAt": f"{day}T01:00:00.000Z"},
            "publishedAt": "2026-01-01T00:00:00.000Z"}


def test_latest_keeps_only_the_newest_day():
    body = json.dumps([_entry("2611.00001", "2026-11-19"), _entry("2611.00002", "2026-11-18")])
    assert [p.arxiv_id for p in hf_daily.parse(body.encode())] == ["2611.00001"]


def test_half_a_character_in_one_title_loses_nothing(tmp_path):
    """A lone surrogate escape, which UTF-8 cannot write, reads as U+FFFD; the listing,
    that title's paper too, is stored whole."""
    from datetime import UTC, datetime

    from digest.store import Store

    body = json.dumps([_entry("2611.00001", "2026-11-19"), _entry("2611.00002", "2026-11-19")])
    body = body.replace("T 2611.00001", "T \\ud800 2611.00001")
    papers = hf_daily.parse(body.encode())
    assert [p.title for p in papers] == ["T \ufffd 2611.00001", "T 2611.00002"]
    with Store.open(tmp_path / "d.db") as store:
        store.record_batch("hf", papers, SourceState(), datetime(2026, 11, 19, tzinfo=UTC))
        assert store.paper("arxiv:2611.00001").title == "T \ufffd 2611.00001"


@pytest.mark.parametrize(("content", "message"), [
    (b"<html>oops</html>", "not JSON"),
    (b'{"error": "Invalid date"}', "Invalid date"),
    (b'{"items": []}', "expected a JSON list"),
])
def test_bad_responses_are_parse_errors(content, message):
    with pytest.raises(ParseError, match=message):
        hf_daily.parse(content)


def test_source_asks_for_the_configured_date():
    seen = []

    def handler(request):
        seen.append(parse_qs(urlsplit(str(request.url)).query))
        return httpx.Response(200, json=[_entry("2611.00001", "2026-11-19")])

    fetcher = Fetcher(HttpSettings(interval_seconds=0), transport=httpx.MockTransport(handler))
    source = hf_daily.HuggingFaceDailySource(
        SourceSettings(name="hf", kind="hf_daily",
                       options=hf_daily.HuggingFaceDailyOptions(date="2026-11-19")))
    assert len(source.fetch(fetcher, SourceState()).papers) == 1
    latest = hf_daily.HuggingFaceDailySource(SourceSettings(name="hf", kind="hf_daily"))
    latest.fetch(fetcher, SourceState())
    assert seen == [{"date": ["2026-11-19"]}, {}]
