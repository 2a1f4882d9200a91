"""run_once: the one orchestrator. Fetch -> parse -> record -> score -> compose -> send.

Every source and every channel is tried; one failing never stops the others. Facts are
recorded after they happen: papers once stored, a digest before it is sent, a delivery
once the channel accepted it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from digest.calendar import EASTERN, Announcement, Calendar, days_label, eastern_date
from digest.composer import ComposeFailed, Composer, Job, composed_apart, workers_for
from digest.config import MIN_SECRET_CHARS, ChannelSettings, Settings, WatchlistSettings
from digest.deliver import CHANNELS, Channel, ChannelContext, Outbox, settings_fingerprint
from digest.errors import (
    ConfigError,
    DeliveryError,
    DigestError,
    Interrupted,
    SourceError,
    StoreError,
    UsageError,
    describe_unexpected,
)
from digest.feedback import LinkSigner, MoreLink, more_page_url, rating_urls
from digest.http import Fetcher, is_local, local_path
from digest.models import (
    DeliveryReport,
    Digest,
    Match,
    RunReport,
    SourceReport,
    WatchlistReport,
    parse_arxiv_id,
)
from digest.ranking import (
    MAX_BACKGROUND,
    MIN_LIKES,
    Corpus,
    ModelError,
    WatchlistModel,
    compares_likes,
    train,
)
from digest.render import Renderer, describe_reasons, plural
from digest.scoring import Matcher, rank, with_shared_reasons
from digest.similarity import SimilarityIndex
from digest.similarity import tokens as similarity_tokens
from digest.sources import StreamingSource, arxiv_api, arxiv_rss, build_source
from digest.store import LeftOut, OpenDigest, Store
from digest.store.db import Pruned
from digest.terms import forms_version, new_forms, remember_forms
from digest.window import PaperReader, score_window

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
ChannelFactory = Callable[[ChannelSettings], Channel]


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class Seams:
    """The I/O edges a caller may swap: HTTP transport, SMTP, sleeping, the clock."""

    transport: httpx.BaseTransport | None = None
    smtp_factory: Callable[..., Any] | None = None
    sleep: Callable[[float], None] | None = None
    now: Callable[[], datetime] = _utc_now
    channel_factory: ChannelFactory | None = None
    renderer: Renderer = field(default_factory=Renderer)
    # Set when the run should stop (serve got SIGTERM): waits end at once, nothing new starts.
    stop: threading.Event | None = None
    # False scores the whole window against every watchlist, ignoring the matches kept
    # from earlier runs: the straightforward path, which the kept one must equal.
    incremental: bool = True
    # Worker processes that compose digests: None lets the run decide (composer.py), 0
    # composes every digest in this process.
    compose_workers: int | None = None


def _stoppable(seams: Seams) -> Seams:
    """The seams with a sleep that ends early, raising Interrupted, once ``stop`` is set."""
    stop, sleep = seams.stop, seams.sleep
    if stop is None:
        return seams

    def wait(seconds: float) -> None:
        if sleep is None:
            stop.wait(seconds)
        elif not stop.is_set():
            sleep(seconds)
        _check_stop(seams)

    return replace(seams, sleep=wait)


def _check_stop(seams: Seams) -> None:
    if seams.stop is not None and seams.stop.is_set():
        raise Interrupted("asked to stop")


def default_channel(settings: Settings, seams: Seams) -> ChannelFactory:
    context = ChannelContext(http=settings.http, renderer=seams.renderer,
                             transport=seams.transport, smtp_factory=seams.smtp_factory,
                             sleep=seams.sleep, web_base_url=settings.web.base_url)
    return lambda channel: CHANNELS[channel.kind].create(channel, context)


def _seed_id(seed: str) -> str | None:
    """The versionless arXiv id a similar_to entry names, or None for a text seed."""
    parsed = parse_arxiv_id(seed)
    return parsed[0] if parsed and len(seed) < 100 else None  # an id or URL, not a text


def build_matcher(
    watchlists: Iterable[WatchlistSettings],
    store: Store,
    progress: Progress = lambda line: None,
    *,
    fetcher: Fetcher | None = None,
    seed_url: str | None = arxiv_api.BASE_URL,
    now: Callable[[], datetime] = _utc_now,
) -> Matcher:
    """Compile the watchlists; give 'similar_to' watchlists the store's papers and seeds,
    and watchlists with likes their liked papers (see ``liked_texts``).

    With a ``fetcher``, seed papers missing from the store are looked up on arXiv first and
    kept as reference papers, so each is asked for once.
    """
    watchlists = list(watchlists)
    remember_forms(store.word_forms(forms_version()))
    models, ratings = learned_models(watchlists, store, now(), progress)
    similar = [w for w in watchlists if w.similar_to]
    liked = liked_texts(watchlists, ratings, store)
    if not similar and not liked:
        return Matcher(watchlists, models=models, ratings=ratings)
    if fetcher is not None and similar:
        _record_seeds(similar, store, fetcher, seed_url, now, progress)
    counts, papers, taking = store.term_weights(similarity_tokens, progress)
    index = SimilarityIndex.from_counts(counts, papers)
    seeds: dict[str, list[str]] = {}
    seed_keys: dict[str, set[str]] = {}
    for watchlist in similar:
        texts = []
        keys = seed_keys.setdefault(watchlist.name, set())
        for seed in watchlist.similar_to:
            arxiv_id = _seed_id(seed)
            if arxiv_id is None:
                texts.append(seed)
                continue
            paper = store.paper(f"arxiv:{arxiv_id}")
            if paper is None:
                log.warning("watchlist=%s seed %s is not in the store yet; skipped",
                            watchlist.name, seed)
                continue
            texts.append(f"{paper.title}. {paper.abstract}")
            keys.add(paper.key)
        seeds[watchlist.name] = texts
    return Matcher(watchlists, similarity=index, seeds=seeds, seed_keys=seed_keys,
                   models=models, ratings=ratings, liked=liked,
                   similarity_taken=f"word counts taken the {taking}. time, of {papers} papers")


def liked_texts(watchlists: Iterable[WatchlistSettings], ratings: Mapping[str, Mapping[str, int]],
                store: Store) -> dict[str, dict[str, str]]:
    """For each watchlist that compares papers with its likes (a ratings-only one with 1 to
    LIKED_SEEDS likes), the titles and abstracts of those the store holds, by key."""
    chosen: dict[str, list[str]] = {}
    for w in watchlists:
        likes = [k for k, v in ratings.get(w.name, {}).items() if v > 0]
        if compares_likes(w, len(likes)):
            chosen[w.name] = likes
    if not chosen:
        return {}
    papers = store.papers({k for keys in chosen.values() for k in keys})
    out = {name: {k: f"{papers[k].title}. {papers[k].abstract}" for k in keys if k in papers}
           for name, keys in chosen.items()}
    return {name: texts for name, texts in out.items() if texts}


# Unrated papers a model learns from as weak negatives: a sample of those seen in the last
# weeks, but none of the last hours, which nobody has had the chance to rate yet.
BACKGROUND_DAYS = 30
BACKGROUND_UNSEEN = timedelta(hours=12)
BACKGROUND_SIZE = MAX_BACKGROUND


def learned_models(
    watchlists: Iterable[WatchlistSettings], store: Store, now: datetime,
    progress: Progress = lambda line: None,
) -> tuple[dict[str, WatchlistModel], dict[str, dict[str, int]]]:
    """Each learning watchlist's model, and every watchlist's ratings (+1 liked, -1 disliked).

    A saved model is used while the ratings it was trained on are unchanged (same
    fingerprint); otherwise the watchlist is trained again and the model saved. The
    ratings are read once, for the models and their fingerprints alike.
    """
    watchlists = list(watchlists)
    ratings = store.ratings()
    if not ratings:
        return {}, {}
    fingerprints = store.ratings_fingerprints(ratings)
    saved = store.saved_models()
    models: dict[str, WatchlistModel] = {}
    stale = []
    for watchlist in watchlists:
        name = watchlist.name
        rated = ratings.get(name, {})
        if watchlist.feedback_weight <= 0 or sum(v > 0 for v in rated.values()) < MIN_LIKES:
            continue
        if name in saved and saved[name][0] == fingerprints[name]:
            try:
                models[name] = WatchlistModel.from_bytes(saved[name][1])
                continue
            except ModelError as exc:
                log.warning("watchlist=%s saved model unreadable, training again: %s", name, exc)
        stale.append(name)
    if stale:
        progress(f"learning from ratings: training {plural(len(stale), 'watchlist model')}")
        fresh = store.recent_keys(now - BACKGROUND_UNSEEN)
        background = sorted((p for p in store.recent(now - timedelta(days=BACKGROUND_DAYS))
                             if p.key not in fresh),
                            key=lambda p: hashlib.sha1(p.key.encode()).hexdigest())
        background = background[:BACKGROUND_SIZE]
        rated_papers = store.papers({key for name in stale for key in ratings[name]})
        corpus = Corpus([*rated_papers.values(), *background])
        keys = [p.key for p in background]
        for name in stale:
            model = train(corpus, ratings[name], keys)
            if model is None:
                log.info("watchlist=%s too few rated papers in the store to learn from", name)
                continue
            blob = model.to_bytes()
            store.save_model(name, fingerprints[name], blob, now)
            # Kept as read back, like a saved model: its rated papers stay compressed until
            # a reason needs them, so a run that trained 1,000 models holds no more.
            models[name] = WatchlistModel.from_bytes(blob)
    return models, {w.name: ratings[w.name] for w in watchlists if w.name in ratings}


def _record_seeds(similar: list[WatchlistSettings], store: Store, fetcher: Fetcher,
                  url: str | None, now: Callable[[], datetime], progress: Progress) -> None:
    """Look up the seed ids the store lacks; keep them as references, never as news."""
    ids = {_seed_id(seed) for w in similar for seed in w.similar_to}
    missing = sorted(i for i in ids if i and store.paper(f"arxiv:{i}") is None)
    if not missing or not url or is_local(url):  # no lookup on this run, or none possible
        return
    progress(f"looking up {len(missing)} seed paper{'s' if len(missing) != 1 else ''} on arXiv")
    try:
        found = arxiv_api.lookup(fetcher, missing, url=url, progress=progress)
    except (StoreError, Interrupted):
        raise
    except Exception as exc:  # the seeds are asked again next run; the run goes on
        problem = str(exc) if isinstance(exc, DigestError) else describe_unexpected(exc)
        log.warning("cannot look up seed papers %s: %s", ", ".join(missing), problem)
        return
    wanted = {f"arxiv:{arxiv_id}" for arxiv_id in missing}
    store.record_references([p for p in found if p.key in wanted], now())


ARXIV_SOURCE_KINDS = ("arxiv_rss", "arxiv_api")


def _reads_locally(url: str) -> bool:
    """A local file or a server on this machine: sample data, a test, a local mirror."""
    return is_local(url) or (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


def lookup_target(settings: Settings) -> str | None:
    """Where to ask arXiv about papers by id, or None when the run must stay off the network.

    It asks where the first arxiv_api source asks (a local file cannot answer: None), else
    arXiv itself, unless every source reads a local file or a server on this machine:
    runs on sample data or in a test never reach out to arXiv behind the user's back.
    """
    url = arxiv_api.lookup_url(settings.sources)
    if is_local(url) or (url == arxiv_api.BASE_URL and all(
            s.url and _reads_locally(s.url) for s in settings.sources if s.enabled)):
        return None
    return url


def enrich_from_arxiv(settings: Settings, store: Store, fetcher: Fetcher, *, now: datetime,
                      progress: Progress = lambda line: None) -> int:
    """Give recent papers that a source listed without categories or with a partial author
    list (Hugging Face, some feeds) arXiv's categories and authors, before they are scored.

    Asked by id_list in batches through the shared arXiv pacer; each paper once, found or
    not. A failed lookup is a warning: those papers are asked again next run. It asks where
    the first arxiv_api source asks (a local file: skipped), else arXiv itself, unless every
    source reads a local file or a server on this machine: runs on sample data stay
    offline. Returns how many papers it changed.
    """
    url = lookup_target(settings)
    if url is None:
        return 0
    since = now - timedelta(days=settings.store.lookback_days)
    ids = store.lacking_arxiv_facts(
        since, [s.name for s in settings.sources if s.kind in ARXIV_SOURCE_KINDS])
    if not ids:
        return 0
    progress(f"asking arXiv for the categories and authors of {len(ids)} "
             f"paper{'s' if len(ids) != 1 else ''}")
    changed = 0
    for start in range(0, len(ids), arxiv_api.LOOKUP_BATCH):
        batch = ids[start:start + arxiv_api.LOOKUP_BATCH]
        try:
            found = arxiv_api.lookup(fetcher, batch, url=url, progress=progress)
        except (StoreError, Interrupted):
            raise
        except Exception as exc:  # the papers are scored as listed; asked again next run
            problem = str(exc) if isinstance(exc, DigestError) else describe_unexpected(exc)
            log.warning("cannot look up %d papers on arXiv for their categories and "
                        "authors: %s", len(ids) - start, problem)
            break
        changed += store.record_arxiv_facts(found, asked=batch, now=now)
    return changed


def source_notes(settings: Settings, store: Store) -> tuple[str, ...]:
    """A line for each configured source that failed its latest runs, for the digest."""
    notes = []
    names = {s.name for s in settings.sources if s.enabled}
    for row in store.source_health():
        failures = row["consecutive_failures"]
        if row["source"] in names and failures:
            runs = "the latest run" if failures == 1 else f"the last {failures} runs"
            error = " ".join(str(row["last_error"] or "").split())[:200]
            notes.append(f"{row['source']} could not be read in {runs} ({error}); its new "
                         "papers will follow once it can.")
    return tuple(notes)


def feedback_links(settings: Settings, watchlist: str,
                   keys: Iterable[str]) -> dict[str, dict[str, str]]:
    """One-click rating URLs for each paper of a digest, once [web] has an address and a key.

    No recipient is named: one email goes to every address of its channel.
    """
    web = settings.web
    if not web.base_url or not web.link_key:  # a missing key is said once a run, by _deliver
        return {}
    signer = LinkSigner(web.link_key)
    return {key: rating_urls(signer, web.base_url, watchlist=watchlist, paper_key=key)
            for key in keys}


# The web app's page of what a digest left out lists at most this many papers: past that
# nobody reads on, and each digest of a broad watchlist would add hundreds of rows.
LEFT_OUT_MAX_PAPERS = 200


@dataclass(frozen=True)
class Planned:
    """A digest handed to be composed, and what recording it will need."""

    job: Job
    digest_id: int  # set aside for it
    watchlist: str
    channel: str
    papers: int
    ranked: list[Match]
    others: list[list[Match]]
    more: MorePage | None
    heartbeat: str | None


@dataclass(frozen=True)
class MorePage:
    """Where a digest about to be composed will list its left-out papers: the id and the
    moment it is to be recorded under, and the signed URL naming both."""

    digest_id: int
    at: datetime
    url: str


def more_page(settings: Settings, watchlist: str, now: datetime,
              digest_id: int) -> MorePage | None:
    """The "N more" page of a digest about to be composed, once [web] has an address and a
    key.

    The URL must name the digest's id, yet the payload carrying it is composed before the
    digest is recorded. The id is therefore set aside first (``digest_id``), which only this
    run can use since it holds the run lock; the digest is then recorded under it explicitly
    (a clash fails the run rather than link to another digest). Composing twice would cost
    every size-cut email a second rendering, and (channel, watchlist, time) names no digest
    uniquely. The link also names the moment recorded, so that an id SQLite gives again
    after its digest was pruned does not open the old link. Every digest gets the URL; only
    one that left papers out shows it.
    """
    web = settings.web
    if not web.base_url or not web.link_key:  # a missing key is said once a run, by _deliver
        return None
    url = more_page_url(LinkSigner(web.link_key), web.base_url,
                        MoreLink(digest_id=digest_id, watchlist=watchlist, created_at=now))
    return MorePage(digest_id=digest_id, at=now, url=url)


def left_out(ranked: list[Match], kept: int, others: list[list[Match]]) -> list[LeftOut]:
    """The ranked matches past the ``kept`` a digest carries, for its "N more" page, with
    the reasons the channel's other watchlists gave them too, as the digest shows them."""
    rest = with_shared_reasons(ranked[kept:kept + LEFT_OUT_MAX_PAPERS], others)
    return [LeftOut(paper_key=m.paper.key, rank=kept + number, score=m.score,
                    reasons=describe_reasons(m)) for number, m in enumerate(rest, start=1)]


