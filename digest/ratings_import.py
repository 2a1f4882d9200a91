"""Ratings given outside a digest: papers named on the command line or in exported libraries.

Reading a file (BibTeX, Zotero's CSL JSON, a list of arXiv ids) does no I/O; resolving looks
papers up in the store, and asks arXiv for the arXiv ones the store does not hold yet.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import bibtexparser
from bibtexparser.model import DuplicateBlockKeyBlock, DuplicateFieldKeyBlock, Entry

from digest.errors import ParseError, SourceError
from digest.http import Fetcher
from digest.models import Paper, normalise_doi, parse_arxiv_id
from digest.sources import arxiv_api
from digest.store import FOUND_LISTED, RatingOutcome, Store, found_several

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

# New-style and old-style ids with an optional version, as they appear inside longer text.
_ID = r"(\d{4}\.\d{4,5}(?:v\d+)?|[a-z][a-z\-]*(?:\.[A-Z]{2})?/\d{7}(?:v\d+)?)"
_ARXIV_URL = re.compile(r"arxiv\.org/(?:abs|pdf|html)/" + _ID, re.IGNORECASE)
_ARXIV_LABEL = re.compile(r"\barxiv\s*:\s*" + _ID, re.IGNORECASE)  # "arXiv:2106.09685 [cs]"
_BIBTEX_ENTRY = re.compile(r"^\s*@\s*[A-Za-z]+\s*[{(]", re.MULTILINE)
_ARXIV_DOI_PREFIX = "10.48550/arxiv."


@dataclass(frozen=True, slots=True)
class Reference:
    """Something that names one paper: an entry of an imported file, or a command argument.

    ``where`` says where it came from (``refs.bib, line 12``, ``zotero.json, item 3``, or
    the argument itself);
    ``words`` are title words to look for among stored papers (command arguments only).
    """

    where: str
    title: str = ""
    arxiv_id: str | None = None
    doi: str | None = None  # a DOI other than an arXiv one, normalised
    words: str = ""


@dataclass
class Resolution:
    """The papers the references name, and the references that name none, with the reason."""

    found: list[tuple[Reference, Paper]] = field(default_factory=list)
    unresolved: list[tuple[Reference, str]] = field(default_factory=list)
    candidates: dict[str, list[Paper]] = field(default_factory=dict)  # by ambiguous words


@dataclass(frozen=True)
class ImportedFile:
    path: Path
    kind: str  # bibtex | csl-json | id-list
    references: tuple[Reference, ...]


# ----------------------------------------------------------------------------- naming


def arxiv_id_in(*texts: str | None) -> str | None:
    """The versionless arXiv id the first of these texts to name one names."""
    for text in texts:
        if not text:
            continue
        text = text.strip()
        doi = normalise_doi(text)
        if doi is not None:
            if doi.startswith(_ARXIV_DOI_PREFIX):
                parsed = parse_arxiv_id(doi)
                if parsed:
                    return parsed[0]
            continue  # another DOI's digits are never an arXiv id
        found = _ARXIV_URL.search(text) or _ARXIV_LABEL.search(text)
        parsed = parse_arxiv_id(found.group(1) if found else text)
        if parsed and (found or " " not in text):
            return parsed[0]
    return None


def reference_from_argument(text: str) -> Reference:
    """A command argument: an arXiv id (any version) or URL, a DOI, or words of a title."""
    text = text.strip()
    arxiv_id = arxiv_id_in(text)
    if arxiv_id:
        return Reference(where=text, arxiv_id=arxiv_id)
    doi = normalise_doi(text)
    if doi:
        return Reference(where=text, doi=doi)
    return Reference(where=text, words=text)


def _reference(where: str, title: str, *, arxiv_texts: Sequence[str | None],
               doi: str | None) -> Reference:
    title = " ".join(re.sub(r"[{}]", "", title).split())
    arxiv_id = arxiv_id_in(doi, *arxiv_texts)
    normalised = normalise_doi(doi) if doi and not arxiv_id else None
    return Reference(where=where, title=title, arxiv_id=arxiv_id, doi=normalised)


# ----------------------------------------------------------------------------- reading files


def read_file(path: Path) -> ImportedFile:
    """Read one exported library; a file that cannot be read or parsed raises ParseError."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise ParseError(f"{path}: cannot read: {exc.strerror or exc}", source=str(path)) from exc
    kind, references = parse_references(content, name=str(path))
    return ImportedFile(path=path, kind=kind, references=tuple(references))


