"""Composing digests: in this process, or in worker processes when a run has many.

Rendering a digest (templates, highlights, CSS inlining, encoding) is most of what a
large run costs, and each digest's rendering depends only on the digest. A run with many
digests to compose hands them to worker processes, which render them while this process
scores, records and sends; a small run, or one whose channels are stand-ins, composes each
in place. Either way the orchestrator asks in order and reads the results in order, and
what it receives is the same.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from digest.config import ChannelSettings, HttpSettings, Settings, WatchlistSettings
from digest.deliver import CHANNELS, Channel, ChannelContext, Composed
from digest.errors import DigestError, describe_unexpected
from digest.models import Digest, pack_payload
from digest.render import Renderer
from digest.scoring import prepare_highlights

log = logging.getLogger(__name__)

# Below this many digests, starting workers (about half a second of imports each) costs
# more than it saves.
POOL_FROM_DIGESTS = 40
# Digests handed to the workers ahead of the one being recorded and sent: enough to keep
# them busy, few enough that finished payloads do not pile up in memory.
AHEAD_PER_WORKER = 4


class ComposeFailed(Exception):
    """A digest could not be composed, and why, in one line; travels back from a worker
    intact, whatever the channel raised."""


def workers_for(digests: int, asked: int | None) -> int:
    """Worker processes for a run with ``digests`` to compose: ``asked`` when given (0 for
    none), else one per CPU but one, when there are enough digests to pay for them."""
    if asked is not None:
        return max(0, asked)
    cpus = usable_cpus()
    if digests < POOL_FROM_DIGESTS or cpus < 2:
        return 0
    return max(1, cpus - 1)


def composes_apart(kind: str) -> bool:
    """Whether a worker may compose this kind's digests (email; the others stay here)."""
    return bool(getattr(CHANNELS.get(kind), "composes_apart", False))


def composed_apart(settings: Settings, watchlists: Iterable[WatchlistSettings]) -> int:
    """How many of the run's digests a worker could compose: one per watchlist and channel
    of a kind that composes apart; the others are composed in the run."""
    return sum(1 for watchlist in watchlists for name in watchlist.channels
               if composes_apart(settings.channels[name].kind))