def preflight(
    settings: Settings, *, channels: Iterable[str] | None = None, secrets: bool = True
) -> list[tuple[str, str]]:
    """Problems that would stop a run, found before anything is fetched or sent."""
    problems = []
    wanted = set(settings.channels if channels is None else channels)
    if secrets:
        # A channel's missing secret stops a run only when that channel is due; the web
        # key is checked whole by 'check' (channels=None), while a run without it just
        # sends digests without rating links.
        problems += [p for p in settings.missing_secrets()
                     if (p[0].startswith("channels.") and p[0].split(".", 1)[1] in wanted)
                     or (channels is None and not p[0].startswith("channels."))]
    directory = settings.store.path.parent
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
        problems.append(("store.path", f"cannot create {settings.store.path}: "
                                       f"{existing or directory} is not a writable folder"))
    for name, channel in settings.channels.items():
        problems += [(f"channels.{name}.{key}", reason)
                     for key, reason in channel.options.local_problems()]
    for i, source in enumerate(settings.sources):
        if source.enabled and source.url and is_local(source.url):
            path = local_path(source.url)
            if not path.is_file():
                problems.append((f"sources[{i}].url", f"no such file: {path}"))
    return problems


def prune_store(settings: Settings, store: Store, now: datetime,
                progress: Progress = lambda line: None, *,
                quiet: bool = False) -> Pruned | None:
    """Apply the retention of [store]; seed papers of similar_to watchlists are kept.

    ``quiet`` (at the end of a run) turns a failure into a warning, since what the run
    did is recorded already; the next run prunes again. Returns None when it failed so.
    """
    seeds = {f"arxiv:{arxiv_id}" for w in settings.watchlists for seed in w.similar_to
             if (arxiv_id := _seed_id(seed))}
    try:
        pruned = store.prune(now, keep_days=settings.store.keep_days,
                             keep_payload_days=settings.store.keep_payload_days, keep=seeds)
    except StoreError as exc:
        if not quiet:
            raise
        log.warning("store pruning failed, tried again next run: %s", exc)
        return None
    parts = []
    if pruned.papers or pruned.digests:
        parts.append(f"{pruned.papers} papers and {pruned.digests} digests older than "
                     f"{settings.store.keep_days} days")
    if pruned.payloads:
        parts.append(f"the payloads of {pruned.payloads} digests sent over "
                     f"{settings.store.keep_payload_days} days ago")
    if parts:
        log.info("pruned papers=%d digests=%d payloads=%d", pruned.papers, pruned.digests,
                 pruned.payloads)
        progress("pruned " + "; ".join(parts))
    return pruned


