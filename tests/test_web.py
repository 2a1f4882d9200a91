"""The web app that answers rating links, run for real under uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import ROOT, free_port

from digest.config import Settings, parse_settings
from digest.errors import ConfigError, DigestError
from digest.feedback import LinkSigner, RatingLink, rating_urls
from digest.models import Paper
from digest.sources.base import SourceState
from digest.store import Store
from digest.web.app import create_app
from digest.web.guard import Guard
from digest.web.server import BackgroundServer, start_in_background

NOW = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
KEY = "k" * 16 + "0123456789abcdef0123"  # 36 characters: long enough for check
OTHER_KEY = "z" * 40
PAPER = Paper(key="arxiv:2611.04001", title="Sparse <LoRA> & friends", url="",
              arxiv_id="2611.04001", abstract="We study low-rank adapters.")
WATCHLIST = "efficient-llms"

pytestmark = pytest.mark.integration


def config_text(store: Path, *, port: int, base_url: str | None = "https://papers.example.org",
                max_body_kb: int = 16) -> str:
    web = f'base_url = "{base_url}"\n' if base_url else ""
    return f"""version = 1
[store]
path = "{store}"
[web]
{web}host = "127.0.0.1"
port = {port}
max_body_kb = {max_body_kb}
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[watchlists]]
name = "{WATCHLIST}"
keywords = ["LoRA"]
channels = ["mail"]
[channels.mail]
kind = "email"
from = "digest@example.org"
to = ["reader@example.org"]
"""


def make_settings(tmp_path: Path, *, key: str | None = KEY, **options: object) -> Settings:
    port = int(options.pop("port", None) or free_port())  # type: ignore[call-overload]
    text = config_text(tmp_path / "digest.db", port=port, **options)  # type: ignore[arg-type]
    env = {"DIGEST_WEB_SECRET": key} if key else {}
    return parse_settings(text, path=tmp_path / "digest.toml", env=env)


def ratings(settings: Settings) -> list[tuple[str, str, str, str, str]]:
    with Store.open(settings.store.path) as store:
        return [tuple(row) for row in store.db.execute(
            "SELECT watchlist, paper_key, recipient, action, origin FROM ratings")]


def events(settings: Settings) -> int:
    with Store.open(settings.store.path) as store:
        return int(store.db.execute("SELECT count(*) FROM rating_events").fetchone()[0])


def link(action: str = "like", *, key: str = KEY, watchlist: str = WATCHLIST,
         paper_key: str = PAPER.key, recipient: str = "reader@example.org") -> str:
    """The path of a rating link, as a digest would carry it."""
    urls = rating_urls(LinkSigner(key), "https://papers.example.org", watchlist=watchlist,
                       paper_key=paper_key, recipient=recipient)
    return urlsplit(urls[action]).path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = make_settings(tmp_path)
    with Store.open(settings.store.path) as store:
        store.record_batch("arxiv-cs", [PAPER], SourceState(), NOW)
    return settings


@pytest.fixture
def web(settings: Settings) -> Iterator[tuple[BackgroundServer, httpx.Client]]:
    server = start_in_background(settings, now=lambda: NOW)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            yield server, client
    finally:
        server.stop()


@pytest.fixture
def client(web: tuple[BackgroundServer, httpx.Client]) -> httpx.Client:
    return web[1]


def undo_path(page: str, rating_path: str) -> str:
    """The path the page's Undo form posts to, resolved as a browser would."""
    marker = 'action="'
    start = page.index(marker) + len(marker)
    relative = page[start:page.index('"', start)]
    return str(httpx.URL("http://x" + rating_path).join(relative).path)


# ------------------------------------------------------------------ the one-click path


