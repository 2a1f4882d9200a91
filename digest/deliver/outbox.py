"""The outbox: writes what a channel would send into a folder instead of sending it.

Each channel kind says what its payload looks like on disk (``outbox_files``): an email
is a complete ``.eml`` with an ``.html`` preview, a webhook channel the JSON bodies it
would post, byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "digest"


class Outbox:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, *, digest_id: int, channel: str, watchlist: str,
              files: Mapping[str, bytes]) -> list[Path]:
        """Write each file of one digest, named by its suffix (".eml", ".json", ...)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = f"{digest_id:04d}-{_slug(watchlist)}-{_slug(channel)}"
        written: list[Path] = []
        for suffix, content in files.items():
            path = self.directory / (stem + suffix)
            path.write_bytes(content)
            written.append(path)
        return written