def apply_renames(settings: Settings, store: Store, now: datetime,
                  progress: Progress = lambda line: None) -> None:
    """Move what the store holds under each previous name to the name now configured.

    A renamed channel then keeps its deliveries, so nothing it had is sent again.
    """
    renames = [("channel", old, c.name) for c in settings.channels.values()
               for old in c.previous_names]
    renames += [("watchlist", old, w.name) for w in settings.watchlists
                for old in w.previous_names]
    for kind, old, new in renames:
        moved = store.rename(kind, old, new, now)
        if moved:
            progress(f"renamed {kind} {old} to {new} in the store ({moved} records)")


def known_watchlists(settings: Settings, names: Iterable[str]) -> None:
    """A UsageError naming those of ``names`` the config defines no watchlist by."""
    known = [w.name for w in settings.watchlists]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise UsageError(f"no watchlist named {', '.join(map(repr, unknown))} (known: "
                         f"{', '.join(known) or 'none'})")


def run_once(
    settings: Settings,
    *,
    outbox: Path | None = None,
    watchlists: Iterable[str] | None = None,
    seams: Seams | None = None,
    progress: Progress = lambda line: None,
) -> RunReport:
    """Run the whole job once: ingest every source, then deliver the due digests.

    When ``seams.stop`` is set, the run starts no further source or digest, its waits end,
    and it returns what it did so far, marked interrupted.
    """
    seams = _stoppable(seams or Seams())
    known_watchlists(settings, watchlists or ())
    selected = [w for w in settings.watchlists if watchlists is None or w.name in set(watchlists)]
    channel_names = sorted({c for w in selected for c in w.channels})
    problems = preflight(settings, channels=channel_names, secrets=outbox is None)
    if problems:
        raise ConfigError(problems, path=str(settings.path))
    report = RunReport(started_at=seams.now())
    try:
        with Store.open(settings.store.path) as store, store.run_lock(), \
                Fetcher(settings.http, transport=seams.transport, sleep=seams.sleep) as fetcher:
            apply_renames(settings, store, seams.now(), progress)
            calendar = Calendar(settings.arxiv.holidays)
            for source_settings in settings.sources:
                if source_settings.enabled:
                    _check_stop(seams)
                    previous = store.last_success(source_settings.name)
                    report.sources.append(_ingest(store, fetcher, source_settings, seams,
                                                  progress, calendar))
                    catch_up(settings, store, fetcher, source_settings, report.sources[-1],
                             previous=previous, calendar=calendar, now=seams.now(),
                             progress=progress)
            enrich_from_arxiv(settings, store, fetcher, now=seams.now(), progress=progress)
            _deliver(settings, store, selected, channel_names, seams, outbox, report, progress,
                     fetcher)
            prune_store(settings, store, seams.now(), progress, quiet=True)
    except Interrupted:
        # Each fact was written in its own transaction; the one under way rolled back.
        report.interrupted = True
        log.info("run interrupted; what was not reached waits for the next run")
    report.finished_at = seams.now()
    return report