def usable_cpus(quota_file: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: those it may run on, and no more than a container's
    CPU quota (cgroup v2 ``cpu.max``, e.g. "200000 100000" for 2) allows."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    try:
        quota, period = quota_file.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here
    return cpus


@dataclass
class Job:
    """A digest handed to be composed: its result once asked for."""

    channel: str
    _future: Future[Returned] | None = None
    _handed: Digest | None = None  # what the worker was given
    _here: Callable[[], Composed] | None = None  # composing it here, if the workers stop
    _result: Composed | None = None
    _error: ComposeFailed | None = None

    def result(self) -> Composed:
        if self._future is not None:
            future, self._future = self._future, None
            try:
                assert self._handed is not None
                self._result = future.result().composed(self._handed)
            except ComposeFailed as exc:
                self._error = exc
            except Exception as exc:  # the worker stopped, or the digest could not travel
                log.warning("channel=%s: the composing process failed (%s); composing "
                            "here from now on", self.channel, describe_unexpected(exc))
                assert self._here is not None
                try:
                    self._result = self._here()
                except Exception as exc:
                    log.debug("compose failed", exc_info=True)
                    self._error = _failure(exc)
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def _failure(exc: Exception) -> ComposeFailed:
    return ComposeFailed(str(exc) if isinstance(exc, DigestError) else describe_unexpected(exc))


class Composer:
    """Hands digests to their channels' ``compose``, here or in worker processes."""

    def __init__(self, *, channel: Callable[[str], Channel],
                 settings: Mapping[str, ChannelSettings],
                 http: HttpSettings, renderer: Renderer, web_base_url: str | None,
                 workers: int) -> None:
        self._channel = channel
        self._settings = settings
        self._pool: ProcessPoolExecutor | None = None
        self._workers = workers
        self.ahead = 0  # how many digests may be handed out before the first is read
        if workers > 0:
            try:
                # A fresh interpreter, not a fork: this process holds an open database and
                # threads, neither of which may be copied into a child.
                self._pool = ProcessPoolExecutor(
                    max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_worker,
                    initargs=(http, renderer.directory, web_base_url))
            except (OSError, ImportError, NotImplementedError, RuntimeError) as exc:
                # e.g. no /dev/shm for the pool's locks in a locked-down container
                log.warning("composing every digest here: no worker process can start (%s)",
                            describe_unexpected(exc))
            else:
                self.ahead = workers * AHEAD_PER_WORKER

    @property
    def workers(self) -> int:
        """Worker processes composing; 0 when every digest is composed here."""
        return self._workers if self._pool is not None else 0

    def prepare(self, terms: Iterable[str]) -> None:
        """Start the workers, each making ready to highlight ``terms`` (best effort: a
        worker that does not get to it builds what it needs when it first needs it)."""
        if self._pool is None:
            return
        terms = tuple(sorted(terms))
        try:
            for _ in range(self._workers):
                self._pool.submit(prepare_highlights, terms)
        except (BrokenProcessPool, OSError, RuntimeError) as exc:  # submit tells it later
            log.debug("workers not prepared: %s", describe_unexpected(exc))

    def submit(self, channel_name: str, digest: Digest) -> Job:
        """Start composing ``digest`` for the channel; the job's result is what the
        channel's ``compose`` returns, or a ComposeFailed saying why it did not."""
        settings = self._settings[channel_name]
        if self._pool is None or not composes_apart(settings.kind):
            job = Job(channel=channel_name)
            try:
                job._result = self._here(channel_name, digest)
            except Exception as exc:  # told when the result is asked for, as from a worker
                log.debug("compose failed", exc_info=True)
                job._error = _failure(exc)
            return job
        try:
            future = self._pool.submit(_compose, settings, digest)
        except (BrokenProcessPool, OSError, RuntimeError) as exc:  # no process could start
            log.warning("composing here: the composing processes stopped (%s)",
                        describe_unexpected(exc))
            self.close()
            return self.submit(channel_name, digest)
        return Job(channel=channel_name, _future=future, _handed=digest,
                   _here=lambda: self._instead(channel_name, digest))

    def _here(self, channel_name: str, digest: Digest) -> Composed:
        return self._channel(channel_name).compose(digest)

    def _instead(self, channel_name: str, digest: Digest) -> Composed:
        """A worker failed this digest: the rest are composed here too."""
        self.close()
        return self._here(channel_name, digest)

    def close(self) -> None:
        self.ahead = 0
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------ in a worker process

_WORKER: dict[str, Any] = {}


def _start_worker(http: HttpSettings, templates: Path, web_base_url: str | None) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the run decides what stops,
    # and its workers end when it shuts them down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER["context"] = ChannelContext(http=http, renderer=Renderer(templates),
                                        web_base_url=web_base_url)
    _WORKER["channels"] = {}


def _compose(settings: ChannelSettings, digest: Digest) -> Returned:
    channels: dict[str, tuple[ChannelSettings, Channel]] = _WORKER["channels"]
    known = channels.get(settings.name)
    if known is None or known[0] != settings:
        known = (settings, CHANNELS[settings.kind].create(settings, _WORKER["context"]))
        channels[settings.name] = known
    try:
        composed = known[1].compose(digest)
    except Exception as exc:  # sent back as one picklable kind, whatever it was
        raise _failure(exc) from None
    return Returned.of(composed, digest)


@dataclass(frozen=True)
class Returned:
    """What a worker sends back: the payload, packed for the store as well (the run then
    need not), and how the digest it carries differs from the one handed over. A channel
    that composes apart may only cut the digest's papers and count them (``matched``); the
    papers themselves need not travel twice."""

    payload: dict[str, Any]
    packed: bytes
    kept: int
    matched: int | None

    @classmethod
    def of(cls, composed: Composed, handed: Digest) -> Returned:
        carried = composed.digest
        if replace(handed, matches=handed.matches[:len(carried.matches)],
                   matched=carried.matched) != carried:
            raise ComposeFailed("composing changed more of the digest than its papers")
        return cls(payload=composed.payload, packed=pack_payload(composed.payload),
                   kept=len(carried.matches), matched=carried.matched)

    def composed(self, handed: Digest) -> Composed:
        return Composed(payload=self.payload, packed=self.packed, digest=replace(
            handed, matches=handed.matches[:self.kept], matched=self.matched))
