"""What every source shares: its result type, safe XML parsing, and text clean-up."""

from __future__ import annotations

import codecs
import html
import io
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import IO, Any

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


@dataclass
class Listing:
    """What one fetch produced, read paper by paper: for a listing too large to hold whole.

    ``papers`` can be read once; ``read`` and ``skipped`` count as it is read. The state is
    to be remembered only once every paper is stored. Close the listing (or use it in a
    ``with``) when done: that closes the answer it reads from.
    """

    papers: Iterator[Paper] = field(default_factory=lambda: iter(()))
    state: SourceState = field(default_factory=SourceState)
    not_modified: bool = False
    read: int = 0  # papers kept so far
    skipped: int = 0  # entries the source's settings leave out (e.g. replacements)
    body: IO[bytes] | None = None

    def close(self) -> None:
        if self.body is not None:
            self.body.close()

    def __enter__(self) -> Listing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Bytes read at a time from a body; the first block is also what the entity check reads.
_BLOCK = 65536


def _declared_encoding(content: bytes) -> str | None:
    match = _XML_DECLARATION.match(content)
    return match.group(1).decode("ascii").lower() if match else None


def _blocks(body: IO[bytes]) -> Iterator[bytes]:
    while block := body.read(_BLOCK):
        yield block


class _Decoder:
    """Decodes a document block by block: strictly until the first bad byte, from there on
    with U+FFFD for bad bytes, after one warning naming where the first one was."""

    def __init__(self, codec: str, *, what: str) -> None:
        self._decoder = codecs.getincrementaldecoder(codec)(errors="strict")
        self._codec = codec
        self._what = what
        self._offset = 0  # bytes of the document before the next block
        self.mended = False

    def pending(self) -> bytes:
        """Bytes held back from the last block: the start of an incomplete character."""
        return bytes(self._decoder.getstate()[0])

    def decode(self, block: bytes, final: bool = False) -> str:
        state = self._decoder.getstate()
        try:
            text = self._decoder.decode(block, final)
        except UnicodeDecodeError as exc:
            where = self._offset - len(state[0]) + exc.start
            log.warning("%s: invalid %s at byte %d; replacing bad bytes", self._what,
                        self._codec.upper(), where)
            self._decoder.setstate(state)
            self._decoder.errors = "replace"
            self.mended = True
            text = self._decoder.decode(block, final)
        self._offset += len(block)
        return text


def _as_utf8(blocks: Iterator[bytes], codec: str, *, what: str) -> Iterator[bytes]:
    """A UTF-16 or UTF-32 document re-encoded as UTF-8, its declaration saying so."""
    decoder = _Decoder(codec, what=what)
    first = True
    for block in _and_end(blocks):
        text = decoder.decode(block, final=not block)
        if first and text:
            text = _DECLARED_ENCODING.sub(r"\g<1>utf-8", text, count=1)
            first = False
        if text:
            yield text.encode("utf-8")


def _valid_utf8(blocks: Iterable[bytes], *, what: str) -> Iterator[bytes]:
    """The blocks as they are while they are valid UTF-8; from the first bad byte on, the
    text with U+FFFD for each bad byte (and one warning)."""
    decoder = _Decoder("utf-8", what=what)
    for block in _and_end(blocks):
        final = not block
        if decoder.mended:
            yield decoder.decode(block, final).encode("utf-8")
            continue
        held = decoder.pending()
        text = decoder.decode(block, final)
        if decoder.mended:  # this block held the first bad byte: it is given as mended
            yield text.encode("utf-8")
            continue
        whole = held + block
        yield whole[:len(whole) - len(decoder.pending())]


