"""TOML file -> validated, frozen settings. Every problem is reported with its key path."""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from digest import __version__
from digest.calendar import parse_holidays
from digest.errors import ConfigError
from digest.options import (
    MISSING,
    KindOptions,
    OptionReader,
    Secret,
    entry_name,
    env_name,
    in_range,
    join_path,
    local_path,
    one_of,
    source_url,
    type_name,
    url_problem,
)
from digest.terms import (
    Query,
    Term,
    TermError,
    keyword_warnings,
    parse_query,
    parse_term,
    query_terms,
    query_warnings,
)

CONFIG_VERSION = 1
# Every key a config file may hold, by table; the docs test checks each is documented.
TOP_KEYS = ("version", "store", "http", "schedule", "web", "sources", "watchlists",
            "channels", "arxiv")
STORE_KEYS = ("path", "lookback_days", "keep_days", "keep_payload_days")
HTTP_KEYS = ("contact", "timeout_seconds", "max_retries", "retry_backoff_seconds",
             "max_retry_after_seconds", "max_body_mb", "arxiv_interval_seconds",
             "interval_seconds")
SCHEDULE_KEYS = ("cron", "timezone")
WEB_KEYS = ("base_url", "host", "port", "secret_env", "max_body_kb")
ARXIV_KEYS = ("extra_holidays", "catch_up_days")
MIN_SECRET_CHARS = 32  # an HMAC key shorter than this is refused by check
WATCHLIST_KEYS = ("name", "channels", "keywords", "query", "exclude", "authors", "categories",
                  "primary_only", "category_boost", "upvotes_boost", "recency_boost",
                  "recency_half_life_days", "similar_to", "similarity_weight",
                  "min_similarity", "min_score", "max_papers", "schedule", "timezone",
                  "feedback_weight", "previous_names", "heartbeat")
# What every source and every channel may hold, whatever its kind; the rest is the kind's.
SOURCE_KEYS = ("name", "kind", "enabled", "url", "headers", "secret_headers")
CHANNEL_KEYS = ("kind", "timeout_seconds", "previous_names")
_CATEGORY = re.compile(r"^[a-z\-]+(\.[A-Za-z\-]+)?$")
# A header name as HTTP allows it (a token), and a value without line breaks.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_VALUE = re.compile(r"^[^\r\n\x00]*$")


@dataclass(frozen=True)
class StoreSettings:
    path: Path = Path("data/digest.db")
    lookback_days: int = 7
    # Retention: papers and digests older than keep_days are pruned, and the stored payload
    # of a digest sent keep_payload_days ago becomes a placeholder; 0 keeps everything.
    keep_days: int = 365
    keep_payload_days: int = 30


@dataclass(frozen=True)
class HttpSettings:
    contact: str = ""
    timeout_seconds: float = 30.0
    max_retries: int = 3
    retry_backoff_seconds: float = 2.0
    max_retry_after_seconds: float = 120.0
    max_body_mb: float = 50.0
    arxiv_interval_seconds: float = 3.0
    interval_seconds: float = 1.0

    @property
    def user_agent(self) -> str:
        contact = f"; {self.contact}" if self.contact else ""
        return f"paper-digest/{__version__} (+https://pypi.org/project/paper-digest{contact})"

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


@dataclass(frozen=True)
class ScheduleSettings:
    cron: str = "0 7 * * *"
    timezone: str = "UTC"


@dataclass(frozen=True)
class WebSettings:
    """The web app that serves rating links; links appear in digests only with base_url."""

    base_url: str | None = None  # public address readers reach, e.g. https://host/digest
    host: str = "127.0.0.1"
    port: int = 8080
    secret_env: str = "DIGEST_WEB_SECRET"
    max_body_kb: int = 16
    secret: Secret | None = None  # resolved from secret_env

    @property
    def enabled(self) -> bool:
        return bool(self.base_url)

    @property
    def key(self) -> str:
        """The key that signs links; empty while its variable is not set."""
        return self.secret.reveal() if self.secret else ""

    @property
    def link_key(self) -> str:
        """The key digests sign their links with: empty while it is unset or too short for
        the web app to accept, for a link signed with it would be refused."""
        key = self.key
        return key if len(key) >= MIN_SECRET_CHARS else ""


