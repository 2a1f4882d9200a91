"""The preview page: a watchlist's matches over the store's last days, editable and re-run.

It opens only with a signed, expiring link (`paper-digest preview --link`), since running
watchlists over the store is not for anonymous visitors. An edited watchlist is only
previewed, never saved: the page prints the TOML to paste into the config.
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digest.config import Settings, WatchlistSettings, parse_watchlist
from digest.preview import Preview, PreviewLinks, config_table, run_preview, watchlist_toml
from digest.render import TITLE_CHARS, describe_reasons, safe_url, trim
from digest.store import Store

log = logging.getLogger(__name__)

MAX_DAYS = 60  # a preview reads the store's papers of at most this many days
Page = Callable[..., Response]


def preview_routes(settings: Settings, *, page: Page, open_store: Callable[[], Store],
                   now: Callable[[], datetime], forbidden: Callable[[str], Exception]
                   ) -> list[Route]:
    """GET shows the watchlist as configured; POST previews an edited one."""
    assert settings.web.secret is not None
    links = PreviewLinks(settings.web.secret.reveal())
    configured = {w.name: w for w in settings.watchlists}

    def watchlist_of(request: Request) -> WatchlistSettings:
        name = links.verify(request.path_params["token"], now=now())
        if name is None:
            raise forbidden("This preview link is not valid or has expired. Print a new one "
                            "with paper-digest preview --link.")
        if name not in configured:
            raise forbidden(f"The watchlist {name} is no longer configured.")
        return configured[name]

    def show(request: Request, watchlist: WatchlistSettings, *, days: int,
             definition: str | None = None, problems: list[tuple[str, str]] | None = None
             ) -> Response:
        preview = None
        edited = definition is not None and definition != watchlist_toml(configured[
            watchlist.name])
        if not problems:
            with open_store() as store:
                # An edit tried here is not saved: the last preview that `preview` and this
                # page compare with stays that of the watchlist as configured.
                preview = run_preview(settings, watchlist, store, days=days, now=now(),
                                      record=not edited)
        return page(request, "preview.html.j2", name=watchlist.name, days=days,
                    definition=definition if definition is not None
                    else watchlist_toml(watchlist),
                    problems=problems or [], view=_view(preview) if preview else None,
                    paste=config_table(configured[watchlist.name], watchlist,
                                       _keys(definition or ""))
                    if preview is not None and edited else "")

    def get(request: Request) -> Response:
        watchlist = watchlist_of(request)
        days, problems = _days(request.query_params.get("days", ""),
                               settings.store.lookback_days)
        return show(request, watchlist, days=days, problems=problems)

    async def post(request: Request) -> Response:
        watchlist = watchlist_of(request)
        form = parse_qs((await request.body()).decode("utf-8", "replace"),
                        keep_blank_values=True)
        definition = form.get("definition", [""])[0].replace("\r\n", "\n")
        days, problems = _days(form.get("days", [""])[0], settings.store.lookback_days)
        edited, found = parse_watchlist(definition, name=watchlist.name,
                                        channels=watchlist.channels)
        problems += found
        log.info("preview watchlist=%s edited=%s problems=%d", watchlist.name,
                 definition != watchlist_toml(watchlist), len(problems))
        return await run_in_threadpool(show, request, edited or watchlist, days=days,
                                       definition=definition, problems=problems)

    async def endpoint(request: Request) -> Response:
        # One route for both methods, so that a 405 lists them both in Allow.
        if request.method == "POST":
            return await post(request)
        return await run_in_threadpool(get, request)

    return [Route("/preview/{token}", endpoint, methods=["GET", "POST"])]


def _keys(definition: str) -> set[str]:
    """The keys an edit sets (it was read as TOML already, or nothing was previewed)."""
    try:
        return set(tomllib.loads(definition))
    except tomllib.TOMLDecodeError:
        return set()


def _days(text: str, default: int) -> tuple[int, list[tuple[str, str]]]:
    """The days a preview reads, from a form or the link; the default when not given."""
    text = text.strip()
    if not text:
        return default, []
    if text.isdigit() and 1 <= int(text) <= MAX_DAYS:
        return int(text), []
    return default, [("days", f"must be a whole number from 1 to {MAX_DAYS}")]


def _view(preview: Preview) -> dict[str, Any]:
    """What the template shows: plain values, escaped by the template."""
    return {
        "read": preview.read,
        "count": len(preview.matches),
        "previous_at": (f"{preview.previous_at:%Y-%m-%d %H:%M} UTC"
                        if preview.previous_at else ""),
        "gained": len(preview.gained),
        "lost": [{"title": trim(p.title, TITLE_CHARS), "url": safe_url(p.abs_url),
                  "key": p.key} for p in preview.lost],
        "ratings": preview.ratings.describe() if preview.ratings else "",
        "warnings": list(preview.warnings),
        "papers": [{"rank": i, "score": f"{m.score:.2f}", "key": m.paper.key,
                    "title": trim(m.paper.title, TITLE_CHARS), "url": safe_url(m.paper.abs_url),
                    "reasons": "; ".join(describe_reasons(m)),
                    "new": m.paper.key in preview.gained_keys}
                   for i, m in enumerate(preview.matches, start=1)],
    }
