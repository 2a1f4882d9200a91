"""Slack incoming webhooks: Block Kit messages, paced, Retry-After honoured.

Options: ``webhook_url_env``, the variable that holds the hook's URL (the URL is the
secret). Limits: about one message per second per hook; 50 blocks a message; 3000
characters a section. Any 2xx means accepted, whatever the body; 404 and 410 mean the
hook is gone for good.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from digest import options as opt
from digest.deliver.base import (
    Composed,
    HookChannel,
    WebhookUrlOptions,
)
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

MESSAGE_INTERVAL_SECONDS = 1.0
SLACK_ABSTRACT_CHARS = 280


SLACK_MAX_BLOCKS = 50
SLACK_MAX_SECTION_CHARS = 3000
SLACK_MAX_TEXT_CHARS = 3000
# Slack cuts a message's text at 40,000 characters; Mattermost allows 16,383. A message
# holds at most 24 papers, so this lists them all unless their titles run very long.
SLACK_MAX_FALLBACK_CHARS = 8000
SLACK_FALLBACK_TITLE_CHARS = 150


# mrkdwn has no escape for its formatting characters, so feed text gets look-alikes:
# a title can then never turn bold, italic, struck-through or into code.
_SLACK_FORMATTING = str.maketrans({"*": "\u2217", "_": "\uff3f", "~": "\u223c",
                                   "`": "\u02cb"})


def slack_escape(text: str) -> str:
    """Slack's mrkdwn treats &, < and > as control characters; escape exactly those."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(text: str) -> str:
    """Feed text shown as text in mrkdwn: escaped, and unable to format or mention."""
    return slack_escape(text).translate(_SLACK_FORMATTING)


def _slack_url(url: str) -> str:
    return url.replace("|", "%7C").replace(">", "%3E").replace("<", "%3C").replace(" ", "%20")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_links(links: tuple[tuple[str, str], ...]) -> str:
    """'<url|PDF> · <url|HTML>': our own labels and URLs, never feed text."""
    return " · ".join(f"<{_slack_url(url)}|{label}>" for label, url in links)


def slack_fallback(heading: str, views: list[PaperView]) -> str:
    """The message's plain ``text``: what notifications show, and all that Slack-compatible
    receivers without Block Kit (Mattermost, Discord's Slack endpoint) display. Bare URLs,
    which every one of them turns into links."""
    lines = [heading]
    for view in views:
        line = f"{view.rank}. {_clip(view.title, SLACK_FALLBACK_TITLE_CHARS)}"
        lines.append(slack_text(f"{line} {view.url}" if view.url else line))
    text = "\n".join(lines)
    if len(text) > SLACK_MAX_FALLBACK_CHARS:
        text = text[:SLACK_MAX_FALLBACK_CHARS].rsplit("\n", 1)[0] + "\n…"
    return text


