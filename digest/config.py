"""TOML file -> validated, frozen settings. Every problem is reported with its key path."""

from __future__ import annotations

import difflib
import functools
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from email.errors import HeaderParseError
from email.headerregistry import AddressHeader, HeaderRegistry
from importlib import resources
from pathlib import Path
from typing import Any, cast
from urllib.parse import SplitResult, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger

from digest import __version__
from digest.calendar import parse_holidays
from digest.errors import ConfigError
from digest.terms import (
    Query,
    Term,
    TermError,
    keyword_warnings,
    parse_query,
    parse_term,
    query_warnings,
)

CONFIG_VERSION = 1
SOURCE_KINDS = ("arxiv_rss", "arxiv_api", "hf_daily", "feed")
CHANNEL_KINDS = ("email", "slack")
ANNOUNCE_TYPES = ("new", "cross", "replace", "replace-cross")
ARXIV_API_MAX_RESULTS = 2000  # arXiv's documented ceiling for one call
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
_CATEGORY = re.compile(r"^[a-z\-]+(\.[A-Za-z\-]+)?$")
# What may sit in a URL an HTTP client sends: no spaces, no control characters.
_URL_JUNK = re.compile(r"[\s\x00-\x1f\x7f]")
_HEADERS = HeaderRegistry()
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class Secret:
    """A value read from the environment; never shown in reprs, logs or errors."""

    __slots__ = ("_value", "env")

    def __init__(self, value: str, env: str) -> None:
        self._value = value
        self.env = env

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret(${self.env}=***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


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


@dataclass(frozen=True)
class SourceSettings:
    name: str
    kind: str
    url: str | None = None
    categories: tuple[str, ...] = ()
    announce_types: tuple[str, ...] = ("new", "cross")
    query: str | None = None
    max_results: int = 200
    page_size: int = 100
    sort_by: str = "submittedDate"
    date: str = "latest"
    enabled: bool = True


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


@dataclass(frozen=True)
class ChannelSettings:
    name: str
    kind: str
    # email
    smtp_host: str = "localhost"
    smtp_port: int = 587
    security: str = "starttls"
    ca_file: Path | None = None  # a private CA to trust, for an internal relay
    username_env: str | None = None
    password_env: str | None = None
    sender: str = ""
    to: tuple[str, ...] = ()
    # {papers} is "1 new paper" / "8 new papers"; {date} is "Tue 24 Nov" in the
    # watchlist's timezone; {count} and {iso_date} ("2026-11-24") are there too.
    subject: str = "{watchlist}: {papers}, {date}"
    unsubscribe: str | None = None
    timeout_seconds: float = 30.0
    # slack
    webhook_url_env: str | None = None
    # resolved from the environment; None when the variable is not set
    username: Secret | None = None
    password: Secret | None = None
    webhook_url: Secret | None = None
    previous_names: tuple[str, ...] = ()  # what the store may still call this channel

    def secret_envs(self) -> dict[str, Secret | None]:
        """Each environment variable this channel needs, with its value if set."""
        needed: dict[str, Secret | None] = {}
        if self.kind == "email":
            if self.username_env:
                needed[self.username_env] = self.username
            if self.password_env:
                needed[self.password_env] = self.password
        elif self.kind == "slack" and self.webhook_url_env:
            needed[self.webhook_url_env] = self.webhook_url
        return needed


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
        for channel in self.channels.values():
            for env, value in channel.secret_envs().items():
                if value is None or not value.reveal():
                    problems.append(
                        (f"channels.{channel.name}", f"environment variable {env} is not set")
                    )
            hook = channel.webhook_url.reveal() if channel.webhook_url else ""
            # The reason is not shown: it could quote a piece of the secret.
            if hook and _url_problem(hook, local=False):
                problems.append((f"channels.{channel.name}", f"${channel.webhook_url_env} is "
                                 "not a valid webhook URL (https://host/path, port 1-65535)"))
        if self.web.enabled:
            key = self.web.secret.reveal() if self.web.secret else ""
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

_MISSING = object()


class _Reader:
    """Collects problems while reading typed values out of parsed TOML tables."""

    def __init__(self) -> None:
        self.problems: list[tuple[str, str]] = []

    def problem(self, path: str, reason: str) -> None:
        self.problems.append((path, reason))

    def table(self, value: Any, path: str) -> dict[str, Any]:
        if value is _MISSING:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"must be a table, got {_type_name(value)}")
            return {}
        return value

    def known_keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], path: str) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                self.problem(_join(path, key), f"unknown key{hint}")

    def value(
        self,
        table: Mapping[str, Any],
        key: str,
        path: str,
        kind: type | tuple[type, ...],
        default: Any = _MISSING,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        where = _join(path, key)
        raw = table.get(key, _MISSING)
        if raw is _MISSING:
            if default is _MISSING:
                self.problem(where, "is required")
                return None
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(raw, int) and not isinstance(raw, bool):
            raw = float(raw)
        if not isinstance(raw, kinds) or (isinstance(raw, bool) and bool not in kinds):
            expected = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            self.problem(where, f"must be {expected}, got {_type_name(raw)}")
            return default if default is not _MISSING else None
        if check is not None:
            reason = check(raw)
            if reason:
                self.problem(where, reason)
                return default if default is not _MISSING else None
        return raw

    def strings(
        self,
        table: Mapping[str, Any],
        key: str,
        path: str,
        default: tuple[str, ...] = (),
        check: Callable[[str], str | None] | None = None,
        empty: str = "empty string",
    ) -> tuple[str, ...]:
        raw = self.value(table, key, path, list, default=list(default))
        out = []
        for i, item in enumerate(raw or []):
            where = f"{_join(path, key)}[{i}]"
            if not isinstance(item, str):
                self.problem(where, f"must be a string, got {_type_name(item)}")
                continue
            if not item.strip():
                self.problem(where, empty)
                continue
            if check is not None and (reason := check(item)):
                self.problem(where, reason)
                continue
            out.append(item.strip())
        return tuple(out)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
               list: "a list", dict: "a table"}


