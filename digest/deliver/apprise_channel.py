"""Apprise: Telegram, Matrix, ntfy, Mattermost, Feishu/Lark, Rocket.Chat, Pushover and the
other services the Apprise library reaches, each named by a URL (tgram://, ntfy://, ...).

Options: ``urls_env``, the variable holding one or more Apprise URLs separated by spaces or
commas (they carry the services' tokens: they are the secret); ``format``, "markdown"
(default) or "text". Needs the optional extra ``pip install 'paper-digest[apprise]'``;
without it ``check`` and a run name the missing extra for this channel.

Limits: a message is at most 4,000 characters, its title included (counted in UTF-16 code
units; Telegram takes 4,096 and Mattermost 4,000, each with the title merged into the body).
A long digest is split between papers, never inside one. A service with a smaller limit
gets what Apprise does with it: add ``overflow=split`` to its URL to have it split there.
A part is one message to one URL: URL 1 gets every message, then URL 2, and so on, so a
retry resumes where it stopped and no service is sent a message it accepted (unless it took
the message but its answer was lost, a timeout). A failing URL holds back the URLs after it
until the next run. Apprise says only whether a service took a message, so any failure is
temporary; its log lines for the attempt, masked, say why.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from io import StringIO
from typing import Any, ClassVar
from urllib.parse import quote, unquote

from digest import options as opt
from digest.config import ChannelSettings
from digest.deliver.base import ChannelContext, Composed
from digest.errors import DeliveryError
from digest.models import Digest
from digest.render import (
    PaperView,
    day_label,
    heartbeat_line,
    heartbeat_subject,
    local_time,
    more_line,
    paper_views,
    plural,
    safe_url,
    trim,
)

log = logging.getLogger(__name__)

MISSING_EXTRA = "kind apprise needs the optional extra: pip install 'paper-digest[apprise]'"
FORMATS = ("markdown", "text")
APP_ID = "paper-digest"
APP_URL = "https://pypi.org/project/paper-digest"

# Telegram refuses a message over 4,096 characters and Mattermost over 4,000; services
# without a title field get it merged into the body as "# title\n": MERGED_TITLE_CHARS.
APPRISE_MAX_CHARS = 4000
MERGED_TITLE_CHARS = 4
ABSTRACT_CHARS = 400
WHY_CHARS = 500
NOTES_CHARS = 600
REASON_CHARS = 300  # of Apprise's own words, in an error
# A link longer than this (junk from a feed) is left out rather than fill a message.
LINK_URL_CHARS = 1000

# What a URL may be split on: spaces, and a comma that starts the next URL (a comma inside
# a URL, as in mailto://...?to=a@x.org,b@x.org, stays).
_URL_SEPARATORS = re.compile(r"\s+|,(?=\s*[A-Za-z][A-Za-z0-9+.\-]*://)")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]{0,31})://")
# Where a URL's secret pieces end: whatever lies between these is masked in errors.
_URL_PIECES = re.compile(r"[/?&=:@,;#+]+")

# Markdown characters with a meaning inside a line; a backslash makes each one plain text.
_MARKDOWN = re.compile(r"([\\`*_\[\]|~])")
# A line's start that makes a heading, list, quote or rule of it.
_BLOCK_START = re.compile(r"^([#+=\-])")
_NUMBERED_START = re.compile(r"^(\d+)([.)])")
# "<" and ">" become look-alikes, not escapes: Apprise turns Markdown into HTML for email,
# Matrix and Telegram with Python-Markdown, which passes raw HTML through and, in older
# versions, knows no "\<". They also end <@id> mentions and <url|text> links.
_ANGLES = str.maketrans({"<": "\uff1c", ">": "\uff1e"})
_MENTION = re.compile(r"@(?=\w)")  # @everyone, @channel, @all, @user: a word joiner breaks it


def units(text: str) -> int:
    """Length in UTF-16 code units: what Telegram counts, and never less than others do."""
    return len(text.encode("utf-16-le")) // 2


def _flat(text: str) -> str:
    """On one line, without "<" or ">", and unable to mention anyone."""
    return _MENTION.sub("@\u2060", " ".join(text.split()).translate(_ANGLES))


def plain_text(text: str) -> str:
    """Feed text for format "text": it cannot mention anyone or make a link either in a
    service that reads it as Markdown (older Apprise versions pass text on as it is)."""
    return _flat(text).replace("](", "] (")


def markdown_text(text: str) -> str:
    """Feed text as Markdown that shows it as written: every inline control character
    escaped, a line's start unable to open a block, no HTML, no mention."""
    escaped = _MARKDOWN.sub(r"\\\1", _flat(text))
    return _NUMBERED_START.sub(r"\1\\\2", _BLOCK_START.sub(r"\\\1", escaped))


