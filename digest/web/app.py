"""The web app behind rating links: GET shows what a link would record, only POST records it.

Mail scanners and link previewers fetch every link in a message, so a GET never writes; the
page it shows posts itself from a nonce'd inline script, with a button for browsers without
scripts. Nothing is shown without a valid signature.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router

from digest.config import MIN_SECRET_CHARS, Settings
from digest.deliver.feed_files import served_feeds
from digest.errors import ConfigError, StoreError
from digest.feedback import MAX_TOKEN_CHARS, LinkSigner, RatingLink, next_step
from digest.models import Paper
from digest.render import TITLE_CHARS, Renderer, safe_url, trim
from digest.store import Store
from digest.web.guard import NONCE_KEY, Guard
from digest.web.more import more_routes
from digest.web.preview import preview_routes

log = logging.getLogger(__name__)

# What each action means to a reader, in the words the digest's buttons use.
ACTION_LABELS = {"like": "more like this", "dislike": "not for me",
                 "save": "saved (counts as more like this)"}
# A rating URL is a short prefix plus a token of at most MAX_TOKEN_CHARS; anything much
# longer is junk and is refused before routing.
MAX_URL_CHARS = MAX_TOKEN_CHARS + 1024
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def web_problems(settings: Settings) -> list[tuple[str, str]]:
    """What stops the web app from serving links: no public address, or no usable key."""
    web = settings.web
    problems = []
    if not web.base_url:
        problems.append(("web.base_url", "is not set: the web app answers the links digests "
                                         "carry, so it needs the public address they point "
                                         "to, like https://papers.example.org/digest"))
    key = web.key
    if web.enabled:
        problems += [p for p in settings.missing_secrets() if p[0] == "web.secret_env"]
    elif len(key) < MIN_SECRET_CHARS:
        problems.append(("web.secret_env", f"environment variable {web.secret_env} must hold "
                                           f"the key that signs rating links ({MIN_SECRET_CHARS}"
                                           "+ random characters)"))
    return problems


def allowed_hosts(base_url: str) -> list[str]:
    """The public host readers' links name, and loopback for probes and a local proxy."""
    host = (urlsplit(base_url).hostname or "").lower()
    return list(dict.fromkeys([host, *LOCAL_HOSTS] if host else LOCAL_HOSTS))


