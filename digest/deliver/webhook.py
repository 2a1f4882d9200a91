"""A generic JSON webhook: one documented, versioned JSON document per digest, optionally
signed, for automation tools (n8n, Zapier, Make) or a service of one's own.

Options: ``url_env``, the variable that holds the URL (such URLs often carry a token: it is
the secret); ``secret_env``, optionally the variable that holds an HMAC-SHA256 key (at least
32 characters) that signs each request. Limits: one request per digest, about one per
second per hook; every field of a paper is bounded and a body is kept under
``WEBHOOK_MAX_BODY_BYTES`` (5 MB; a real digest of 500 papers is about 1 MB). Any 2xx
means delivered; 404 and 410 mean the hook is gone.

The document is composed and recorded before it is sent, so every try sends the same bytes;
only the timestamp and signature headers are made when a request is sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from digest import options as opt
from digest.config import MIN_SECRET_CHARS, ChannelSettings, HttpSettings, Secret
from digest.deliver.base import (
    Composed,
    HookChannel,
    webhook_url_problems,
)
from digest.errors import DeliveryError
from digest.models import Digest, Match
from digest.render import (
    RATING_LABELS,
    TITLE_CHARS,
    describe_reasons,
    paper_links,
    safe_url,
    trim,
)

log = logging.getLogger(__name__)

DOCUMENT_TYPE = "paper-digest.digest"
# Bumped only when a field is renamed, removed or changes its type; new fields may appear
# in any version, and receivers should ignore the ones they do not know.
DOCUMENT_VERSION = 1
MESSAGE_INTERVAL_SECONDS = 1.0
DELIVERY_HEADER = "X-Paper-Digest-Delivery"
TIMESTAMP_HEADER = "X-Paper-Digest-Timestamp"
SIGNATURE_HEADER = "X-Paper-Digest-Signature"

# What one paper may carry. arXiv caps abstracts at 1920 characters and real titles are far
# shorter than TITLE_CHARS, so these only ever cut hostile or broken feed entries.
WEBHOOK_ABSTRACT_CHARS = 5000
WEBHOOK_TEXT_CHARS = 1000  # summary, comment, journal reference, each note
WEBHOOK_MAX_AUTHORS = 100  # the rest are counted in author_count
WEBHOOK_NAME_CHARS = 200  # an author, a category
WEBHOOK_MAX_CATEGORIES = 20
WEBHOOK_MAX_REASONS = 30
WEBHOOK_REASON_CHARS = 300
WEBHOOK_MAX_URL_CHARS = 2000  # a feed's link longer than this is left out
# A real paper takes about 2 KB, so 500 (max_papers' ceiling) fit many times over; only
# papers swollen to their field limits can reach this, and then the lowest-ranked wait for
# the next digest. Zapier takes 10 MB a request, n8n 16 MB by default.
WEBHOOK_MAX_BODY_BYTES = 5_000_000


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _url(url: str | None) -> str | None:
    safe = safe_url(url or "")
    return safe if safe and len(safe) <= WEBHOOK_MAX_URL_CHARS else None


def _text(text: str | None, limit: int) -> str | None:
    return trim(text, limit) if text else None


def paper_document(rank: int, match: Match, feedback: Mapping[str, str]) -> dict[str, Any]:
    """One paper of the document; see the field table in the README."""
    paper = match.paper
    ratings = {action: url for action in RATING_LABELS
               if (url := _url(feedback.get(action)))}
    return {
        "rank": rank,
        "key": paper.key,
        "arxiv_id": paper.arxiv_id,
        "version": paper.version,
        "doi": paper.doi,
        "title": trim(paper.title, TITLE_CHARS),
        "authors": [trim(name, WEBHOOK_NAME_CHARS)
                    for name in paper.authors[:WEBHOOK_MAX_AUTHORS]],
        "author_count": len(paper.authors),
        "abstract": trim(paper.abstract, WEBHOOK_ABSTRACT_CHARS),
        "summary": _text(paper.summary, WEBHOOK_TEXT_CHARS),
        "summary_source": _text(paper.summary_source, WEBHOOK_NAME_CHARS),
        "url": _url(paper.abs_url),
        "pdf_url": f"https://arxiv.org/pdf/{paper.arxiv_id}" if paper.arxiv_id else None,
        "categories": [trim(c, WEBHOOK_NAME_CHARS)
                       for c in paper.categories[:WEBHOOK_MAX_CATEGORIES]],
        "primary_category": _text(paper.primary_category, WEBHOOK_NAME_CHARS),
        "announce_type": _text(paper.announce_type, WEBHOOK_NAME_CHARS),
        "published": _iso(paper.published),
        "comment": _text(paper.comment, WEBHOOK_TEXT_CHARS),
        "journal_ref": _text(paper.journal_ref, WEBHOOK_TEXT_CHARS),
        "upvotes": paper.upvotes,
        "code_stars": paper.code_stars,
        "source": _text(paper.source, WEBHOOK_NAME_CHARS),
        "score": round(match.score, 4),
        "reasons": [trim(reason, WEBHOOK_REASON_CHARS)
                    for reason in describe_reasons(match)[:WEBHOOK_MAX_REASONS]],
        "links": ratings,
        "reading_links": [{"label": label, "url": url} for label, url in paper_links(paper)
                          if len(url) <= WEBHOOK_MAX_URL_CHARS],
    }


def webhook_document(digest: Digest) -> dict[str, Any]:
    """The whole digest as one JSON document (a heartbeat: no papers, ``heartbeat`` set)."""
    return {
        "type": DOCUMENT_TYPE,
        "version": DOCUMENT_VERSION,
        "watchlist": digest.watchlist,
        "channel": digest.channel,
        "created_at": _iso(digest.created_at),
        "timezone": digest.timezone,
        "heartbeat": digest.heartbeat,
        "notes": [trim(note, WEBHOOK_TEXT_CHARS) for note in digest.notes],
        "matched": digest.matched if digest.matched is not None else len(digest.matches),
        "more_url": _url(digest.more_url),
        "papers": [paper_document(rank, match, digest.feedback.get(match.paper.key, {}))
                   for rank, match in enumerate(digest.matches, start=1)],
    }


def body_bytes(document: dict[str, Any]) -> bytes:
    """The request body: compact UTF-8 JSON. A text a feed broke (a lone surrogate from a
    JSON escape) cannot be UTF-8 and becomes "?"; NaN is refused, being no JSON."""
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8", errors="replace")


def delivery_id(body: bytes) -> str:
    """The same for every try of one digest: receivers drop a delivery they already have."""
    return hashlib.sha256(body).hexdigest()[:32]


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=`` and the hex HMAC-SHA256 of ``<timestamp>.<body>`` under the secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass(frozen=True)
class WebhookOptions(opt.KindOptions):
    KEYS: ClassVar[tuple[str, ...]] = ("url_env", "secret_env")

    url_env: str = ""
    url: opt.Secret | None = None  # resolved from the environment when set
    secret_env: str | None = None
    secret: opt.Secret | None = None

    @classmethod
    def read(cls, reader: opt.OptionReader, table: Mapping[str, Any], path: str
             ) -> WebhookOptions:
        url_env, url = reader.secret(table, "url_env", path, required=True)
        secret_env, secret = reader.secret(table, "secret_env", path)
        return cls(url_env=url_env or "", url=url, secret_env=secret_env, secret=secret)

    def secrets(self) -> dict[str, opt.Secret | None]:
        needed = {self.url_env: self.url}
        if self.secret_env:
            needed[self.secret_env] = self.secret
        return needed

    def secret_problems(self) -> list[str]:
        url = self.url.reveal() if self.url else ""
        problems = [problem.replace("$", f"${self.url_env}", 1)
                    for problem in webhook_url_problems(url, https_only=False)]
        key = self.secret.reveal() if self.secret else ""
        if self.secret_env and len(key) < MIN_SECRET_CHARS:
            problems.append(f"${self.secret_env} is {len(key)} characters; use at least "
                            f"{MIN_SECRET_CHARS} random ones (python -c 'import secrets; "
                            "print(secrets.token_urlsafe(32))')")
        return problems


class WebhookChannel(HookChannel):
    kind = "webhook"
    Options: ClassVar[type[opt.KindOptions]] = WebhookOptions
    SERVICE = "Webhook"
    INTERVAL = MESSAGE_INTERVAL_SECONDS
    options: WebhookOptions

    def __init__(
        self,
        settings: ChannelSettings,
        *,
        http: HttpSettings,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        interval: float = MESSAGE_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        super().__init__(settings, http=http, transport=transport, sleep=sleep,
                         interval=interval)

    def hook_url(self) -> tuple[Secret | None, str | None]:
        return self.options.url, self.options.url_env

    def compose(self, digest: Digest) -> Composed:
        if digest.matched is None:  # what the body leaves out is counted against this
            digest = replace(digest, matched=len(digest.matches))
        document = webhook_document(digest)
        size = len(body_bytes(document))
        if size > WEBHOOK_MAX_BODY_BYTES and len(digest.matches) > 1:
            # Each paper costs its own bytes and a comma; the top ones that fit are kept.
            used = len(body_bytes({**document, "papers": []}))
            keep = 0
            for paper in document["papers"]:
                used += len(body_bytes(paper)) + 1
                if used > WEBHOOK_MAX_BODY_BYTES:
                    break
                keep += 1
            keep = max(1, keep)
            log.info("webhook body of %d papers has %d bytes, over %d; keeping the top %d",
                     len(digest.matches), size, WEBHOOK_MAX_BODY_BYTES, keep)
            digest = replace(digest, matches=digest.matches[:keep])
            document = webhook_document(digest)
        return Composed(payload={"kind": self.kind, "document": document}, digest=digest)

    @staticmethod
    def outbox_files(payload: dict[str, Any]) -> dict[str, bytes]:
        """The request body, byte for byte (the signature headers are made when sending)."""
        return {".json": body_bytes(payload["document"])}

    def headers(self, body: bytes) -> dict[str, str]:
        """The headers of one request; the signature's timestamp is the moment of sending."""
        headers = {"Content-Type": "application/json; charset=utf-8",
                   DELIVERY_HEADER: delivery_id(body)}
        if self.options.secret is not None and self.options.secret.reveal():
            stamp = str(int(self._clock()))
            headers[TIMESTAMP_HEADER] = stamp
            headers[SIGNATURE_HEADER] = signature(self.options.secret.reveal(), stamp, body)
        return headers

    def send(self, payload: dict[str, Any], *, parts_sent: int = 0,
             on_part_sent: Callable[[int], None] = lambda n: None) -> None:
        if parts_sent >= 1:
            return
        if self.options.secret_env and self.options.secret is None:
            # Sending unsigned what the receiver expects signed would only be refused there.
            raise DeliveryError(f"environment variable {self.options.secret_env} is not set",
                                channel=self.settings.name)
        body = body_bytes(payload["document"])
        self._poster.post(body, number=1, total=1, headers=self.headers(body))
        on_part_sent(1)

