"""Rendering: jinja2 templates for email (autoescaped, strict) and Slack payloads as dicts.

Templates receive finished view data and only display it. Highlighting and escaping are
done here in Python, once, so no template can forget to escape feed text. The HTML email's
stylesheet is inlined here too (css-inline), since many mail clients drop <style>.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import css_inline
import jinja2
from markupsafe import Markup, escape

from digest.calendar import eastern_date
from digest.models import Digest, Match, Paper
from digest.scoring import highlight_spans

ABSTRACT_CHARS = 600  # abstracts are trimmed to this many characters in digests
TITLE_CHARS = 300  # a title longer than any real one is cut, so it cannot swamp a digest
AUTHORS_CHARS = 300

REMARK_CHARS = 200  # an arXiv comment or journal reference, cut if it runs on
SUMMARY_CHARS = 300
CONTENTS_TITLE_CHARS = 90  # titles in the contents list at the top
# What each one-click rating link says, in the order they are shown.
RATING_LABELS = {"like": "More like this", "dislike": "Not for me", "save": "Save"}


def plural(count: int, noun: str, many: str | None = None) -> str:
    """'1 paper', '2 papers', '0 papers'; ``many`` for nouns that do not just take an s."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


def local_time(moment: datetime, timezone: str) -> datetime:
    """``moment`` on the reader's clock; UTC when the zone is unknown (config checks names,
    but a digest may have been composed under another install's)."""
    try:
        return moment.astimezone(ZoneInfo(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        return moment


def day_label(moment: datetime) -> str:
    """'Tue 24 Nov'."""
    return f"{moment:%a} {moment.day} {moment:%b}"


def digest_subject(template: str, digest: Digest) -> str:
    """A subject from the channel's template: {watchlist}, {count}, {papers} ("1 new
    paper"), {date} ("Tue 24 Nov", in the watchlist's timezone) and {iso_date}."""
    local = local_time(digest.created_at, digest.timezone)
    count = len(digest.matches)
    return template.format(watchlist=digest.watchlist, count=count,
                           papers=plural(count, "new paper"), date=day_label(local),
                           iso_date=local.strftime("%Y-%m-%d"))


def matched_line(digest: Digest) -> str:
    """'8 papers matched · Tue 24 Nov', or '25 of 40 matched papers · Tue 24 Nov'."""
    shown, day = len(digest.matches), day_label(local_time(digest.created_at, digest.timezone))
    if digest.left_out:
        return f"{shown} of {plural(shown + digest.left_out, 'matched paper')} · {day}"
    return f"{plural(shown, 'paper')} matched · {day}"


def more_line(digest: Digest) -> str:
    """What became of the papers that matched but are not here; "" when none were left out."""
    if not digest.left_out:
        return ""
    more = f"{digest.left_out} more matched"
    if digest.more_url:
        return f"{more}: read them on the web."
    return f"{more}; they did not fit here and wait for the next digest."


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
    links: tuple[tuple[str, str], ...] = ()  # (label, URL) of each rating link
    anchor: str = ""  # the id the contents list links to
    contents_title: str = ""
    # (label, URL) of what to read: abstract, PDF, HTML, Hugging Face, code, project page
    paper_links: tuple[tuple[str, str], ...] = ()
    remarks: tuple[str, ...] = ()  # "Comments: ...", "Journal ref: ..." from arXiv
    summary: str = ""
    summary_label: str = ""  # who wrote the summary, e.g. "Summary (Hugging Face AI)"
    # The plain-text part's link lines: the paper links but the one under the title, then
    # the rating links.
    text_links: tuple[tuple[str, str], ...] = ()


@lru_cache(maxsize=1 << 14)
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


@lru_cache(maxsize=1 << 13)
def highlight(text: str, terms: tuple[str, ...], *, first_only: bool = False) -> Markup:
    """Escape ``text`` and wrap each matched term in <mark>; with ``first_only``, only the
    first time each term appears, so an abstract is not speckled with the same word.

    Cached: a paper in many watchlists' digests is often highlighted for the same terms."""
    out: list[str] = []
    position = 0
    seen: set[str] = set()
    for start, end in highlight_spans(text, terms):
        if first_only:
            word = " ".join(text[start:end].casefold().split())
            if word in seen:
                continue
            seen.add(word)
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
    """One phrase per term, author or category: '"LoRA" in title and abstract'. What the
    ratings said is left out where it rounds to no points."""
    fields: dict[tuple[str, str], list[str]] = {}
    others: list[str] = []
    for reason in match.reasons:
        if reason.kind in ("term", "negative"):
            fields.setdefault((reason.kind, reason.value), []).append(reason.field)
        elif not reason.says_nothing:
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


def rating_links(digest: Digest, key: str) -> tuple[tuple[str, str], ...]:
    """(label, URL) of the paper's rating links; none without a public web address."""
    urls = digest.feedback.get(key, {})
    links = ((label, safe_url(urls.get(action, ""))) for action, label in RATING_LABELS.items())
    return tuple((label, url) for label, url in links if url)


@lru_cache(maxsize=1 << 12)
def paper_links(paper: Paper) -> tuple[tuple[str, str], ...]:
    """(label, URL) of each place to read the paper; arXiv's PDF and HTML view for arXiv
    papers, and what a source knew of (Hugging Face, code with its stars, project page)."""
    links = [("Abstract", paper.abs_url)]
    if paper.arxiv_id:
        links += [("PDF", f"https://arxiv.org/pdf/{paper.arxiv_id}"),
                  ("HTML", f"https://arxiv.org/html/{paper.arxiv_id}")]
    if paper.hf_url:
        links.append(("Hugging Face", paper.hf_url))
    if paper.code_url:
        stars = f" (★ {paper.code_stars:,})" if paper.code_stars else ""
        links.append(("Code" + stars, paper.code_url))
    if paper.project_url:
        links.append(("Project page", paper.project_url))
    safe = ((label, safe_url(url)) for label, url in links if url)
    return tuple(dict((url, (label, url)) for label, url in safe if url).values())


def paper_remarks(paper: Paper) -> tuple[str, ...]:
    remarks = []
    if paper.comment:
        remarks.append("Comments: " + trim(paper.comment, REMARK_CHARS))
    if paper.journal_ref:
        remarks.append("Journal ref: " + trim(paper.journal_ref, REMARK_CHARS))
    return tuple(remarks)


def _terms_in(match: Match, field: str) -> tuple[str, ...]:
    """The terms that counted in this field, each once: a field is highlighted for those
    alone, since the rest do not occur there, or only where a longer term took the place."""
    return tuple(dict.fromkeys(r.value for r in match.reasons
                               if r.kind == "term" and r.field == field))


def paper_views(digest: Digest) -> list[PaperView]:
    views = []
    for rank, match in enumerate(digest.matches, start=1):
        paper = match.paper
        in_title, in_abstract = _terms_in(match, "title"), _terms_in(match, "abstract")
        title = trim(paper.title, TITLE_CHARS)
        abstract = trim(paper.abstract, ABSTRACT_CHARS)
        summary = trim(paper.summary, SUMMARY_CHARS) if paper.summary else ""
        url = safe_url(paper.abs_url)
        reading = paper_links(paper)
        ratings = rating_links(digest, paper.key)
        views.append(PaperView(
            rank=rank,
            title=title,
            title_html=highlight(title, in_title),
            url=url,
            authors=format_authors(paper.authors),
            categories=", ".join(paper.categories),
            meta=paper_meta(paper.categories, paper.announce_type, paper.upvotes),
            abstract=abstract,
            abstract_html=highlight(abstract, in_abstract, first_only=True),
            reasons=describe_reasons(match),
            score=match.score,
            upvotes=paper.upvotes,
            links=ratings,
            anchor=f"p{rank}",
            contents_title=trim(title, CONTENTS_TITLE_CHARS),
            paper_links=reading,
            text_links=tuple(link for link in reading if link[1] != url) + ratings,
            remarks=paper_remarks(paper),
            summary=summary,
            summary_label=(f"Summary ({paper.summary_source})" if paper.summary_source
                           else "Summary") if summary else "",
        ))
    return views


@jinja2.pass_environment
def _cached_wordwrap(environment: jinja2.Environment, text: str, width: int = 79,
                     break_long_words: bool = True, wrapstring: str | None = None,
                     break_on_hyphens: bool = True) -> str:
    """jinja2's wordwrap filter, remembering what it wrapped."""
    return _wordwrap(environment, str(text), width, break_long_words, wrapstring,
                     break_on_hyphens)


@lru_cache(maxsize=1 << 13)
def _wordwrap(environment: jinja2.Environment, text: str, width: int, break_long_words: bool,
              wrapstring: str | None, break_on_hyphens: bool) -> str:
    return str(jinja2.filters.do_wordwrap(environment, text, width, break_long_words,
                                          wrapstring, break_on_hyphens))


class Renderer:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or templates_dir()
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(self.directory)),
            autoescape=jinja2.select_autoescape(["html", "html.j2"], default_for_string=True),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

        self._stylesheets: dict[str, tuple[Markup, Callable[[], bool]]] = {}
        # Abstracts are wrapped the same way in every digest they appear in: wrap each once.
        self.env.filters["wordwrap"] = _cached_wordwrap

    def render(self, template: str, **context: Any) -> str:
        return self.env.get_template(template).render(**context)

    def stylesheet(self, name: str) -> Markup:
        """A stylesheet from the templates folder, minified: what stays in <style> after
        inlining (the @media rules) then sits before the charset declaration's 1024-byte
        horizon and weighs little."""
        known = self._stylesheets.get(name)
        if known is not None and known[1]():  # the file is unchanged since it was read
            return known[0]
        loader = self.env.loader
        assert loader is not None
        source, _, unchanged = loader.get_source(self.env, name)
        sheet = Markup(minify_css(source))
        self._stylesheets[name] = (sheet, unchanged or (lambda: False))
        return sheet

    def email(self, digest: Digest, *, subject: str) -> tuple[str, str]:
        """(plain text, HTML) bodies of the digest email, or of a heartbeat."""
        if digest.heartbeat is not None:
            return self.heartbeat_email(digest, subject=subject)
        papers = paper_views(digest)
        context = {
            "subject": subject,
            "watchlist": digest.watchlist,
            "matched": matched_line(digest),
            "more": more_line(digest),
            "more_url": safe_url(digest.more_url or ""),
            "papers": papers,
            "notes": digest.notes,
            "rated": any(p.links for p in papers),
        }
        html = self.render("email/digest.html.j2", stylesheet=self.stylesheet("email/digest.css"),
                           **context)
        return self.render("email/digest.txt.j2", **context), inline_css(html)

    def heartbeat_email(self, digest: Digest, *, subject: str) -> tuple[str, str]:
        """(plain text, HTML) of a heartbeat: one line on why nothing came, and the notes."""
        context = {"subject": subject, "watchlist": digest.watchlist,
                   "line": heartbeat_line(digest), "notes": digest.notes}
        return (self.render("email/heartbeat.txt.j2", **context),
                self.render("email/heartbeat.html.j2", **context))


_INLINER = css_inline.CSSInliner(
    keep_at_rules=True,  # dark mode lives in @media, which no style attribute can hold
    minify_css=True, load_remote_stylesheets=False)


@lru_cache(maxsize=16)
def minify_css(css: str) -> str:
    """Comments and the spaces around punctuation dropped; nothing else changes."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.DOTALL)
    css = re.sub(r"\s*([{};,>])\s*", r"\1", css)
    css = re.sub(r":\s+", ":", css)
    return " ".join(css.split()).replace(";}", "}")


def inline_css(html: str) -> str:
    """Move the <style> rules onto the elements: Gmail's apps and Outlook drop <style>."""
    return str(_INLINER.inline(html))


def heartbeat_line(digest: Digest) -> str:
    """'Tue 24 Nov: nothing matched today (812 new papers read).' A heartbeat can be sent
    late (a channel that was down), so its day is in it."""
    day = eastern_date(digest.created_at)
    return f"{day:%a} {day.day} {day:%b}: {digest.heartbeat}."


def heartbeat_subject(digest: Digest) -> str:
    return f"{digest.watchlist}: {digest.heartbeat}"
