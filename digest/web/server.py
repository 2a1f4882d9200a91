"""Runs the web app under uvicorn: in the foreground for `paper-digest web`, or in a thread
beside the scheduler for `serve`.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import uvicorn
from starlette.applications import Starlette

from digest.config import Settings
from digest.errors import DigestError
from digest.web.app import create_app

log = logging.getLogger(__name__)

STARTUP_SECONDS = 10.0  # how long start_in_background waits for the server to listen
STOP_SECONDS = 2.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _config(app: Starlette, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http="h11",  # ships with uvicorn, so the request limits below hold everywhere
        h11_max_incomplete_event_size=16 * 1024,  # request line plus headers; more is a 400
        ws="none",
        lifespan="off",
        # Access logs would write every token, and the recipient inside it, to disk.
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=False,  # nothing here depends on the client's address or scheme
        timeout_keep_alive=5,
        timeout_graceful_shutdown=1,
        limit_concurrency=100,
    )


def _listen(host: str, port: int) -> socket.socket:
    """Bind here rather than in uvicorn, so a busy port is an error with a reason, not an exit."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise DigestError(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the backlog until uvicorn takes over
    except OSError as exc:
        sock.close()
        raise DigestError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(settings: Settings, *, host: str | None = None, port: int | None = None,
        announce: Callable[[str], None] = print) -> None:
    """Serve until SIGINT or SIGTERM. Raises ConfigError without base_url or key."""
    app = create_app(settings)
    host = host or settings.web.host
    sock = _listen(host, settings.web.port if port is None else port)
    announce(f"serving rating links for {settings.web.base_url} on {_address(sock)}")
    server = uvicorn.Server(_config(app, host, sock.getsockname()[1]))

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again for the
    # handler it found. This one makes that a clean exit, as `serve` has, and also stops
    # the server when a signal comes before uvicorn has set up its own.
    def stop(*_: object) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in _STOP_SIGNALS}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    announce("stopped")


@dataclass
class BackgroundServer:
    """The web app running in a thread of this process."""

    server: uvicorn.Server
    thread: threading.Thread
    url: str

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Stop listening, let requests in flight finish, and wait for the thread."""
        self.server.should_exit = True
        self.thread.join(timeout)


def start_in_background(settings: Settings, *, now: Callable[[], datetime] | None = None
                        ) -> BackgroundServer:
    """Start the web app on web.host and web.port in a daemon thread; ``stop()`` ends it.

    Returns once the server listens. Raises ConfigError without base_url or key, and
    DigestError when the address cannot be had.
    """
    app = create_app(settings, now=now or (lambda: datetime.now(UTC)))
    sock = _listen(settings.web.host, settings.web.port)
    server = uvicorn.Server(_config(app, settings.web.host, sock.getsockname()[1]))
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            failure.append(exc)
        finally:
            sock.close()

    url = _address(sock)
    thread = threading.Thread(target=serve, name="paper-digest-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_SECONDS
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        server.should_exit = True
        thread.join(STOP_SECONDS)
        reason = f": {failure[0]}" if failure else ""
        raise DigestError(f"the web app did not start on {url}{reason}")
    handle = BackgroundServer(server=server, thread=thread, url=url)
    log.info("web app serving rating links on %s", handle.url)
    return handle
