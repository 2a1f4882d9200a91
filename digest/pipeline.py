"""run_once: the one orchestrator. Fetch -> parse -> record -> score -> compose -> send.

Every source and every channel is tried; one failing never stops the others. Facts are
recorded after they happen: papers once stored, a digest before it is sent, a delivery
once the channel accepted it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from digest.config import ChannelSettings, Settings, WatchlistSettings
from digest.deliver import CHANNELS, Channel, ChannelContext, Outbox
from digest.errors import ConfigError, DeliveryError, DigestError
from digest.http import Fetcher, is_local, local_path
from digest.models import (
    DeliveryReport,
    Digest,
    RunReport,
    SourceReport,
    WatchlistReport,
    parse_arxiv_id,
)
from digest.render import Renderer
from digest.scoring import Matcher, rank
from digest.similarity import SimilarityIndex
from digest.sources import build_source
from digest.store import OpenDigest, Store

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


def default_channel(settings: Settings, seams: Seams) -> ChannelFactory:
    context = ChannelContext(http=settings.http, renderer=seams.renderer,
                             transport=seams.transport, smtp_factory=seams.smtp_factory,
                             sleep=seams.sleep)
    return lambda channel: CHANNELS[channel.kind].create(channel, context)


def build_matcher(
    watchlists: Iterable[WatchlistSettings], store: Store, progress: Progress = lambda line: None
) -> Matcher:
    """Compile the watchlists; give 'similar_to' watchlists the store's papers and seeds."""
    watchlists = list(watchlists)
    similar = [w for w in watchlists if w.similar_to]
    if not similar:
        return Matcher(watchlists)
    progress(f"indexing {store.papers_count()} stored papers for similar_to")
    index = SimilarityIndex(store.texts())
    seeds: dict[str, list[str]] = {}
    for watchlist in similar:
        texts = []
        for seed in watchlist.similar_to:
            parsed = parse_arxiv_id(seed)
            if parsed and len(seed) < 100:  # an id or an arXiv URL, not a text
                paper = store.paper(f"arxiv:{parsed[0]}")
                if paper is None:
                    log.warning("watchlist=%s seed %s is not in the store yet; skipped",
                                watchlist.name, seed)
                    continue
                texts.append(f"{paper.title}. {paper.abstract}")
            else:
                texts.append(seed)
        seeds[watchlist.name] = texts
    return Matcher(watchlists, similarity=index, seeds=seeds)


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


def preflight(
    settings: Settings, *, channels: Iterable[str] | None = None, secrets: bool = True
) -> list[tuple[str, str]]:
    """Problems that would stop a run, found before anything is fetched or sent."""
    problems = []
    wanted = set(settings.channels if channels is None else channels)
    if secrets:
        problems += [p for p in settings.missing_secrets() if p[0].split(".", 1)[1] in wanted]
    directory = settings.store.path.parent
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not os.access(existing, os.W_OK):
        problems.append(("store.path", f"cannot create {settings.store.path}: "
                                       f"{existing or directory} is not a writable folder"))
    for name, channel in settings.channels.items():
        if channel.ca_file and not channel.ca_file.is_file():
            problems.append((f"channels.{name}.ca_file", f"no such file: {channel.ca_file}"))
    for i, source in enumerate(settings.sources):
        if source.enabled and source.url and is_local(source.url):
            path = local_path(source.url)
            if not path.is_file():
                problems.append((f"sources[{i}].url", f"no such file: {path}"))
    return problems


def run_once(
    settings: Settings,
    *,
    outbox: Path | None = None,
    watchlists: Iterable[str] | None = None,
    seams: Seams | None = None,
    progress: Progress = lambda line: None,
) -> RunReport:
    """Run the whole job once: ingest every source, then deliver the due digests."""
    seams = seams or Seams()
    selected = [w for w in settings.watchlists if watchlists is None or w.name in set(watchlists)]
    channel_names = sorted({c for w in selected for c in w.channels})
    problems = preflight(settings, channels=channel_names, secrets=outbox is None)
    if problems:
        raise ConfigError(problems, path=str(settings.path))
    report = RunReport(started_at=seams.now())
    with Store.open(settings.store.path) as store, store.run_lock():
        with Fetcher(settings.http, transport=seams.transport, sleep=seams.sleep) as fetcher:
            for source_settings in settings.sources:
                if source_settings.enabled:
                    report.sources.append(_ingest(store, fetcher, source_settings, seams,
                                                  progress))
        _deliver(settings, store, selected, channel_names, seams, outbox, report, progress)
    report.finished_at = seams.now()
    return report