def _and_end(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """The blocks, then one empty block that says the document ended."""
    yield from blocks
    yield b""


def _is_utf8_beyond_ascii(body: IO[bytes], start: int) -> bool:
    """Whether the whole body from ``start`` is UTF-8 with a byte over 0x7F: a document
    that says Latin-1 but is UTF-8. Reads it through once, then returns to where it was."""
    position = body.tell()
    body.seek(start)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    beyond = False
    try:
        for block in _blocks(body):
            beyond = beyond or not block.isascii()
            decoder.decode(block)
        decoder.decode(b"", True)
    except UnicodeDecodeError:
        return False
    finally:
        body.seek(position)
    return beyond


class _Reader:
    """A file-like reader over blocks of bytes made as the parser asks for them."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._buffer = bytearray()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            block = next(self._blocks, None)
            if block is None:
                break
            self._buffer += block
        if size < 0 or size >= len(self._buffer):
            out, self._buffer = bytes(self._buffer), bytearray()
        else:
            out = bytes(self._buffer[:size])
            del self._buffer[:size]
        return out


def _prepared(body: IO[bytes], *, what: str) -> tuple[Iterator[bytes], bytes]:
    """Check untrusted XML read from a file before any parser sees it, and mend what is
    safe to mend, block by block; return the blocks to parse and the first of them.

    Entity declarations are refused outright (entity bombs, external entities). Bytes
    that are not valid UTF-8 in a UTF-8 document become U+FFFD rather than losing the
    whole feed, and UTF-8 mislabelled as Latin-1 is read as the UTF-8 it is (the one
    mending that reads the body through first, to know). UTF-16 and UTF-32 documents
    become UTF-8 first, so the entity check reads them too.
    """
    start = body.tell()
    raw = _blocks(body)
    head = b""
    for block in raw:  # whitespace alone is an empty answer, however much of it
        head += block
        if head.strip():
            break
    if not head.strip():
        raise ParseError(f"{what}: empty response")
    codec = next((name for mark, name in _WIDE_STARTS if head.startswith(mark)), None)
    rest: Iterator[bytes] = _and_rest(head, raw)
    if codec is not None:
        rest = _as_utf8(rest, codec, what=what)
    first = b""
    for block in rest:
        first += block
        if len(first) >= _BLOCK:
            break
    if _DOCTYPE_ENTITY.search(first[:_BLOCK]):
        raise ParseError(f"{what}: XML declares entities; refused (possible entity bomb)")
    declared = _declared_encoding(first)
    blocks = _and_rest(first, rest)
    if declared in (None, "utf-8", "utf8"):
        blocks = _valid_utf8(blocks, what=what)
    elif declared in _LATIN1_NAMES and codec is None and _is_utf8_beyond_ascii(body, start):
        log.warning("%s: declared %s but is UTF-8; reading it as UTF-8", what, declared)
        body.seek(start)
        again = _blocks(body)  # from the start, with the declaration mended
        first = _XML_DECLARATION.sub(b'<?xml version="1.0" encoding="utf-8"',
                                     next(again, b""), count=1)
        blocks = _and_rest(first, again)
    return blocks, first


def _and_rest(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def prepare_xml(content: bytes, *, what: str) -> bytes:
    """Check untrusted XML before any parser sees it, and mend what is safe to mend.

    The same checks and mending as a document read from a file (see ``_prepared``).
    """
    blocks, _ = _prepared(io.BytesIO(content), what=what)
    return b"".join(blocks)


def parse_xml(content: bytes, *, what: str) -> etree._Element:
    """Parse untrusted XML: no DTDs, no entity expansion, no network, no huge trees."""
    content = prepare_xml(content, what=what)
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, remove_comments=True)
    try:
        root = etree.fromstring(content, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise _syntax_error(exc, content, what=what) from exc
    _check_root(root, what=what)
    return root


def _syntax_error(exc: etree.XMLSyntaxError, head: bytes, *, what: str) -> ParseError:
    start = head.lstrip()[:200].lower()
    if start.startswith(b"<!doctype html") or start.startswith(b"<html"):
        return ParseError(f"{what}: got an HTML page, not a feed")
    return ParseError(f"{what}: malformed XML ({exc})")


def _check_root(root: etree._Element | None, *, what: str) -> None:
    if root is None:
        raise ParseError(f"{what}: empty document")
    if etree.QName(root).localname.lower() == "html":
        raise ParseError(f"{what}: got an HTML page, not a feed")


class XmlItems:
    """The ``tag`` elements of untrusted XML read from a file, for documents too large to
    hold whole: each is yielded once complete, then emptied, and the emptied ones before
    it dropped. Elements of other names stay in the tree.

    Checked, mended and parsed with the same safety as ``parse_xml``. Once every element
    was read, ``root`` is the document (without the items); a document that is not
    well-formed raises ParseError where the parser finds it out.
    """

    def __init__(self, body: IO[bytes], *, what: str, tag: str) -> None:
        self.what = what
        self.tag = tag
        self.root: etree._Element | None = None
        blocks, self._head = _prepared(body, what=what)
        self._reader = _Reader(blocks)

    def __iter__(self) -> Iterator[etree._Element]:
        # The same safety as parse_xml's parser: no entities, DTD or network, no huge trees.
        events = etree.iterparse(self._reader, events=("end",), tag=self.tag,
                                 resolve_entities=False, no_network=True, load_dtd=False,
                                 huge_tree=False, remove_comments=True)
        try:
            for _, element in events:
                yield element
                element.clear(keep_tail=True)
                parent = element.getparent()
                while parent is not None and (earlier := element.getprevious()) is not None \
                        and earlier.tag == self.tag:
                    parent.remove(earlier)
        except etree.XMLSyntaxError as exc:
            raise _syntax_error(exc, self._head, what=self.what) from exc
        _check_root(events.root, what=self.what)
        self.root = events.root

    def read_through(self) -> etree._Element:
        """Read the rest of the document, dropping its items; return its root."""
        for _ in self:
            pass
        if self.root is None:  # _check_root raised already; this tells the type checker
            raise ParseError(f"{self.what}: empty document")
        return self.root


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
        return _whole_characters(json.loads(content.decode("utf-8", errors="replace")))
    except RecursionError as exc:
        raise ParseError(f"{what}: JSON nested too deeply to read", source=source) from exc
    except ValueError as exc:  # bad syntax, or an integer longer than Python converts
        raise ParseError(f"{what}: not JSON ({exc})", source=source) from exc


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _whole_characters(value: Any) -> Any:
    """A JSON value with each lone surrogate escape ("\\ud800", half of a character that
    UTF-8 cannot write) replaced by U+FFFD, as undecodable bytes are: one such title would
    otherwise fail the store's write of the whole listing."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value) if _LONE_SURROGATE.search(value) else value
    if isinstance(value, list):
        return [_whole_characters(item) for item in value]
    if isinstance(value, dict):
        return {_whole_characters(key): _whole_characters(item) for key, item in value.items()}
    return value


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
