"""Discord webhooks: one embed per paper, split over as many messages as Discord's limits ask.

Options: ``webhook_url_env``, the variable that holds the hook's URL (the URL is the secret:
https, or plain http to this machine only); ``username``, the name the messages are posted
under (default "paper-digest"). Limits, from Discord's "Embed Limits" and "Execute Webhook":
10 embeds a message and 6,000 characters summed over a message's embeds; a title 256, a
description 4,096, the content 2,000, a username 80 characters. They are counted here in
UTF-16 code units, never fewer than the characters Discord counts. Discord allows a hook
about 5 requests per 2 seconds: messages go one per half second, and a 429 waits for its
JSON body's ``retry_after`` (seconds), else its Retry-After header. 404 means the hook was
deleted. Messages ask ``wait=true``, so a 2xx means Discord saved the message.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx

from digest import options as opt
from digest.config import Secret
from digest.deliver.base import (
    Composed,
    HookChannel,
    WebhookUrlOptions,
    numbered_files,
)
from digest.models import Digest
from digest.render import (
    PaperView,
    day_label,
    heartbeat_line,
    local_time,
    more_line,
    paper_views,
    plural,
    safe_url,
    trim,
)

log = logging.getLogger(__name__)

# Discord lets a hook post about 5 times in 2 seconds; one message every half second stays
# under that with room to spare, and a 429 still says how long to wait.
MESSAGE_INTERVAL_SECONDS = 0.5

DISCORD_MAX_EMBEDS = 10
DISCORD_MAX_EMBED_CHARS = 6000  # summed over all embeds of a message
DISCORD_MAX_TITLE_CHARS = 256
DISCORD_MAX_DESCRIPTION_CHARS = 4096
DISCORD_MAX_CONTENT_CHARS = 2000
DISCORD_MAX_USERNAME_CHARS = 80

DEFAULT_USERNAME = "paper-digest"
DISCORD_ABSTRACT_CHARS = 280
# Each part of a paper's embed gets its own share, so no one long field crowds out the
# links: the facts under the title, the summary or abstract, the reasons, the heading.
META_CHARS = 500
TEXT_CHARS = 800
WHY_CHARS = 400
HEADING_CHARS = 200
NOTES_CHARS = 1500
# A link longer than this (junk from a feed) is left out rather than fill the embed.
LINK_URL_CHARS = 512
EMBED_COLOUR = 0xB31B1B

# Every character Discord's markdown gives a meaning to, anywhere in a line; a backslash
# makes each one plain text. "<" covers mentions (<@id>, <#id>, <@&id>), emoji and <t:...>.
_MARKDOWN = re.compile(r"([\\*_~`|>#\[\]()<])")
_LIST_START = re.compile(r"^([-+])")  # "- " or "+ " at a line's start: a list
_NUMBERED_START = re.compile(r"^(\d+)\.")  # "1. " at a line's start: a numbered list
_BROADCAST = re.compile(r"@(everyone|here)", re.IGNORECASE)
# In a markdown link's target only these stay as they are; anything that could end the
# link or start another ( ) [ ] < > space \ | " is percent-encoded.
_URL_SAFE = "!#$%&'*+,-./:;=?@_~"
_RETRY_AFTER = re.compile(r'"retry_after"\s*:\s*(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)')


def units(text: str) -> int:
    """Length in UTF-16 code units: what Discord's limits count, or more."""
    return len(text.encode("utf-16-le")) // 2


def discord_text(text: str) -> str:
    """Feed text as Discord markdown that shows it as written: on one line, every markdown
    character escaped, and @everyone/@here broken by a zero-width space."""
    flat = " ".join(text.split())
    escaped = _MARKDOWN.sub(r"\\\1", flat)
    escaped = _NUMBERED_START.sub(r"\1\\.", _LIST_START.sub(r"\\\1", escaped))
    return _BROADCAST.sub("@\u200b\\1", escaped)


def fitted(text: str, limit: int, render: Callable[[str], str] = discord_text) -> str:
    """``render(text)`` within ``limit`` code units: the text cut with an ellipsis if needed.

    The text is cut before it is escaped, so a cut never splits an escape.
    """
    text = " ".join(text.split())
    whole = render(text)
    if units(whole) <= limit:
        return whole
    low, high = 0, len(text)  # the longest cut whose rendering fits
    while low < high:
        middle = (low + high + 1) // 2
        if units(render(_cut(text, middle))) <= limit:
            low = middle
        else:
            high = middle - 1
    return render(_cut(text, low))


def _cut(text: str, length: int) -> str:
    return text[:length].rstrip() + "…"


