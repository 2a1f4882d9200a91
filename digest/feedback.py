"""Signed rating links: what a reader's click may record, and nothing else.

A link names the watchlist, the paper, the action and optionally the recipient, signed
with HMAC (itsdangerous) under a key read from the environment. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer

ACTIONS = ("like", "dislike", "save")
# What each action records: save is kept apart from like but counts as one.
ACTION_VALUES = {"like": 1, "save": 1, "dislike": -1}
_SALT = "paper-digest rating v1"
_UNDO_SALT = "paper-digest undo v1"
MAX_TOKEN_CHARS = 1024  # longer tokens are refused before any parsing


@dataclass(frozen=True, slots=True)
class RatingLink:
    """What a verified link asks to record."""

    watchlist: str
    paper_key: str
    action: str
    recipient: str = ""


class LinkSigner:
    """Makes and checks rating and undo tokens with one secret key."""

    def __init__(self, secret: str) -> None:
        if not secret:
            raise ValueError("a signing key is required")
        self._rating = URLSafeSerializer(secret, salt=_SALT)
        self._undo = URLSafeSerializer(secret, salt=_UNDO_SALT)

    def token(self, link: RatingLink) -> str:
        return str(self._rating.dumps([link.watchlist, link.paper_key, link.action,
                                       link.recipient]))

    def verify(self, token: str) -> RatingLink | None:
        """The link a token names, or None when it is forged, altered or malformed."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
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


def rating_urls(signer: LinkSigner, base_url: str, *, watchlist: str, paper_key: str,
                recipient: str = "") -> dict[str, str]:
    """The one-click URLs for a paper in a digest, by action."""
    base = base_url.rstrip("/")
    return {action: f"{base}/r/{signer.token(RatingLink(watchlist, paper_key, action, recipient))}"
            for action in ACTIONS}