def test_following_a_like_link_shows_the_paper_and_records_only_on_post(settings, client):
    path = link("like")
    shown = client.get(path)
    assert shown.status_code == 200
    assert "Sparse &lt;LoRA&gt; &amp; friends" in shown.text  # escaped feed text
    assert 'href="https://arxiv.org/abs/2611.04001"' in shown.text
    assert WATCHLIST in shown.text and "more like this" in shown.text
    assert '<form id="record" method="post">' in shown.text
    assert ratings(settings) == []  # a scanner's GET records nothing

    recorded = client.post(path)
    assert recorded.status_code == 200
    assert f"Recorded: more like this for watchlist {WATCHLIST}" in recorded.text
    assert ratings(settings) == [(WATCHLIST, PAPER.key, "reader@example.org", "like", "web")]
    # what the next digests make of it: this watchlist has rules of its own
    assert (f'<p id="next">{WATCHLIST} will not be sent this paper again. For {WATCHLIST}, '
            "from 3 likes, with a paper to set them against (one disliked, or 20 unrated ones "
            "seen lately), its ranking learns from them.</p>") in recorded.text


def test_the_page_posts_itself_with_a_nonced_script(client):
    shown = client.get(link("like"))
    policy = shown.headers["content-security-policy"]
    nonce = policy.split("'nonce-", 1)[1].split("'", 1)[0]
    assert f'<script nonce="{nonce}">' in shown.text
    assert 'getElementById("record").submit()' in shown.text
    assert "unsafe-inline" not in policy
    again = client.get(link("like")).headers["content-security-policy"]
    assert again != policy  # a fresh nonce for each answer


def test_clicking_twice_records_nothing_new(settings, client):
    path = link("dislike")
    first = client.post(path).text
    assert "Recorded: not for me" in first
    assert f"{WATCHLIST} will not be sent this paper again." in first
    second = client.post(path)
    assert second.status_code == 200
    assert f"Already recorded: not for me for watchlist {WATCHLIST}" in second.text
    assert 'id="next"' not in second.text  # nothing new was recorded, nothing to say
    # The rating in force can still be taken back from here: the first click's undo.
    first_undo = re.search(r'<form method="post" action="([^"]+)"', first)
    again_undo = re.search(r'<form method="post" action="([^"]+)"', second.text)
    assert first_undo and again_undo and first_undo[1] == again_undo[1]
    assert events(settings) == 1
    assert len(ratings(settings)) == 1


def test_undo_removes_a_first_rating_and_says_what_is_in_force(settings, client):
    path = link("save")
    recorded = client.post(path)
    assert ratings(settings)[0][3] == "save"
    undone = client.post(undo_path(recorded.text, path))
    assert undone.status_code == 200
    assert f"In force now for watchlist <strong>{WATCHLIST}</strong>: no rating." in undone.text
    assert f'<p id="next">This paper is unrated for {WATCHLIST} again, as if never rated.</p>' \
        in undone.text
    assert ratings(settings) == []
    twice = client.post(undo_path(recorded.text, path))
    assert "Nothing to undo" in twice.text and ratings(settings) == []


def test_undo_of_a_changed_mind_puts_the_earlier_rating_back(settings, client):
    client.post(link("like"))
    changed = client.post(link("dislike"))
    assert ("It replaces the earlier rating of this paper for the watchlist: more like "
            "this.") in changed.text
    undone = client.post(undo_path(changed.text, link("dislike")))
    assert "In force now for watchlist <strong>efficient-llms</strong>: more like this." in (
        undone.text)
    assert "For efficient-llms, from 3 likes" in undone.text  # what the like in force does
    assert ratings(settings)[0][3] == "like"


def test_links_work_under_the_base_urls_path_whether_a_proxy_strips_it_or_not(tmp_path):
    settings = make_settings(tmp_path, base_url="https://papers.example.org/digest")
    with Store.open(settings.store.path) as store:
        store.record_batch("arxiv-cs", [PAPER], SourceState(), NOW)
    server = start_in_background(settings, now=lambda: NOW)
    try:
        with httpx.Client(base_url=server.url) as client:
            kept = client.post("/digest" + link("like"))
            assert "Recorded: more like this" in kept.text
            undone = client.post(undo_path(kept.text, "/digest" + link("like")))
            assert "Undone" in undone.text
            assert client.post(link("dislike")).status_code == 200  # prefix stripped
            assert client.get("/digest/healthz").text == "ok"
            assert client.get("/digest/healthz/").status_code == 404
    finally:
        server.stop()
    assert ratings(settings)[0][3] == "dislike"


# ------------------------------------------------------------------ refusals


