"""Hugging Face Daily Papers (GET /api/daily_papers?date=YYYY-MM-DD).

``paper.id`` is the arXiv id, so these papers merge with arXiv's. The day a paper belongs
to is ``submittedOnDailyAt`` (``publishedAt`` is the arXiv date); upvotes are kept.
"""

from __future__ import annotations

import json
from typing import Any

from digest.config import SourceSettings
from digest.errors import ParseError
from digest.http import Fetcher
from digest.models import Paper, paper_key, parse_arxiv_id
from digest.sources.base import Batch, SourceState, clean_text, parse_timestamp

BASE_URL = "https://huggingface.co/api/daily_papers"


def _day(entry: dict[str, Any]) -> str:
    paper = entry.get("paper") or {}
    return str(paper.get("submittedOnDailyAt") or entry.get("publishedAt") or "")[:10]


def parse(content: bytes, *, date: str = "latest", source: str = "hf_daily") -> list[Paper]:
    """Papers of the given day ('latest': the newest day present in the response)."""
    try:
        data = json.loads(content.decode("utf-8", errors="replace"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ParseError(f"Hugging Face daily papers: not JSON ({exc})") from exc
    if isinstance(data, dict) and "error" in data:
        raise ParseError(f"Hugging Face reports an error: {data['error']}")
    if not isinstance(data, list):
        raise ParseError("Hugging Face daily papers: expected a JSON list of entries")
    entries = [e for e in data if isinstance(e, dict) and isinstance(e.get("paper"), dict)]
    if date == "latest":
        days = [d for d in (_day(e) for e in entries) if d]
        date = max(days) if days else ""
    return [_paper(e, source) for e in entries if _day(e) == date]


def _paper(entry: dict[str, Any], source: str) -> Paper:
    paper = entry["paper"]
    raw_id = str(paper.get("id") or "")
    parsed = parse_arxiv_id(raw_id)
    arxiv_id = parsed[0] if parsed else None
    title = clean_text(paper.get("title") or entry.get("title"))
    authors = tuple(clean_text(a.get("name")) for a in paper.get("authors") or []
                    if isinstance(a, dict) and a.get("name"))
    upvotes = paper.get("upvotes")
    published = parse_timestamp(paper.get("submittedOnDailyAt"))
    link = f"https://huggingface.co/papers/{raw_id}" if raw_id else ""
    return Paper(
        key=paper_key(arxiv_id=arxiv_id, link=link, title=title, authors=authors),
        title=title,
        url=link,
        abstract=clean_text(paper.get("summary") or entry.get("summary")),
        authors=authors,
        arxiv_id=arxiv_id,
        published=published,
        upvotes=int(upvotes) if isinstance(upvotes, int) else None,
        source=source,
    )


class HuggingFaceDailySource:
    """One day of Daily Papers; the latest day unless a date is set."""

    kind = "hf_daily"

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.url = settings.url or BASE_URL

    def fetch(self, fetcher: Fetcher, state: SourceState) -> Batch:
        params: dict[str, str | int] = {}
        if self.settings.date != "latest":
            params["date"] = self.settings.date
        fetched = fetcher.get(self.url, params=params or None, source=self.settings.name)
        return Batch(papers=parse(fetched.content, date=self.settings.date,
                                  source=self.settings.name))