def link_url(url: str) -> str:
    """A web URL fit to be a Markdown link's target, or "" when it is not a web URL or is
    too long: nothing in it can end the link, start another or mention anyone (an "@" is
    percent-encoded too)."""
    url = safe_url(url)
    if not url or len(url) > LINK_URL_CHARS:
        return ""
    return quote(url, safe="!#$%&'*+,-./:;=?_~")


def split_urls(value: str) -> tuple[str, ...]:
    """The URLs in a variable's value, in order."""
    return tuple(part.strip(",") for part in _URL_SEPARATORS.split(value.strip())
                 if part.strip(","))


def scheme_of(url: str) -> str:
    """'tgram' for tgram://...; "" when the text does not start with a scheme. Never
    secret: the scheme only names the service."""
    found = _SCHEME.match(url)
    return found.group(1).lower() if found else ""


def mask(text: str, urls: tuple[str, ...]) -> str:
    """``text`` with every URL, and every piece of one long enough to be a token, masked."""
    pieces = set(urls)
    for url in urls:
        rest = url.split("://", 1)[-1]
        for piece in _URL_PIECES.split(rest):
            if len(piece) >= 6:
                pieces |= {piece, unquote(piece), quote(piece, safe="")}
    for piece in sorted(pieces, key=len, reverse=True):
        text = text.replace(piece, "***")
    return text


# ------------------------------------------------------------------------------ messages

@dataclass(frozen=True)
class _Style:
    """How one format writes text, links and emphasis."""

    text: Callable[[str], str]
    markdown: bool

    def link(self, label: str, url: str) -> str:
        target = link_url(url)
        if not target:
            return ""
        return f"[{label}]({target})" if self.markdown else f"{label}: {target}"

    def links(self, links: tuple[tuple[str, str], ...]) -> str:
        shown = [x for x in (self.link(label, url) for label, url in links) if x]
        return (" · " if self.markdown else "\n").join(shown)


STYLES = {"markdown": _Style(markdown_text, True), "text": _Style(plain_text, False)}


def paper_text(view: PaperView, style: _Style, budget: int) -> str:
    """One paper: title (linked), authors and facts, summary, abstract, reading links,
    "Why: ...", rating links. Over ``budget``, the abstract goes first, then the summary,
    the facts, the reading links and the reasons; the title and rating links stay."""
    title = style.text(view.title)
    url = link_url(view.url)
    if style.markdown:
        head = f"**{view.rank}. [{title}]({url})**" if url else f"**{view.rank}. {title}**"
    else:
        head = f"{view.rank}. {title}" + (f"\n{url}" if url else "")
    meta = style.text(" · ".join(x for x in (view.authors, *view.meta, *view.remarks) if x))
    summary = ""
    if view.summary:
        label = style.text(view.summary_label)
        summary = (f"_{label}:_ " if style.markdown else f"{label}: ") + style.text(view.summary)
    abstract = style.text(trim(view.abstract, ABSTRACT_CHARS))
    reading = style.links(tuple(link for link in view.paper_links if link[1] != view.url))
    why = "Why: " + style.text(trim("; ".join(view.reasons), WHY_CHARS)) if view.reasons else ""
    lines = [head, meta, summary, abstract, reading, why, style.links(view.links)]
    for dropped in (3, 2, 1, 4, 5):
        if units("\n".join(x for x in lines if x)) <= budget:
            break
        lines[dropped] = ""
    text = "\n".join(x for x in lines if x)
    # Not reached with real limits (a title of 300 characters, a link of 1000), kept so
    # that no message can ever pass the limit.
    while units(text) > budget:
        text = text[:-100]
    return text


def apprise_messages(digest: Digest, fmt: str = "markdown") -> list[dict[str, str]]:
    """The digest as messages of a title and a body, each within APPRISE_MAX_CHARS."""
    style = STYLES[fmt]
    if digest.heartbeat is not None:
        return [apprise_heartbeat(digest, style)]
    views = paper_views(digest)
    day = day_label(local_time(digest.created_at, digest.timezone))
    heading = f"{digest.watchlist}: {plural(len(views), 'new paper')}, {day}"
    most = len(views) + 1  # every paper alone, and the "more" line after them
    room = APPRISE_MAX_CHARS - units(f"{heading} ({most}/{most})") - MERGED_TITLE_CHARS
    notes = style.text(trim(" ".join(digest.notes), NOTES_CHARS)) if digest.notes else ""
    more = more_line(digest)
    if more:
        target = link_url(digest.more_url or "")
        more = (f"[{style.text(more)}]({target})" if style.markdown and target
                else style.text(more) + (f" {target}" if target else ""))
    budget = room - units(notes) - units(more) - 4  # a paper fits beside the notes and more
    bodies: list[list[str]] = [[notes] if notes else []]
    for view in views:
        block = paper_text(view, style, budget)
        if bodies[-1] and units("\n\n".join([*bodies[-1], block])) > room:
            bodies.append([])
        bodies[-1].append(block)
    if more and bodies[-1] and units("\n\n".join([*bodies[-1], more])) > room:
        bodies.append([])
    if more:
        bodies[-1].append(more)
    out = []
    for number, parts in enumerate(bodies, start=1):
        title = heading if len(bodies) == 1 else f"{heading} ({number}/{len(bodies)})"
        out.append({"title": title, "body": "\n\n".join(parts) or heading})
    return out


