"""The page behind a digest's "N more" link: the papers it matched but left out, ranked,
each with its rating links. It opens only with the signed link the digest carries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digest.config import Settings
from digest.feedback import LinkSigner, MoreLink, rating_urls
from digest.models import Paper
from digest.render import (
    ABSTRACT_CHARS,
    RATING_LABELS,
    TITLE_CHARS,
    day_label,
    format_authors,
    local_time,
    paper_meta,
    plural,
    safe_url,
    trim,
)
from digest.store import LeftOut, LeftOutPage, Store

log = logging.getLogger(__name__)

Page = Callable[..., Response]
# Builds the error the app answers with a page: (status, heading, message).
Refuse = Callable[[int, str, str], Exception]


@dataclass(frozen=True)
class LeftOutView:
    """One left-out paper as the page shows it."""

    rank: int
    title: str
    url: str
    authors: str
    meta: str
    abstract: str
    reasons: str
    score: float
    links: tuple[tuple[str, str], ...]  # (label, URL) of each rating link


def more_routes(settings: Settings, *, page: Page, open_store: Callable[[], Store],
                refuse: Refuse) -> list[Route]:
    """GET /more/{token}: the left-out papers of the digest the token names."""
    assert settings.web.secret is not None and settings.web.base_url is not None
    signer = LinkSigner(settings.web.secret.reveal())
    base_url = settings.web.base_url
    # A renamed watchlist's digests are filed under its new name; links name the old one.
    names = {w.name: {w.name, *w.previous_names} for w in settings.watchlists}
    timezones = {w.name: w.timezone or settings.schedule.timezone for w in settings.watchlists}

    def digest_of(link: MoreLink, store: Store) -> LeftOutPage:
        found = store.digest_left_out(link.digest_id)
        if (found is None or not found.papers
                or int(found.created_at.timestamp()) != int(link.created_at.timestamp())
                or link.watchlist not in names.get(found.watchlist, {found.watchlist})):
            raise refuse(404, "Digest not found",
                         "This digest, or the list of papers it left out, is no longer in "
                         "the store.")
        if found.watchlist not in names:
            raise refuse(410, "This watchlist is gone",
                         f"The watchlist {found.watchlist} is no longer configured.")
        return found

    def show(request: Request) -> Response:
        link = signer.verify_more(request.path_params["token"])
        if link is None:
            raise refuse(403, "This link is not valid",
                         "It was changed on the way, or was not made by this digest.")
        with open_store() as store:
            found = digest_of(link, store)
            papers = store.papers(p.paper_key for p in found.papers)
        views = [_view(entry, papers[entry.paper_key], signer, base_url, found.watchlist)
                 for entry in found.papers if entry.paper_key in papers]
        day = day_label(local_time(found.created_at, timezones[found.watchlist]))
        return page(request, "more.html.j2", watchlist=found.watchlist, day=day,
                    heading=f"{plural(found.total, 'more paper')} for {found.watchlist}",
                    listed=len(views), total=found.total, papers=views)

    return [Route("/more/{token}", show, methods=["GET"])]


def _view(entry: LeftOut, paper: Paper, signer: LinkSigner, base_url: str,
          watchlist: str) -> LeftOutView:
    urls = rating_urls(signer, base_url, watchlist=watchlist, paper_key=paper.key)
    links = ((label, safe_url(urls[action])) for action, label in RATING_LABELS.items())
    return LeftOutView(
        rank=entry.rank,
        title=trim(paper.title, TITLE_CHARS),
        url=safe_url(paper.abs_url),
        authors=format_authors(paper.authors),
        meta=" · ".join(paper_meta(paper.categories, paper.announce_type, paper.upvotes)),
        abstract=trim(paper.abstract, ABSTRACT_CHARS),
        reasons="; ".join(entry.reasons),
        score=entry.score,
        links=tuple((label, url) for label, url in links if url),
    )
