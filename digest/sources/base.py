"""What every source shares: its result type, safe XML parsing, and text clean-up."""

from __future__ import annotations

import codecs
import html
import json
import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from lxml import etree

from digest.errors import ParseError
from digest.models import Paper

log = logging.getLogger(__name__)

_DOCTYPE_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)
_XML_DECLARATION = re.compile(
    rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._\-]+)["']""")
_LATIN1_NAMES = {"iso-8859-1", "latin-1", "latin1", "iso8859-1", "windows-1252", "cp1252"}
# How an XML document in UTF-16 or UTF-32 begins (XML 1.0, appendix F). UTF-32 first: its
# little-endian mark starts with UTF-16's.
_WIDE_STARTS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
    (b"<\x00?\x00", "utf-16-le"), (b"\x00<\x00?", "utf-16-be"),
)
_DECLARED_ENCODING = re.compile(r"""^(\s*<\?xml[^>]*?encoding\s*=\s*["'])[^"']*""")
_TAG = re.compile(r"<[^>]+>")
# The few TeX accent commands that arXiv metadata uses in names, e.g. R\'emy.
_TEX_ACCENTS = {"'": "\u0301", "`": "\u0300", '"': "\u0308", "^": "\u0302", "~": "\u0303",
                "c": "\u0327", "v": "\u030c", "=": "\u0304", "u": "\u0306", "H": "\u030b"}
_TEX_ACCENT = re.compile(r"""\\([`'"^~=]|[cvuH](?=[\s{]))\s*\{?([A-Za-z])\}?""")