@dataclass(frozen=True)
class SourceSettings:
    """One [[sources]] entry: what every kind shares, and the kind's own options."""

    name: str
    kind: str
    options: Any = field(default_factory=KindOptions)  # the kind's Options dataclass
    url: str | None = None
    enabled: bool = True
    headers: Mapping[str, str] = field(default_factory=dict)
    # header name -> its value from the environment (an API key, a token)
    secret_headers: Mapping[str, Secret | None] = field(default_factory=dict)
    secret_header_envs: Mapping[str, str] = field(default_factory=dict)

    def secret_envs(self) -> dict[str, Secret | None]:
        needed = {env: self.secret_headers.get(header)
                  for header, env in self.secret_header_envs.items()}
        return {**needed, **self.options.secrets()}

    def request_headers(self) -> dict[str, str]:
        """The headers this source sends with each request, secrets revealed."""
        revealed = {header: secret.reveal() for header, secret in self.secret_headers.items()
                    if secret is not None}
        return {**self.headers, **revealed}


@dataclass(frozen=True)
class Keyword:
    """A term and its weight; a negative weight only lowers a paper's score."""

    term: Term
    weight: float = 1.0


@dataclass(frozen=True)
class AuthorRule:
    """A name to follow. With ``initials``, 'S. Wang' and 'Sinong Wang' stand for each other."""

    name: str
    initials: bool = False


@dataclass(frozen=True)
class WatchlistSettings:
    name: str
    channels: tuple[str, ...]
    keywords: tuple[Keyword, ...] = ()
    query: Query | None = None
    query_text: str | None = None
    exclude: tuple[Term, ...] = ()
    authors: tuple[AuthorRule, ...] = ()
    categories: tuple[str, ...] = ()
    primary_only: bool = False
    category_boost: Mapping[str, float] = field(default_factory=dict)
    upvotes_boost: float = 0.0
    recency_boost: float = 0.0
    recency_half_life_days: float = 3.0
    similar_to: tuple[str, ...] = ()
    similarity_weight: float = 5.0
    min_similarity: float = 0.1
    min_score: float = 1.0
    max_papers: int = 25
    schedule: str | None = None
    timezone: str | None = None
    feedback_weight: float = 5.0  # how much the model learned from ratings counts; 0: off
    previous_names: tuple[str, ...] = ()  # what the store may still call this watchlist
    heartbeat: bool = False  # a short message on a day with nothing to send

    @property
    def ratings_only(self) -> bool:
        """No terms, authors or seeds of its own: its readers' ratings are all it has."""
        return not (self.keywords or self.query is not None or self.authors
                    or self.similar_to)


@dataclass(frozen=True)
class ChannelSettings:
    """One [channels.NAME] table: what every kind shares, and the kind's own options."""

    name: str
    kind: str
    options: Any = field(default_factory=KindOptions)  # the kind's Options dataclass
    timeout_seconds: float = 30.0
    previous_names: tuple[str, ...] = ()  # what the store may still call this channel

    def secret_envs(self) -> dict[str, Secret | None]:
        """Each environment variable this channel needs, with its value if set."""
        return dict(self.options.secrets())


@dataclass(frozen=True)
class ArxivSettings:
    """arXiv's calendar as this install knows it, and how far back a catch-up reaches."""

    extra_holidays: frozenset[date] = frozenset()
    catch_up_days: int = 7  # 0: never backfill missed announcement days

    @property
    def holidays(self) -> frozenset[date]:
        return arxiv_holidays() | self.extra_holidays