def slack_messages(digest: Digest) -> list[dict[str, Any]]:
    """Block Kit messages for one digest, split so that each stays within Slack's limits."""
    if digest.heartbeat is not None:
        return [slack_heartbeat(digest)]
    views = paper_views(digest)
    day = day_label(local_time(digest.created_at, digest.timezone))
    heading = f"{digest.watchlist}: {plural(len(views), 'new paper')}, {day}"
    paper_blocks: list[list[dict[str, Any]]] = []
    for view in views:
        meta = " · ".join(x for x in (view.authors, *view.meta, *view.remarks) if x)
        title = (f"<{_slack_url(view.url)}|{slack_text(view.title)}>" if view.url
                 else slack_text(view.title))
        summary = f"_{view.summary_label}:_ {slack_text(view.summary)}\n" if view.summary else ""
        # The title links the abstract; the row holds the other places to read it. The
        # abstract gives up room so the row is never cut.
        reading = slack_links(tuple(link for link in view.paper_links if link[1] != view.url))
        body = (f"*{view.rank}. {title}*\n{slack_text(meta)}\n{summary}"
                f"{slack_text(trim(view.abstract, SLACK_ABSTRACT_CHARS))}")
        body = (_clip(body, SLACK_MAX_SECTION_CHARS - len(reading) - 1) + "\n" + reading
                if reading else _clip(body, SLACK_MAX_SECTION_CHARS))
        why = "Why: " + "; ".join(view.reasons)
        # The links go under the reasons; the reasons give up room so no link is ever cut.
        links = slack_links(view.links)
        small = (_clip(slack_text(why), SLACK_MAX_TEXT_CHARS - len(links) - 1) + "\n" + links
                 if links else _clip(slack_text(why), SLACK_MAX_TEXT_CHARS))
        paper_blocks.append([
            {"type": "section", "text": {"type": "mrkdwn", "text": body}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": small}]},
        ])
    notes = [{"type": "context", "elements": [
        {"type": "mrkdwn", "text": _clip(slack_text(" ".join(digest.notes)),
                                         SLACK_MAX_TEXT_CHARS)}]}] if digest.notes else []
    more = more_line(digest)
    if more and digest.more_url and safe_url(digest.more_url):
        more = f"<{_slack_url(safe_url(digest.more_url))}|{slack_text(more)}>"
    elif more:
        more = slack_text(more)
    tail = [{"type": "context", "elements": [{"type": "mrkdwn", "text": more}]}] if more else []
    room = SLACK_MAX_BLOCKS - 1 - len(notes)  # every message has a header, and the notes
    messages: list[list[dict[str, Any]]] = [[]]
    shown: list[list[PaperView]] = [[]]
    for view, blocks in zip(views, paper_blocks, strict=True):
        if len(messages[-1]) + len(blocks) > room:
            messages.append([])
            shown.append([])
        messages[-1].extend(blocks)
        shown[-1].append(view)
    if tail and len(messages[-1]) + len(tail) > room:
        messages.append([])
        shown.append([])
    messages[-1].extend(tail)
    out = []
    for number, (blocks, papers) in enumerate(zip(messages, shown, strict=True), start=1):
        title = heading if len(messages) == 1 else f"{heading} ({number}/{len(messages)})"
        header = {"type": "header",
                  "text": {"type": "plain_text", "text": _clip(title, 150), "emoji": True}}
        fallback = slack_fallback(slack_escape(title), papers)
        if more and number == len(messages):
            fallback += "\n" + slack_text(more_line(digest))
        out.append({"text": fallback, "blocks": [header, *notes, *blocks]})
    return out


def slack_heartbeat(digest: Digest) -> dict[str, Any]:
    """A heartbeat in Slack: one section, its notes under the line."""
    text = slack_text(f"{digest.watchlist} · {heartbeat_line(digest)}")
    if digest.notes:
        text += "\n" + slack_text(" ".join(digest.notes))
    return {"text": slack_escape(heartbeat_subject(digest)),
            "blocks": [{"type": "section",
                        "text": {"type": "mrkdwn", "text": _clip(text, SLACK_MAX_SECTION_CHARS)}}]}


@dataclass(frozen=True)
class SlackOptions(WebhookUrlOptions):
    HTTPS_ONLY: ClassVar[bool] = False  # Slack's own hooks are https; a relay may not be


class SlackChannel(HookChannel):
    kind = "slack"
    Options: ClassVar[type[opt.KindOptions]] = SlackOptions
    SERVICE = "Slack"
    INTERVAL = MESSAGE_INTERVAL_SECONDS
    options: SlackOptions

    def compose(self, digest: Digest) -> Composed:
        return Composed(payload={"kind": self.kind, "messages": slack_messages(digest)},
                        digest=digest)

    @staticmethod
    def outbox_files(payload: dict[str, Any]) -> dict[str, bytes]:
        """The JSON bodies the hook would receive, in order."""
        return {".json": json_lines(payload["messages"])}

    def send(self, payload: dict[str, Any], *, parts_sent: int = 0,
             on_part_sent: Callable[[int], None] = lambda n: None) -> None:
        self._poster.post_each([json.dumps(m).encode() for m in payload["messages"]],
                               parts_sent=parts_sent, on_part_sent=on_part_sent)



def json_lines(messages: list[Any]) -> bytes:
    """Several messages as one readable JSON file: a list, indented."""
    return (json.dumps(messages, indent=2, ensure_ascii=False) + "\n").encode()
