"""Shared fixtures: real payload files, config files, and real servers on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "fixtures" / "real"
SAMPLES = ROOT / "config" / "sample-data"


@pytest.fixture(autouse=True)
def _arxiv_pacing_of_its_own(monkeypatch) -> None:
    """arXiv's pacing is shared by the whole process; each test starts it afresh."""
    import digest.http

    monkeypatch.setattr(digest.http, "ARXIV_MARK", digest.http.Mark())


@pytest.fixture
def real() -> Callable[[str], bytes]:
    """Read a captured real payload; skip when the shared fixtures are not beside the repo."""

    def read(name: str) -> bytes:
        path = REAL / name
        if not path.exists():
            pytest.skip(f"real fixture {name} not available at {REAL}")
        return path.read_bytes()

    return read


def write_config(tmp_path: Path, body: str, *, store: bool = True) -> Path:
    """A config file in tmp_path; the store goes there too unless the body sets one."""
    head = "version = 1\n"
    if store and "[store]" not in body:
        head += f'[store]\npath = "{tmp_path / "digest.db"}"\n'
    path = tmp_path / "digest.toml"
    path.write_text(head + body, encoding="utf-8")
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Callable[[str], Path]:
    return lambda body: write_config(tmp_path, body)


# ------------------------------------------------------------------ a real HTTP server


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    sent: int = 0  # bytes of the body written before the client went away


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class LocalServer:
    """An HTTP server on 127.0.0.1 serving canned routes and recording every request.

    A route may hold a list of responses: they are served in turn, the last one repeating.
    """

    def __init__(self) -> None:
        self.routes: dict[str, list[Route]] = {}
        self.requests: list[Recorded] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = self.path.split("?", 1)[0]
                server.requests.append(Recorded(self.command, self.path, dict(self.headers),
                                                body))
                queue = server.routes.get(path)
                if not queue:
                    route = Route(status=404, body=b"no such route")
                else:
                    route = queue.pop(0) if len(queue) > 1 else queue[0]
                if route.delay:
                    threading.Event().wait(route.delay)
                self.send_response(route.status)
                for key, value in route.headers.items():
                    self.send_header(key, value)
                streamed = "X-No-Length" in route.headers
                if not streamed:
                    self.send_header("Content-Length", str(len(route.body)))
                else:
                    self.close_connection = True
                self.end_headers()
                try:
                    for start in range(0, len(route.body), 65536):
                        self.wfile.write(route.body[start:start + 65536])
                        route.sent += min(65536, len(route.body) - start)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading: what a size limit should do

            do_GET = _serve
            do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def route(self, path: str, *responses: Route) -> str:
        self.routes[path] = list(responses)
        return self.url + path

    def hits(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.split("?", 1)[0] == path]


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    server = LocalServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


# ------------------------------------------------------------------ a real SMTP server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SmtpInbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server() -> Iterator[tuple[SmtpInbox, int]]:
    from aiosmtpd.controller import Controller

    inbox = SmtpInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


# ------------------------------------------------------------------ a child's output


class Lines:
    """A child process's output, read line by line in the background, so that a test can
    wait for a line with a deadline instead of blocking on a pipe."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, wanted: Callable[[str], bool], timeout: float) -> str | None:
        """The first next line that is ``wanted``; None when the output ended first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                raise AssertionError(f"no such line within {timeout} s: {self.lines}") from None
            if line is None:
                return None
            self.lines.append(line)
            if wanted(line):
                return line

    def rest(self, timeout: float = 10) -> list[str]:
        """Every line until the output ends."""
        start = len(self.lines)
        while (line := self._queue.get(timeout=timeout)) is not None:
            self.lines.append(line)
        return self.lines[start:]


def html_bytes(message: EmailMessage) -> int:
    """The size of a received message's HTML part as it travelled (quoted-printable, CRLF
    line ends): what Gmail measures, and what composing keeps under MAX_HTML_BYTES."""
    part = message.get_body(("html",))
    if part is None:
        return 0
    body = str(part.get_payload()).replace("\r\n", "\n")
    return len(body.encode()) + body.count("\n")