def _ingest(store: Store, fetcher: Fetcher, source_settings: Any, seams: Seams,
            progress: Progress) -> SourceReport:
    name = source_settings.name
    result = SourceReport(name=name)
    progress(f"fetching {name} ({source_settings.kind})")
    try:
        source = build_source(source_settings)
        batch = source.fetch(fetcher, store.source_state(name))
        result.read = len(batch.papers)
        result.skipped = batch.skipped
        result.not_modified = batch.not_modified
        result.new, result.known = store.record_batch(name, batch.papers, batch.state,
                                                      seams.now())
    except DigestError as exc:
        result.error = str(exc)
        log.warning("source=%s failed: %s", name, exc)
        store.record_source_error(name, str(exc), seams.now())
    return result


def _deliver(
    settings: Settings,
    store: Store,
    selected: list[Any],
    channel_names: list[str],
    seams: Seams,
    outbox_dir: Path | None,
    report: RunReport,
    progress: Progress,
) -> None:
    factory = seams.channel_factory or default_channel(settings, seams)
    channels: dict[str, Channel] = {}
    outbox = Outbox(outbox_dir) if outbox_dir is not None else None
    broken: dict[str, str] = {}  # channel -> error that stopped it for this run

    def channel(name: str) -> Channel:
        if name not in channels:
            channels[name] = factory(settings.channels[name])
        return channels[name]

    def send(open_digest: OpenDigest, resent: bool) -> None:
        entry = DeliveryReport(watchlist=open_digest.watchlist, channel=open_digest.channel,
                               papers=len(open_digest.paper_keys), status="pending",
                               digest_id=open_digest.id, resent=resent)
        report.deliveries.append(entry)
        if open_digest.channel in broken:
            entry.status, entry.error = "failed_temporary", broken[open_digest.channel]
            return
        try:
            if outbox is not None:
                paths = outbox.write(digest_id=open_digest.id, channel=open_digest.channel,
                                     watchlist=open_digest.watchlist,
                                     payload=open_digest.payload)
                entry.location = ", ".join(str(p) for p in paths)
                store.mark_sent(open_digest.id, seams.now())
                entry.status = "written"
                return
            channel(open_digest.channel).send(
                open_digest.payload, parts_sent=open_digest.parts_sent,
                on_part_sent=lambda n: store.mark_part_sent(open_digest.id, n, seams.now()))
        except DeliveryError as exc:
            entry.status = "failed_permanent" if exc.permanent else "failed_temporary"
            entry.error = str(exc)
            store.mark_failed(open_digest.id, str(exc), permanent=exc.permanent, now=seams.now())
            if not exc.permanent:
                broken[open_digest.channel] = f"not tried: {exc}"
            log.warning("channel=%s digest=%d failed: %s", open_digest.channel, open_digest.id,
                        exc)
            return
        store.mark_sent(open_digest.id, seams.now())
        entry.status = "sent"
        progress(f"sent {open_digest.watchlist} to {open_digest.channel} "
                 f"({entry.papers} papers)")

    try:
        # Digests recorded by an earlier run and not yet accepted go first, unchanged.
        for open_digest in store.open_digests(channel_names):
            progress(f"resending digest {open_digest.id} ({open_digest.watchlist} to "
                     f"{open_digest.channel}), recorded earlier")
            send(open_digest, resent=True)
        since = seams.now() - timedelta(days=settings.store.lookback_days)
        matcher = build_matcher(selected, store, progress)
        # Every recent paper is scored once against every watchlist; each channel then
        # takes the matches it has not had or queued yet.
        recent = store.recent(since)
        scored = matcher.match_many(recent, now=seams.now())
        notes = source_notes(settings, store)
        for watchlist_settings in selected:
            name = watchlist_settings.name
            summary = WatchlistReport(name=name, recent=len(recent), matched=len(scored[name]))
            report.watchlists.append(summary)
            for channel_name in watchlist_settings.channels:
                open_keys = store.candidate_keys(channel_name, since)
                matches = rank(m for m in scored[name] if m.paper.key in open_keys)
                summary.unsent = max(summary.unsent, len(matches))
                matches = matches[: watchlist_settings.max_papers]
                if not matches:
                    continue
                try:
                    composed = channel(channel_name).compose(Digest(
                        watchlist=name, channel=channel_name,
                        matches=tuple(matches), created_at=seams.now(), notes=notes))
                except DigestError as exc:
                    report.deliveries.append(DeliveryReport(
                        watchlist=name, channel=channel_name, papers=len(matches),
                        status="failed_temporary", error=f"cannot compose: {exc}"))
                    continue
                digest_id = store.create_digest(composed.digest, composed.payload, seams.now())
                keys = tuple(m.paper.key for m in composed.digest.matches)
                send(OpenDigest(id=digest_id, channel=channel_name, watchlist=name,
                                status="pending", payload=composed.payload, parts_sent=0,
                                attempts=0, paper_keys=keys), resent=False)
    finally:
        for open_channel in channels.values():
            open_channel.close()