class PageError(Exception):
    """A request the app answers with a page explaining why it did nothing."""

    def __init__(self, status: int, heading: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.heading = heading
        self.message = message


# Generic words for the statuses the router and the guard give without our say.
_STATUS_TEXT = {
    404: ("Not found", "There is nothing at this address."),
    405: ("Not allowed", "This address does not answer that kind of request."),
}


@dataclass(frozen=True)
class PaperLink:
    """A paper as the pages show it: its title, linked to its abstract when that is a web page."""

    title: str
    url: str

    @classmethod
    def of(cls, paper: Paper) -> PaperLink:
        return cls(title=trim(paper.title, TITLE_CHARS), url=safe_url(paper.abs_url))


@dataclass(frozen=True)
class _Rated:
    """A verified link with the paper it names."""

    link: RatingLink
    paper: Paper


def create_app(settings: Settings, *, now: Callable[[], datetime] = lambda: datetime.now(UTC)
               ) -> Starlette:
    """The app for ``settings``; raises ConfigError when it could not check a signature."""
    problems = web_problems(settings)
    if problems:
        raise ConfigError(problems, path=str(settings.path))
    assert settings.web.base_url is not None and settings.web.secret is not None
    signer = LinkSigner(settings.web.secret.reveal())
    renderer = Renderer()
    store_path = settings.store.path
    # A link made before a rename names the old watchlist: it rates the renamed one.
    current = {old: w.name for w in settings.watchlists for old in (w.name, *w.previous_names)}
    watchlists = {w.name: w for w in settings.watchlists}

    def page(request: Request, template: str, *, status: int = 200, **context: Any
             ) -> Response:
        nonce = request.scope.get("state", {}).get(NONCE_KEY, "")
        html = renderer.render(f"web/{template}", nonce=nonce, **context)
        return HTMLResponse(html, status_code=status)

    def open_store() -> Store:
        # The store appears with the first run; until then there is nothing to rate.
        if not store_path.exists():
            raise StoreError(f"no store at {store_path} yet")
        return Store.open(store_path)

    def resolve(store: Store, token: str) -> _Rated:
        link = signer.verify(token)
        if link is None:
            raise PageError(403, "This link is not valid",
                            "It was changed on the way, or was not made by this digest. "
                            "Nothing was recorded.")
        if link.watchlist not in current:
            raise PageError(410, "This watchlist is gone",
                            f"The watchlist {link.watchlist} is no longer configured, so its "
                            "ratings are not kept. Nothing was recorded.")
        link = replace(link, watchlist=current[link.watchlist])
        paper = store.paper(link.paper_key)
        if paper is None:
            raise PageError(404, "Paper not found",
                            "This paper is no longer in the store. Nothing was recorded.")
        return _Rated(link, paper)

    def show(request: Request) -> Response:
        with open_store() as store:
            rated = resolve(store, request.path_params["token"])
        return page(request, "confirm.html.j2", watchlist=rated.link.watchlist,
                    action_label=ACTION_LABELS[rated.link.action],
                    paper=PaperLink.of(rated.paper))

    def record(request: Request) -> Response:
        with open_store() as store:
            rated = resolve(store, request.path_params["token"])
            link = rated.link
            outcome = store.rate(watchlist=link.watchlist, paper_key=link.paper_key,
                                 action=link.action, origin="web", now=now(),
                                 recipient=link.recipient)
        watchlist = watchlists.get(link.watchlist)
        log.info("rating watchlist=%s paper=%s action=%s changed=%s", link.watchlist,
                 link.paper_key, link.action, outcome.changed)
        undo_path = ""
        # The click just recorded, or (a second click) the one that set the rating in force.
        undone = outcome.event_id if outcome.changed else outcome.standing_event
        if undone is not None:
            # Relative, so it works whether a proxy keeps the base path or strips it.
            undo_path = f"../u/{signer.undo_token(undone)}"
        previous = ACTION_LABELS.get(outcome.previous or "", "") if outcome.changed else ""
        return page(request, "recorded.html.j2", changed=outcome.changed,
                    watchlist=link.watchlist, action_label=ACTION_LABELS[link.action],
                    previous_label=previous, undo_path=undo_path,
                    paper=PaperLink.of(rated.paper),
                    next_step=next_step(watchlist, link.action)
                    if watchlist and outcome.changed else "")

    def undo(request: Request) -> Response:
        event_id = signer.verify_undo(request.path_params["token"])
        if event_id is None:
            raise PageError(403, "This link is not valid",
                            "It was changed on the way, or was not made by this digest. "
                            "Nothing was undone.")
        with open_store() as store:
            outcome = store.undo_rating(event_id, now())
            paper = store.paper(outcome.paper_key) if outcome else None
        if outcome is None:
            return page(request, "undone.html.j2", undone=False, watchlist="",
                        action_label="", paper=None)
        log.info("rating undone watchlist=%s paper=%s now=%s", outcome.watchlist,
                 outcome.paper_key, outcome.action)
        shown = PaperLink.of(paper) if paper else PaperLink(title=outcome.paper_key, url="")
        watchlist = watchlists.get(outcome.watchlist)
        return page(request, "undone.html.j2", undone=True, watchlist=outcome.watchlist,
                    action_label=ACTION_LABELS.get(outcome.action or "", ""), paper=shown,
                    next_step=next_step(watchlist, outcome.action or None) if watchlist else "")

    def rating(request: Request) -> Response:
        # One route for both methods, so that a 405 lists them both in Allow.
        return record(request) if request.method == "POST" else show(request)

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    feeds = served_feeds(settings)

    def feed_file(request: Request) -> Response:
        # Only the exact names of configured feeds: no path is ever built from the request.
        found = feeds.get(request.path_params["name"])
        if found is None:
            raise HTTPException(404)
        path, media_type = found
        try:
            with path.open("rb") as handle:
                body, modified = handle.read(), int(os.fstat(handle.fileno()).st_mtime)
        except FileNotFoundError:
            raise HTTPException(404) from None  # nothing delivered to it yet
        headers = {"ETag": f'"{hashlib.sha256(body).hexdigest()[:32]}"',
                   "Last-Modified": formatdate(modified, usegmt=True)}
        if _not_modified(request, headers["ETag"], modified):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media_type, headers=headers)

    def page_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return page(request, "message.html.j2", status=exc.status, heading=exc.heading,
                    message=exc.message)

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        heading, message = _STATUS_TEXT.get(
            exc.status_code, (HTTPStatus(exc.status_code).phrase, "The request was refused."))
        response = page(request, "message.html.j2", status=exc.status_code, heading=heading,
                        message=message)
        response.headers.update(exc.headers or {})
        return response

    def store_error(request: Request, exc: Exception) -> Response:
        log.warning("web: store unavailable: %s", exc)
        return page(request, "message.html.j2", status=503, heading="Try again later",
                    message="The digest's store cannot be reached just now; nothing was "
                            "recorded. Please try the link again in a few minutes.")

    routes: list[BaseRoute] = [
        Route("/r/{token}", rating, methods=["GET", "POST"]),
        Route("/u/{token}", undo, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/feeds/{name}", feed_file, methods=["GET"]),
        *preview_routes(settings, page=page, open_store=open_store, now=now,
                        forbidden=lambda message: PageError(403, "This link is not valid",
                                                            message)),
        *more_routes(settings, page=page, open_store=open_store, refuse=PageError),
    ]
    # A proxy may pass the base URL's path on (/digest/r/...) or strip it (/r/...).
    prefix = urlsplit(settings.web.base_url).path.rstrip("/")
    if prefix:
        routes.append(Mount(prefix, app=Router(list(routes), redirect_slashes=False)))
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(Guard, max_body_bytes=settings.web.max_body_kb * 1024,
                       max_url_chars=MAX_URL_CHARS),
            Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(
                settings.web.base_url), www_redirect=False),
        ],
        # A read that meets a damaged or busy file raises sqlite3's own errors.
        exception_handlers={PageError: page_error, HTTPException: http_error,
                            StoreError: store_error, sqlite3.Error: store_error},
    )
    # No path answers with a redirect to its twin with or without a slash: that redirect
    # names this app's own scheme and host, not the public ones behind a TLS proxy.
    app.router.redirect_slashes = False
    return app


def _not_modified(request: Request, etag: str, modified: int) -> bool:
    """A conditional GET for a copy the reader has: If-None-Match first, else the date."""
    asked = request.headers.get("if-none-match")
    if asked is not None:
        tags = {tag.strip().removeprefix("W/") for tag in asked.split(",")}
        return etag in tags or "*" in tags
    since = request.headers.get("if-modified-since")
    try:
        return since is not None and parsedate_to_datetime(since).timestamp() >= modified
    except (TypeError, ValueError):
        return False  # an unreadable date asks for the whole file
