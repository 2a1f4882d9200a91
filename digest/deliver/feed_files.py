"""Feed files: each watchlist's digests kept as an Atom 1.0 and a JSON Feed 1.1 file.

Options: ``directory`` (required; ``<watchlist>.atom`` and ``<watchlist>.json`` go there),
``max_entries`` (100: entries kept per feed, newest first), ``base_url`` (the public address
of the directory, for the feeds' self links; without it the Atom self link is relative and
the JSON Feed names no ``feed_url``), ``title`` (the feeds' title: {watchlist}, {channel}).
Limits: one entry per paper, at most ``max_entries`` per feed and 50 authors per entry. No
secrets. The JSON Feed is the record each send merges into; the Atom file is rebuilt from it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import jinja2
from lxml import etree

from digest import options as opt
from digest.config import ChannelSettings, Settings
from digest.deliver.base import ChannelContext, Composed
from digest.errors import DeliveryError
from digest.models import Digest
from digest.render import PaperView, paper_views

log = logging.getLogger(__name__)

JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
ATOM_NS = "http://www.w3.org/2005/Atom"
# What the web app answers each file with; static hosts map the suffixes the same way.
MEDIA_TYPES = {".atom": "application/atom+xml; charset=utf-8",
               ".json": "application/feed+json"}
DEFAULT_MAX_ENTRIES = 100
MAX_ENTRIES_LIMIT = 10_000
AUTHORS_LISTED = 50  # a collaboration paper can list thousands; readers show a few
DEFAULT_TITLE = "{watchlist} · paper-digest"
PUBLISHER = "paper-digest"
# Entry and feed ids are name-based UUIDs under this namespace: the same watchlist and
# paper give the same id on every run and every machine, whatever the paper key holds.
_ID_NAMESPACE = uuid.UUID("b8df393b-e245-426a-b55c-f7aeb16ff7ed")
# Characters XML 1.0 cannot hold at all (and DEL), plus lone surrogates, which no UTF-8
# file can hold. Feed text may carry any of them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")

# Feed text is hostile: every value goes through autoescaping, URLs included.
_ENTRY_HTML = jinja2.Environment(
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
).from_string("""\
{% if authors %}<p>{{ authors }}</p>
{% endif %}
{% if meta %}<p><small>{{ meta }}</small></p>
{% endif %}
{% if summary %}<p><strong>{{ summary_label }}:</strong> {{ summary }}</p>
{% endif %}
{% if abstract %}<p>{{ abstract }}</p>
{% endif %}
{% if reasons %}<p><em>Why: {{ reasons }}</em></p>
{% endif %}
{% for row in rows if row %}
<p>{% for label, url in row %}{% if not loop.first %} · {% endif %}\
<a href="{{ url }}">{{ label }}</a>{% endfor %}</p>
{% endfor %}
""")


def xml_text(text: str) -> str:
    """``text`` without the characters an XML 1.0 document cannot carry."""
    return _NOT_XML.sub("", text)


def feed_name(watchlist: str) -> str:
    """The file stem for a watchlist: safe in a path and a URL, never hidden or empty."""
    return _UNSAFE_NAME.sub("-", watchlist).strip(".-") or "watchlist"


def _name_uuid(*parts: str) -> str:
    """uuid5 of the parts, as a URN; a lone surrogate in a paper key is hashed as it is."""
    name = "\x1f".join(parts).encode("utf-8", "surrogatepass")
    digest = hashlib.sha1(_ID_NAMESPACE.bytes + name, usedforsecurity=False).digest()
    return uuid.UUID(bytes=digest[:16], version=5).urn


def entry_id(watchlist: str, paper_key: str) -> str:
    """A paper's id in a watchlist's feed, the same on every run."""
    return _name_uuid("entry", watchlist, paper_key)


def feed_id(watchlist: str) -> str:
    return _name_uuid("feed", watchlist)


def rfc3339(moment: datetime) -> str:
    """'2026-11-24T07:00:00Z', with the microseconds when there are any (RFC 3339)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _moment(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


# ------------------------------------------------------------------------------ options


def _title(value: str) -> str | None:
    try:
        value.format(watchlist="w", channel="c")
    except (KeyError, IndexError, ValueError) as exc:
        return f"unknown placeholder {exc}; use {{watchlist}} or {{channel}}"
    return None if value.strip() else "must not be empty"


def _base_url(value: str) -> str | None:
    if reason := opt.url_problem(value, local=False):
        return reason
    parts = urlsplit(value)
    if parts.query or parts.fragment:
        return "must not carry a query or fragment"
    return None


def _directory(value: str) -> str | None:
    if not value.strip() or "\x00" in value:
        return "must be a folder's path"
    return opt.local_path(value)


@dataclass(frozen=True)
class FeedFilesOptions(opt.KindOptions):
    KEYS: ClassVar[tuple[str, ...]] = ("directory", "max_entries", "base_url", "title")
    COSMETIC: ClassVar[tuple[str, ...]] = ("max_entries", "base_url", "title")

    directory: Path = Path("feeds")
    max_entries: int = DEFAULT_MAX_ENTRIES
    base_url: str | None = None  # where the directory is served, without a trailing /
    title: str = DEFAULT_TITLE

    @classmethod
    def read(cls, reader: opt.OptionReader, table: Mapping[str, Any], path: str
             ) -> FeedFilesOptions:
        d = cls()
        directory = reader.value(table, "directory", path, str, check=_directory)
        base_url = reader.value(table, "base_url", path, str, None, _base_url)
        return cls(
            directory=Path(directory).expanduser() if directory else d.directory,
            max_entries=reader.value(table, "max_entries", path, int, d.max_entries,
                                     opt.in_range(1, MAX_ENTRIES_LIMIT)),
            base_url=base_url.rstrip("/") if base_url else None,
            title=reader.value(table, "title", path, str, d.title, _title),
        )


# ------------------------------------------------------------------------------ compose


def feed_head(digest: Digest, options: FeedFilesOptions) -> dict[str, Any]:
    """What the feed says of itself: its file name, id, title and public addresses."""
    name = feed_name(digest.watchlist)
    base = options.base_url
    return {
        "name": name,
        "watchlist": digest.watchlist,
        "id": feed_id(digest.watchlist),
        "title": xml_text(options.title.format(watchlist=digest.watchlist,
                                               channel=digest.channel)),
        "atom_url": f"{base}/{name}.atom" if base else None,
        "json_url": f"{base}/{name}.json" if base else None,
        "updated": rfc3339(digest.created_at),
    }


def _entry_html(view: PaperView) -> str:
    return _ENTRY_HTML.render(
        authors=view.authors, meta=" · ".join((*view.meta, *view.remarks)),
        summary=view.summary, summary_label=view.summary_label, abstract=view.abstract,
        reasons="; ".join(view.reasons), rows=(view.paper_links, view.links))


def feed_items(digest: Digest) -> list[dict[str, Any]]:
    """One JSON Feed item per paper, in the digest's order; stamped with its time."""
    if digest.heartbeat is not None:
        return []  # a feed shows papers; a quiet day simply adds none
    stamp = rfc3339(digest.created_at)
    items = []
    for match, view in zip(digest.matches, paper_views(digest), strict=True):
        paper = match.paper
        item: dict[str, Any] = {"id": entry_id(digest.watchlist, paper.key),
                                "title": xml_text(view.title) or "Untitled paper"}
        if view.url:
            item["url"] = xml_text(view.url)
        item["content_html"] = xml_text(_entry_html(view))
        if view.abstract:
            item["summary"] = xml_text(view.abstract)
        item["date_published"] = stamp
        item["date_modified"] = stamp
        authors = [name for a in paper.authors[:AUTHORS_LISTED] if (name := xml_text(a).strip())]
        if authors:
            item["authors"] = [{"name": name} for name in authors]
        tags = [tag for c in paper.categories if (tag := xml_text(c).strip())]
        if tags:
            item["tags"] = tags
        items.append(item)
    return items


# ------------------------------------------------------------------------------ documents


def _updated(head: Mapping[str, Any], items: list[dict[str, Any]]) -> str:
    """The newest entry's time, so that writing the same entries again gives the same file."""
    stamps = [(moment, item["date_modified"]) for item in items
              if (moment := _moment(item["date_modified"])) is not None]
    return max(stamps)[1] if stamps else str(head["updated"])


def _add(parent: etree._Element, tag: str, text: str | None = None,
         **attributes: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{ATOM_NS}}}{tag}", attributes)
    if text is not None:
        element.text = xml_text(text)
    return element


