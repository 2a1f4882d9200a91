"""What every channel shares."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from digest.config import ChannelSettings, HttpSettings, Secret
from digest.models import Digest
from digest.render import Renderer


@dataclass(frozen=True)
class ChannelContext:
    """What a run hands every channel it builds; each kind takes what it needs."""

    http: HttpSettings
    renderer: Renderer
    transport: httpx.BaseTransport | None = None  # HTTP seam (webhooks)
    smtp_factory: Callable[..., Any] | None = None  # SMTP seam
    sleep: Callable[[float], None] | None = None  # clock seam for pacing and Retry-After


@dataclass(frozen=True)
class Composed:
    """A payload ready to record and send, and the digest it carries.

    The digest may hold fewer papers than were matched when the channel's size limit
    left no room; the rest stay undelivered and wait for the next digest.
    """

    payload: dict[str, Any]
    digest: Digest


def settings_fingerprint(settings: ChannelSettings) -> str:
    """A short digest of where and how a channel delivers, secrets included (hashed).

    A digest that failed for good under one fingerprint is tried again once the user has
    changed the channel (a new address, host or webhook), without a manual requeue.
    """
    parts = []
    for item in dataclasses.fields(settings):
        if item.name in ("name", "previous_names", "timeout_seconds", "subject"):
            continue
        value = getattr(settings, item.name)
        if isinstance(value, Secret):
            value = hashlib.sha256(value.reveal().encode()).hexdigest()
        parts.append(f"{item.name}={value!r}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