def _ingest(store: Store, fetcher: Fetcher, source_settings: Any, seams: Seams,
            progress: Progress, calendar: Calendar | None = None) -> SourceReport:
    """Fetch one source and store what it lists. A source that can be read paper by paper
    (arxiv_rss) is recorded a chunk per transaction as it is read, and its state (ETag,
    last success) only after the last chunk; the others are recorded whole, in one."""
    name = source_settings.name
    result = SourceReport(name=name)
    progress(f"fetching {name} ({source_settings.kind})")
    try:
        source = build_source(source_settings)
        if isinstance(source, StreamingSource):
            with source.stream(fetcher, store.source_state(name)) as listing:
                now = seams.now()
                progress(f"recording papers from {name}")
                result.new, result.known = store.record_listing(name, listing.papers, now)
                result.read = listing.read
                result.skipped = listing.skipped
                result.not_modified = listing.not_modified
                if calendar is not None:  # an empty listing recorded nothing to undo
                    result.note = explain_empty(source_settings, result, calendar,
                                                seams.now())
                store.record_success(name, listing.state, now)
        else:
            batch = source.fetch(fetcher, store.source_state(name))
            result.read = len(batch.papers)
            result.skipped = batch.skipped
            result.not_modified = batch.not_modified
            if calendar is not None:
                result.note = explain_empty(source_settings, result, calendar, seams.now())
            progress(f"recording {len(batch.papers)} papers from {name}")
            result.new, result.known = store.record_batch(name, batch.papers, batch.state,
                                                          seams.now())
    except StoreError:
        raise  # the store is broken, not the source: nothing more can be recorded
    except DigestError as exc:
        result.error = str(exc)
    except Exception as exc:  # a bug met by one source's data must not cost the others
        result.error = describe_unexpected(exc)
        log.debug("source=%s failed unexpectedly", name, exc_info=True)
    if result.error is not None:
        log.warning("source=%s failed: %s", name, result.error)
        store.record_source_error(name, result.error, seams.now())
    return result


