"""The outbox: writes what a channel would send into a folder instead of sending it.

Email digests become a complete ``.eml`` and an ``.html`` preview; Slack digests the JSON
bodies the webhook would receive.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "digest"


class Outbox:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def write(self, *, digest_id: int, channel: str, watchlist: str,
              payload: dict[str, Any]) -> list[Path]:
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = self.directory / f"{digest_id:04d}-{_slug(watchlist)}-{_slug(channel)}"
        written: list[Path] = []
        if payload["kind"] == "email":
            eml = stem.with_suffix(".eml")
            eml.write_text(payload["message"], encoding="utf-8", newline="")
            html = stem.with_suffix(".html")
            html.write_text(payload["html"], encoding="utf-8")
            written += [eml, html]
        else:
            body = stem.with_suffix(".json")
            body.write_text(json.dumps(payload["messages"], indent=2, ensure_ascii=False) + "\n",
                            encoding="utf-8")
            written.append(body)
        return written