def altered(path: str) -> str:
    body, signature = path.rsplit(".", 1)
    flipped = "A" if signature[0] != "A" else "B"
    return f"{body}.{flipped}{signature[1:]}"


def _forged_payload(path: str) -> str:
    # The payload says dislike but keeps the signature made for like.
    token = path.removeprefix("/r/")
    signature = token.rsplit(".", 1)[1]
    payload = LinkSigner(KEY).token(RatingLink(WATCHLIST, PAPER.key, "dislike",
                                               "reader@example.org")).rsplit(".", 1)[0]
    return f"/r/{payload}.{signature}"


BAD_TOKENS = {
    "altered signature": lambda: altered(link("like")),
    "payload swapped under a valid signature": lambda: _forged_payload(link("like")),
    "signed with another key": lambda: link("like", key=OTHER_KEY),
    "not a token": lambda: "/r/hello",
    "undo token used as a rating token": lambda: "/r/" + LinkSigner(KEY).undo_token(1),
}


@pytest.mark.parametrize("make_path", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_bad_token_is_refused_and_records_nothing(settings, client, make_path, method):
    answer = client.request(method, make_path())
    assert answer.status_code == 403
    assert "not valid" in answer.text
    assert "Sparse" not in answer.text and WATCHLIST not in answer.text  # reveals nothing
    assert ratings(settings) == [] and events(settings) == 0


def test_a_forged_undo_token_is_refused(settings, client):
    recorded = client.post(link("like"))
    good = undo_path(recorded.text, link("like"))
    for path in (altered(good), "/u/" + LinkSigner(OTHER_KEY).undo_token(1), "/u/12"):
        assert client.post(path).status_code == 403
    assert len(ratings(settings)) == 1


def test_a_paper_not_in_the_store_is_404_and_records_nothing(settings, client):
    path = link("like", paper_key="arxiv:2611.99999")
    for method in ("GET", "POST"):
        answer = client.request(method, path)
        assert answer.status_code == 404 and "Paper not found" in answer.text
    assert ratings(settings) == [] and events(settings) == 0


def test_a_watchlist_no_longer_configured_is_410_and_records_nothing(settings, client):
    answer = client.post(link("like", watchlist="retired-list"))
    assert answer.status_code == 410 and "retired-list" in answer.text
    assert ratings(settings) == []


JUNK = {
    "random path": ("GET", "/wp-login.php", {}, None),
    "root": ("GET", "/", {}, None),
    "rating path without token": ("GET", "/r/", {}, None),
    "unknown method on a rating link": ("PUT", "/r/abc", {}, None),
    "DELETE on health": ("DELETE", "/healthz", {}, None),
    "GET on undo": ("GET", "/u/abc", {}, None),
    "bad percent-encoding": ("GET", "/r/%zz%E0%A4%A", {}, None),
    "invalid UTF-8 escape": ("POST", "/r/%ff%fe.%c0%af", {}, None),
    "path traversal": ("GET", "/r/..%2f..%2fetc%2fpasswd", {}, None),
    "binary body": ("POST", "/r/abc.def", {"content-type": "application/octet-stream"},
                    bytes(range(256)) * 8),
    "form body with junk": ("POST", "/u/abc", {"content-type":
                                               "application/x-www-form-urlencoded"},
                            b"a=%ff&&&=\x00"),
    "overlong token": ("GET", "/r/" + "a" * 1500, {}, None),
    "foreign host header": ("GET", "/healthz", {"host": "evil.example.com"}, None),
    # no redirect to the twin without the slash: it would name http://, not the proxy's
    "trailing slash": ("GET", "/healthz/", {}, None),
    "rating link with a trailing slash": ("GET", "/r/abc.def/", {}, None),
}


@pytest.mark.parametrize(("method", "path", "headers", "body"), JUNK.values(),
                         ids=JUNK.keys())
def test_junk_requests_get_a_4xx(settings, client, method, path, headers, body):
    answer = client.request(method, path, headers=headers, content=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert "Traceback" not in answer.text
    assert ratings(settings) == []


def _raw(url: str, request: bytes) -> bytes:
    """Send bytes a well-behaved client would not, and read the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as conn:
        conn.sendall(request)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return received


RAW_JUNK = {
    "huge header": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                   + b"a" * 40_000 + b"\r\n\r\n",
    "many headers": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    + b"".join(b"X-%d: y\r\n" % i for i in range(3000)) + b"\r\n",
    "overlong request line": b"GET /r/" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "binary garbage": bytes(range(256)) * 4,
    "non-ASCII in the path": "GET /r/é HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode(),
    "no Host header": b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n",
    "non-numeric Content-Length": b"POST /r/abc HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                  b"Content-Length: 12abc\r\n\r\n",
    "two different Content-Lengths": b"POST /r/abc HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                     b"Content-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
}


@pytest.mark.parametrize("request_bytes", RAW_JUNK.values(), ids=RAW_JUNK.keys())
def test_malformed_http_gets_a_4xx(web, request_bytes):
    server, _ = web
    answer = _raw(server.url, request_bytes)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500 and b"Traceback" not in answer


def test_a_body_over_the_limit_is_413_declared_or_streamed(settings, client):
    limit = settings.web.max_body_kb * 1024
    declared = client.post(link("like"), content=b"x" * (limit + 1))
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 1024 + 2):
            yield b"y" * 1024

    streamed = client.post(link("like"), content=chunks())  # chunked: no Content-Length
    assert streamed.status_code == 413
    assert ratings(settings) == []
    assert client.post(link("like"), content=b"z" * (limit - 1)).status_code == 200


def test_a_url_over_the_limit_is_refused(client):
    answer = client.get("/r/x", params={"q": "a" * 3000})
    assert answer.status_code == 414


SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
}


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/healthz"), ("GET", "rating page"), ("POST", "rating page"), ("GET", "/nope"),
    ("POST", "/r/forged"), ("PATCH", "/healthz"), ("GET", "/r/" + "a" * 3000),
], ids=["health", "page", "recorded", "404", "403", "405", "414"])
def test_every_answer_carries_the_security_headers(client, method, path):
    answer = client.request(method, link("like") if path == "rating page" else path)
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers[name] == value, name
    policy = answer.headers["content-security-policy"]
    assert policy.startswith("default-src 'none'") and "frame-ancestors 'none'" in policy
    assert "server" not in answer.headers


def test_wrong_method_is_405_with_allow(client):
    answer = client.request("PUT", link("like"))
    assert answer.status_code == 405
    assert set(answer.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_health_probe(client):
    answer = client.get("/healthz")
    assert (answer.status_code, answer.text) == (200, "ok")


def test_the_public_host_and_loopback_are_trusted(settings, client):
    for host in ("papers.example.org", "localhost", "127.0.0.1:8080"):
        assert client.get("/healthz", headers={"host": host}).status_code == 200
    assert client.get("/healthz", headers={"host": "papers.example.org.evil"}
                      ).status_code == 400


def test_a_store_that_cannot_be_opened_is_a_503_that_says_try_later(tmp_path, settings):
    broken = tmp_path / "not-a-db"
    broken.write_bytes(b"this is not sqlite" * 100)
    moved = replace(settings, store=replace(settings.store, path=broken))
    server = start_in_background(moved)
    try:
        answer = httpx.post(server.url + link("like"))
        assert answer.status_code == 503 and "try the link again" in answer.text
        assert answer.headers["cache-control"] == "no-store"
    finally:
        server.stop()


def test_a_store_failing_on_read_is_a_503_not_a_500(settings):
    with Store.open(settings.store.path) as store:
        store.db.execute("PRAGMA foreign_keys=OFF")
        store.db.execute("DROP TABLE papers")  # as a damaged file can fail a plain SELECT
    server = start_in_background(settings)
    try:
        answer = httpx.get(server.url + link("like"))
        assert answer.status_code == 503 and "try the link again" in answer.text
    finally:
        server.stop()


def test_no_store_yet_is_a_503_and_creates_no_file(tmp_path):
    settings = make_settings(tmp_path)
    server = start_in_background(settings)
    try:
        assert httpx.get(server.url + link("like")).status_code == 503
    finally:
        server.stop()
    assert not settings.store.path.exists()


# ------------------------------------------------------------------ server and command


def test_stop_ends_the_server_within_two_seconds(settings):
    server = start_in_background(settings)
    with httpx.Client() as client:  # a keep-alive connection stays open during stop
        assert client.get(server.url + "/healthz").status_code == 200
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 2.5
        assert not server.thread.is_alive()
        with pytest.raises(httpx.TransportError):
            httpx.get(server.url + "/healthz", timeout=2)


def test_a_busy_port_is_an_error_that_names_the_address(settings):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = replace(settings, web=replace(settings.web, port=taken.getsockname()[1]))
        with pytest.raises(DigestError, match=r"cannot listen on 127\.0\.0\.1:\d+"):
            start_in_background(busy)


@pytest.mark.parametrize(("base_url", "key", "expected"), [
    (None, KEY, "web.base_url"),
    ("https://papers.example.org", None, "DIGEST_WEB_SECRET is not set"),
    ("https://papers.example.org", "short", "use at least 32"),
    (None, None, "DIGEST_WEB_SECRET must hold"),
], ids=["no base_url", "no key", "short key", "neither"])
def test_the_app_refuses_to_start_without_address_or_key(tmp_path, base_url, key, expected):
    settings = make_settings(tmp_path, base_url=base_url, key=key)
    with pytest.raises(ConfigError, match=expected):
        create_app(settings)
    with pytest.raises(ConfigError, match=expected):
        start_in_background(settings)


def _web_command(config: Path, env: dict[str, str], *extra: str
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "digest", "web", "--config", str(config),
                           *extra], capture_output=True, text=True, env=env, timeout=30,
                          cwd=ROOT)


@pytest.mark.parametrize(("base_url", "key", "expected"), [
    (None, KEY, "web.base_url: is not set"),
    ("https://papers.example.org", None, "DIGEST_WEB_SECRET is not set"),
], ids=["no base_url", "no key"])
def test_web_command_refuses_without_configuration(tmp_path, base_url, key, expected):
    config = tmp_path / "digest.toml"
    config.write_text(config_text(tmp_path / "digest.db", port=free_port(), base_url=base_url))
    env = {"PATH": "/usr/bin:/bin", **({"DIGEST_WEB_SECRET": key} if key else {})}
    done = _web_command(config, env)
    assert done.returncode == 2
    assert expected in done.stderr
    assert not (tmp_path / "digest.db").exists()


def test_web_command_serves_on_the_given_port_and_says_where(tmp_path, settings):
    config = tmp_path / "digest.toml"
    config.write_text(config_text(settings.store.path, port=free_port()))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "digest", "web", "--config", str(config), "--host",
         "127.0.0.1", "--port", str(port)], cwd=ROOT, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin", "DIGEST_WEB_SECRET": KEY})
    try:
        line = process.stdout.readline() if process.stdout else ""
        assert f"on http://127.0.0.1:{port}" in line and "papers.example.org" in line
        answer = httpx.post(f"http://127.0.0.1:{port}" + link("like"), timeout=10)
        assert "Recorded: more like this" in answer.text
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0 and "stopped" in out, err
    assert KEY not in out + err and "reader@example.org" not in out + err
    assert len(ratings(settings)) == 1


# ------------------------------------------------------------------ details


def test_an_error_inside_the_app_is_a_bare_500_with_headers():
    async def broken(scope, receive, send):
        raise RuntimeError("secret detail")

    async def call() -> httpx.Response:
        guarded = Guard(broken, max_body_bytes=1024, max_url_chars=1024)
        transport = httpx.ASGITransport(app=guarded, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return await c.get("/")

    answer = asyncio.run(call())
    assert answer.status_code == 500
    assert "secret detail" not in answer.text
    assert answer.headers["x-frame-options"] == "DENY"


def test_a_recorded_rating_uses_the_injected_clock(settings):
    later = datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)
    server = start_in_background(settings, now=lambda: later)
    try:
        assert httpx.post(server.url + link("like")).status_code == 200
    finally:
        server.stop()
    with Store.open(settings.store.path) as store:
        stamp = store.db.execute("SELECT created_at FROM ratings").fetchone()[0]
    assert stamp == "2027-01-02T03:04:05+00:00"