def reads_arxiv_calendar(source_settings: Any) -> bool:
    """An arxiv_rss source that reads a feed over HTTP, which follows arXiv's calendar.

    A local file (the demo's sample data) is a snapshot: never late, never missing a day.
    """
    return source_settings.kind == "arxiv_rss" and not (
        source_settings.url and is_local(source_settings.url))


def explain_empty(source_settings: Any, result: SourceReport, calendar: Calendar,
                  now: datetime) -> str | None:
    """Judge an arXiv listing with no entries at all: the calendar's reason when no
    announcement was due (weekend, holiday), a SourceError when one was.

    None for any listing with entries, for a feed not modified, and for other sources.
    """
    if (not reads_arxiv_calendar(source_settings) or result.read or result.skipped
            or result.not_modified):
        return None
    due = calendar.due_listing(now)
    if due is not None:
        raise SourceError(f"arXiv sent an empty feed on an announcement day ({due.label})",
                          source=source_settings.name)
    return f"no arXiv announcement today ({calendar.why_silent(now)})"


# A catch-up reads at most this many pages of 2000: a week of all of cs is under half that.
CATCH_UP_MAX_PAGES = 10


def catch_up(
    settings: Settings,
    store: Store,
    fetcher: Fetcher,
    source_settings: Any,
    result: SourceReport,
    *,
    previous: datetime | None,
    calendar: Calendar,
    now: datetime,
    progress: Progress = lambda line: None,
) -> None:
    """Backfill through the arXiv API the announcement days an arxiv_rss source missed.

    The feed holds only its latest day, so the days whose listing came and went since the
    source's ``previous`` success are asked of the API by submission date, within
    ``[arxiv] catch_up_days``. They are recorded as pending first and marked done once
    every page is stored: a run that stops half-way leaves them for the next run. Papers
    are keyed by arXiv id, so one found again (in the next feed, or a page fetched twice)
    is stored and sent once. Adds to ``result``; a failure is the catch-up's, not the feed's.
    """
    name = source_settings.name
    url = lookup_target(settings)
    if not settings.arxiv.catch_up_days or not reads_arxiv_calendar(source_settings) or not url:
        return
    horizon = now - timedelta(days=settings.arxiv.catch_up_days)
    recorded = store.catch_up_days(name)
    missed: dict[str, Announcement] = {}
    if previous is not None:
        current = calendar.due_listing(now)
        read_now = result.error is None and (
            not result.not_modified or current == calendar.due_listing(previous))
        for announcement in calendar.listing_missed(previous, now):
            if not (read_now and announcement == current):
                missed[announcement.day.isoformat()] = announcement
    expired = []
    for day, status in recorded.items():
        if status == "pending":
            pending = calendar.announcement(date.fromisoformat(day))
            if pending.at < horizon:
                expired.append(day)
            missed.setdefault(day, pending)
    if expired:
        log.warning("source=%s gives up the catch-up of %s: older than catch_up_days", name,
                    ", ".join(sorted(expired)))
        store.finish_catch_up(name, expired, now, status="expired")
    wanted = sorted((a for key, a in missed.items()
                     if a.at >= horizon and recorded.get(key) != "done"), key=lambda a: a.at)
    if not wanted:
        return
    store.plan_catch_up(name, [a.day.isoformat() for a in wanted], now)
    result.catch_up = days_label([a.day for a in wanted])
    try:
        for group in _consecutive(wanted, calendar):
            result.caught_up += _backfill(store, fetcher, source_settings, group, calendar,
                                          url=url, now=now, progress=progress)
            store.finish_catch_up(name, [a.day.isoformat() for a in group], now)
    except StoreError:
        raise
    except DigestError as exc:
        result.catch_up_error = str(exc)
    except Exception as exc:  # a bug met in the API's answer must not cost the run
        result.catch_up_error = describe_unexpected(exc)
        log.debug("source=%s catch-up failed unexpectedly", name, exc_info=True)
    if result.catch_up_error:
        log.warning("source=%s catch-up of %s failed: %s", name, result.catch_up,
                    result.catch_up_error)


def _consecutive(announcements: list[Announcement],
                 calendar: Calendar) -> list[list[Announcement]]:
    """Runs of announcements with none between them: each run is one query."""
    groups: list[list[Announcement]] = []
    for announcement in announcements:
        if groups and calendar.next_announcement(groups[-1][-1].at) == announcement:
            groups[-1].append(announcement)
        else:
            groups.append([announcement])
    return groups


