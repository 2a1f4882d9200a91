"""One place that fetches bytes: user agent, timeouts, per-host pacing, bounded retries.

Local files (a path or a file: URL) are read through the same call, so sample data and
tests follow the same code path as live feeds.
"""

from __future__ import annotations

import email.utils
import io
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TypeVar
from urllib.parse import unquote, urlsplit

import httpx

from digest.config import HttpSettings
from digest.errors import FetchError

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Every arXiv host shares one pacer: arXiv asks for one request per 3 s across API and RSS.
ARXIV_HOSTS = ("arxiv.org",)
# A body up to this size stays in memory; a larger one goes on to a temporary file, so a
# 100 MB listing is never held whole (nor twice, as chunks and joined).
SPOOL_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Fetched:
    """One answer. ``body`` is a file positioned at the start (empty for 304); close the
    answer, or use it in a ``with``, once read."""

    url: str
    status: int
    body: IO[bytes] = field(default_factory=io.BytesIO, compare=False, repr=False)
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def content(self) -> bytes:
        """The whole body as bytes, for sources that read their answer at once."""
        self.body.seek(0)
        return self.body.read()

    def close(self) -> None:
        self.body.close()

    def __enter__(self) -> Fetched:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# A body must arrive whole within this many timeout_seconds (2 minutes by default).
BODY_TIMEOUTS = 4


class Mark:
    """When the latest request of a group started; pacers that share one keep their
    interval between them all."""

    def __init__(self) -> None:
        self.last: float | None = None
        self.lock = threading.Lock()


# arXiv's one request per 3 seconds holds for the whole process: each run of `serve` has
# a fetcher of its own, and runs can follow or overlap one another.
ARXIV_MARK = Mark()


class Pacer:
    """Keeps at least ``interval`` seconds between the starts of two requests (of all the
    pacers sharing its ``mark``)."""

    def __init__(
        self,
        interval: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        mark: Mark | None = None,
    ) -> None:
        self.interval = interval
        self._clock = clock
        self._sleep = sleep
        self._mark = mark or Mark()

    def wait(self) -> None:
        with self._mark.lock:
            now = self._clock()
            if self._mark.last is not None:
                delay = self._mark.last + self.interval - now
                if delay > 0:
                    self._sleep(delay)
                    now = self._clock()
            self._mark.last = now