@dataclass(frozen=True)
class Settings:
    path: Path
    store: StoreSettings = field(default_factory=StoreSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    web: WebSettings = field(default_factory=WebSettings)
    arxiv: ArxivSettings = field(default_factory=ArxivSettings)
    sources: tuple[SourceSettings, ...] = ()
    watchlists: tuple[WatchlistSettings, ...] = ()
    channels: Mapping[str, ChannelSettings] = field(default_factory=dict)

    def missing_secrets(self) -> list[tuple[str, str]]:
        problems = []
        entries: list[tuple[str, Any]] = [
            *((f"channels.{c.name}", c) for c in self.channels.values()),
            *((f"sources[{i}]", s) for i, s in enumerate(self.sources) if s.enabled)]
        for where, entry in entries:
            needed = entry.secret_envs()
            for env, value in needed.items():
                if value is None or not value.reveal():
                    problems.append((where, f"environment variable {env} is not set"))
            if all(value is not None and value.reveal() for value in needed.values()):
                # The reason never quotes the value: it could hold a piece of the secret.
                problems += [(where, reason) for reason in entry.options.secret_problems()]
        if self.web.enabled:
            key = self.web.key
            if not key:
                problems.append(("web.secret_env", f"environment variable "
                                 f"{self.web.secret_env} is not set (the key that signs "
                                 "rating links)"))
            elif len(key) < MIN_SECRET_CHARS:
                problems.append(("web.secret_env", f"${self.web.secret_env} is "
                                 f"{len(key)} characters; use at least {MIN_SECRET_CHARS} "
                                 "random ones (python -c 'import secrets; "
                                 "print(secrets.token_urlsafe(32))')"))
        return problems


# --------------------------------------------------------------------------- reading

def _timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown IANA timezone '{value}'"
    return None


def _cron(value: str) -> str | None:
    try:
        CronTrigger.from_crontab(value, timezone="UTC")
    except ValueError as exc:
        return f"invalid cron expression ({exc})"
    return None


@functools.cache
def arxiv_categories() -> frozenset[str]:
    """arXiv's category ids (cs.CL, hep-th, ...), from the taxonomy shipped with the package."""
    text = (resources.files("digest") / "data" / "arxiv_categories.txt").read_text("utf-8")
    return frozenset(line.strip() for line in text.splitlines()
                     if line.strip() and not line.lstrip().startswith("#"))


@functools.cache
def arxiv_holidays() -> frozenset[date]:
    """The dates arXiv does not announce, from the schedule shipped with the package."""
    text = (resources.files("digest") / "data" / "arxiv_holidays.txt").read_text("utf-8")
    return parse_holidays(text)[0]


@functools.cache
def arxiv_archives() -> frozenset[str]:
    """Archives with subject classes (cs, math, astro-ph, ...): rss.arxiv.org serves each whole."""
    return frozenset(c.split(".", 1)[0] for c in arxiv_categories() if "." in c)


def _category(value: str) -> str | None:
    """A category a paper can be listed under; ids are case-sensitive, as arXiv writes them."""
    return _category_problem(value, arxiv_categories())


def listing_category(value: str) -> str | None:
    """What an arxiv_rss source may ask for: a category, or a whole archive such as 'cs'."""
    return _category_problem(value, arxiv_categories() | arxiv_archives())


def _category_problem(value: str, known: frozenset[str]) -> str | None:
    if value in known:
        return None
    if value in arxiv_archives():
        example = min(c for c in arxiv_categories() if c.startswith(value + "."))
        return (f"'{value}' is a whole arXiv archive; papers are listed under its categories, "
                f"like {example}")
    by_lower = {c.lower(): c for c in known}
    near = difflib.get_close_matches(value.lower(), by_lower, n=1, cutoff=0.75)
    close = by_lower.get(value.lower()) or (by_lower[near[0]] if near else None)
    hint = f" (did you mean '{close}'?)" if close else ""
    if not _CATEGORY.match(value):
        return f"'{value}' is not an arXiv category like cs.CL{hint}"
    return f"unknown arXiv category '{value}'{hint}"


def _read_arxiv(reader: OptionReader, raw: Any) -> ArxivSettings:
    table = reader.table(raw, "arxiv")
    reader.known_keys(table, ARXIV_KEYS, "arxiv")
    d = ArxivSettings()
    holidays = reader.strings(table, "extra_holidays", "arxiv", check=_calendar_date,
                              empty="empty date")
    return ArxivSettings(
        extra_holidays=frozenset(date.fromisoformat(day) for day in holidays),
        catch_up_days=reader.value(table, "catch_up_days", "arxiv", int, d.catch_up_days,
                                   in_range(0, 60)),
    )


def _calendar_date(value: str) -> str | None:
    try:
        # fromisoformat also takes 20261231; the file's readers expect the dashes
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) and date.fromisoformat(value):
            return None
    except ValueError:
        pass
    return 'must be a date YYYY-MM-DD, like "2026-12-31"'