def _backfill(store: Store, fetcher: Fetcher, source_settings: Any,
              group: list[Announcement], calendar: Calendar, *, url: str, now: datetime,
              progress: Progress) -> int:
    """Fetch and store, page by page, the new papers of consecutive announcement days.

    Returns how many were new to the store.
    """
    categories = source_settings.options.categories
    start, end = calendar.submission_window(group[0], group[-1])
    query = (f"({arxiv_rss.api_query(categories)}) AND "
             f"submittedDate:[{start:%Y%m%d%H%M} TO {end:%Y%m%d%H%M}]")
    wanted = set(source_settings.options.announce_types)
    new = offset = 0
    for page in range(1, CATCH_UP_MAX_PAGES + 1):
        progress(f"catching up {'+'.join(categories)}: {days_label([a.day for a in group])}, "
                 f"page {page} ({offset}-{offset + arxiv_api.MAX_RESULTS_PER_CALL - 1})")
        with fetcher.get(url, params={
                "search_query": query, "start": offset,
                "max_results": arxiv_api.MAX_RESULTS_PER_CALL, "sortBy": "submittedDate",
                "sortOrder": "ascending"}, source=source_settings.name) as fetched:
            papers, total = arxiv_api.parse(fetched.content, source=source_settings.name)
        listed = [arxiv_rss.as_listed(p, categories) for p in papers]
        kept = [p for p in listed if p.announce_type in wanted]
        new += store.record_backfill_page(source_settings.name, kept,
                                          day=group[-1].day.isoformat(), now=now)
        offset += len(papers)
        if len(papers) < arxiv_api.MAX_RESULTS_PER_CALL or (total is not None and offset >= total):
            break
    else:
        log.warning("source=%s catch-up stopped after %d pages; the rest of %s is not "
                    "backfilled", source_settings.name, CATCH_UP_MAX_PAGES,
                    days_label([a.day for a in group]))
    return new


def run_notes(report: RunReport) -> tuple[str, ...]:
    """What this run's sources tell the reader: a silent arXiv day, a catch-up."""
    notes = []
    for source in report.sources:
        if source.note:
            notes.append(f"{source.name}: {source.note}.")
        if source.catch_up_error:
            notes.append(f"{source.name} could not catch up the {source.catch_up} it missed "
                         f"({source.catch_up_error}); it tries again next run.")
        elif source.catch_up:
            notes.append(f"{source.name} missed {source.catch_up}; {source.caught_up} new "
                         "papers from those days were fetched through the arXiv API.")
    return tuple(notes)


def due_heartbeat(watchlist: WatchlistSettings, channel: str, store: Store, report: RunReport,
                  *, since: datetime, now: datetime) -> str | None:
    """What a channel hears from a watchlist that has nothing to send it: None when the
    watchlist has no heartbeat, or the channel got a digest or heartbeat of it this
    US-Eastern day already (a heartbeat is recorded like any digest)."""
    if not watchlist.heartbeat:
        return None
    day_start = datetime.combine(eastern_date(now), time(0), tzinfo=EASTERN).astimezone(UTC)
    last = store.latest_digest_at(channel, watchlist.name)
    if last is not None and last >= day_start:
        return None
    read_since = since if last is None else max(since, last + timedelta(seconds=1))
    return heartbeat_text(report, len(store.recent_keys(read_since)))


def heartbeat_text(report: RunReport, read: int) -> str:
    """The one line a heartbeat says: why nothing was sent today."""
    silent = [s.note for s in report.sources if s.note]
    if silent and not read:
        return silent[0]
    return f"nothing matched today ({read} new paper{'s' if read != 1 else ''} read)"


