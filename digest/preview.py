"""What a watchlist as written now would have matched over the store's last days: ranked,
with reasons, what changed since its last preview, and how its rules treat rated papers.

Only the watchlist's own rules are scored (terms, query, authors, categories, seeds): the
points learned from ratings are left out, so that the ratings can judge the rules.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from itsdangerous import BadSignature, URLSafeSerializer

from digest.config import Settings, WatchlistSettings, wording_warnings
from digest.models import Match, Paper
from digest.pipeline import build_matcher
from digest.render import describe_reasons
from digest.scoring import Matcher, rank
from digest.store import Store

log = logging.getLogger(__name__)

LINK_SECONDS = 3600  # how long a printed preview link opens the page
_SALT = "paper-digest preview v1"
MAX_TOKEN_CHARS = 512


@dataclass(frozen=True)
class RatingsCheck:
    """How the rules treat the papers readers rated for the watchlist."""

    liked: int
    liked_kept: int
    disliked: int
    disliked_kept: int

    def describe(self) -> str:
        parts = []
        if self.liked:
            parts.append(f"keeps {self.liked_kept} of {self.liked} liked papers")
        if self.disliked:
            parts.append(f"keeps {self.disliked_kept} of {self.disliked} disliked papers "
                         f"(drops {self.disliked - self.disliked_kept})")
        return "ratings: " + ", ".join(parts)


@dataclass(frozen=True)
class Preview:
    watchlist: WatchlistSettings
    days: int
    read: int  # papers first seen in the window
    matches: tuple[Match, ...]  # ranked
    gained: tuple[Paper, ...]  # matched now, not by the last preview
    lost: tuple[Paper, ...]  # matched by the last preview, not now (still in the window)
    previous_at: datetime | None  # when the last preview was made; None: this is the first
    ratings: RatingsCheck | None  # None: nobody rated papers for this watchlist
    warnings: tuple[str, ...]
    definition: str  # the watchlist as TOML, to paste into the config

    @property
    def gained_keys(self) -> frozenset[str]:
        return frozenset(p.key for p in self.gained)


def run_preview(settings: Settings, watchlist: WatchlistSettings, store: Store, *, days: int,
                now: datetime, record: bool = True) -> Preview:
    """Score the papers first seen in the last ``days`` against ``watchlist`` as given (it
    may differ from the config: an edited one), compare with the last preview of the same
    name, and (with ``record``) keep this result as the last preview."""
    matcher = _rules_only(watchlist, store, now)
    recent = store.recent(now - timedelta(days=days))
    matches = tuple(rank(matcher.match_many(recent, now=now)[watchlist.name]))
    keys = [m.paper.key for m in matches]
    previous = store.last_preview(watchlist.name)
    gained: tuple[Paper, ...] = ()
    lost: tuple[Paper, ...] = ()
    if previous is not None:
        before = set(previous[1])
        gained = tuple(m.paper for m in matches if m.paper.key not in before)
        window = {p.key: p for p in recent}
        lost = tuple(window[k] for k in previous[1] if k in window and k not in set(keys))
    definition = watchlist_toml(watchlist)
    if record:
        store.record_preview(watchlist.name, definition=definition, paper_keys=keys, days=days,
                             now=now)
    warnings = tuple(f"{key.split('.', 1)[-1]}: {text}" for key, text in wording_warnings(
        replace(settings, watchlists=(watchlist,))))
    return Preview(watchlist=watchlist, days=days, read=len(recent), matches=matches,
                   gained=gained, lost=lost,
                   previous_at=previous[3] if previous is not None else None,
                   ratings=_check_ratings(matcher, watchlist.name, store, now),
                   warnings=warnings, definition=definition)


def _rules_only(watchlist: WatchlistSettings, store: Store, now: datetime) -> Matcher:
    # Without feedback_weight no model is trained or used; the vetoes of rated papers are
    # lifted too, or every rated paper would count as dropped by the rules.
    matcher = build_matcher([replace(watchlist, feedback_weight=0.0)], store,
                            now=lambda: now)
    matcher.watchlists[watchlist.name].disliked = frozenset()
    matcher.watchlists[watchlist.name].liked = frozenset()
    return matcher


def _check_ratings(matcher: Matcher, name: str, store: Store,
                   now: datetime) -> RatingsCheck | None:
    rated = store.ratings(name).get(name, {})
    if not rated:
        return None
    papers = store.papers(rated)
    kept = {m.paper.key for m in matcher.match_many(list(papers.values()), now=now)[name]}
    liked = [k for k, v in rated.items() if v > 0 and k in papers]
    disliked = [k for k, v in rated.items() if v < 0 and k in papers]
    return RatingsCheck(liked=len(liked), liked_kept=sum(k in kept for k in liked),
                        disliked=len(disliked), disliked_kept=sum(k in kept for k in disliked))


# ----------------------------------------------------------------------- the definition


def _toml(value: object) -> str:
    # JSON's strings, numbers and lists are TOML's too; only booleans are spelled alike.
    return json.dumps(value, ensure_ascii=False)


def watchlist_toml(w: WatchlistSettings) -> str:
    """The rules of a watchlist as the TOML keys of its table (name and channels aside),
    each written only when it differs from the default."""
    d = WatchlistSettings(name=w.name, channels=w.channels)
    lines = []
    if w.keywords:
        items = [_toml(k.term.text) if k.weight == 1.0
                 else f"{{ term = {_toml(k.term.text)}, weight = {k.weight:g} }}"
                 for k in w.keywords]
        lines.append(f"keywords = [{', '.join(items)}]")
    if w.query_text is not None:
        lines.append(f"query = {_toml(w.query_text)}")
    if w.exclude:
        lines.append(f"exclude = {_toml([t.text for t in w.exclude])}")
    if w.authors:
        items = [_toml(a.name) if not a.initials
                 else f"{{ name = {_toml(a.name)}, initials = true }}" for a in w.authors]
        lines.append(f"authors = [{', '.join(items)}]")
    if w.categories:
        lines.append(f"categories = {_toml(list(w.categories))}")
    if w.primary_only:
        lines.append("primary_only = true")
    if w.category_boost:
        boosts = ", ".join(f"{_toml(c)} = {v:g}" for c, v in w.category_boost.items())
        lines.append(f"category_boost = {{ {boosts} }}")
    for key in ("upvotes_boost", "recency_boost", "recency_half_life_days",
                "similarity_weight", "min_similarity", "min_score", "feedback_weight"):
        if getattr(w, key) != getattr(d, key):
            lines.append(f"{key} = {getattr(w, key):g}")
    if w.similar_to:
        lines.append(f"similar_to = {_toml(list(w.similar_to))}")
    if w.max_papers != d.max_papers:
        lines.append(f"max_papers = {w.max_papers}")
    return "\n".join(lines) + "\n"


# The keys of a watchlist that say when and where it goes rather than what it matches:
# the preview's text box leaves them out, and its entry to paste keeps them.
DELIVERY_KEYS = ("previous_names", "schedule", "timezone", "heartbeat")


def config_table(configured: WatchlistSettings, edited: WatchlistSettings,
                 given: Collection[str] = ()) -> str:
    """The whole [[watchlists]] entry to paste into the config in place of the old one: the
    edited rules, and the configured entry's other keys (DELIVERY_KEYS; those the edit
    ``given`` sets are the edit's), so that pasting it loses no rename, schedule or
    heartbeat."""
    source = {key: edited if key in given else configured for key in DELIVERY_KEYS}
    lines = ["[[watchlists]]", f"name = {_toml(configured.name)}"]
    if names := source["previous_names"].previous_names:
        lines.append(f"previous_names = {_toml(list(names))}")
    lines += watchlist_toml(edited).splitlines()
    if schedule := source["schedule"].schedule:
        lines.append(f"schedule = {_toml(schedule)}")
    if timezone := source["timezone"].timezone:
        lines.append(f"timezone = {_toml(timezone)}")
    if source["heartbeat"].heartbeat:
        lines.append("heartbeat = true")
    lines.append(f"channels = {_toml(list(configured.channels))}")
    return "\n".join(line for line in lines if line) + "\n"


# ----------------------------------------------------------------------- text and links


def format_preview(preview: Preview, *, limit: int | None = None) -> str:
    """The preview as the command prints it."""
    w = preview.watchlist
    lines = [f"preview of {w.name} over the last {preview.days} day"
             f"{'s' if preview.days != 1 else ''}: {preview.read} papers read, "
             f"{len(preview.matches)} match"]
    if preview.previous_at is None:
        lines.append("first preview of this watchlist: the next one says what changed")
    else:
        lines.append(f"since the last preview ({preview.previous_at:%Y-%m-%d %H:%M} UTC): "
                     f"+{len(preview.gained)} gained, -{len(preview.lost)} lost")
    if preview.ratings is not None:
        lines.append(preview.ratings.describe())
    lines += [f"warning: {text}" for text in preview.warnings]
    shown = preview.matches[:limit] if limit else preview.matches
    for rank_number, match in enumerate(shown, start=1):
        mark = "+" if match.paper.key in preview.gained_keys else " "
        lines.append(f"{mark}{rank_number:3}. {match.score:6.2f}  {match.paper.key}  "
                     f"{_line(match.paper.title)}")
        lines.append(f"              {_line('; '.join(describe_reasons(match)))}")
    if len(shown) < len(preview.matches):
        lines.append(f"  ... and {len(preview.matches) - len(shown)} more")
    if preview.lost:
        lines.append("lost since the last preview:")
        lines += [f"-       {p.key}  {_line(p.title)}" for p in preview.lost]
    return "\n".join(lines)


def _line(text: str, limit: int = 160) -> str:
    text = "".join(ch if ch.isprintable() else " " for ch in " ".join(text.split()))
    return text if len(text) <= limit else text[:limit - 1] + "…"


class PreviewLinks:
    """Signed, expiring links to a watchlist's preview page, made with the web key."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("a signing key is required")
        self._serializer = URLSafeSerializer(secret, salt=_SALT)

    def token(self, watchlist: str, *, now: datetime, seconds: int = LINK_SECONDS) -> str:
        return str(self._serializer.dumps([watchlist, int(now.timestamp()) + seconds]))

    def verify(self, token: str, *, now: datetime) -> str | None:
        """The watchlist a token opens, or None when it is forged, malformed or expired."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        try:
            data = self._serializer.loads(token)
        except BadSignature:
            return None
        if (not isinstance(data, list) or len(data) != 2 or not isinstance(data[0], str)
                or not isinstance(data[1], int) or isinstance(data[1], bool)):
            return None
        return data[0] if now.timestamp() <= data[1] else None


def preview_url(settings: Settings, watchlist: str, *, now: datetime,
                days: int | None = None) -> str:
    """The link `paper-digest preview --link` prints; needs [web] base_url and its key.
    ``days``, when given, is the page's first span (the store's lookback_days otherwise)."""
    assert settings.web.base_url is not None and settings.web.secret is not None
    token = PreviewLinks(settings.web.secret.reveal()).token(watchlist, now=now)
    query = f"?days={days}" if days else ""
    return f"{settings.web.base_url.rstrip('/')}/preview/{token}{query}"
