"""Rendering: jinja2 templates for email (autoescaped, strict) and Slack payloads as dicts.

Templates receive finished view data and only display it. Highlighting and escaping are
done here in Python, once, so no template can forget to escape feed text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
from markupsafe import Markup, escape

from digest.models import Digest, Match
from digest.scoring import highlight_spans

ABSTRACT_CHARS = 600  # abstracts are trimmed to this many characters in digests
TITLE_CHARS = 300  # a title longer than any real one is cut, so it cannot swamp a digest
AUTHORS_CHARS = 300
SLACK_ABSTRACT_CHARS = 280


def templates_dir() -> Path:
    """Installed wheels carry the templates inside the package; a checkout has them on top."""
    packaged = Path(__file__).parent / "templates"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "templates"


@dataclass(frozen=True)
class PaperView:
    rank: int
    title: str
    title_html: Markup
    url: str
    authors: str
    categories: str
    meta: tuple[str, ...]
    abstract: str
    abstract_html: Markup
    reasons: tuple[str, ...]
    score: float
    upvotes: int | None


def safe_url(url: str) -> str:
    """Only web links become links; a feed's javascript: or data: URL becomes none."""
    scheme = urlsplit(url.strip()).scheme.lower()
    return url.strip() if scheme in ("http", "https") else ""


def trim(text: str, limit: int) -> str:
    """Cut at a word boundary and mark the cut with an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:.")
    return cut + " …"


def highlight(text: str, terms: tuple[str, ...]) -> Markup:
    """Escape ``text`` and wrap each matched term in <mark>."""
    out: list[str] = []
    position = 0
    for start, end in highlight_spans(text, terms):
        out.append(str(escape(text[position:start])))
        out.append(f"<mark>{escape(text[start:end])}</mark>")
        position = end
    out.append(str(escape(text[position:])))
    return Markup("".join(out))


def format_authors(authors: tuple[str, ...], limit: int = 8) -> str:
    shown = ", ".join(authors[:limit])
    if len(authors) > limit:
        shown += f" and {len(authors) - limit} more"
    return trim(shown, AUTHORS_CHARS)


def describe_reasons(match: Match) -> tuple[str, ...]:
    """One phrase per term, author or category: '"LoRA" in title and abstract'."""
    fields: dict[tuple[str, str], list[str]] = {}
    others: list[str] = []
    for reason in match.reasons:
        if reason.kind in ("term", "negative"):
            fields.setdefault((reason.kind, reason.value), []).append(reason.field)
        else:
            others.append(reason.describe())
    terms = [f'"{term}" in {" and ".join(where)}' + (" (lowers)" if kind == "negative" else "")
             for (kind, term), where in fields.items()]
    return tuple(terms + others)


def paper_meta(categories: tuple[str, ...], announce_type: str | None,
               upvotes: int | None) -> tuple[str, ...]:
    """The small facts under a title: categories, a non-new announce type, upvotes."""
    parts = []
    if categories:
        parts.append(", ".join(categories))
    if announce_type and announce_type != "new":
        parts.append(announce_type)
    if upvotes:
        parts.append(f"▲ {upvotes} upvotes on Hugging Face")
    return tuple(parts)


def paper_views(digest: Digest) -> list[PaperView]:
    views = []
    for rank, match in enumerate(digest.matches, start=1):
        paper = match.paper
        terms = match.matched_terms
        title = trim(paper.title, TITLE_CHARS)
        abstract = trim(paper.abstract, ABSTRACT_CHARS)
        views.append(PaperView(
            rank=rank,
            title=title,
            title_html=highlight(title, terms),
            url=safe_url(paper.abs_url),
            authors=format_authors(paper.authors),
            categories=", ".join(paper.categories),
            meta=paper_meta(paper.categories, paper.announce_type, paper.upvotes),
            abstract=abstract,
            abstract_html=highlight(abstract, terms),
            reasons=describe_reasons(match),
            score=match.score,
            upvotes=paper.upvotes,
        ))
    return views


class Renderer:
    def __init__(self, directory: Path | None = None) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(directory or templates_dir())),
            autoescape=jinja2.select_autoescape(["html", "html.j2"], default_for_string=True),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    def render(self, template: str, **context: Any) -> str:
        return self.env.get_template(template).render(**context)

    def email(self, digest: Digest, *, subject: str) -> tuple[str, str]:
        """(plain text, HTML) bodies of the digest email."""
        context = {
            "subject": subject,
            "watchlist": digest.watchlist,
            "date": digest.created_at.strftime("%Y-%m-%d"),
            "papers": paper_views(digest),
            "notes": digest.notes,
        }
        return (self.render("email/digest.txt.j2", **context),
                self.render("email/digest.html.j2", **context))


# ----------------------------------------------------------------------------- Slack

SLACK_MAX_BLOCKS = 50
SLACK_MAX_SECTION_CHARS = 3000
SLACK_MAX_TEXT_CHARS = 3000


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


def slack_messages(digest: Digest) -> list[dict[str, Any]]:
    """Block Kit messages for one digest, split so that each stays within Slack's limits."""
    views = paper_views(digest)
    heading = f"{digest.watchlist}: {len(views)} new paper{'s' if len(views) != 1 else ''}"
    paper_blocks: list[list[dict[str, Any]]] = []
    for view in views:
        meta = " · ".join(x for x in (view.authors, *view.meta) if x)
        title = (f"<{_slack_url(view.url)}|{slack_text(view.title)}>" if view.url
                 else slack_text(view.title))
        body = (f"*{view.rank}. {title}*\n"
                f"{slack_text(meta)}\n{slack_text(trim(view.abstract, SLACK_ABSTRACT_CHARS))}")
        why = "Why: " + "; ".join(view.reasons)
        paper_blocks.append([
            {"type": "section",
             "text": {"type": "mrkdwn", "text": _clip(body, SLACK_MAX_SECTION_CHARS)}},
            {"type": "context",
             "elements": [{"type": "mrkdwn",
                           "text": _clip(slack_text(why), SLACK_MAX_TEXT_CHARS)}]},
        ])
    notes = [{"type": "context", "elements": [
        {"type": "mrkdwn", "text": _clip(slack_text(" ".join(digest.notes)),
                                         SLACK_MAX_TEXT_CHARS)}]}] if digest.notes else []
    room = SLACK_MAX_BLOCKS - 1 - len(notes)  # every message has a header, and the notes
    messages: list[list[dict[str, Any]]] = [[]]
    for blocks in paper_blocks:
        if len(messages[-1]) + len(blocks) > room:
            messages.append([])
        messages[-1].extend(blocks)
    out = []
    for number, blocks in enumerate(messages, start=1):
        title = heading if len(messages) == 1 else f"{heading} ({number}/{len(messages)})"
        header = {"type": "header",
                  "text": {"type": "plain_text", "text": _clip(title, 150), "emoji": True}}
        out.append({"text": slack_escape(title), "blocks": [header, *notes, *blocks]})
    return out