def _type_name(value: Any) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _in_range(low: float, high: float | None = None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value < low or (high is not None and value > high):
            return f"must be {low:g}-{high:g}" if high is not None else f"must be >= {low:g}"
        return None

    return check


def _one_of(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in options else f"must be one of {', '.join(options)}"

    return check


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


def _listing_category(value: str) -> str | None:
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


def _is_local(location: str, scheme: str) -> bool:
    # The rule of digest.http.is_local (a path, a file: URL, a Windows drive letter), which
    # this layer cannot import; tests/test_check.py holds the two together.
    return scheme in ("", "file") or (len(scheme) == 1 and location[1:2] == ":")


def _url_problem(value: str, *, local: bool) -> str | None:
    """Why a URL cannot be fetched as written, or None. ``local`` admits paths and file:."""
    if not value.strip():
        return "empty url"
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    scheme = parts.scheme.lower()
    if local and _is_local(value, scheme):
        return None
    if scheme not in ("http", "https"):
        allowed = "http://, https://, file: or a local path" if local else "http:// or https://"
        return f"unsupported URL scheme '{scheme}:' (use {allowed})"
    if _URL_JUNK.search(value):
        return "not a valid URL (it holds a space or a control character)"
    if not parts.hostname:
        return "not a valid URL (no host name)"
    return _port_problem(parts)


def _port_problem(parts: SplitResult) -> str | None:
    try:
        port = parts.port
    except ValueError:
        written = parts.netloc.rpartition(":")[2]
        if not written.isdigit():
            return f"not a valid URL (port '{written}' is not a number)"
        port = int(written)
    if port is not None and not 1 <= port <= 65535:
        return f"port {port} is out of range (must be 1-65535)"
    return None


def _source_url(value: str) -> str | None:
    return _url_problem(value, local=True)


def _unsubscribe(value: str) -> str | None:
    """List-Unsubscribe holds a URL: mailto:, or an http(s) address readers can open."""
    if value.lower().startswith("mailto:"):
        return None if _address(value[7:].split("?", 1)[0]) is None else (
            "the mailto: address is not an email address like list-admin@example.org")
    if not value.lower().startswith(("http://", "https://")):
        return "must be a mailto: or https:// URL, like mailto:list-admin@example.org"
    return _url_problem(value, local=False)


def _address(value: str) -> str | None:
    """One mailbox, strictly parsed: a local part and a domain, optionally a display name."""
    try:
        parsed = _HEADERS("to", value)
        header = cast(AddressHeader, parsed)  # the registry makes "to" an address header
        addresses, groups, defects = header.addresses, header.groups, parsed.defects
    except (HeaderParseError, IndexError, ValueError, TypeError):  # the parser's own slips
        return f"'{value}' is not an email address like name@example.org"
    if len(addresses) > 1:
        return f"'{value}' holds {len(addresses)} addresses; write one address per entry"
    if (defects or not addresses or not addresses[0].username or not addresses[0].domain
            or any(group.display_name for group in groups)):
        return f"'{value}' is not an email address like name@example.org"
    return None


def _env_name(value: str) -> str | None:
    return None if _ENV_NAME.match(value) else "must be an environment variable name"


def _name(value: str) -> str | None:
    if _NAME.match(value):
        return None
    return "must be letters, digits, '-', '_' or '.', starting with a letter or digit"


def _date(value: str) -> str | None:
    if value == "latest" or re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return None
    return "must be 'latest' or a date YYYY-MM-DD"


def _read_arxiv(reader: _Reader, raw: Any) -> ArxivSettings:
    table = reader.table(raw, "arxiv")
    reader.known_keys(table, ARXIV_KEYS, "arxiv")
    d = ArxivSettings()
    holidays = reader.strings(table, "extra_holidays", "arxiv", check=_calendar_date,
                              empty="empty date")
    return ArxivSettings(
        extra_holidays=frozenset(date.fromisoformat(day) for day in holidays),
        catch_up_days=reader.value(table, "catch_up_days", "arxiv", int, d.catch_up_days,
                                   _in_range(0, 60)),
    )


def _calendar_date(value: str) -> str | None:
    try:
        # fromisoformat also takes 20261231; the file's readers expect the dashes
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) and date.fromisoformat(value):
            return None
    except ValueError:
        pass
    return 'must be a date YYYY-MM-DD, like "2026-12-31"'


def _read_store(reader: _Reader, raw: Any) -> StoreSettings:
    table = reader.table(raw, "store")
    reader.known_keys(table, STORE_KEYS, "store")
    d = StoreSettings()
    path = reader.value(table, "path", "store", str, default=str(d.path))
    lookback_days = reader.value(table, "lookback_days", "store", int, d.lookback_days,
                                 _in_range(1, 3650))
    keep_days = reader.value(table, "keep_days", "store", int, d.keep_days,
                             _in_range(0, 36500))
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
                                       d.keep_payload_days, _in_range(0, 36500)),
    )