def link_url(url: str) -> str:
    """A web URL fit to be a link's target: percent-encoded so nothing in it can end the
    link; "" for anything else (javascript:, no host, longer than LINK_URL_CHARS)."""
    url = safe_url(url)
    if not url:
        return ""
    quoted = quote(url, safe=_URL_SAFE)
    if len(quoted) > LINK_URL_CHARS or opt.url_problem(quoted, local=False):
        return ""
    return quoted


def discord_links(links: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    """'[PDF](url) · [HTML](url)': our own labels, URLs made safe; unusable URLs left out."""
    shown = ((label, link_url(url)) for label, url in links)
    return " · ".join(f"[{discord_text(label)}]({url})" for label, url in shown if url)


def paper_embed(view: PaperView) -> dict[str, Any]:
    """One paper as an embed: its title linking the abstract, then facts, text and links."""
    prefix = f"{view.rank}. "
    embed: dict[str, Any] = {
        "title": prefix + fitted(view.title, DISCORD_MAX_TITLE_CHARS - len(prefix))}
    url = link_url(view.url)
    if url:
        embed["url"] = url
    head = []
    meta = " · ".join(x for x in (view.authors, *view.meta, *view.remarks) if x)
    if meta:
        head.append(fitted(meta, META_CHARS))
    if view.summary:
        label = f"*{fitted(view.summary_label, HEADING_CHARS)}:* "
        head.append(label + fitted(view.summary, TEXT_CHARS - units(label)))
    elif view.abstract:
        head.append(fitted(trim(view.abstract, DISCORD_ABSTRACT_CHARS), TEXT_CHARS))
    why = ["Why: " + fitted("; ".join(view.reasons), WHY_CHARS)] if view.reasons else []
    # The title links the abstract; the row holds the other places to read it. Should the
    # links of a feed's very long URLs not fit, the last places to read go first, then the
    # rating links; the text above is bounded and always fits.
    reading = [link for link in view.paper_links if link[1] != view.url]
    ratings = list(view.links)
    while True:
        rows = [discord_links(reading), *why, discord_links(ratings)]
        description = "\n".join([*head, *(row for row in rows if row)])
        if units(description) <= DISCORD_MAX_DESCRIPTION_CHARS or not (reading or ratings):
            break
        if reading:
            reading.pop()
        else:
            ratings.pop()
    embed["description"] = description
    embed["color"] = EMBED_COLOUR
    return embed


def embed_chars(embed: Mapping[str, Any]) -> int:
    """What an embed counts toward a message's 6,000: title, description, field names and
    values, footer text and author name."""
    texts = [embed.get("title", ""), embed.get("description", ""),
             embed.get("footer", {}).get("text", ""), embed.get("author", {}).get("name", "")]
    for item in embed.get("fields", ()):
        texts += [item.get("name", ""), item.get("value", "")]
    return sum(units(text) for text in texts)


def discord_message(content: str, embeds: list[dict[str, Any]], username: str
                    ) -> dict[str, Any]:
    """One Execute Webhook body. Mentions are never parsed: escaping already keeps feed text
    from mentioning anyone, and this keeps even a slip from pinging a channel."""
    return {"content": content, "embeds": embeds, "allowed_mentions": {"parse": []},
            "username": fitted(username, DISCORD_MAX_USERNAME_CHARS, str)}


def discord_messages(digest: Digest, *, username: str = DEFAULT_USERNAME
                     ) -> list[dict[str, Any]]:
    """Webhook messages for one digest, split so that each stays within Discord's limits."""
    if digest.heartbeat is not None:
        return [discord_heartbeat(digest, username=username)]
    views = paper_views(digest)
    day = day_label(local_time(digest.created_at, digest.timezone))
    heading = f"{digest.watchlist}: {plural(len(views), 'new paper')}, {day}"
    embeds = [paper_embed(view) for view in views]
    more = more_line(digest)
    if more:
        url = link_url(digest.more_url or "")
        text = f"[{discord_text(more)}]({url})" if url else discord_text(more)
        embeds.append({"description": text})
    groups: list[list[dict[str, Any]]] = [[]]
    used = 0
    for embed in embeds:
        size = embed_chars(embed)  # at most 256 + 4,096: one always fits a message alone
        if groups[-1] and (len(groups[-1]) >= DISCORD_MAX_EMBEDS
                           or used + size > DISCORD_MAX_EMBED_CHARS):
            groups.append([])
            used = 0
        groups[-1].append(embed)
        used += size
    notes = ("\nNote: " + fitted(" ".join(digest.notes), NOTES_CHARS)) if digest.notes else ""
    messages = []
    for number, group in enumerate(groups, start=1):
        title = heading if len(groups) == 1 else f"{heading} ({number}/{len(groups)})"
        content = f"**{fitted(title, HEADING_CHARS)}**" + (notes if number == 1 else "")
        messages.append(discord_message(content, group, username))
    return messages


def discord_heartbeat(digest: Digest, *, username: str = DEFAULT_USERNAME) -> dict[str, Any]:
    """A heartbeat in Discord: one short line, its notes under it, no embeds."""
    content = fitted(f"{digest.watchlist} · {heartbeat_line(digest)}", HEADING_CHARS)
    if digest.notes:
        content += "\nNote: " + fitted(" ".join(digest.notes), NOTES_CHARS)
    return discord_message(content, [], username)


def message_body(message: Mapping[str, Any]) -> bytes:
    """The exact bytes posted for one message (and written to the outbox)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def retry_after(response: httpx.Response, body: str) -> float | None:
    """Seconds a 429 asks to wait: its JSON body's ``retry_after`` (seconds, to the
    millisecond, where the Retry-After header rounds up); None leaves it to the header."""
    found = _RETRY_AFTER.search(body)
    if found is None:
        return None
    wait = float(found.group(1))
    return wait if math.isfinite(wait) else None


def confirmed_url(url: opt.Secret | None) -> opt.Secret | None:
    """The hook's URL with ``wait=true``: Discord then answers once the message is saved,
    and says so when it was not (without it, an unsaved message reports no error)."""
    if url is None:
        return None
    try:
        parts = urlsplit(url.reveal())
    except ValueError:
        return url
    if any(key == "wait" for key, _ in parse_qsl(parts.query, keep_blank_values=True)):
        return url  # the user chose
    query = f"{parts.query}&wait=true" if parts.query else "wait=true"
    return opt.Secret(urlunsplit(parts._replace(query=query)), url.env)


def username_problem(value: str) -> str | None:
    """What Discord would refuse in a webhook's name (a 400 for every message)."""
    name = value.strip()
    if not name:
        return "must not be empty"
    if units(name) > DISCORD_MAX_USERNAME_CHARS:
        return f"must be at most {DISCORD_MAX_USERNAME_CHARS} characters"
    folded = name.casefold()
    for word in ("discord", "clyde"):
        if word in folded:
            return f"Discord refuses webhook names containing '{word}'"
    if folded in ("everyone", "here"):
        return f"Discord refuses the webhook name '{name}'"
    return None


