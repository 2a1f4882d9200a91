"""What every channel shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from digest.config import HttpSettings
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