def _read_store(reader: OptionReader, raw: Any) -> StoreSettings:
    table = reader.table(raw, "store")
    reader.known_keys(table, STORE_KEYS, "store")
    d = StoreSettings()
    path = reader.value(table, "path", "store", str, default=str(d.path),
                        check=local_path)
    lookback_days = reader.value(table, "lookback_days", "store", int, d.lookback_days,
                                 in_range(1, 3650))
    keep_days = reader.value(table, "keep_days", "store", int, d.keep_days,
                             in_range(0, 36500))
    if keep_days and isinstance(lookback_days, int) and keep_days <= lookback_days:
        # A paper still inside the lookback window is a candidate: pruning it would lose
        # the record that it was sent.
        reader.problem("store.keep_days", f"must be 0 (keep everything) or more than "
                                          f"lookback_days ({lookback_days})")
    return StoreSettings(
        path=Path(path or d.path).expanduser(),
        lookback_days=lookback_days,
        keep_days=keep_days,
        keep_payload_days=reader.value(table, "keep_payload_days", "store", int,
                                       d.keep_payload_days, in_range(0, 36500)),
    )


def _read_http(reader: OptionReader, raw: Any) -> HttpSettings:
    table = reader.table(raw, "http")
    d = HttpSettings()
    reader.known_keys(table, HTTP_KEYS, "http")
    return HttpSettings(
        contact=reader.value(table, "contact", "http", str, d.contact),
        timeout_seconds=reader.value(table, "timeout_seconds", "http", float,
                                     d.timeout_seconds, in_range(0.1, 600)),
        max_retries=reader.value(table, "max_retries", "http", int, d.max_retries,
                                 in_range(0, 10)),
        retry_backoff_seconds=reader.value(table, "retry_backoff_seconds", "http", float,
                                           d.retry_backoff_seconds, in_range(0, 600)),
        max_retry_after_seconds=reader.value(table, "max_retry_after_seconds", "http", float,
                                             d.max_retry_after_seconds, in_range(0, 3600)),
        max_body_mb=reader.value(table, "max_body_mb", "http", float, d.max_body_mb,
                                 in_range(0.001, 4096)),
        arxiv_interval_seconds=reader.value(table, "arxiv_interval_seconds", "http", float,
                                            d.arxiv_interval_seconds, in_range(0, 600)),
        interval_seconds=reader.value(table, "interval_seconds", "http", float,
                                      d.interval_seconds, in_range(0, 600)),
    )


def _read_schedule(reader: OptionReader, raw: Any) -> ScheduleSettings:
    table = reader.table(raw, "schedule")
    reader.known_keys(table, SCHEDULE_KEYS, "schedule")
    d = ScheduleSettings()
    return ScheduleSettings(
        cron=reader.value(table, "cron", "schedule", str, d.cron, _cron),
        timezone=reader.value(table, "timezone", "schedule", str, d.timezone, _timezone),
    )


def _read_web(reader: OptionReader, raw: Any, env: Mapping[str, str]) -> WebSettings:
    table = reader.table(raw, "web")
    reader.known_keys(table, WEB_KEYS, "web")
    d = WebSettings()

    def url(value: str) -> str | None:
        if reason := url_problem(value, local=False):
            if reason.startswith(("unsupported", "empty", "not a valid URL (no host")):
                return "must be an http(s) URL, like https://papers.example.org/digest"
            return reason
        parts = urlsplit(value)
        if parts.query or parts.fragment:
            return "must not carry a query or fragment"
        return None

    secret_env = reader.value(table, "secret_env", "web", str, d.secret_env, env_name)
    base_url = reader.value(table, "base_url", "web", str, None, url)
    return WebSettings(
        base_url=base_url.rstrip("/") if base_url else None,
        host=reader.value(table, "host", "web", str, d.host),
        port=reader.value(table, "port", "web", int, d.port, in_range(1, 65535)),
        secret_env=secret_env,
        max_body_kb=reader.value(table, "max_body_kb", "web", int, d.max_body_kb,
                                 in_range(1, 1024)),
        secret=Secret(env[secret_env], secret_env) if env.get(secret_env or "") else None,
    )