def _deliver(
    settings: Settings,
    store: Store,
    selected: list[Any],
    channel_names: list[str],
    seams: Seams,
    outbox_dir: Path | None,
    report: RunReport,
    progress: Progress,
    fetcher: Fetcher | None = None,
) -> None:
    factory = seams.channel_factory or default_channel(settings, seams)
    channels: dict[str, Channel] = {}
    outbox = Outbox(outbox_dir) if outbox_dir is not None else None
    web = settings.web
    if web.base_url and not web.key:
        log.warning("web.base_url is set but $%s is not: digests go out without rating "
                    "links", web.secret_env)
    elif web.base_url and not web.link_key:
        log.warning("$%s is %d characters, fewer than the %d the web app accepts: digests go "
                    "out without rating links, which it would refuse", web.secret_env,
                    len(web.key), MIN_SECRET_CHARS)
    broken: dict[str, str] = {}  # channel -> error that stopped it for this run

    def channel(name: str) -> Channel:
        if name not in channels:
            channels[name] = factory(settings.channels[name])
        return channels[name]

    # A channel that sends each digest as one message on a session of its own (email)
    # transmits in the background while the next digest is composed. One digest at most
    # is in flight, and its outcome is recorded, by this thread, before the next one
    # goes: what is sent, refused or broken reads as if every send had waited.
    courier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="send") \
        if outbox is None else None
    in_flight: list[tuple[Future[Any], OpenDigest, DeliveryReport]] = []

    def failed(open_digest: OpenDigest, entry: DeliveryReport, caught: Exception) -> None:
        exc = caught if isinstance(caught, DeliveryError) else DeliveryError(
            describe_unexpected(caught), channel=open_digest.channel)
        if exc is not caught:
            log.debug("channel=%s failed unexpectedly", open_digest.channel,
                      exc_info=(type(caught), caught, caught.__traceback__))
        entry.status = "failed_permanent" if exc.permanent else "failed_temporary"
        entry.error = str(exc)
        store.mark_failed(open_digest.id, str(exc), permanent=exc.permanent, now=seams.now(),
                          fingerprint=fingerprints[open_digest.channel])
        if not exc.permanent:
            broken[open_digest.channel] = f"not tried: {exc}"
        log.warning("channel=%s digest=%d failed: %s", open_digest.channel, open_digest.id,
                    exc)

    def delivered(open_digest: OpenDigest, entry: DeliveryReport,
                  refused: Mapping[str, tuple[bool, str]] | None,
                  at: datetime | None = None) -> None:
        store.mark_sent(open_digest.id, at or seams.now(), refused=refused)
        entry.status = "sent"
        if refused:
            entry.refused = tuple(sorted(refused))
            entry.error = "refused by " + "; ".join(
                f"{address} ({reason})" for address, (_, reason) in sorted(refused.items()))
        progress(f"sent {open_digest.watchlist} to {open_digest.channel} "
                 f"({entry.papers} papers)")

    def settle() -> None:
        """Wait for the digest in flight, if any, and record how it went. It stays in
        flight until recorded: an interruption meanwhile leaves it to ``finally``."""
        if not in_flight:
            return
        future, open_digest, entry = in_flight[-1]
        try:
            refused, at = future.result()
        except StoreError:
            raise
        except Exception as caught:  # a bug in one channel must not cost the others
            failed(open_digest, entry, caught)
        else:
            delivered(open_digest, entry, refused, at)
        in_flight.pop()

    def in_background(target: Channel, payload: dict[str, Any], parts_sent: int
                      ) -> tuple[Mapping[str, tuple[bool, str]] | None, datetime]:
        """On the courier thread: send, and say when the channel accepted."""
        refused = target.send(payload, parts_sent=parts_sent, on_part_sent=lambda n: None)
        return refused, seams.now()

    def send(open_digest: OpenDigest, resent: bool) -> None:
        settle()
        entry = DeliveryReport(watchlist=open_digest.watchlist, channel=open_digest.channel,
                               papers=len(open_digest.paper_keys), status="pending",
                               digest_id=open_digest.id, resent=resent)
        report.deliveries.append(entry)
        if open_digest.channel in broken:
            entry.status, entry.error = "failed_temporary", broken[open_digest.channel]
            return
        try:
            if outbox is not None:
                files = CHANNELS[settings.channels[open_digest.channel].kind].outbox_files(
                    open_digest.payload)
                paths = outbox.write(digest_id=open_digest.id, channel=open_digest.channel,
                                     watchlist=open_digest.watchlist, files=files)
                entry.location = ", ".join(str(p) for p in paths)
                store.mark_sent(open_digest.id, seams.now())
                entry.status = "written"
                return
            progress(f"sending digest {open_digest.id} ({open_digest.watchlist} to "
                     f"{open_digest.channel})")
            target = channel(open_digest.channel)
            if courier is not None and getattr(target, "sends_in_background", False):
                in_flight.append((courier.submit(in_background, target, open_digest.payload,
                                                 open_digest.parts_sent),
                                  open_digest, entry))
                return
            refused = target.send(
                open_digest.payload, parts_sent=open_digest.parts_sent,
                on_part_sent=lambda n: store.mark_part_sent(open_digest.id, n, seams.now()))
        except StoreError:
            raise  # the store is broken, not the channel: stop the run
        except Exception as caught:  # a bug in one channel must not cost the others
            failed(open_digest, entry, caught)
            return
        delivered(open_digest, entry, refused)

    def resend_to_refused(open_digest: OpenDigest, recipients: list[str]) -> None:
        settle()
        entry = DeliveryReport(watchlist=open_digest.watchlist, channel=open_digest.channel,
                               papers=len(open_digest.paper_keys), status="pending",
                               digest_id=open_digest.id, resent=True)
        report.deliveries.append(entry)
        resend = getattr(channel(open_digest.channel), "send_to", None)
        if open_digest.channel in broken or resend is None:
            entry.status, entry.error = "failed_temporary", broken.get(
                open_digest.channel, "this channel cannot resend to some recipients")
            return
        try:
            outcome = resend(open_digest.payload, recipients)
        except StoreError:
            raise
        except Exception as exc:  # one channel's bug must not cost the other channels
            entry.status, entry.error = "failed_temporary", describe_unexpected(exc)
            broken[open_digest.channel] = f"not tried: {entry.error}"
            log.debug("channel=%s resend failed unexpectedly", open_digest.channel,
                      exc_info=True)
            return
        store.mark_recipients(open_digest.id, outcome, seams.now())
        failed = {r: why for r, (status, why) in outcome.items() if status.startswith("failed")}
        entry.status = "sent" if not failed else "failed_temporary"
        if failed:
            entry.refused = tuple(sorted(failed))
            entry.error = "refused by " + "; ".join(f"{r} ({why})"
                                                    for r, why in sorted(failed.items()))
        done = sorted(r for r, (status, _) in outcome.items() if status == "sent")
        if done:
            progress(f"sent digest {open_digest.id} again to {', '.join(done)}")

    fingerprints = {name: settings_fingerprint(settings.channels[name])
                    for name in channel_names}
    composer: Composer | None = None
    try:
        # A digest that failed for good is tried again once its channel was corrected.
        for digest_id in store.requeue_changed(fingerprints, seams.now()):
            progress(f"digest {digest_id} failed for good under the channel's old settings; "
                     "sending it again with the corrected ones")
        # Digests recorded by an earlier run and not yet accepted go first, unchanged.
        for open_digest in store.open_digests(channel_names):
            _check_stop(seams)
            progress(f"resending digest {open_digest.id} ({open_digest.watchlist} to "
                     f"{open_digest.channel}), recorded earlier")
            send(open_digest, resent=True)
        settle()  # what the last of them was refused is read next
        # An outbox run writes what it would send; it never writes to a real recipient.
        retries = store.recipient_retries(channel_names) if outbox is None else []
        for open_digest, recipients in retries:
            progress(f"digest {open_digest.id} ({open_digest.watchlist} to "
                     f"{open_digest.channel}): sending again to {', '.join(recipients)}")
            resend_to_refused(open_digest, recipients)
        _check_stop(seams)
        since = seams.now() - timedelta(days=settings.store.lookback_days)
        # Workers that will compose start now: their imports and the highlighting of the
        # watchlists' terms are made ready while this process scores.
        composer = Composer(
            channel=channel, settings=settings.channels, http=settings.http,
            renderer=seams.renderer, web_base_url=settings.web.base_url,
            workers=0 if seams.channel_factory is not None else workers_for(
                composed_apart(settings, selected), seams.compose_workers))
        composer.prepare({keyword.term.text for w in selected for keyword in w.keywords})
        matcher = build_matcher(selected, store, progress, fetcher=fetcher,
                                seed_url=lookup_target(settings), now=seams.now)
        candidates = store.candidates(since)  # for all channels at once
        # Each paper of the window is scored once against each watchlist, and its matches
        # kept: a later run scores only what is new or changed. Each channel then takes the
        # matches it has not had or queued yet.
        window = score_window(matcher, store, selected, candidates, since=since,
                              now=seams.now(), lookback_days=settings.store.lookback_days,
                              incremental=seams.incremental, progress=progress)
        scored = window.open
        papers_for = PaperReader(store)  # matches hold stand-ins; a digest reads its papers
        found = new_forms()  # forms of words new to the store, kept for the next run
        if found:
            store.keep_word_forms(found, forms_version())
        notes = source_notes(settings, store) + run_notes(report)
        sharing: dict[str, list[str]] = {}  # channel -> the watchlists it serves
        for watchlist_settings in selected:
            for channel_name in watchlist_settings.channels:
                sharing.setdefault(channel_name, []).append(watchlist_settings.name)
        # Digests are composed in order, perhaps some ahead in worker processes, and
        # recorded and sent in the same order. A channel's next digest is planned only
        # once its last one is recorded: what that one carried is no longer open.
        planned: deque[Planned] = deque()

        set_aside_last = 0

        def set_aside() -> int:
            """The id the digest about to be planned is recorded under: the next free one,
            past those set aside for the digests still planned (one that fails to compose
            leaves its id unused, never taken twice)."""
            nonlocal set_aside_last
            free = store.next_digest_id()
            if planned:
                free = max(free, set_aside_last + 1)
            set_aside_last = free
            return free

        def finish_one() -> None:
            _check_stop(seams)  # digests composed ahead are dropped, to be composed again
            plan = planned.popleft()
            try:
                composed = plan.job.result()
            except ComposeFailed as exc:  # this digest waits for the next run; others go on
                log.warning("channel=%s watchlist=%s cannot compose: %s", plan.channel,
                            plan.watchlist, exc)
                report.deliveries.append(DeliveryReport(
                    watchlist=plan.watchlist, channel=plan.channel, papers=plan.papers,
                    status="failed_temporary", error=f"cannot compose: {exc}"))
                return
            # Recorded under the id set aside, and at the moment its "N more" link names.
            digest_id = store.create_digest(
                composed.digest, composed.payload, plan.more.at if plan.more else seams.now(),
                digest_id=plan.digest_id, packed=composed.packed,
                left_out=left_out(plan.ranked, len(composed.digest.matches), plan.others)
                if plan.more else ())
            keys = tuple(m.paper.key for m in composed.digest.matches)
            candidates.queued(plan.channel, keys)
            send(OpenDigest(id=digest_id, channel=plan.channel, watchlist=plan.watchlist,
                            status="pending", payload=composed.payload, parts_sent=0,
                            attempts=0, paper_keys=keys), resent=False)
            if plan.heartbeat is not None:
                report.deliveries[-1].heartbeat = plan.heartbeat  # the entry send() added

        for watchlist_settings in selected:
            name = watchlist_settings.name
            summary = WatchlistReport(name=name, recent=window.papers,
                                      matched=window.matched[name])
            report.watchlists.append(summary)
            for channel_name in watchlist_settings.channels:
                while any(plan.channel == channel_name for plan in planned):
                    finish_one()
                ranked = rank(m for m in scored[name]
                              if candidates.open(channel_name, m.paper.key))
                summary.unsent = max(summary.unsent, len(ranked))
                matched = len(ranked)
                matches = ranked[: watchlist_settings.max_papers]
                # A paper sent here once is not sent again for the channel's other
                # watchlists, so it carries their reasons too.
                others = [scored[other] for other in sharing[channel_name] if other != name]
                matches = papers_for(with_shared_reasons(matches, others))
                heartbeat = None
                if not matches:
                    heartbeat = due_heartbeat(watchlist_settings, channel_name, store, report,
                                              since=since, now=seams.now())
                    if heartbeat is None:
                        continue
                _check_stop(seams)
                progress(f"composing {name} for {channel_name}")
                digest_id = set_aside()
                more = more_page(settings, name, seams.now(), digest_id) if matches else None
                job = composer.submit(channel_name, Digest(
                    watchlist=name, channel=channel_name,
                    matches=tuple(matches), created_at=seams.now(),
                    # a heartbeat saying "no arXiv announcement" need not say it twice
                    notes=tuple(n for n in notes if not heartbeat or heartbeat not in n),
                    feedback=feedback_links(settings, name, [m.paper.key for m in matches]),
                    heartbeat=heartbeat, matched=matched,
                    timezone=watchlist_settings.timezone or settings.schedule.timezone,
                    more_url=more.url if more else None))
                planned.append(Planned(job=job, digest_id=digest_id, watchlist=name,
                                       channel=channel_name, papers=len(matches),
                                       ranked=ranked, others=others, more=more,
                                       heartbeat=heartbeat))
                while len(planned) > composer.ahead:
                    finish_one()
        while planned:
            finish_one()
        settle()
    finally:
        if composer is not None:
            composer.close()
        if courier is not None:
            courier.shutdown(wait=True)  # a message on the wire is let finish
            if in_flight:  # the run stopped with one in flight: record how it went
                stopped_at = in_flight[0][1].id
                try:
                    settle()
                except Exception:  # the error that stopped the run is the one to tell
                    log.warning("the outcome of digest %d could not be recorded; it will be "
                                "sent again", stopped_at, exc_info=True)
        for name, open_channel in channels.items():
            try:
                open_channel.close()
            except Exception:  # closing is courtesy; what was sent is recorded already
                log.debug("channel=%s did not close cleanly", name, exc_info=True)