def parse_references(content: bytes, *, name: str) -> tuple[str, list[Reference]]:
    """The format of a file, told by its content, and the references it holds."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = content[:exc.start].count(b"\n") + 1
        raise ParseError(f"{name}, line {line}: not UTF-8 text (BibTeX, CSL JSON or a list "
                         "of arXiv ids expected)", source=name) from exc
    if text.lstrip().startswith(("[", "{")):
        return "csl-json", parse_csl_json(text, name=name)
    if _BIBTEX_ENTRY.search(text):
        return "bibtex", parse_bibtex(text, name=name)
    return "id-list", parse_id_list(text, name=name)


@contextmanager
def _quiet_bibtexparser() -> Iterator[None]:
    """bibtexparser logs each syntax error itself; here it becomes one ParseError instead."""
    logger = logging.getLogger("bibtexparser")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def parse_bibtex(text: str, *, name: str) -> list[Reference]:
    """References of a BibTeX file: eprint + archivePrefix, an arXiv URL or DOI, or a DOI."""
    try:
        with _quiet_bibtexparser():
            library = bibtexparser.parse_string(text)
    except Exception as exc:  # the parser raises its own internal errors on odd input
        raise ParseError(f"{name}: cannot parse as BibTeX: {exc}", source=name) from exc
    entries: list[Entry] = list(library.entries)
    for failed in library.failed_blocks:
        # A repeated key or field is a slip the entry survives; anything else is broken.
        if isinstance(failed, DuplicateBlockKeyBlock | DuplicateFieldKeyBlock):
            kept = failed.ignore_error_block
            if isinstance(kept, Entry):
                entries.append(kept)
            continue
        line = (failed.start_line or 0) + 1
        head = (failed.raw or "").strip().splitlines()[0][:80] if failed.raw else ""
        reason = getattr(failed.error, "abort_reason", "") or type(failed.error).__name__
        raise ParseError(f"{name}, line {line}: malformed BibTeX entry {head!r}: "
                         f"{' '.join(reason.split())}", source=name)
    entries.sort(key=lambda e: e.start_line or 0)
    return [_bibtex_reference(entry, name) for entry in entries]


def _bibtex_reference(entry: Entry, name: str) -> Reference:
    fields = {f.key.lower(): str(f.value) for f in entry.fields}
    # An eprint is an arXiv id unless archivePrefix (biblatex: eprinttype) names another.
    prefix = (fields.get("archiveprefix") or fields.get("eprinttype") or "arxiv").lower()
    eprint = fields.get("eprint") if prefix == "arxiv" else None
    return _reference(
        f"{name}, line {(entry.start_line or 0) + 1}", fields.get("title") or entry.key,
        arxiv_texts=(eprint, fields.get("url"), fields.get("journal"), fields.get("note"),
                     fields.get("howpublished")),
        doi=fields.get("doi"))


def parse_csl_json(text: str, *, name: str) -> list[Reference]:
    """References of a CSL JSON export (Zotero): a list of items."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"{name}, line {exc.lineno} column {exc.colno}: malformed JSON: "
                         f"{exc.msg}", source=name) from exc
    if not isinstance(items, list):
        raise ParseError(f"{name}: expected a CSL JSON list of items, got a JSON "
                         f"{type(items).__name__}", source=name)
    references = []
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise ParseError(f"{name}, item {number}: expected a CSL JSON object, got "
                             f"{json.dumps(item)[:60]}", source=name)
        references.append(_csl_reference(f"{name}, item {number}", item))
    return references


def _csl_reference(where: str, item: dict[str, Any]) -> Reference:
    def text(key: str) -> str | None:
        value = item.get(key)
        return str(value) if isinstance(value, str | int | float) and value != "" else None

    # Zotero keeps an arXiv preprint's id in 'number' (arXiv:2106.09685) and its category
    # in 'note'; other exporters use 'archive_location' or the container's title. A bare
    # number counts only on an arXiv item: elsewhere it is an issue or report number.
    number = text("number")
    if number and (text("publisher") or "").lower() != "arxiv" and "arxiv" not in number.lower():
        number = None
    return _reference(
        where, text("title") or "",
        arxiv_texts=(text("URL"), number, text("archive_location"), text("note"),
                     text("container-title")),
        doi=text("DOI"))


def parse_id_list(text: str, *, name: str) -> list[Reference]:
    """References of a plain list: one arXiv id, arXiv URL or DOI a line; '#' comments."""
    references = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        reference = reference_from_argument(line)
        if reference.words:
            raise ParseError(f"{name}, line {number}: expected an arXiv id, an arXiv URL or a "
                             f"DOI (the file is neither BibTeX nor CSL JSON), got "
                             f"{line[:80]!r}", source=name)
        references.append(Reference(where=f"{name}, line {number}", arxiv_id=reference.arxiv_id,
                                    doi=reference.doi, title=line))
    return references


# ----------------------------------------------------------------------------- resolving


