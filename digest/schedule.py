"""APScheduler wiring only: each watchlist's digest fires on its own cron schedule.

One worker thread runs the jobs, so two passes never overlap inside ``serve``; the store's
run lock keeps a cron-started ``run --once`` from overlapping with it too.
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
) -> None:
    """Block until SIGINT/SIGTERM (or ``stop``), then finish the run in progress and return."""
    stop = stop or threading.Event()
    if install_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    scheduler = build_scheduler(settings, run)
    scheduler.start()
    try:
        for job in scheduler.get_jobs():
            when: datetime | None = job.next_run_time
            announce(f"scheduled [{job.name}] with '{job.id}', next at "
                     f"{when.isoformat() if when else 'never'}")
        announce("serving; press Ctrl-C to stop")
        while not stop.wait(timeout=1.0):
            pass
        announce("stopping: waiting for the run in progress, if any")
    finally:
        scheduler.shutdown(wait=True)
    announce("stopped")
