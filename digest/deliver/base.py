"""What every channel shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from digest.models import Digest


@dataclass(frozen=True)
class Composed:
    """A payload ready to record and send, and the digest it carries.

    The digest may hold fewer papers than were matched when the channel's size limit
    left no room; the rest stay undelivered and wait for the next digest.
    """

    payload: dict[str, Any]
    digest: Digest