def _read_sources(reader: OptionReader, raw: Any) -> tuple[SourceSettings, ...]:
    from digest.sources import SOURCES  # the registry of kinds, which imports this module

    if raw is MISSING:
        reader.problem("sources", "at least one [[sources]] entry is required")
        return ()
    if not isinstance(raw, list):
        reader.problem("sources", "must be an array of tables ([[sources]])")
        return ()
    sources: list[SourceSettings] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        path = f"sources[{i}]"
        table = reader.table(entry, path)
        if not table:
            continue
        source_name = reader.value(table, "name", path, str, check=entry_name)
        kind = reader.value(table, "kind", path, str, check=one_of(tuple(SOURCES)))
        options = KindOptions()
        if kind:
            options_type = SOURCES[kind].Options
            reader.known_keys(table, SOURCE_KEYS + options_type.KEYS, path)
            options = options_type.read(reader, table, path)
        if source_name in seen:
            reader.problem(f"{path}.name", f"duplicate source name '{source_name}'")
        seen.add(source_name)
        header_envs = _read_headers(reader, table, "secret_headers", path, env_name)
        sources.append(SourceSettings(
            name=source_name or f"source-{i}",
            kind=kind or "",
            options=options,
            url=reader.value(table, "url", path, str, None, source_url),
            enabled=reader.value(table, "enabled", path, bool, True),
            headers=_read_headers(reader, table, "headers", path, _header_value),
            secret_headers={header: Secret(reader.env[env], env) if reader.env.get(env)
                            else None for header, env in header_envs.items()},
            secret_header_envs=header_envs,
        ))
    return tuple(sources)


def _read_headers(reader: OptionReader, table: Mapping[str, Any], key: str, path: str,
                  check: Callable[[str], str | None]) -> dict[str, str]:
    raw = reader.table(table.get(key, MISSING), join_path(path, key))
    headers: dict[str, str] = {}
    for header, value in raw.items():
        where = join_path(join_path(path, key), header)
        if not _HEADER_NAME.match(header):
            reader.problem(where, "is not an HTTP header name")
        elif header.lower() in ("host", "content-length", "transfer-encoding", "connection"):
            reader.problem(where, "is set by the HTTP client; it cannot be configured")
        elif not isinstance(value, str):
            reader.problem(where, "must be a string")
        elif reason := check(value):
            reader.problem(where, reason)
        else:
            headers[header] = value
    return headers


def _header_value(value: str) -> str | None:
    return None if _HEADER_VALUE.match(value) else "must not hold a line break"


def _read_keywords(reader: OptionReader, table: Mapping[str, Any], path: str
                   ) -> tuple[Keyword, ...]:
    raw = reader.value(table, "keywords", path, list, default=[])
    keywords = []
    for i, item in enumerate(raw or []):
        where = f"{path}.keywords[{i}]"
        if isinstance(item, str):
            text, weight = item, 1.0
        elif isinstance(item, dict):
            reader.known_keys(item, ("term", "weight"), where)
            text = reader.value(item, "term", where, str)
            weight = reader.value(item, "weight", where, float, 1.0,
                                  lambda w: None if w != 0 else "must not be 0")
            if text is None:
                continue
        else:
            reader.problem(where, f"must be a string or {{term = ..., weight = ...}}, "
                                  f"got {type_name(item)}")
            continue
        term = _term(reader, text, where)
        if term is not None:
            keywords.append(Keyword(term=term, weight=weight))
    return tuple(keywords)


def _term(reader: OptionReader, text: str, where: str) -> Term | None:
    try:
        return parse_term(text)
    except TermError as exc:
        reader.problem(where, str(exc))
        return None