@dataclass(frozen=True)
class DiscordOptions(WebhookUrlOptions):
    KEYS: ClassVar[tuple[str, ...]] = ("webhook_url_env", "username")
    COSMETIC: ClassVar[tuple[str, ...]] = ("username",)

    username: str = DEFAULT_USERNAME

    @classmethod
    def read_own(cls, reader: opt.OptionReader, table: Mapping[str, Any], path: str
                 ) -> dict[str, Any]:
        username = reader.value(table, "username", path, str, DEFAULT_USERNAME,
                                username_problem)
        return {"username": (username or DEFAULT_USERNAME).strip()}

    def url_problems(self, url: str) -> list[str]:
        problems = super().url_problems(url)
        if not problems and urlsplit(url).path.rstrip("/").lower().endswith(
                ("/slack", "/github")):
            problems.append("$ ends in /slack or /github, Discord's endpoints for other "
                            "formats; use the hook's URL without that ending")
        return problems


class DiscordChannel(HookChannel):
    kind = "discord"
    Options: ClassVar[type[opt.KindOptions]] = DiscordOptions
    SERVICE = "Discord"
    INTERVAL = MESSAGE_INTERVAL_SECONDS
    options: DiscordOptions

    def hook_url(self) -> tuple[Secret | None, str | None]:
        return confirmed_url(self.options.webhook_url), self.options.webhook_url_env

    def poster_options(self) -> dict[str, Any]:
        return {"asked_wait": retry_after}


    def compose(self, digest: Digest) -> Composed:
        messages = discord_messages(digest, username=self.options.username)
        return Composed(payload={"kind": self.kind, "messages": messages}, digest=digest)

    @staticmethod
    def outbox_files(payload: dict[str, Any]) -> dict[str, bytes]:
        """Each message's body byte for byte as posted: ".json" for a digest of one message,
        ".1.json", ".2.json", ... in order for more."""
        return numbered_files([message_body(m) for m in payload["messages"]])

    def send(self, payload: dict[str, Any], *, parts_sent: int = 0,
             on_part_sent: Callable[[int], None] = lambda n: None) -> None:
        self._poster.post_each([message_body(m) for m in payload["messages"]],
                               parts_sent=parts_sent, on_part_sent=on_part_sent)

