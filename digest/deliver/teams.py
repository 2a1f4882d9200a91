"""Microsoft Teams through a Workflows webhook: Adaptive Cards, paced, split by size.

Options: ``webhook_url_env``, the variable that holds the URL of a Teams workflow made from
the "Post to a channel when a webhook request is received" template (the URL carries the
workflow's signature: it is the secret). It must be https (plain http only to this
machine, for a local relay). Limits: Teams refuses a message over about 28 KB, and the
workflow answers 202 Accepted before it posts the card, so a card that is too large would
fail where nobody sees it: every message is measured as sent and kept under
``TEAMS_MAX_MESSAGE_BYTES``. About one message per second. Any 2xx means the workflow took
the message; 404 and 410 mean it is gone.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from digest import options as opt
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

MESSAGE_INTERVAL_SECONDS = 1.0
# Teams' limit is about 28 KB a message; the workflow adds its own wrapping to the card,
# and some endpoints count UTF-16 units, so a message is kept well under it.
TEAMS_MAX_MESSAGE_BYTES = 20_000
TEAMS_ABSTRACT_CHARS = 400
TEAMS_HEADING_CHARS = 200
TEAMS_META_CHARS = 600
TEAMS_SUMMARY_CHARS = 500
TEAMS_WHY_CHARS = 600
TEAMS_NOTES_CHARS = 800
# A feed's link longer than this is left out (the abstract link stays): with every field
# bounded, one paper always fits a message with room to spare.
TEAMS_MAX_URL_CHARS = 1000
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.4"
CARD_TYPE = "application/vnd.microsoft.card.adaptive"

# Teams renders a subset of Markdown in a TextBlock, and its clients disagree on backslash
# escapes, so feed text gets look-alikes instead: it can never turn bold or italic, open a
# link ([text](url)), escape our own markup, or pass for an HTML tag.
_TEAMS_MARKUP = str.maketrans({"*": "\u2217", "_": "\uff3f", "~": "\u223c", "`": "\u02cb",
                               "[": "\uff3b", "]": "\uff3d", "\\": "\uff3c",
                               "<": "\u2039", ">": "\u203a"})
_ENTITY = re.compile(r"&(?=#?\w+;)")  # "&#42;" would come back as "*"
# A block that starts like "1. ", "- " or "# " would become a list or a heading: the space
# after the marker becomes a no-break space, which no Markdown reads as a marker's.
_MARKER = re.compile(r"^(#{1,6}|[-+]|\d{1,9}[.)]) ")
_TRY_AGAIN = re.compile(r"try again in (\d+(?:\.\d+)?) second", re.IGNORECASE)


def teams_text(text: str) -> str:
    """Feed text for a TextBlock: one line, without control characters, unable to format."""
    line = "".join(ch for ch in " ".join(text.split()) if unicodedata.category(ch) != "Cc")
    line = _ENTITY.sub("\uff06", line.translate(_TEAMS_MARKUP))
    return _MARKER.sub("\\1\u00a0", line)


def teams_url(url: str) -> str:
    """A web URL fit for a Markdown link, or "" (not a web link, or too long to carry)."""
    url = quote(safe_url(url), safe="!#$%&'*+,/:;=?@[]~-._")
    return url if url and len(url) <= TEAMS_MAX_URL_CHARS else ""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def teams_links(links: tuple[tuple[str, str], ...]) -> str:
    """'[PDF](url) · [HTML](url)': our own labels, each URL made safe for Markdown."""
    made = ((teams_text(label), teams_url(url)) for label, url in links)
    return " · ".join(f"[{label}]({url})" for label, url in made if url)


def _text(text: str, **style: Any) -> dict[str, Any]:
    return {"type": "TextBlock", "text": text, "wrap": True, **style}


def card_message(body: list[dict[str, Any]]) -> dict[str, Any]:
    """The request a Workflows webhook takes: a message with one Adaptive Card."""
    return {"type": "message", "attachments": [{
        "contentType": CARD_TYPE, "contentUrl": None,
        "content": {"$schema": CARD_SCHEMA, "type": "AdaptiveCard", "version": CARD_VERSION,
                    "body": body, "msteams": {"width": "Full"}}}]}


def message_bytes(message: dict[str, Any]) -> bytes:
    """A message exactly as posted; what the size limit is measured on. A text a feed
    broke (a lone surrogate from a JSON escape) cannot be UTF-8 and becomes "?"."""
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8", errors="replace")


def paper_container(view: PaperView) -> dict[str, Any]:
    """One paper: the title linking its abstract, the facts, the summary (else the start of
    the abstract), why it matched, the other places to read it and the rating links."""
    url = teams_url(view.url)
    # "1. " would open a numbered list; the no-break space keeps the rank plain text
    title = f"{view.rank}.\u00a0" + (f"[{teams_text(view.title)}]({url})" if url
                                     else teams_text(view.title))
    items = [_text(title, weight="Bolder")]
    meta = _clip(teams_text(" · ".join(x for x in (view.authors, *view.meta, *view.remarks)
                                       if x)), TEAMS_META_CHARS)
    if meta:
        items.append(_text(meta, isSubtle=True, spacing="None", size="Small"))
    if view.summary:
        label = teams_text(_clip(view.summary_label, TEAMS_HEADING_CHARS))
        items.append(_text(_clip(f"_{label}:_ {teams_text(view.summary)}", TEAMS_SUMMARY_CHARS)))
    elif view.abstract:
        items.append(_text(teams_text(trim(view.abstract, TEAMS_ABSTRACT_CHARS))))
    if view.reasons:
        items.append(_text(_clip(teams_text("Why: " + "; ".join(view.reasons)),
                                 TEAMS_WHY_CHARS), isSubtle=True, size="Small"))
    reading = teams_links(tuple(link for link in view.paper_links if link[1] != view.url))
    if reading:
        items.append(_text(reading, size="Small", spacing="Small"))
    ratings = teams_links(view.links)
    if ratings:
        items.append(_text(ratings, size="Small", spacing="Small"))
    return {"type": "Container", "separator": True, "spacing": "Medium", "items": items}


def _heading(text: str, part: str = "") -> dict[str, Any]:
    """The card's first line; a long watchlist name is cut, never the part's number."""
    return _text(teams_text(_clip(text, TEAMS_HEADING_CHARS)) + part, size="Medium",
                 weight="Bolder")


def _notes(digest: Digest) -> list[dict[str, Any]]:
    if not digest.notes:
        return []
    return [_text(_clip(teams_text(" ".join(digest.notes)), TEAMS_NOTES_CHARS),
                  isSubtle=True, size="Small")]


def _size(element: dict[str, Any]) -> int:
    return len(message_bytes(element))


def teams_messages(digest: Digest) -> list[dict[str, Any]]:
    """The messages for one digest, each under TEAMS_MAX_MESSAGE_BYTES as posted."""
    if digest.heartbeat is not None:
        return [teams_heartbeat(digest)]
    views = paper_views(digest)
    day = day_label(local_time(digest.created_at, digest.timezone))
    heading = f"{digest.watchlist}: {plural(len(views), 'new paper')}, {day}"
    notes = _notes(digest)
    elements = [paper_container(view) for view in views]
    more = more_line(digest)
    if more:
        more_url = teams_url(digest.more_url or "")
        elements.append(_text(f"[{teams_text(more)}]({more_url})" if more_url
                              else teams_text(more), isSubtle=True, spacing="Medium"))
    # Packed against the longest heading a part can have, so numbering the parts after
    # the split can only make a message smaller. Each element adds its bytes and a comma.
    longest = _heading(heading, f" ({len(elements)}/{len(elements)})")
    bases = (_size(card_message([longest, *notes])), _size(card_message([longest])))
    parts: list[list[dict[str, Any]]] = [[]]
    used = bases[0]
    for element in elements:
        cost = _size(element) + 1
        if parts[-1] and used + cost > TEAMS_MAX_MESSAGE_BYTES:
            parts.append([])
            used = bases[1]
        parts[-1].append(element)
        used += cost
    out = []
    for number, part in enumerate(parts, start=1):
        label = "" if len(parts) == 1 else f" ({number}/{len(parts)})"
        out.append(card_message([_heading(heading, label), *(notes if number == 1 else []),
                                 *part]))
    return out


def teams_heartbeat(digest: Digest) -> dict[str, Any]:
    """A heartbeat in Teams: one short card, its notes under the line."""
    return card_message([_text(teams_text(f"{digest.watchlist} · {heartbeat_line(digest)}")),
                         *_notes(digest)])


def _asked_wait(response: httpx.Response, body: str) -> float | None:
    """A throttled workflow's wait, when it says it only in words ("Try again in 23 seconds")."""
    found = _TRY_AGAIN.search(body)
    return float(found.group(1)) if found else None