def _read_authors(reader: OptionReader, table: Mapping[str, Any], path: str
                  ) -> tuple[AuthorRule, ...]:
    raw = reader.value(table, "authors", path, list, default=[])
    rules = []
    for i, item in enumerate(raw or []):
        where = f"{path}.authors[{i}]"
        if isinstance(item, str):
            name, initials = item, False
        elif isinstance(item, dict):
            reader.known_keys(item, ("name", "initials"), where)
            name = reader.value(item, "name", where, str)
            initials = reader.value(item, "initials", where, bool, False)
            if name is None:
                continue
        else:
            reader.problem(where, f"must be a name or {{name = ..., initials = true}}, "
                                  f"got {type_name(item)}")
            continue
        words = [w for w in re.split(r"[\s.,\-]+", name) if w]
        if not words:
            reader.problem(where, "empty author name")
        elif len(words) < 2:
            reader.problem(where, f"'{name}' is one word; write the full name, as in "
                                  "'Sinong Wang'")
        else:
            rules.append(AuthorRule(name=" ".join(name.split()), initials=initials))
    return tuple(rules)


def _read_category_boost(reader: OptionReader, table: Mapping[str, Any], path: str
                         ) -> dict[str, float]:
    raw = reader.table(table.get("category_boost", MISSING), f"{path}.category_boost")
    boosts = {}
    for category, points in raw.items():
        where = f"{path}.category_boost.{category}"
        if reason := _category(category):
            reader.problem(where, reason)
        elif isinstance(points, bool) or not isinstance(points, int | float):
            reader.problem(where, f"must be a number, got {type_name(points)}")
        elif not math.isfinite(points):
            reader.problem(where, f"must be a finite number, got {points}")
        else:
            boosts[category] = float(points)
    return boosts


def _read_watchlists(reader: OptionReader, raw: Any) -> tuple[WatchlistSettings, ...]:
    if raw is MISSING:
        reader.problem("watchlists", "at least one [[watchlists]] entry is required")
        return ()
    if not isinstance(raw, list):
        reader.problem("watchlists", "must be an array of tables ([[watchlists]])")
        return ()
    watchlists: list[WatchlistSettings] = []
    seen: set[str] = set()
    d = WatchlistSettings(name="", channels=())
    for i, entry in enumerate(raw):
        path = f"watchlists[{i}]"
        table = reader.table(entry, path)
        if not table:
            continue
        reader.known_keys(table, WATCHLIST_KEYS, path)
        name = reader.value(table, "name", path, str, check=entry_name)
        if name in seen:
            reader.problem(f"{path}.name", f"duplicate watchlist name '{name}'")
        seen.add(name)
        query_text = reader.value(table, "query", path, str, None)
        query = None
        if query_text is not None:
            try:
                query = parse_query(query_text)
            except TermError as exc:
                reader.problem(f"{path}.query", str(exc))
        exclude = []
        for j, text in enumerate(reader.strings(table, "exclude", path, empty="empty phrase")):
            term = _term(reader, text, f"{path}.exclude[{j}]")
            if term is not None:
                exclude.append(term)
        evidence = ("keywords", "query", "authors", "categories", "similar_to",
                    "feedback_weight")
        if not any(key in table for key in evidence):
            reader.problem(path, "needs at least one of keywords, query, authors, categories "
                                 "or similar_to (or feedback_weight, for a watchlist driven "
                                 "by ratings alone)")
        watchlists.append(WatchlistSettings(
            name=name or f"watchlist-{i}",
            channels=reader.strings(table, "channels", path, empty="empty channel name"),
            keywords=_read_keywords(reader, table, path),
            query=query,
            query_text=query_text,
            exclude=tuple(exclude),
            authors=_read_authors(reader, table, path),
            categories=reader.strings(table, "categories", path, check=_category),
            primary_only=reader.value(table, "primary_only", path, bool, False),
            category_boost=_read_category_boost(reader, table, path),
            upvotes_boost=reader.value(table, "upvotes_boost", path, float, d.upvotes_boost,
                                       in_range(0, 100)),
            recency_boost=reader.value(table, "recency_boost", path, float, d.recency_boost,
                                       in_range(0, 100)),
            recency_half_life_days=reader.value(table, "recency_half_life_days", path, float,
                                                d.recency_half_life_days, in_range(0.1, 365)),
            similar_to=reader.strings(table, "similar_to", path, empty="empty seed"),
            similarity_weight=reader.value(table, "similarity_weight", path, float,
                                           d.similarity_weight, in_range(0, 100)),
            min_similarity=reader.value(table, "min_similarity", path, float,
                                        d.min_similarity, in_range(0, 1)),
            min_score=reader.value(table, "min_score", path, float, d.min_score,
                                   in_range(0)),
            max_papers=reader.value(table, "max_papers", path, int, d.max_papers,
                                    in_range(1, 500)),
            schedule=reader.value(table, "schedule", path, str, None, _cron),
            timezone=reader.value(table, "timezone", path, str, None, _timezone),
            feedback_weight=reader.value(table, "feedback_weight", path, float,
                                         d.feedback_weight, in_range(0, 100)),
            previous_names=reader.strings(table, "previous_names", path, check=entry_name,
                                          empty="empty name"),
            heartbeat=reader.value(table, "heartbeat", path, bool, d.heartbeat),
        ))
    return tuple(watchlists)


