"""Signed rating links: what a reader's click may record, and nothing else.

A link names the watchlist, the paper, the action and optionally the recipient, signed
with HMAC under a key read from the environment. A digest's "N more" link names the digest
whose left-out papers the web app lists, under its own salt. No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime

from itsdangerous import BadSignature, URLSafeSerializer

from digest.config import WatchlistSettings
from digest.ranking.likes import LIKED_SEEDS, compares_likes
from digest.ranking.model import MIN_BACKGROUND, MIN_LIKES

ACTIONS = ("like", "dislike", "save")
# What each action records: save is kept apart from like but counts as one.
ACTION_VALUES = {"like": 1, "save": 1, "dislike": -1}
_SALT = "paper-digest rating v1"  # the first, longer tokens: still accepted
_COMPACT_SALT = b"paper-digest rating v2"
# A digest carries three links per paper in two parts, so every character counts: one
# letter per action (upper case: the paper key is an arXiv id, its "arxiv:" left out), and
# 96 bits of HMAC-SHA256, far beyond what guessing against the web app can reach.
_ACTION_CODES = {"like": "l", "dislike": "d", "save": "s"}
_CODE_ACTIONS = {code: action for action, code in _ACTION_CODES.items()}
_ARXIV = "arxiv:"
SIGNATURE_BYTES = 12
_SEPARATOR = "\x1f"  # never in a watchlist name, a paper key or an address
_UNDO_SALT = "paper-digest undo v1"
_MORE_SALT = "paper-digest more v1"
MAX_TOKEN_CHARS = 1024  # longer tokens are refused before any parsing


@dataclass(frozen=True, slots=True)
class RatingLink:
    """What a verified link asks to record."""

    watchlist: str
    paper_key: str
    action: str
    recipient: str = ""


@dataclass(frozen=True, slots=True)
class MoreLink:
    """What a verified "N more" link names: a digest, its watchlist and when it was recorded.

    The time tells the digest apart from a later one given the same id after pruning.
    """

    digest_id: int
    watchlist: str
    created_at: datetime


class LinkSigner:
    """Makes and checks rating, undo and "N more" tokens with one secret key."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("a signing key is required")
        self._key = secret.encode("utf-8")
        self._rating = URLSafeSerializer(secret, salt=_SALT)
        self._undo = URLSafeSerializer(secret, salt=_UNDO_SALT)
        self._more = URLSafeSerializer(secret, salt=_MORE_SALT)

    def token(self, link: RatingLink) -> str:
        """``<base64url of action letter, watchlist, paper key[, recipient]>.<signature>``."""
        code, key = _ACTION_CODES[link.action], link.paper_key
        if key.startswith(_ARXIV) and key != _ARXIV:
            code, key = code.upper(), key.removeprefix(_ARXIV)
        fields = [code, link.watchlist, key]
        if link.recipient:
            fields.append(link.recipient)
        body = base64.urlsafe_b64encode(_SEPARATOR.join(fields).encode("utf-8"))
        text = body.rstrip(b"=").decode("ascii")
        return f"{text}.{self._signature(text)}"

    def _signature(self, body: str) -> str:
        mac = hmac.new(self._key, _COMPACT_SALT + b"\0" + body.encode("utf-8"), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()[:SIGNATURE_BYTES]).decode("ascii")

    def _verify_compact(self, token: str) -> RatingLink | None:
        body, _, signature = token.partition(".")
        if not hmac.compare_digest(signature.encode("utf-8"),
                                   self._signature(body).encode("ascii")):
            return None
        try:
            text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        fields = text.split(_SEPARATOR)
        code = fields[0].lower()
        if len(fields) not in (3, 4) or code not in _CODE_ACTIONS or not all(fields[1:3]):
            return None
        key = fields[2] if fields[0] == code else _ARXIV + fields[2]
        return RatingLink(watchlist=fields[1], paper_key=key, action=_CODE_ACTIONS[code],
                          recipient=fields[3] if len(fields) == 4 else "")

    def verify(self, token: str) -> RatingLink | None:
        """The link a token names, or None when it is forged, altered or malformed.

        Tokens of the first, longer form, in digests sent before, still verify.
        """
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        compact = self._verify_compact(token)
        if compact is not None:
            return compact
        try:
            data = self._rating.loads(token)
        except BadSignature:
            return None
        if (not isinstance(data, list) or len(data) != 4
                or not all(isinstance(part, str) for part in data)
                or data[2] not in ACTIONS or not data[0] or not data[1]):
            return None
        return RatingLink(watchlist=data[0], paper_key=data[1], action=data[2],
                          recipient=data[3])

    def undo_token(self, event_id: int) -> str:
        return str(self._undo.dumps(event_id))

    def verify_undo(self, token: str) -> int | None:
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        try:
            data = self._undo.loads(token)
        except BadSignature:
            return None
        return data if isinstance(data, int) and not isinstance(data, bool) else None

    def more_token(self, link: MoreLink) -> str:
        """``<base64url of [digest id, watchlist, epoch seconds]>.<signature>``."""
        return str(self._more.dumps([link.digest_id, link.watchlist,
                                     int(link.created_at.timestamp())]))

    def verify_more(self, token: str) -> MoreLink | None:
        """The digest a "N more" token names, or None when it is forged, altered or malformed."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        try:
            data = self._more.loads(token)
        except BadSignature:
            return None
        if (not isinstance(data, list) or len(data) != 3
                or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                           for n in (data[0], data[2]))
                or not isinstance(data[1], str) or not data[1]):
            return None
        try:
            created_at = datetime.fromtimestamp(data[2], UTC)
        except (OverflowError, OSError, ValueError):
            return None
        return MoreLink(digest_id=data[0], watchlist=data[1], created_at=created_at)


def rating_urls(signer: LinkSigner, base_url: str, *, watchlist: str, paper_key: str,
                recipient: str = "") -> dict[str, str]:
    """The one-click URLs for a paper in a digest, by action."""
    base = base_url.rstrip("/")
    return {action: f"{base}/r/{signer.token(RatingLink(watchlist, paper_key, action, recipient))}"
            for action in ACTIONS}


def more_page_url(signer: LinkSigner, base_url: str, link: MoreLink) -> str:
    """The web app's page of the papers a digest left out."""
    return f"{base_url.rstrip('/')}/more/{signer.more_token(link)}"


def next_step(watchlist: WatchlistSettings, action: str | None, papers: int = 1) -> str:
    """What the next digests of this watchlist make of a rating just recorded for
    ``papers`` papers (``action``: like, save or dislike; None when an undo left the
    paper unrated). A watchlist holds one rating a paper, the latest click's, whoever
    clicked: the page is shown to whoever clicks, and says nothing of anyone else."""
    name = watchlist.name
    these, them = ("this paper", "it") if papers == 1 else ("these papers", "them")
    if action is None:
        return f"{these.capitalize()} is unrated for {name} again, as if never rated."
    not_again = f"{name} will not be sent {these} again"
    if action == "dislike":
        return f"{not_again}."
    if watchlist.feedback_weight <= 0:
        return (f"{not_again}; {name} does not learn from ratings (its feedback_weight "
                "is 0).")
    learns = (f"from {MIN_LIKES} likes, with a paper to set them against (one disliked, or "
              f"{MIN_BACKGROUND} unrated ones seen lately), its ranking learns from them")
    if compares_likes(watchlist, 1):
        return (f"{not_again}. From the next run, {name} looks for papers alike to those "
                f"liked for it, while they are {LIKED_SEEDS} or fewer; {learns} too.")
    return f"{not_again}. For {name}, {learns}."
