"""APScheduler wiring only: each watchlist's digest fires on its own cron schedule.

One worker thread runs the jobs, so two passes never overlap inside ``serve``; the store's
run lock keeps a cron-started ``run --once`` from overlapping with it too. Stopping is
bounded: the pass in progress gets a few seconds, which its cut-short waits make enough.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from digest.config import Settings

log = logging.getLogger(__name__)

# A container is killed 10 s after SIGTERM by default; leave time to exit before that.
STOP_GRACE_SECONDS = 8.0
FIRST_PASS = "first pass"


def schedule_groups(settings: Settings) -> dict[tuple[str, str], list[str]]:
    """Watchlists grouped by (cron, timezone), so one pass serves each group."""
    groups: dict[tuple[str, str], list[str]] = {}
    for watchlist in settings.watchlists:
        key = (watchlist.schedule or settings.schedule.cron,
               watchlist.timezone or settings.schedule.timezone)
        groups.setdefault(key, []).append(watchlist.name)
    return groups


def build_scheduler(
    settings: Settings, run: Callable[[list[str]], object]
) -> BackgroundScheduler:
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
        timezone="UTC",
    )
    for (cron, timezone), names in schedule_groups(settings).items():
        scheduler.add_job(run, CronTrigger.from_crontab(cron, timezone=timezone),
                          args=[names], id=f"{cron} {timezone}", name=", ".join(names))
    return scheduler


def serve(
    settings: Settings,
    run: Callable[[list[str]], object],
    *,
    stop: threading.Event | None = None,
    announce: Callable[[str], None] = print,
    install_signals: bool = True,
    first_pass: bool = False,
    grace: float = STOP_GRACE_SECONDS,
) -> bool:
    """Block until SIGINT/SIGTERM (or ``stop``), then give the pass in progress ``grace``
    seconds to end and return whether it did.

    ``run`` should honour ``stop`` itself (cut its waits short); passes not yet started
    when ``stop`` is set are skipped. ``first_pass`` runs every watchlist once at start.
    """
    stop = stop or threading.Event()
    if install_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    passing = threading.Lock()  # held while a pass runs

    def guarded(names: list[str]) -> None:
        with passing:
            if not stop.is_set():
                run(names)

    scheduler = build_scheduler(settings, guarded)
    names = [w.name for w in settings.watchlists]
    if first_pass:
        scheduler.add_job(guarded, args=[names], id=FIRST_PASS, name=", ".join(names))
    scheduler.start()
    try:
        for job in scheduler.get_jobs():
            if job.id == FIRST_PASS:
                continue
            when: datetime | None = job.next_run_time
            announce(f"scheduled [{job.name}] with '{job.id}', next at "
                     f"{when.isoformat() if when else 'never'}")
        if first_pass:
            announce(f"first pass now for {', '.join(names)}")
        announce("serving; press Ctrl-C to stop")
        while not stop.wait(timeout=1.0):
            pass
        announce("stopping: the run in progress, if any, ends at its next step or wait")
    finally:
        scheduler.shutdown(wait=False)
        finished = passing.acquire(timeout=grace)
    if not finished:
        announce(f"stopped without waiting longer than {grace:g} s for the run in progress; "
                 "what it recorded is kept and the next run goes on from there")
        return False
    passing.release()
    announce("stopped")
    return True