def atom_document(head: Mapping[str, Any], items: list[dict[str, Any]]) -> bytes:
    """An Atom 1.0 feed (RFC 4287) of ``items``, newest first as given."""
    # Atom as the default namespace; lxml's stubs do not know a None prefix.
    feed = etree.Element(f"{{{ATOM_NS}}}feed", nsmap={None: ATOM_NS})  # type: ignore[dict-item]
    _add(feed, "id", head["id"])
    _add(feed, "title", head["title"])
    _add(feed, "updated", _updated(head, items))
    # Without a public address the links are relative: readers resolve them against the
    # address they fetched the feed from.
    _add(feed, "link", rel="self", type="application/atom+xml",
         href=xml_text(head["atom_url"] or f"{head['name']}.atom"))
    _add(feed, "link", rel="alternate", type="application/feed+json",
         href=xml_text(head["json_url"] or f"{head['name']}.json"))
    # RFC 4287 wants an author for the feed unless every entry has its own.
    _add(_add(feed, "author"), "name", PUBLISHER)
    for item in items:
        entry = _add(feed, "entry")
        _add(entry, "id", item["id"])
        _add(entry, "title", item.get("title", ""))
        _add(entry, "updated", item["date_modified"])
        if item.get("date_published"):
            _add(entry, "published", item["date_published"])
        if item.get("url"):
            _add(entry, "link", rel="alternate", type="text/html", href=xml_text(item["url"]))
        for author in item.get("authors", []):
            _add(_add(entry, "author"), "name", author["name"])
        for tag in item.get("tags", []):
            _add(entry, "category", term=xml_text(tag))
        if item.get("summary"):
            _add(entry, "summary", item["summary"], type="text")
        _add(entry, "content", item.get("content_html", ""), type="html")
    return bytes(etree.tostring(feed, xml_declaration=True, encoding="utf-8",
                                pretty_print=True))