def apprise_heartbeat(digest: Digest, style: _Style) -> dict[str, str]:
    """A heartbeat: one short message, its notes under the line."""
    body = heartbeat_line(digest)
    if digest.notes:
        body += "\n" + style.text(trim(" ".join(digest.notes), NOTES_CHARS))
    return {"title": heartbeat_subject(digest), "body": body}


# ------------------------------------------------------------------------------ Apprise

def load_apprise() -> Any | None:
    """The apprise package, or None when the optional extra is not installed."""
    try:
        import apprise
    except ImportError:
        return None
    return apprise


@contextlib.contextmanager
def quiet_apprise(apprise: Any) -> Iterator[StringIO]:
    """Apprise's warnings while the block runs, kept from the application's own log: its
    lines can quote a URL, token and all. What is worth showing is masked by the caller.

    Apprise loads its plugins on first use, some of which import modules Python has
    deprecated (imghdr); those warnings are for Apprise's authors, not for the user.
    """
    logger = logging.getLogger("apprise")  # LogCapture's default name, in every version
    propagate = logger.propagate
    logger.propagate = False
    try:
        with warnings.catch_warnings(), \
                apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
            warnings.simplefilter("ignore", DeprecationWarning)
            yield captured
    finally:
        logger.propagate = propagate


def new_notifier(apprise: Any, url: str, timeout: float | None = None) -> Any | None:
    """An Apprise object holding just ``url``; None when Apprise cannot use the URL.

    Each URL gets its own object, so that progress is known per URL. ``timeout`` sets the
    connect and read timeouts of its requests, unless the URL sets them (cto=, rto=).
    """
    with quiet_apprise(apprise):
        notifier = apprise.Apprise(asset=apprise.AppriseAsset(
            app_id=APP_ID, app_desc=APP_ID, app_url=APP_URL))
        added = notifier.add([url])
    if not added or len(notifier) != 1:
        return None
    if timeout is not None:
        for service in notifier:
            if not re.search(r"[?&]cto=", url):
                service.socket_connect_timeout = timeout
            if not re.search(r"[?&]rto=", url):
                service.socket_read_timeout = timeout
    return notifier


def known_scheme(scheme: str) -> bool | None:
    """Whether Apprise has a service for ``scheme``; None when this Apprise cannot say."""
    try:
        from apprise.manager_plugins import NotificationManager
    except ImportError:
        return None
    return scheme in NotificationManager()  # loaded by new_notifier already


def url_problems(apprise: Any, urls: tuple[str, ...], env: str) -> list[str]:
    """Why each URL cannot be used, by its position, never quoting it (it holds tokens)."""
    if not urls:
        return [f"${env} holds no Apprise URL (tgram://..., ntfy://..., mmost://...)"]
    problems = []
    for position, url in enumerate(urls, start=1):
        if new_notifier(apprise, url) is not None:
            continue
        where = f"${env}: URL {position} of {len(urls)}"
        scheme = scheme_of(url)
        if not scheme:
            problems.append(f"{where} is not a URL (write service://..., as Apprise's "
                            "documentation shows for each service)")
        elif known_scheme(scheme) is False:
            problems.append(f"{where} starts with {scheme}://, a service Apprise does not "
                            "know")
        else:
            problems.append(f"{where} ({scheme}://) is not one Apprise can use: a token or "
                            "target is missing or malformed")
    return problems


# ------------------------------------------------------------------------------ channel

@dataclass(frozen=True)
class AppriseOptions(opt.KindOptions):
    KEYS: ClassVar[tuple[str, ...]] = ("urls_env", "format")
    COSMETIC: ClassVar[tuple[str, ...]] = ("format",)

    urls_env: str = ""
    format: str = "markdown"
    urls: opt.Secret | None = None  # resolved from the environment when set

    @classmethod
    def read(cls, reader: opt.OptionReader, table: Mapping[str, Any], path: str
             ) -> AppriseOptions:
        env, urls = reader.secret(table, "urls_env", path, required=True)
        return cls(urls_env=env or "", urls=urls,
                   format=reader.value(table, "format", path, str, "markdown",
                                       opt.one_of(FORMATS)))

    def secrets(self) -> dict[str, opt.Secret | None]:
        return {self.urls_env: self.urls}

    def secret_problems(self) -> list[str]:
        apprise = load_apprise()
        if apprise is None:
            return [MISSING_EXTRA]
        return url_problems(apprise, split_urls(self.urls.reveal() if self.urls else ""),
                            self.urls_env)


