"""Hugging Face Daily Papers (GET /api/daily_papers?date=YYYY-MM-DD).

``paper.id`` is the arXiv id, so these papers merge with arXiv's. The day a paper belongs
to is ``submittedOnDailyAt`` (``publishedAt`` is the arXiv date); upvotes are kept, and so
are the code repository (with its stars), the project page and the machine-written summary.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlsplit

from digest import options as opt
from digest.config import SourceSettings
from digest.errors import ParseError
from digest.http import Fetcher
from digest.models import Paper, paper_key, parse_arxiv_id
from digest.sources.base import (
    Batch,
    SourceState,
    clean_text,
    json_kind,
    json_names,
    json_str,
    load_json,
    parse_timestamp,
)

log = logging.getLogger(__name__)

BASE_URL = "https://huggingface.co/api/daily_papers"
WHAT = "Hugging Face daily papers"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_MAX_COUNT = 2**63 - 1  # what SQLite can store
SUMMARY_SOURCE = "Hugging Face AI"  # ai_summary is machine-written


def _count(value: object) -> int | None:
    """A non-negative count SQLite can hold; a string, a fraction or a bool is no count."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_COUNT:
        return None
    return value


def _web_url(value: object) -> str | None:
    """An http(s) address, or None: a javascript: or relative link never reaches a digest."""
    url = clean_text(json_str(value))
    parts = urlsplit(url)
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else None


def _day(entry: dict[str, Any]) -> str:
    """The entry's YYYY-MM-DD, or "" when neither date field is a date string."""
    for value in (entry["paper"].get("submittedOnDailyAt"), entry.get("publishedAt")):
        if _DAY.match(json_str(value)):
            return json_str(value)[:10]
    return ""


def parse(content: bytes, *, date: str = "latest", source: str = "hf_daily") -> list[Paper]:
    """Papers of the given day ('latest': the newest day present in the response).

    A field of the wrong type is ignored; an entry that yields no paper is skipped with a
    warning; a response in which no entry yields one is a ParseError.
    """
    data = load_json(content, what=WHAT, source=source)
    if isinstance(data, dict) and "error" in data:
        raise ParseError(f"Hugging Face reports an error: {data['error']}", source=source)
    if not isinstance(data, list):
        raise ParseError(f"{WHAT}: expected a JSON list of entries, got {json_kind(data)}",
                         source=source)
    dated: list[tuple[str, Paper]] = []
    problem = ""
    for number, entry in enumerate(data, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("paper"), dict):
            problem = f"entry {number} holds no 'paper' object"
        elif not (day := _day(entry)):
            problem = f"entry {number} has no submittedOnDailyAt date"
        elif (paper := _paper(entry, source)) is None:
            problem = f"entry {number} has neither an id nor a title"
        else:
            dated.append((day, paper))
            continue
        log.warning("source=%s %s; skipped", source, problem)
    if data and not dated:
        raise ParseError(f"{WHAT}: none of the {len(data)} entries yields a paper ({problem})",
                         source=source)
    if date == "latest":
        date = max((day for day, _ in dated), default="")
    return [paper for day, paper in dated if day == date]


def _paper(entry: dict[str, Any], source: str) -> Paper | None:
    paper = entry["paper"]
    # Only a string: a number would lose an arXiv id's trailing zeros (2606.00470 -> .0047).
    raw_id = clean_text(json_str(paper.get("id")))
    parsed = parse_arxiv_id(raw_id)
    arxiv_id = parsed[0] if parsed else None
    title = clean_text(json_str(paper.get("title")) or json_str(entry.get("title")))
    if not raw_id and not title:
        return None
    authors = json_names(paper.get("authors"))
    upvotes = _count(paper.get("upvotes"))
    code_url = _web_url(paper.get("githubRepo"))
    summary = clean_text(json_str(paper.get("ai_summary"))) or None
    published = parse_timestamp(json_str(paper.get("submittedOnDailyAt")))
    link = f"https://huggingface.co/papers/{raw_id}" if raw_id else ""
    return Paper(
        key=paper_key(arxiv_id=arxiv_id, link=link, title=title, authors=authors),
        title=title,
        url=link,
        abstract=clean_text(json_str(paper.get("summary")) or json_str(entry.get("summary"))),
        authors=authors,
        arxiv_id=arxiv_id,
        published=published,
        upvotes=upvotes,
        source=source,
        hf_url=link or None,
        code_url=code_url,
        code_stars=_count(paper.get("githubStars")) if code_url else None,
        project_url=_web_url(paper.get("projectPage")),
        summary=summary,
        summary_source=SUMMARY_SOURCE if summary else None,
    )


def _date_setting(value: str) -> str | None:
    if value == "latest" or re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return None
    return "must be 'latest' or a date YYYY-MM-DD"


@dataclass(frozen=True)
class HuggingFaceDailyOptions(opt.KindOptions):
    KEYS: ClassVar[tuple[str, ...]] = ("date",)

    date: str = "latest"

    @classmethod
    def read(cls, reader: opt.OptionReader, table: Mapping[str, Any], path: str
             ) -> HuggingFaceDailyOptions:
        return cls(date=reader.value(table, "date", path, str, cls.date, _date_setting))


class HuggingFaceDailySource:
    """One day of Daily Papers; the latest day unless a date is set."""

    kind = "hf_daily"
    Options: ClassVar[type[opt.KindOptions]] = HuggingFaceDailyOptions

    def __init__(self, settings: SourceSettings) -> None:
        self.settings = settings
        self.options: HuggingFaceDailyOptions = opt.options_of(settings, HuggingFaceDailyOptions)
        self.url = settings.url or BASE_URL

    def fetch(self, fetcher: Fetcher, state: SourceState) -> Batch:
        params: dict[str, str | int] = {}
        if self.options.date != "latest":
            params["date"] = self.options.date
        with fetcher.get(self.url, params=params or None, source=self.settings.name,
                         headers=self.settings.request_headers()) as fetched:
            return Batch(papers=parse(fetched.content, date=self.options.date,
                                      source=self.settings.name))