def make_client(
    settings: HttpSettings, *, transport: httpx.BaseTransport | None = None,
    follow_redirects: bool = True,
) -> httpx.Client:
    """The one httpx client factory: versioned user agent, timeouts, one connection.

    Webhooks do not follow redirects: a redirected POST arrives as a GET, without the
    message, and would count as sent.
    """
    return httpx.Client(
        headers={"User-Agent": settings.user_agent},
        timeout=httpx.Timeout(settings.timeout_seconds),
        follow_redirects=follow_redirects,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        transport=transport,
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retry_wait(settings: HttpSettings, attempt: int, asked: float | None) -> float:
    """Seconds before the next try: what the server asked for, else doubling backoff.

    A caller gives up until the next run when this exceeds max_retry_after_seconds.
    """
    return asked if asked is not None else settings.retry_backoff_seconds * (2 ** (attempt - 1))


class TryAgain(Exception):
    """One attempt failed in a way another attempt may not: a timeout, a 429, a 503."""

    def __init__(self, problem: str, *, wait: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.wait = wait  # what the server asked for, if it said
        self.status = status


class GaveUp(Exception):
    """Every attempt failed, or the server asked for a longer wait than allowed."""

    def __init__(self, problem: str, *, status: int | None, attempts: int) -> None:
        super().__init__(problem)
        self.problem = problem
        self.status = status
        self.attempts = attempts


def with_retries(
    attempt: Callable[[int], T],
    *,
    settings: HttpSettings,
    sleep: Callable[[float], None],
    pacer: Pacer | None = None,
    what: str = "",
) -> T:
    """Call ``attempt(n)`` until it returns, for fetching and for every webhook alike.

    ``attempt`` raises TryAgain for a failure worth another try; anything else it raises
    goes straight to the caller. Waits honour what the server asked (Retry-After), else
    double from ``retry_backoff_seconds``; a wait over ``max_retry_after_seconds`` gives up
    until the next run rather than hold the run. Raises GaveUp with the last problem.
    """
    attempts = settings.max_retries + 1
    for number in range(1, attempts + 1):
        if pacer is not None:
            pacer.wait()
        try:
            return attempt(number)
        except TryAgain as failure:
            last = failure
        if number == attempts:
            break
        wait = retry_wait(settings, number, last.wait)
        if wait > settings.max_retry_after_seconds:
            why = (f"server asked to wait {wait:g} s" if last.wait is not None else
                   f"after {number} tries the next would wait {wait:g} s, past "
                   f"max_retry_after_seconds")
            raise GaveUp(f"{last.problem} ({why}; giving up until next run)",
                         status=last.status, attempts=number)
        log.info("retrying %s attempt=%d problem=%r wait=%.1fs", what, number, last.problem,
                 wait)
        sleep(wait)
    raise GaveUp(last.problem, status=last.status, attempts=attempts)


def is_local(location: str) -> bool:
    scheme = urlsplit(location).scheme.lower()
    return scheme == "file" or scheme == "" or (len(scheme) == 1 and location[1:2] == ":")


def local_path(location: str) -> Path:
    parts = urlsplit(location)
    if parts.scheme.lower() == "file":
        # file:relative/path and file:///absolute/path are both accepted
        return Path(unquote(parts.netloc + parts.path))
    try:
        return Path(location).expanduser()  # ~/feeds/lab.xml, as a shell would read it
    except RuntimeError:  # ~name of no known user: 'check' says so; read it as written
        return Path(location)


class Fetcher:
    """Fetches URLs and local files politely; translates every failure into FetchError."""

    def __init__(
        self,
        settings: HttpSettings,
        *,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.client = make_client(settings, transport=transport)
        self._clock = clock
        self._sleep = sleep or time.sleep
        self._pacers: dict[str, Pacer] = {}
        self.requests = 0

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pacer_for(self, host: str) -> Pacer:
        host = host.lower()
        mark = None
        if any(host == h or host.endswith("." + h) for h in ARXIV_HOSTS):
            group, interval = "arxiv", self.settings.arxiv_interval_seconds
            # Shared with every fetcher of this process that keeps real time.
            mark = ARXIV_MARK if self._clock is time.monotonic else None
        else:
            group, interval = host, self.settings.interval_seconds
        if group not in self._pacers:
            self._pacers[group] = Pacer(interval, clock=self._clock, sleep=self._sleep,
                                        mark=mark)
        return self._pacers[group]

    def get(
        self,
        location: str,
        *,
        params: dict[str, str | int] | None = None,
        etag: str | None = None,
        last_modified: str | None = None,
        source: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Fetched:
        """``headers`` are the source's own (an API key, say); they never reach a log."""
        if is_local(location):
            return self._read_local(location, source)
        return self._get_http(location, params, etag, last_modified, source, headers or {})

    def _read_local(self, location: str, source: str | None) -> Fetched:
        path = local_path(location)
        try:
            size = path.stat().st_size
            if size > self.settings.max_body_bytes:
                raise FetchError(
                    f"{path} is {size} bytes, over the {self.settings.max_body_mb:g} MB limit",
                    source=source, url=location)
            # A small file is read at once (nothing left open); a large one is read from
            # where it lies rather than copied.
            body: IO[bytes] = io.BytesIO(path.read_bytes()) if size <= SPOOL_BYTES else \
                path.open("rb")
            return Fetched(url=location, status=200, body=body)
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc.strerror or exc}",
                             source=source, url=location) from exc

    def _get_http(
        self,
        url: str,
        params: dict[str, str | int] | None,
        etag: str | None,
        last_modified: str | None,
        source: str | None,
        extra_headers: dict[str, str],
    ) -> Fetched:
        headers = dict(extra_headers)
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        pacer = self.pacer_for(httpx.URL(url).host)

        def attempt(number: int) -> Fetched:
            self.requests += 1
            try:
                with self.client.stream("GET", url, params=params, headers=headers) as response:
                    log.info("GET %s -> %d", response.url, response.status_code)
                    status = response.status_code
                    if status in (200, 203):
                        body = self._read_limited(response, url, source)
                        return Fetched(
                            url=str(response.url),
                            status=200,
                            body=body,
                            content_type=response.headers.get("Content-Type"),
                            etag=response.headers.get("ETag"),
                            last_modified=response.headers.get("Last-Modified"),
                        )
                    if status == 304:
                        return Fetched(url=str(response.url), status=304, etag=etag,
                                       last_modified=last_modified)
                    problem = f"HTTP {status} {response.reason_phrase}"
                    if status not in RETRY_STATUSES:
                        raise FetchError(problem, source=source, url=url, status=status,
                                         attempts=number)
                    raise TryAgain(problem, status=status,
                                   wait=parse_retry_after(response.headers.get("Retry-After")))
            except httpx.TimeoutException as exc:
                raise TryAgain(f"timed out after {self.settings.timeout_seconds:g} s "
                               f"({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise TryAgain(f"{type(exc).__name__}: {exc}") from exc
            except httpx.InvalidURL as exc:
                raise FetchError(f"invalid URL: {exc}", source=source, url=url) from exc
            # Neither gets better by asking again within the run; the next run tries again.
            except httpx.DecodingError as exc:
                raise FetchError(f"cannot decode the response body as its Content-Encoding "
                                 f"says ({exc})", source=source, url=url,
                                 attempts=number) from exc
            except httpx.TooManyRedirects as exc:
                raise FetchError(f"too many redirects (more than {self.client.max_redirects}), "
                                 "likely a redirect loop", source=source, url=url,
                                 attempts=number) from exc

        try:
            return with_retries(attempt, settings=self.settings, sleep=self._sleep,
                                pacer=pacer, what=f"url={url}")
        except GaveUp as exc:
            raise FetchError(exc.problem, source=source, url=url, status=exc.status,
                             attempts=exc.attempts) from None

    def _read_limited(self, response: httpx.Response, url: str,
                      source: str | None) -> IO[bytes]:
        """The body, written as it arrives to a file that stays in memory while small."""
        limit = self.settings.max_body_bytes
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise FetchError(
                f"response is {declared} bytes, over the {self.settings.max_body_mb:g} MB limit",
                source=source, url=url, status=response.status_code)
        body = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        # timeout_seconds bounds each wait for the next bytes; a server that sends a byte
        # now and then would keep the run for ever, so the whole body has a bound too.
        allowed = BODY_TIMEOUTS * self.settings.timeout_seconds
        deadline = time.monotonic() + allowed
        try:
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise FetchError(
                        f"response exceeds the {self.settings.max_body_mb:g} MB limit; cut off",
                        source=source, url=url, status=response.status_code)
                if time.monotonic() > deadline:  # asking again would take as long
                    raise FetchError(f"the body took over {allowed:g} s to arrive "
                                     f"({BODY_TIMEOUTS} x timeout_seconds); cut off at "
                                     f"{size} bytes", source=source, url=url,
                                     status=response.status_code)
                body.write(chunk)
            body.seek(0)
        except BaseException:  # a failed attempt leaves no file behind, whatever stopped it
            body.close()
            raise
        return body
