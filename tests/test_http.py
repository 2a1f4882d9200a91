"""Fetching: pacing per host, bounded retries, Retry-After, size limits, local files."""

from __future__ import annotations

import httpx
import pytest

from digest.config import HttpSettings
from digest.errors import FetchError
from digest.http import Fetcher, Pacer, parse_retry_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def fetcher_for(handler, clock: FakeClock | None = None, **overrides) -> Fetcher:
    clock = clock or FakeClock()
    settings = HttpSettings(**{"retry_backoff_seconds": 1.0, **overrides})
    return Fetcher(settings, transport=httpx.MockTransport(handler), clock=clock,
                   sleep=clock.sleep)


def test_user_agent_names_the_tool_and_contact():
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["ua"] = request.headers["User-Agent"]
        return httpx.Response(200, content=b"ok")

    fetcher_for(handler, contact="mailto:me@example.org").get("https://example.org/feed")
    assert seen["ua"].startswith("paper-digest/") and "mailto:me@example.org" in seen["ua"]


def test_all_arxiv_hosts_share_one_three_second_pacer():
    clock = FakeClock()
    fetcher = fetcher_for(lambda r: httpx.Response(200, content=b"x"), clock)
    for url in ("https://rss.arxiv.org/rss/cs.CL", "https://export.arxiv.org/api/query",
                "https://rss.arxiv.org/rss/cs.LG"):
        fetcher.get(url)
    assert clock.sleeps == [3.0, 3.0]


def test_fetchers_of_one_process_keep_arxivs_pace_between_them():
    """Each run of serve has a fetcher of its own: the next run's first arXiv request
    still waits for the last one of the run before."""
    waits: list[float] = []
    ok = httpx.MockTransport(lambda r: httpx.Response(200, content=b"x"))
    with Fetcher(HttpSettings(), transport=ok, sleep=waits.append) as first:
        first.get("https://export.arxiv.org/api/query")
    with Fetcher(HttpSettings(), transport=ok, sleep=waits.append) as second:
        second.get("https://rss.arxiv.org/rss/cs.CL")
        second.get("https://example.org/feed")  # other hosts keep their own pace
    assert len(waits) == 1 and 2.5 < waits[0] <= 3.0


def test_other_hosts_are_paced_separately():
    clock = FakeClock()
    fetcher = fetcher_for(lambda r: httpx.Response(200, content=b"x"), clock,
                          interval_seconds=1.0)
    fetcher.get("https://rss.arxiv.org/rss/cs.CL")
    fetcher.get("https://huggingface.co/api/daily_papers")
    assert clock.sleeps == []


def test_pacer_does_not_wait_when_enough_time_passed():
    clock = FakeClock()
    pacer = Pacer(3.0, clock=clock, sleep=clock.sleep)
    pacer.wait()
    clock.now += 5
    pacer.wait()
    assert clock.sleeps == []


def test_retries_on_503_honouring_retry_after():
    clock = FakeClock()
    answers = iter([httpx.Response(503, headers={"Retry-After": "7"}),
                    httpx.Response(200, content=b"done")])
    fetcher = fetcher_for(lambda r: next(answers), clock, interval_seconds=0)
    assert fetcher.get("https://example.org/f").content == b"done"
    assert clock.sleeps == [7.0]


def test_gives_up_after_bounded_retries_with_reason():
    fetcher = fetcher_for(lambda r: httpx.Response(500), max_retries=2, interval_seconds=0)
    with pytest.raises(FetchError, match="HTTP 500") as caught:
        fetcher.get("https://example.org/f", source="blog")
    assert caught.value.attempts == 3 and caught.value.source == "blog"
    assert fetcher.requests == 3


def test_client_errors_are_not_retried():
    fetcher = fetcher_for(lambda r: httpx.Response(404), interval_seconds=0)
    with pytest.raises(FetchError, match="HTTP 404"):
        fetcher.get("https://example.org/missing")
    assert fetcher.requests == 1


def test_a_retry_after_beyond_the_cap_waits_for_the_next_run():
    clock = FakeClock()
    fetcher = fetcher_for(lambda r: httpx.Response(429, headers={"Retry-After": "3600"}),
                          clock, interval_seconds=0)
    with pytest.raises(FetchError, match="server asked to wait 3600 s; giving up until "
                                         "next run"):
        fetcher.get("https://example.org/f")
    assert clock.sleeps == []