@dataclass(frozen=True)
class _Target:
    position: int
    scheme: str
    notifier: Any  # an Apprise object holding this one URL


class AppriseChannel:
    kind = "apprise"
    Options: ClassVar[type[opt.KindOptions]] = AppriseOptions

    def __init__(self, settings: ChannelSettings) -> None:
        self.settings = settings
        self.options: AppriseOptions = opt.options_of(settings, AppriseOptions)
        self._targets: list[_Target] | None = None
        self._urls: tuple[str, ...] = ()
        self._apprise: Any = None

    @classmethod
    def create(cls, settings: ChannelSettings, context: ChannelContext) -> AppriseChannel:
        return cls(settings)

    def compose(self, digest: Digest) -> Composed:
        fmt = self.options.format
        return Composed(payload={"kind": self.kind, "format": fmt,
                                 "messages": apprise_messages(digest, fmt)}, digest=digest)

    @staticmethod
    def outbox_files(payload: dict[str, Any]) -> dict[str, bytes]:
        """What each URL is handed, message by message: the title, the body and its format,
        as JSON, and the messages as one readable file (.md or .txt)."""
        fmt = payload.get("format", "markdown")
        calls = [{**message, "body_format": fmt} for message in payload["messages"]]
        readable = "\n\n---\n\n".join(
            (f"# {m['title']}\n\n{m['body']}" if fmt == "markdown" else
             f"{m['title']}\n\n{m['body']}") for m in payload["messages"]) + "\n"
        return {".json": (json.dumps(calls, indent=2, ensure_ascii=False) + "\n").encode(),
                ".md" if fmt == "markdown" else ".txt": readable.encode()}

    def send(self, payload: dict[str, Any], *, parts_sent: int = 0,
             on_part_sent: Callable[[int], None] = lambda n: None) -> None:
        """Hand every message to every URL, URL by URL; part n is message n % M to URL
        n // M, so a retry starts with the first pair not yet accepted."""
        messages = payload["messages"]
        body_format = payload.get("format", "markdown")
        targets = self._open()
        total = len(messages)
        for part in range(parts_sent, len(targets) * total):
            target, number = targets[part // total], part % total
            self._notify(target, messages[number], body_format, number + 1, total)
            on_part_sent(part + 1)

    def close(self) -> None:
        self._targets = None

    def _fail(self, message: str, *, permanent: bool = False) -> DeliveryError:
        return DeliveryError(message, channel=self.settings.name, permanent=permanent)

    def _where(self, target: _Target) -> str:
        count = len(self._targets or ())
        position = f"URL {target.position} of {count} in " if count > 1 else ""
        return f"{position}${self.options.urls_env} ({target.scheme}://)"

    def _open(self) -> list[_Target]:
        if self._targets is not None:
            return self._targets
        apprise = load_apprise()
        if apprise is None:
            raise self._fail(MISSING_EXTRA)
        env = self.options.urls_env
        if self.options.urls is None or not self.options.urls.reveal():
            raise self._fail(f"environment variable {env} is not set")
        self._urls = split_urls(self.options.urls.reveal())
        notifiers = [new_notifier(apprise, url, self.settings.timeout_seconds)
                     for url in self._urls]
        if not notifiers or None in notifiers:
            # Only a new value helps, and a new value is a new fingerprint: tried again then.
            raise self._fail("; ".join(url_problems(apprise, self._urls, env)),
                             permanent=True)
        self._apprise = apprise
        self._targets = [_Target(position, scheme_of(url), notifier) for position, (url, notifier)
                         in enumerate(zip(self._urls, notifiers, strict=True), start=1)]
        return self._targets

    def _notify(self, target: _Target, message: Mapping[str, str], body_format: str,
                number: int, total: int) -> None:
        reason = ""
        with quiet_apprise(self._apprise) as captured:
            try:
                accepted = bool(target.notifier.notify(
                    body=message["body"], title=message["title"], body_format=body_format))
            except Exception as exc:  # a plugin's own slip is this message's failure
                accepted, reason = False, f"{type(exc).__name__}: {exc}"
        said = [" ".join(line.split()) for line in captured.getvalue().splitlines()]
        reason = "; ".join(dict.fromkeys(x for x in [*said, reason] if x)) or "no reason given"
        if accepted:
            log.info("channel=%s message=%d/%d url=%d accepted", self.settings.name, number,
                     total, target.position)
            return
        reason = mask(reason, self._urls)
        if len(reason) > REASON_CHARS:
            reason = reason[: REASON_CHARS - 1] + "…"
        raise self._fail(f"Apprise did not deliver message {number}/{total} to "
                         f"{self._where(target)}: {reason}")