def _read_http(reader: _Reader, raw: Any) -> HttpSettings:
    table = reader.table(raw, "http")
    d = HttpSettings()
    reader.known_keys(table, HTTP_KEYS, "http")
    return HttpSettings(
        contact=reader.value(table, "contact", "http", str, d.contact),
        timeout_seconds=reader.value(table, "timeout_seconds", "http", float,
                                     d.timeout_seconds, _in_range(0.1, 600)),
        max_retries=reader.value(table, "max_retries", "http", int, d.max_retries,
                                 _in_range(0, 10)),
        retry_backoff_seconds=reader.value(table, "retry_backoff_seconds", "http", float,
                                           d.retry_backoff_seconds, _in_range(0, 600)),
        max_retry_after_seconds=reader.value(table, "max_retry_after_seconds", "http", float,
                                             d.max_retry_after_seconds, _in_range(0, 3600)),
        max_body_mb=reader.value(table, "max_body_mb", "http", float, d.max_body_mb,
                                 _in_range(0.001, 4096)),
        arxiv_interval_seconds=reader.value(table, "arxiv_interval_seconds", "http", float,
                                            d.arxiv_interval_seconds, _in_range(0, 600)),
        interval_seconds=reader.value(table, "interval_seconds", "http", float,
                                      d.interval_seconds, _in_range(0, 600)),
    )