@dataclass(frozen=True)
class TeamsOptions(WebhookUrlOptions):
    """The workflow's URL, which carries its signature: https only."""


class TeamsChannel(HookChannel):
    kind = "teams"
    Options: ClassVar[type[opt.KindOptions]] = TeamsOptions
    SERVICE = "Teams"
    INTERVAL = MESSAGE_INTERVAL_SECONDS
    options: TeamsOptions

    def poster_options(self) -> dict[str, Any]:
        return {"asked_wait": _asked_wait}


    def compose(self, digest: Digest) -> Composed:
        return Composed(payload={"kind": self.kind, "messages": teams_messages(digest)},
                        digest=digest)

    @staticmethod
    def outbox_files(payload: dict[str, Any]) -> dict[str, bytes]:
        """Each request body the workflow would receive, byte for byte, in order."""
        return numbered_files([message_bytes(m) for m in payload["messages"]])

    def send(self, payload: dict[str, Any], *, parts_sent: int = 0,
             on_part_sent: Callable[[int], None] = lambda n: None) -> None:
        # Without a charset, some Teams endpoints read the body as UTF-16 and refuse it at
        # half the size.
        self._poster.post_each([message_bytes(m) for m in payload["messages"]],
                               parts_sent=parts_sent, on_part_sent=on_part_sent,
                               headers={"Content-Type": "application/json; charset=utf-8"})