def test_a_backoff_beyond_the_cap_is_not_blamed_on_the_server():
    clock = FakeClock()
    fetcher = fetcher_for(lambda r: httpx.Response(500), clock, interval_seconds=0,
                          max_retries=5, retry_backoff_seconds=1.0, max_retry_after_seconds=3)
    with pytest.raises(FetchError) as caught:
        fetcher.get("https://example.org/f")
    assert "server asked" not in str(caught.value)
    assert ("after 3 tries the next would wait 4 s, past max_retry_after_seconds; giving up "
            "until next run") in str(caught.value)
    assert clock.sleeps == [1.0, 2.0]


def test_connection_errors_become_fetch_errors():
    def handler(request):
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(FetchError, match="ConnectError"):
        fetcher_for(handler, max_retries=1, interval_seconds=0).get("https://example.org/f")


def test_not_modified_returns_no_content_and_sends_validators():
    seen = {}

    def handler(request):
        seen.update(request.headers)
        return httpx.Response(304)

    fetched = fetcher_for(handler).get("https://example.org/f", etag='"abc"',
                                       last_modified="Mon, 28 Apr 2025 04:00:00 GMT")
    assert fetched.not_modified and fetched.content == b""
    assert seen["if-none-match"] == '"abc"'
    assert seen["if-modified-since"] == "Mon, 28 Apr 2025 04:00:00 GMT"


def test_oversized_bodies_are_cut_off():
    big = b"x" * 5000
    fetcher = fetcher_for(lambda r: httpx.Response(200, content=big), max_body_mb=0.001)
    with pytest.raises(FetchError, match="limit"):
        fetcher.get("https://example.org/huge")


def test_local_files_are_read_through_the_same_call(tmp_path):
    path = tmp_path / "feed.xml"
    path.write_bytes(b"<rss/>")
    fetcher = fetcher_for(lambda r: pytest.fail("no HTTP for local files"))
    assert fetcher.get(str(path)).content == b"<rss/>"
    assert fetcher.get(f"file://{path}").content == b"<rss/>"
    with pytest.raises(FetchError, match="cannot read"):
        fetcher.get(str(tmp_path / "missing.xml"))


def test_a_local_path_under_home_is_read_from_home(tmp_path, monkeypatch):
    """A source written as ~/feeds/lab.xml is the file in the user's home folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "lab.xml").write_bytes(b"<rss/>")
    fetcher = fetcher_for(lambda r: pytest.fail("no HTTP for local files"))
    assert fetcher.get("~/feeds/lab.xml").content == b"<rss/>"


class Dropped(httpx.SyncByteStream):
    """A body that stops half-way: the connection was lost."""

    def __init__(self, first: bytes) -> None:
        self.first = first

    def __iter__(self):
        yield self.first
        raise httpx.ReadError("connection lost")


def test_a_large_body_is_read_whole_after_a_retry_that_cut_it_off():
    body = bytes(range(256)) * 12_000  # 3 MB: past what is kept in memory
    answers = iter([httpx.Response(200, stream=Dropped(body[:1_000_000])),
                    httpx.Response(200, content=body)])
    fetcher = fetcher_for(lambda r: next(answers), interval_seconds=0)
    with fetcher.get("https://example.org/listing") as fetched:
        assert fetched.body.read() == body  # nothing of the first attempt is left in it
        assert fetched.content == body
    assert fetched.body.closed


def test_a_large_local_file_is_read_where_it_lies(tmp_path):
    path = tmp_path / "listing.xml"
    path.write_bytes(b"<rss>" + b" " * 3_000_000 + b"</rss>")
    with fetcher_for(lambda r: pytest.fail("no HTTP")).get(str(path)) as fetched:
        assert getattr(fetched.body, "name", None) == str(path)
        assert fetched.content == path.read_bytes()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), ("", None), ("soon", None),
     ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0)],
)
def test_parse_retry_after(value, seconds):
    assert parse_retry_after(value) == seconds


def test_a_body_sent_a_byte_at_a_time_is_cut_off_not_waited_for():
    """Each byte comes well within timeout_seconds, so no read times out; the whole body
    still has its bound (BODY_TIMEOUTS x timeout_seconds), and nothing is asked again."""
    import http.server
    import threading
    import time

    from digest.http import BODY_TIMEOUTS

    requests = []

    class Drip(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "400")
            self.end_headers()
            try:
                for _ in range(400):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.02)
            except OSError:
                pass  # the client went away: what is wanted

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = HttpSettings(timeout_seconds=0.25, interval_seconds=0, max_retries=2,
                                retry_backoff_seconds=0)
        started = time.monotonic()
        with Fetcher(settings) as fetcher, pytest.raises(FetchError) as caught:
            fetcher.get(f"http://127.0.0.1:{server.server_address[1]}/feed")
        took = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert f"the body took over {BODY_TIMEOUTS * 0.25:g} s to arrive" in str(caught.value)
    assert took < 4 and len(requests) == 1  # cut off at the bound, and not asked again