def _read_schedule(reader: _Reader, raw: Any) -> ScheduleSettings:
    table = reader.table(raw, "schedule")
    reader.known_keys(table, SCHEDULE_KEYS, "schedule")
    d = ScheduleSettings()
    return ScheduleSettings(
        cron=reader.value(table, "cron", "schedule", str, d.cron, _cron),
        timezone=reader.value(table, "timezone", "schedule", str, d.timezone, _timezone),
    )


def _read_web(reader: _Reader, raw: Any, env: Mapping[str, str]) -> WebSettings:
    table = reader.table(raw, "web")
    reader.known_keys(table, WEB_KEYS, "web")
    d = WebSettings()

    def url(value: str) -> str | None:
        if reason := _url_problem(value, local=False):
            if reason.startswith(("unsupported", "empty", "not a valid URL (no host")):
                return "must be an http(s) URL, like https://papers.example.org/digest"
            return reason
        parts = urlsplit(value)
        if parts.query or parts.fragment:
            return "must not carry a query or fragment"
        return None

    secret_env = reader.value(table, "secret_env", "web", str, d.secret_env, _env_name)
    base_url = reader.value(table, "base_url", "web", str, None, url)
    return WebSettings(
        base_url=base_url.rstrip("/") if base_url else None,
        host=reader.value(table, "host", "web", str, d.host),
        port=reader.value(table, "port", "web", int, d.port, _in_range(1, 65535)),
        secret_env=secret_env,
        max_body_kb=reader.value(table, "max_body_kb", "web", int, d.max_body_kb,
                                 _in_range(1, 1024)),
        secret=Secret(env[secret_env], secret_env) if env.get(secret_env or "") else None,
    )


SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "arxiv_rss": ("categories", "announce_types", "url"),
    "arxiv_api": ("query", "max_results", "page_size", "sort_by", "url"),
    "hf_daily": ("date", "url"),
    "feed": ("url",),
}


def _read_sources(reader: _Reader, raw: Any) -> tuple[SourceSettings, ...]:
    if raw is _MISSING:
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
        name = reader.value(table, "name", path, str, check=_name)
        kind = reader.value(table, "kind", path, str, check=_one_of(SOURCE_KINDS))
        allowed = ("name", "kind", "enabled") + SOURCE_KEYS.get(kind or "", ())
        if kind:
            reader.known_keys(table, allowed, path)
        if name in seen:
            reader.problem(f"{path}.name", f"duplicate source name '{name}'")
        seen.add(name)
        d = SourceSettings(name="", kind="")
        url = reader.value(table, "url", path, str, None, _source_url)
        categories = reader.strings(table, "categories", path, check=_listing_category)
        # A url or categories written but refused already have their own problem.
        if kind == "arxiv_rss" and not table.get("categories") and "url" not in table:
            reader.problem(f"{path}.categories", "list at least one arXiv category, like cs.CL")
        query = reader.value(table, "query", path, str, None,
                             lambda v: None if v.strip() else "empty query")
        if kind == "arxiv_api" and not query:
            if "query" not in table:
                reader.problem(f"{path}.query", "is required for kind arxiv_api")
        if kind == "feed" and not url and "url" not in table:
            reader.problem(f"{path}.url", "is required for kind feed")
        sources.append(SourceSettings(
            name=name or f"source-{i}",
            kind=kind or "",
            url=url,
            categories=categories,
            announce_types=reader.strings(table, "announce_types", path, d.announce_types,
                                          check=_one_of(ANNOUNCE_TYPES)),
            query=query,
            max_results=reader.value(table, "max_results", path, int, d.max_results,
                                     _in_range(1, 30000)),
            page_size=reader.value(table, "page_size", path, int, d.page_size,
                                   _in_range(1, ARXIV_API_MAX_RESULTS)),
            sort_by=reader.value(table, "sort_by", path, str, d.sort_by,
                                 _one_of(("submittedDate", "lastUpdatedDate", "relevance"))),
            date=reader.value(table, "date", path, str, d.date, _date),
            enabled=reader.value(table, "enabled", path, bool, True),
        ))
    return tuple(sources)