def resolve(store: Store, references: Sequence[Reference], *, fetcher: Fetcher, url: str,
            now: datetime, progress: Progress = lambda line: None) -> Resolution:
    """The stored paper each reference names; arXiv papers the store lacks are looked up
    on arXiv (in batches, paced) and kept as reference papers, never sent as news."""
    result = Resolution()
    keys = {f"arxiv:{r.arxiv_id}" for r in references if r.arxiv_id}
    papers = store.papers(keys)
    missing = list(dict.fromkeys(r.arxiv_id for r in references
                                 if r.arxiv_id and f"arxiv:{r.arxiv_id}" not in papers))
    if missing:
        progress(f"looking up {len(missing)} arXiv id{'s' if len(missing) != 1 else ''} "
                 "missing from the store")
        wanted = {f"arxiv:{arxiv_id}" for arxiv_id in missing}
        try:
            looked_up = arxiv_api.lookup(fetcher, missing, url=url, progress=progress)
        except SourceError as exc:
            raise SourceError(f"cannot look up {len(missing)} arXiv id"
                              f"{'s' if len(missing) != 1 else ''} at {url}: {exc}",
                              source="arxiv-lookup", url=url) from exc
        found = [p for p in looked_up if p.key in wanted]  # a mirror may answer more
        store.record_references(found, now)
        papers.update(store.papers(p.key for p in found))
    by_doi = store.keys_by_doi(r.doi for r in references if r.doi and not r.arxiv_id)
    papers.update(store.papers(by_doi.values()))
    for reference in references:
        if reference.arxiv_id:
            paper = papers.get(f"arxiv:{reference.arxiv_id}")
            if paper is None:
                result.unresolved.append((reference, f"arXiv has no paper {reference.arxiv_id}"))
            else:
                result.found.append((reference, paper))
        elif reference.doi:
            key = by_doi.get(reference.doi)
            if key is None or key not in papers:
                result.unresolved.append((reference, f"no arXiv id, and no stored paper has "
                                                     f"DOI {reference.doi}"))
            else:
                result.found.append((reference, papers[key]))
        elif reference.words:
            candidates = store.find(reference.words, limit=FOUND_LISTED + 1)
            if len(candidates) == 1:
                result.found.append((reference, candidates[0]))
            else:
                result.candidates[reference.words] = candidates
                result.unresolved.append((reference, "no stored paper matches" if not candidates
                                          else found_several(candidates)))
        else:
            result.unresolved.append((reference, "no arXiv id or DOI"))
    return result


# ----------------------------------------------------------------------------- recording


@dataclass
class ImportOutcome:
    """What importing likes did: papers newly liked, already liked or saved, and skipped."""

    liked: list[Paper] = field(default_factory=list)
    already: list[Paper] = field(default_factory=list)
    replaced_dislikes: list[Paper] = field(default_factory=list)
    skipped: list[tuple[Reference, str]] = field(default_factory=list)


def rate(store: Store, *, watchlist: str, papers: Iterable[Paper], action: str, origin: str,
         now: datetime) -> list[tuple[Paper, RatingOutcome]]:
    """Record one rating per paper (each paper once); the same rating again changes nothing."""
    unique = {paper.key: paper for paper in papers}
    return [(paper, store.rate(watchlist=watchlist, paper_key=paper.key, action=action,
                               origin=origin, now=now)) for paper in unique.values()]


def import_likes(store: Store, files: Sequence[ImportedFile], *, watchlist: str,
                 fetcher: Fetcher, url: str, now: datetime,
                 progress: Progress = lambda line: None) -> ImportOutcome:
    """Like, for the watchlist, every paper the files name.

    A paper the watchlist already counts as liked (liked or saved) is left as it is, so
    importing the same library again records nothing.
    """
    references = [r for imported in files for r in imported.references]
    resolution = resolve(store, references, fetcher=fetcher, url=url, now=now,
                         progress=progress)
    outcome = ImportOutcome(skipped=list(resolution.unresolved))
    current = store.ratings(watchlist).get(watchlist, {})
    to_like: dict[str, Paper] = {}
    seen: set[str] = set()  # a paper named twice, in one file or two, is liked once
    for _, paper in resolution.found:
        if paper.key in seen:
            continue
        seen.add(paper.key)
        if current.get(paper.key, 0) > 0:
            outcome.already.append(paper)
        else:
            to_like[paper.key] = paper
    for paper, rating in rate(store, watchlist=watchlist, papers=to_like.values(),
                              action="like", origin="import", now=now):
        if not rating.changed:
            outcome.already.append(paper)
            continue
        outcome.liked.append(paper)
        if rating.previous == "dislike":
            outcome.replaced_dislikes.append(paper)
    log.info("watchlist=%s imported likes: %d new, %d already, %d skipped", watchlist,
             len(outcome.liked), len(outcome.already), len(outcome.skipped))
    return outcome