@dataclass(frozen=True)
class SourceState:
    """What a source remembers between runs, for conditional requests."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass
class Batch:
    """The papers one fetch produced, and the state to remember once they are stored."""

    papers: list[Paper] = field(default_factory=list)
    state: SourceState = field(default_factory=SourceState)
    not_modified: bool = False
    skipped: int = 0  # entries the source's settings leave out (e.g. replacements)


def _declared_encoding(content: bytes) -> str | None:
    match = _XML_DECLARATION.match(content)
    return match.group(1).decode("ascii").lower() if match else None


def _to_utf8(content: bytes, *, what: str) -> bytes:
    """A UTF-16 or UTF-32 document re-encoded as UTF-8, its declaration saying so."""
    codec = next((name for start, name in _WIDE_STARTS if content.startswith(start)), None)
    if codec is None:
        return content
    try:
        text = content.decode(codec)
    except UnicodeDecodeError as exc:
        log.warning("%s: invalid %s at byte %d; replacing bad bytes", what, codec.upper(),
                    exc.start)
        text = content.decode(codec, errors="replace")
    return _DECLARED_ENCODING.sub(r"\g<1>utf-8", text, count=1).encode("utf-8")


def prepare_xml(content: bytes, *, what: str) -> bytes:
    """Check untrusted XML before any parser sees it, and mend what is safe to mend.

    Entity declarations are refused outright (entity bombs, external entities). Bytes
    that are not valid UTF-8 in a UTF-8 document become U+FFFD rather than losing the
    whole feed, and UTF-8 mislabelled as Latin-1 is read as the UTF-8 it is. UTF-16 and
    UTF-32 documents become UTF-8 first, so the entity check reads them too.
    """
    if not content.strip():
        raise ParseError(f"{what}: empty response")
    content = _to_utf8(content, what=what)
    if _DOCTYPE_ENTITY.search(content[:65536]):
        raise ParseError(f"{what}: XML declares entities; refused (possible entity bomb)")
    declared = _declared_encoding(content)
    if declared in (None, "utf-8", "utf8"):
        try:
            content.decode("utf-8")
        except UnicodeDecodeError as exc:
            log.warning("%s: invalid UTF-8 at byte %d; replacing bad bytes", what, exc.start)
            content = content.decode("utf-8", errors="replace").encode("utf-8")
    elif declared in _LATIN1_NAMES and max(content, default=0) >= 0x80:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError:
            pass  # really Latin-1: the declaration is right
        else:
            log.warning("%s: declared %s but is UTF-8; reading it as UTF-8", what, declared)
            content = _XML_DECLARATION.sub(b'<?xml version="1.0" encoding="utf-8"',
                                           text.encode("utf-8"), count=1)
    return content


def parse_xml(content: bytes, *, what: str) -> etree._Element:
    """Parse untrusted XML: no DTDs, no entity expansion, no network, no huge trees."""
    content = prepare_xml(content, what=what)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, remove_comments=True)
    try:
        root = etree.fromstring(content, parser=parser)
    except etree.XMLSyntaxError as exc:
        head = content.lstrip()[:200].lower()
        if head.startswith(b"<!doctype html") or head.startswith(b"<html"):
            raise ParseError(f"{what}: got an HTML page, not a feed") from exc
        raise ParseError(f"{what}: malformed XML ({exc})") from exc
    if root is None:
        raise ParseError(f"{what}: empty document")
    if etree.QName(root).localname.lower() == "html":
        raise ParseError(f"{what}: got an HTML page, not a feed")
    return root


def parse_timestamp(text: object) -> datetime | None:
    """An ISO 8601 (2026-11-19T01:12:00.000Z) or RFC 2822 date, or None if it is neither."""
    if not text:
        return None
    value = str(text).strip()
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def clean_text(text: str | None) -> str:
    """Collapse whitespace; keep the characters (escaping happens when rendering)."""
    return " ".join((text or "").split())


def strip_html(text: str | None) -> str:
    """Plain text from a fragment of HTML, as feeds put in summaries."""
    return clean_text(html.unescape(_TAG.sub(" ", text or "")))


def load_json(content: bytes, *, what: str, source: str | None = None) -> Any:
    """Parse an untrusted JSON body; whatever the json module refuses is a ParseError."""
    try:
        return json.loads(content.decode("utf-8", errors="replace"))
    except RecursionError as exc:
        raise ParseError(f"{what}: JSON nested too deeply to read", source=source) from exc
    except ValueError as exc:  # bad syntax, or an integer longer than Python converts
        raise ParseError(f"{what}: not JSON ({exc})", source=source) from exc


def json_kind(value: object) -> str:
    """How a JSON value is named in an error message."""
    if isinstance(value, bool):
        return "true/false"
    kinds = ((dict, "an object"), (list, "a list"), (str, "a string"), ((int, float), "a number"))
    return next((name for cls, name in kinds if isinstance(value, cls)), "null")


def json_str(value: object) -> str:
    """A JSON field that should hold a string; any other type counts as absent."""
    return value if isinstance(value, str) else ""


def json_names(people: object) -> tuple[str, ...]:
    """The names in a JSON list of person objects; entries of the wrong type are left out."""
    if not isinstance(people, list):
        return ()
    names = (clean_text(json_str(p.get("name"))) for p in people if isinstance(p, dict))
    return tuple(name for name in names if name)


def detex(text: str) -> str:
    """Turn TeX accent commands into the accented letters (R\\'emy -> Rémy)."""
    import unicodedata

    def repl(match: re.Match[str]) -> str:
        return unicodedata.normalize("NFC", match.group(2) + _TEX_ACCENTS[match.group(1)])

    return _TEX_ACCENT.sub(repl, text)


def split_authors(creators: str) -> tuple[str, ...]:
    """Split an arXiv author line: commas and 'and' separate names, (affiliations) go."""
    names: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in creators:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif depth == 0:
            if ch == ",":
                names.append("".join(current))
                current = []
            else:
                current.append(ch)
    names.append("".join(current))
    out: list[str] = []
    for name in names:
        for part in re.split(r"\s+and\s+", name.strip()):
            part = clean_text(detex(part))
            if part:
                out.append(part)
    return tuple(out)


def _is_initials(text: str) -> bool:
    """Whether a part is initials only ('N.', 'A. J.', 'P.-L.'); 'RJ' could be a name."""
    letters = [part for part in re.split(r"[\s.\-]+", text) if part]
    return bool(letters) and all(len(p) == 1 and p.isupper() for p in letters)


def given_first(name: str) -> str:
    """'Wang, Sinong' as 'Sinong Wang'; a name without a comma (a consortium) as it is."""
    last, comma, given = name.partition(",")
    if not comma or "," in given or not given.strip():  # not "Last, Given": keep it whole
        return clean_text(name.strip(" ,"))
    return clean_text(f"{given} {last}")


def semicolon_authors(line: str) -> tuple[str, ...]:
    """The authors of one "Last, F.; Other, A. B." string (bioRxiv's), each as "F. Last"."""
    names = (given_first(part) for part in line.split(";"))
    return tuple(name for name in names if name)


def listed_authors(line: str) -> tuple[str, ...]:
    """A whole author list that a feed put into one name, split; () when it is not one.

    Two shapes are known: names separated by ";" ("Last, F.; Other, A. B.", the API's),
    and "Last, F., Other, A. B." (bioRxiv's RSS), where every second part is initials.
    Anything else ("Ada Lovelace, Alan Turing", "Wang, Sinong") is left as it was.
    """
    if ";" in line:
        return semicolon_authors(line)
    parts = [clean_text(part) for part in line.split(",")]
    if len(parts) < 2 or len(parts) % 2 or not all(_is_initials(p) for p in parts[1::2]):
        return ()
    return tuple(f"{given} {last}" for last, given in zip(parts[::2], parts[1::2], strict=True)
                 if last)