def _read_keywords(reader: _Reader, table: Mapping[str, Any], path: str) -> tuple[Keyword, ...]:
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
                                  f"got {_type_name(item)}")
            continue
        term = _term(reader, text, where)
        if term is not None:
            keywords.append(Keyword(term=term, weight=weight))
    return tuple(keywords)


def _term(reader: _Reader, text: str, where: str) -> Term | None:
    try:
        return parse_term(text)
    except TermError as exc:
        reader.problem(where, str(exc))
        return None


def _read_authors(reader: _Reader, table: Mapping[str, Any], path: str) -> tuple[AuthorRule, ...]:
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
                                  f"got {_type_name(item)}")
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


def _read_category_boost(reader: _Reader, table: Mapping[str, Any], path: str
                         ) -> dict[str, float]:
    raw = reader.table(table.get("category_boost", _MISSING), f"{path}.category_boost")
    boosts = {}
    for category, points in raw.items():
        where = f"{path}.category_boost.{category}"
        if reason := _category(category):
            reader.problem(where, reason)
        elif isinstance(points, bool) or not isinstance(points, int | float):
            reader.problem(where, f"must be a number, got {_type_name(points)}")
        else:
            boosts[category] = float(points)
    return boosts


def _read_watchlists(reader: _Reader, raw: Any) -> tuple[WatchlistSettings, ...]:
    if raw is _MISSING:
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
        name = reader.value(table, "name", path, str, check=_name)
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
                                       _in_range(0, 100)),
            recency_boost=reader.value(table, "recency_boost", path, float, d.recency_boost,
                                       _in_range(0, 100)),
            recency_half_life_days=reader.value(table, "recency_half_life_days", path, float,
                                                d.recency_half_life_days, _in_range(0.1, 365)),
            similar_to=reader.strings(table, "similar_to", path, empty="empty seed"),
            similarity_weight=reader.value(table, "similarity_weight", path, float,
                                           d.similarity_weight, _in_range(0, 100)),
            min_similarity=reader.value(table, "min_similarity", path, float,
                                        d.min_similarity, _in_range(0, 1)),
            min_score=reader.value(table, "min_score", path, float, d.min_score,
                                   _in_range(0)),
            max_papers=reader.value(table, "max_papers", path, int, d.max_papers,
                                    _in_range(1, 500)),
            schedule=reader.value(table, "schedule", path, str, None, _cron),
            timezone=reader.value(table, "timezone", path, str, None, _timezone),
            feedback_weight=reader.value(table, "feedback_weight", path, float,
                                         d.feedback_weight, _in_range(0, 100)),
            previous_names=reader.strings(table, "previous_names", path, check=_name,
                                          empty="empty name"),
            heartbeat=reader.value(table, "heartbeat", path, bool, d.heartbeat),
        ))
    return tuple(watchlists)


CHANNEL_KEYS: dict[str, tuple[str, ...]] = {
    "email": ("smtp_host", "smtp_port", "security", "ca_file", "username_env", "password_env",
              "from", "to", "subject", "unsubscribe", "timeout_seconds", "previous_names"),
    "slack": ("webhook_url_env", "timeout_seconds", "previous_names"),
}