def json_document(head: Mapping[str, Any], items: list[dict[str, Any]]) -> bytes:
    """A JSON Feed 1.1 document of ``items``, newest first as given."""
    document: dict[str, Any] = {"version": JSON_FEED_VERSION, "title": head["title"]}
    if head["json_url"]:
        document["feed_url"] = head["json_url"]
    document["description"] = f"Papers matched by the watchlist {head['watchlist']}, " \
                              "newest first."
    document["authors"] = [{"name": PUBLISHER}]
    document["items"] = items
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


# ------------------------------------------------------------------------------ the record


class Damaged(ValueError):
    """An existing JSON Feed file that is not one this channel wrote."""


def _strings(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Damaged("a list of strings expected")
    return list(value)


def _item_of(raw: Any) -> dict[str, Any]:
    """One item of our own JSON Feed, checked field by field; Damaged when it is not."""
    if not isinstance(raw, dict):
        raise Damaged("an item is not an object")
    if not isinstance(raw.get("id"), str) or not raw["id"]:
        raise Damaged("an item has no id")
    if not isinstance(raw.get("date_modified"), str) or _moment(raw["date_modified"]) is None:
        raise Damaged(f"item {raw['id']} has no date_modified")
    item: dict[str, Any] = {"id": raw["id"]}
    for key in ("title", "url", "content_html", "summary", "date_published"):
        if key in raw:
            if not isinstance(raw[key], str):
                raise Damaged(f"item {raw['id']}: {key} is not a string")
            item[key] = xml_text(raw[key])
    item["date_modified"] = raw["date_modified"]
    if "authors" in raw:
        people = raw["authors"]
        if not isinstance(people, list) or not all(
                isinstance(p, dict) and isinstance(p.get("name"), str) for p in people):
            raise Damaged(f"item {raw['id']}: authors is not a list of names")
        item["authors"] = [{"name": xml_text(p["name"])} for p in people]
    if "tags" in raw:
        item["tags"] = [xml_text(tag) for tag in _strings(raw["tags"])]
    return item


def items_of(content: bytes) -> list[dict[str, Any]]:
    """The items of a JSON Feed file this channel wrote; Damaged when it is not one."""
    try:
        document = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Damaged(f"not JSON ({type(exc).__name__})") from None
    if not isinstance(document, dict) or document.get("version") != JSON_FEED_VERSION:
        raise Damaged("not a JSON Feed 1.1 document")
    if not isinstance(document.get("items"), list):
        raise Damaged("its items are not a list")
    return [_item_of(raw) for raw in document["items"]]


def merge(existing: list[dict[str, Any]], new: list[dict[str, Any]], limit: int
          ) -> list[dict[str, Any]]:
    """New items replace the ones with their id; newest first, at most ``limit``.

    Items of the same time keep their order, the new ones first: a digest's ranks stay.
    """
    new_ids = {item["id"] for item in new}
    merged = list(new) + [item for item in existing if item["id"] not in new_ids]
    floor = datetime.min.replace(tzinfo=UTC)
    merged.sort(key=lambda item: _moment(item["date_modified"]) or floor, reverse=True)
    return merged[:limit]


def write_atomically(path: Path, content: bytes) -> None:
    """Replace ``path`` with ``content`` in one step: readers see the old file or the new
    one, never a part. Created with the usual permissions (0666 less the umask), so a web
    server can read it."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable; some systems cannot open a folder, which is fine."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# ------------------------------------------------------------------------------ channel


class FeedFilesChannel:
    kind = "feed_files"
    Options: ClassVar[type[opt.KindOptions]] = FeedFilesOptions

    def __init__(self, settings: ChannelSettings) -> None:
        self.settings = settings
        self.options: FeedFilesOptions = opt.options_of(settings, FeedFilesOptions)

    @classmethod
    def create(cls, settings: ChannelSettings, context: ChannelContext) -> FeedFilesChannel:
        options = opt.options_of(settings, FeedFilesOptions)
        if options.base_url is None and context.web_base_url:
            # The web app serves the files at /feeds: the feeds can name where they live.
            options = replace(options, base_url=f"{context.web_base_url}/feeds")
            settings = replace(settings, options=options)
        return cls(settings)

    def compose(self, digest: Digest) -> Composed:
        return Composed(payload={"kind": self.kind, "feed": feed_head(digest, self.options),
                                 "items": feed_items(digest)}, digest=digest)

    @staticmethod
    def outbox_files(payload: dict[str, Any]) -> dict[str, bytes]:
        """The two feeds as this digest alone would make them: its own entries only."""
        head, items = payload["feed"], payload["items"]
        return {".atom": atom_document(head, items), ".json": json_document(head, items)}

    def send(self, payload: dict[str, Any], *, parts_sent: int = 0,
             on_part_sent: Callable[[int], None] = lambda n: None) -> None:
        """Merge the digest's entries into the watchlist's two files and write them anew.

        Sending the same payload again writes the same files: entries are keyed by id.
        """
        if parts_sent >= 1:
            return
        head, new = payload["feed"], payload["items"]
        directory = self.options.directory
        atom_path = directory / f"{head['name']}.atom"
        json_path = directory / f"{head['name']}.json"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            existing = self._existing(json_path)
            items = merge(existing, new, self.options.max_entries)
            write_atomically(atom_path, atom_document(head, items))
            write_atomically(json_path, json_document(head, items))
        except OSError as exc:
            raise DeliveryError(f"cannot write the feeds in {directory}: "
                                f"{exc.strerror or exc}", channel=self.settings.name) from exc
        log.info("channel=%s watchlist=%s feed=%s entries=%d new=%d", self.settings.name,
                 head["watchlist"], json_path, len(items), len(new))
        on_part_sent(1)

    def _existing(self, path: Path) -> list[dict[str, Any]]:
        """The entries written so far; none for a new feed or a damaged file (kept aside)."""
        try:
            content = path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            return items_of(content)
        except Damaged as exc:
            backup = path.with_name(path.name + ".broken")
            write_atomically(backup, content)
            log.warning("channel=%s feed=%s is damaged (%s); starting it afresh, the old file "
                        "is kept as %s", self.settings.name, path, exc, backup)
            return []

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------ serving


def served_feeds(settings: Settings) -> dict[str, tuple[Path, str]]:
    """File name -> (path, media type) of every feed the configured channels write.

    A name written by two channels is served from the first one configured.
    """
    served: dict[str, tuple[Path, str]] = {}
    for channel in settings.channels.values():
        if channel.kind != FeedFilesChannel.kind:
            continue
        options = opt.options_of(channel, FeedFilesOptions)
        for watchlist in settings.watchlists:
            if channel.name in watchlist.channels:
                for suffix, media_type in MEDIA_TYPES.items():
                    name = feed_name(watchlist.name) + suffix
                    served.setdefault(name, (options.directory / name, media_type))
    return served