def _read_channels(reader: OptionReader, raw: Any) -> dict[str, ChannelSettings]:
    from digest.deliver import CHANNELS  # the registry of kinds, which imports this module

    tables = reader.table(raw, "channels")
    channels: dict[str, ChannelSettings] = {}
    d = ChannelSettings(name="", kind="")
    for channel_name, entry in tables.items():
        path = f"channels.{channel_name}"
        if reason := entry_name(channel_name):
            reader.problem(path, reason)
        table = reader.table(entry, path)
        if not table:
            continue
        kind = reader.value(table, "kind", path, str, check=one_of(tuple(CHANNELS)))
        options = KindOptions()
        if kind:
            options_type = CHANNELS[kind].Options
            reader.known_keys(table, CHANNEL_KEYS + options_type.KEYS, path)
            options = options_type.read(reader, table, path)
        channels[channel_name] = ChannelSettings(
            name=channel_name,
            kind=kind or "",
            options=options,
            timeout_seconds=reader.value(table, "timeout_seconds", path, float,
                                         d.timeout_seconds, in_range(0.1, 600)),
            previous_names=reader.strings(table, "previous_names", path, check=entry_name,
                                          empty="empty name"),
        )
    return channels


def _check_previous_names(reader: OptionReader, settings: Settings) -> None:
    """A previous name must be free now, and claimed once, or a rename would merge two."""
    kinds = (("channel", [(f"channels.{c.name}", c.name, c.previous_names)
                          for c in settings.channels.values()]),
             ("watchlist", [(f"watchlists[{i}]", w.name, w.previous_names)
                            for i, w in enumerate(settings.watchlists)]))
    for kind, entries in kinds:
        current = {name for _, name, _ in entries}
        claimed: dict[str, str] = {}
        for path, name, previous in entries:
            for j, old in enumerate(previous):
                where = f"{path}.previous_names[{j}]"
                if old in current:
                    reader.problem(where, f"'{old}' is the name of a configured {kind}; list "
                                          "only names no longer in use")
                elif old in claimed and claimed[old] != name:
                    reader.problem(where, f"'{old}' is a previous name of {kind} "
                                          f"'{claimed[old]}' already")
                claimed.setdefault(old, name)


def parse_settings(
    text: str, *, path: Path, env: Mapping[str, str] | None = None
) -> Settings:
    """Parse and check a config document; raise ConfigError listing every problem."""
    settings, problems = _parse(text, path=path, env=env)
    if problems or settings is None:
        raise ConfigError(problems, path=str(path))
    return settings