def _read_channels(
    reader: _Reader, raw: Any, env: Mapping[str, str]
) -> dict[str, ChannelSettings]:
    tables = reader.table(raw, "channels")
    channels: dict[str, ChannelSettings] = {}
    d = ChannelSettings(name="", kind="")
    for name, entry in tables.items():
        path = f"channels.{name}"
        if reason := _name(name):
            reader.problem(path, reason)
        table = reader.table(entry, path)
        if not table:
            continue
        kind = reader.value(table, "kind", path, str, check=_one_of(CHANNEL_KINDS))
        if kind:
            reader.known_keys(table, ("kind",) + CHANNEL_KEYS[kind], path)
        username_env = reader.value(table, "username_env", path, str, None, _env_name)
        password_env = reader.value(table, "password_env", path, str, None, _env_name)
        webhook_env = reader.value(table, "webhook_url_env", path, str,
                                   None if kind != "slack" else _MISSING, _env_name)
        if kind == "email":
            if (username_env is None) != (password_env is None):
                reader.problem(path, "set both username_env and password_env, or neither")
            if "from" not in table:
                reader.problem(f"{path}.from", "is required for kind email")
            if "to" not in table:
                reader.problem(f"{path}.to", "is required for kind email")

        def secret(env_name: str | None) -> Secret | None:
            if env_name and env.get(env_name):
                return Secret(env[env_name], env_name)
            return None

        channels[name] = ChannelSettings(
            name=name,
            kind=kind or "",
            smtp_host=reader.value(table, "smtp_host", path, str, d.smtp_host, _smtp_host),
            smtp_port=reader.value(table, "smtp_port", path, int, d.smtp_port,
                                   _in_range(1, 65535)),
            security=reader.value(table, "security", path, str, d.security,
                                  _one_of(("starttls", "ssl", "none"))),
            ca_file=_optional_path(reader.value(table, "ca_file", path, str, None)),
            username_env=username_env,
            password_env=password_env,
            sender=reader.value(table, "from", path, str, "", _address),
            to=_read_recipients(reader, table, path),
            subject=reader.value(table, "subject", path, str, d.subject, _subject),
            unsubscribe=reader.value(table, "unsubscribe", path, str, None, _unsubscribe),
            timeout_seconds=reader.value(table, "timeout_seconds", path, float,
                                         d.timeout_seconds, _in_range(0.1, 600)),
            webhook_url_env=webhook_env,
            username=secret(username_env),
            password=secret(password_env),
            webhook_url=secret(webhook_env),
            previous_names=reader.strings(table, "previous_names", path, check=_name,
                                          empty="empty name"),
        )
    return channels


def _read_recipients(reader: _Reader, table: Mapping[str, Any], path: str) -> tuple[str, ...]:
    to = reader.strings(table, "to", path, check=_address, empty="empty address")
    # An empty list would record digests that no one can receive, and block the channel.
    if isinstance(table.get("to"), list) and not table["to"]:
        reader.problem(f"{path}.to", "list at least one recipient, like "
                                     '["ml-team@example.org"]')
    return to


def _smtp_host(value: str) -> str | None:
    if not value.strip() or _URL_JUNK.search(value):
        return "must be a host name or address, like smtp.example.org"
    if value.count(":") == 1:  # more than one is an IPv6 address
        return "must be the host alone; write its port as smtp_port"
    return None


def _check_previous_names(reader: _Reader, settings: Settings) -> None:
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


def _optional_path(value: str | None) -> Path | None:
    return Path(value).expanduser() if value else None


def _subject(value: str) -> str | None:
    try:
        value.format(watchlist="w", count=1, papers="1 new paper", date="d", iso_date="i")
    except (KeyError, IndexError, ValueError) as exc:
        return (f"unknown placeholder {exc}; use {{watchlist}}, {{papers}}, {{count}}, "
                "{date} or {iso_date}")
    return None


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
    reader = _Reader()
    reader.known_keys(data, TOP_KEYS, "")
    version = data.get("version", _MISSING)
    if version is _MISSING:
        reader.problem("version", f"is required (write version = {CONFIG_VERSION})")
    elif version != CONFIG_VERSION:
        reader.problem("version", f"must be {CONFIG_VERSION}, got {version!r}")
    settings = Settings(
        path=path,
        store=_read_store(reader, data.get("store", _MISSING)),
        http=_read_http(reader, data.get("http", _MISSING)),
        schedule=_read_schedule(reader, data.get("schedule", _MISSING)),
        web=_read_web(reader, data.get("web", _MISSING), env),
        arxiv=_read_arxiv(reader, data.get("arxiv", _MISSING)),
        sources=_read_sources(reader, data.get("sources", _MISSING)),
        watchlists=_read_watchlists(reader, data.get("watchlists", _MISSING)),
        channels=_read_channels(reader, data.get("channels", _MISSING), env),
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
        for j, keyword in enumerate(watchlist.keywords):
            out += [(f"watchlists[{i}].keywords[{j}]", w)
                    for w in keyword_warnings(keyword.term.text)]
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
    reader = _Reader()
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