def _parse(
    text: str, *, path: Path, env: Mapping[str, str] | None
) -> tuple[Settings | None, list[tuple[str, str]]]:
    """Settings and every problem found; a value with a problem holds its default."""
    env = os.environ if env is None else env
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [("", f"not valid TOML: {exc}")]
    reader = OptionReader(env)
    reader.known_keys(data, TOP_KEYS, "")
    version = data.get("version", MISSING)
    if version is MISSING:
        reader.problem("version", f"is required (write version = {CONFIG_VERSION})")
    elif version != CONFIG_VERSION:
        reader.problem("version", f"must be {CONFIG_VERSION}, got {version!r}")
    settings = Settings(
        path=path,
        store=_read_store(reader, data.get("store", MISSING)),
        http=_read_http(reader, data.get("http", MISSING)),
        schedule=_read_schedule(reader, data.get("schedule", MISSING)),
        web=_read_web(reader, data.get("web", MISSING), env),
        arxiv=_read_arxiv(reader, data.get("arxiv", MISSING)),
        sources=_read_sources(reader, data.get("sources", MISSING)),
        watchlists=_read_watchlists(reader, data.get("watchlists", MISSING)),
        channels=_read_channels(reader, data.get("channels", MISSING)),
    )
    for i, watchlist in enumerate(settings.watchlists):
        if not watchlist.channels:
            reader.problem(f"watchlists[{i}].channels", "list at least one channel")
        for j, channel in enumerate(watchlist.channels):
            if channel not in settings.channels:
                known = ", ".join(settings.channels) or "none defined"
                reader.problem(f"watchlists[{i}].channels[{j}]",
                               f"no channel named '{channel}' (known: {known})")
    _check_previous_names(reader, settings)
    return settings, reader.problems


def wording_warnings(settings: Settings) -> list[tuple[str, str]]:
    """Terms that are valid but probably not meant as written: lowercase and/or/not and
    -word, read as phrase text. ``check`` prints them as warnings."""
    out = []
    for i, watchlist in enumerate(settings.watchlists):
        if watchlist.query_text is not None:
            out += [(f"watchlists[{i}].query", w) for w in query_warnings(watchlist.query_text)]
            if (watchlist.query is not None and not (watchlist.keywords or watchlist.authors
                                                     or watchlist.similar_to)
                    and all(negated for _, negated in query_terms(watchlist.query))):
                out.append((f"watchlists[{i}].query",
                            "holds only NOT terms: it keeps papers out but finds none, and "
                            "with no keywords, authors or similar_to only ratings can send "
                            "a paper; list what to find in keywords"))
        for j, keyword in enumerate(watchlist.keywords):
            out += [(f"watchlists[{i}].keywords[{j}]", w)
                    for w in keyword_warnings(keyword.term.text)]
        for j, term in enumerate(watchlist.exclude):
            out += [(f"watchlists[{i}].exclude[{j}]", w)
                    for w in keyword_warnings(term.text, exclude=True)]
    return out


def parse_watchlist(text: str, *, name: str, channels: tuple[str, ...] = ()
                    ) -> tuple[WatchlistSettings | None, list[tuple[str, str]]]:
    """One watchlist from the TOML keys of its table (keywords = [...], query = ...), as a
    preview edits it; its name and channels are given. Returns it, or None and every
    problem, each with its key path."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return None, [("", f"not valid TOML: {exc}")]
    reader = OptionReader()
    for key in ("name", "channels"):
        if key in table:
            reader.problem(key, "is not edited here")
            del table[key]
    table = {**table, "name": name, "channels": list(channels)}
    (watchlist,) = _read_watchlists(reader, [table]) or (None,)
    problems = [(path.removeprefix("watchlists[0]").lstrip("."), reason)
                for path, reason in reader.problems]
    return (watchlist if not problems else None), problems


def load_settings(path: str | Path, *, env: Mapping[str, str] | None = None) -> Settings:
    """Read a config file. Relative paths inside it are taken from the working directory."""
    config_path = Path(path)
    return parse_settings(_read_text(config_path), path=config_path, env=env)


def read_settings(
    path: str | Path, *, env: Mapping[str, str] | None = None
) -> tuple[Settings | None, list[tuple[str, str]]]:
    """What ``check`` needs: the settings as far as they could be read, and every problem.

    Never raises for a bad file. The settings are None when the file cannot be read or is
    not TOML; otherwise a value with a problem holds its default, so that the checks of a
    run (secrets, local files) can still be made and reported together.
    """
    config_path = Path(path)
    try:
        text = _read_text(config_path)
    except ConfigError as exc:
        return None, exc.problems
    return _parse(text, path=config_path, env=env)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError([("", "config file not found")], path=str(path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("", f"cannot read config file: {exc}")], path=str(path)) from exc
