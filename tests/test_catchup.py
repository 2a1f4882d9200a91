"""Catch-up: announcement days missed while the machine was off come back through the API.

arXiv's RSS feed and API are served by a real HTTP server on 127.0.0.1, the store is a real
SQLite file; the clock is moved from Friday 20 Nov 2026 to Wednesday 25 Nov (EST, UTC-5).
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from conftest import Route, write_config

from digest.cli import format_report, main
from digest.config import load_settings
from digest.deliver.base import Composed
from digest.pipeline import Seams, run_once
from digest.sources.arxiv_rss import api_query
from digest.store import Store

FRIDAY = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # 07:00 US Eastern
WEDNESDAY = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
THURSDAY = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def rss(*ids: str, announce: str = "new") -> bytes:
    items = "".join(
        f"<item><title>LoRA {i}</title><link>https://arxiv.org/abs/{i}</link>"
        f"<description>arXiv:{i}v1 Announce Type: {announce} Abstract: a</description>"
        f"<guid>oai:arXiv.org:{i}v1</guid><category>cs.CL</category></item>" for i in ids)
    return (f"<rss version='2.0'><channel><title>cs.CL+cs.LG updates on arXiv.org</title>"
            f"{items}</channel></rss>").encode()


def atom(entries: list[tuple[str, str, str]], total: int) -> bytes:
    """An arXiv API answer: (id, title, primary category) per entry."""
    body = "".join(
        f"<entry><id>http://arxiv.org/abs/{i}v1</id><title>{title}</title>"
        f"<summary>s</summary><published>2026-11-21T10:00:00Z</published>"
        f"<author><name>A. Author</name></author>"
        f'<arxiv:primary_category term="{primary}"/><category term="{primary}"/></entry>'
        for i, title, primary in entries)
    return ('<feed xmlns="http://www.w3.org/2005/Atom" '
            'xmlns:arxiv="http://arxiv.org/schemas/atom" '
            'xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">'
            f"<opensearch:totalResults>{total}</opensearch:totalResults>{body}</feed>").encode()


class Channel:
    """Keeps the paper keys of every digest it is given."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.notes: list[tuple[str, ...]] = []

    def __call__(self, settings):
        owner = self

        class Fake:
            def compose(self, digest):
                owner.notes.append(digest.notes)
                return Composed({"kind": "fake",
                                 "keys": [m.paper.key for m in digest.matches]}, digest)

            def send(self, payload, *, parts_sent, on_part_sent):
                owner.sent.extend(payload["keys"])
                on_part_sent(1)

            def close(self):
                pass

        return Fake()


class Machine:
    """One paper-digest install whose clock the test moves."""

    def __init__(self, tmp_path, http_server, *, catch_up_days: int = 7,
                 announce_types: str = '["new", "cross"]', keywords: str = '["LoRA"]') -> None:
        self.server = http_server
        self.rss_url = http_server.route("/rss/cs.CL+cs.LG", Route(body=rss("2611.00001")))
        api_url = http_server.route("/api/query", Route(body=atom([], 0)))
        self.config = write_config(tmp_path, f"""
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
max_retries = 0
[arxiv]
catch_up_days = {catch_up_days}
[[sources]]
name = "arxiv"
kind = "arxiv_rss"
categories = ["cs.CL", "cs.LG"]
announce_types = {announce_types}
url = "{self.rss_url}"
[[sources]]
name = "api"
kind = "arxiv_api"
query = "cat:cs.CL"
url = "{api_url}"
enabled = false
[[watchlists]]
name = "lora"
keywords = {keywords}
max_papers = 500
channels = ["chat"]
[channels.chat]
kind = "slack"
webhook_url_env = "HOOK"
""")
        self.store = tmp_path / "digest.db"
        self.channel = Channel()
        self.progress: list[str] = []

    def feed(self, *ids: str) -> None:
        self.server.route("/rss/cs.CL+cs.LG", Route(body=rss(*ids)))

    def api(self, *pages: Route) -> None:
        self.server.route("/api/query", *pages)

    def run(self, now: datetime):
        settings = load_settings(self.config, env={"HOOK": "https://hooks.example/x"})
        seams = Seams(now=lambda: now, sleep=lambda s: None, channel_factory=self.channel)
        return run_once(settings, seams=seams, progress=self.progress.append)

    def api_queries(self) -> list[dict[str, list[str]]]:
        return [parse_qs(urlsplit(r.path).query) for r in self.server.hits("/api/query")]


@pytest.fixture
def machine(tmp_path, http_server) -> Machine:
    return Machine(tmp_path, http_server)


def test_missed_days_are_backfilled_and_each_paper_is_sent_once(machine, capsys):
    first = machine.run(FRIDAY)
    assert first.sources[0].catch_up is None and machine.api_queries() == []
    # off until Wednesday: Sunday's and Monday's listings came and went; Tuesday's is live
    machine.feed("2611.00004")
    machine.api(Route(body=atom([("2611.00002", "LoRA two", "cs.CL"),
                                 ("2611.00003", "LoRA three", "math.OC"),
                                 ("2611.00004", "LoRA four", "cs.LG")], 3)))
    report = machine.run(WEDNESDAY)
    [query] = machine.api_queries()
    assert query == {
        "search_query": ["(cat:cs.CL OR cat:cs.LG) AND submittedDate:[202611191900 TO "
                         "202611231900]"],
        "start": ["0"], "max_results": ["2000"], "sortBy": ["submittedDate"],
        "sortOrder": ["ascending"]}
    assert ("catching up cs.CL+cs.LG: announcement days Sun 22 Nov to Mon 23 Nov, page 1 "
            "(0-1999)") in machine.progress
    arxiv = report.sources[0]
    assert (arxiv.new, arxiv.caught_up, arxiv.catch_up_error) == (1, 2, None)
    assert report.ok and report.new_papers == 3
    assert ("    caught up announcement days Sun 22 Nov to Mon 23 Nov through the arXiv API: "
            "2 new papers") in format_report(report).splitlines()
    assert machine.channel.notes[-1] == (
        "arxiv missed announcement days Sun 22 Nov to Mon 23 Nov; 2 new papers from those "
        "days were fetched through the arXiv API.",)
    # 2611.00004 was both in the feed and in the backfill: it went out once
    assert sorted(machine.channel.sent) == ["arxiv:2611.00001", "arxiv:2611.00002",
                                            "arxiv:2611.00003", "arxiv:2611.00004"]
    with Store.open(machine.store) as store:
        assert store.catch_up_days("arxiv") == {"2026-11-22": "done", "2026-11-23": "done"}
        assert store.paper("arxiv:2611.00003").announce_type == "cross"
        assert store.sources_of("arxiv:2611.00002") == ["arxiv"]
    assert main(["status", "--config", str(machine.config)]) == 0
    assert ("    catch-up: 2 missed announcement days backfilled through the arXiv API, 2 new "
            "papers (last 2026-11-25T12:00:00+00:00)") in capsys.readouterr().out.splitlines()

    # the next feed lists a backfilled paper again: stored once, not sent again
    machine.feed("2611.00003", "2611.00005")
    again = machine.run(THURSDAY)
    assert len(machine.api_queries()) == 1  # nothing was missed since Wednesday
    assert again.sources[0].known == 1
    assert machine.channel.sent[4:] == ["arxiv:2611.00005"]


def test_a_catch_up_pages_within_2000_results(machine):
    machine.run(FRIDAY)
    machine.feed()
    ids = [f"2611.1{n:04d}" for n in range(2500)]
    machine.api(Route(body=atom([(i, "x", "cs.CL") for i in ids[:2000]], 2500)),
                Route(body=atom([(i, "x", "cs.CL") for i in ids[2000:]], 2500)))
    report = machine.run(WEDNESDAY)
    assert [q["start"] for q in machine.api_queries()] == [["0"], ["2000"]]
    assert all(q["max_results"] == ["2000"] for q in machine.api_queries())
    assert [line for line in machine.progress if line.startswith("catching up")] == [
        "catching up cs.CL+cs.LG: announcement days Sun 22 Nov to Tue 24 Nov, page 1 (0-1999)",
        "catching up cs.CL+cs.LG: announcement days Sun 22 Nov to Tue 24 Nov, page 2 "
        "(2000-3999)"]
    # Wednesday's feed came back empty, a failure: Tuesday was backfilled with the rest
    assert report.sources[0].error.startswith("arXiv sent an empty feed")
    assert report.sources[0].caught_up == 2500


def test_a_catch_up_cut_short_resumes_without_sending_anything_twice(machine, capsys):
    machine.run(FRIDAY)
    machine.feed("2611.00004")
    ids = [f"2611.1{n:04d}" for n in range(2500)]
    # titles with LoRA every 400th paper: five on the first page, two on the second
    entries = [(i, "LoRA" if n % 400 == 0 else "x", "cs.CL") for n, i in enumerate(ids)]
    page_one = Route(body=atom(entries[:2000], 2500))
    page_two = Route(body=atom(entries[2000:], 2500))
    machine.api(page_one, Route(status=500, body=b"busy"))
    cut = machine.run(WEDNESDAY)
    arxiv = cut.sources[0]
    assert "HTTP 500" in arxiv.catch_up_error and not cut.ok
    assert "catch-up of announcement days Sun 22 Nov to Mon 23 Nov FAILED" in format_report(cut)
    assert "it tries again next run" in machine.channel.notes[-1][0]
    with Store.open(machine.store) as store:
        assert set(store.catch_up_days("arxiv").values()) == {"pending"}
    main(["status", "--config", str(machine.config)])
    assert ("    catch-up: 2 announcement days still to backfill (the next run tries)"
            in capsys.readouterr().out.splitlines())
    first_sent = list(machine.channel.sent)
    assert sorted(first_sent) == sorted(["arxiv:2611.00001", "arxiv:2611.00004",
                                         *(f"arxiv:{ids[n]}"
                                           for n in (0, 400, 800, 1200, 1600))])

    machine.api(page_one, page_two)
    resumed = machine.run(WEDNESDAY.replace(hour=13))
    assert [q["start"] for q in machine.api_queries()[-2:]] == [["0"], ["2000"]]
    assert resumed.sources[0].caught_up == 500 and resumed.ok
    assert sorted(machine.channel.sent[len(first_sent):]) == [f"arxiv:{ids[2000]}",
                                                              f"arxiv:{ids[2400]}"]
    with Store.open(machine.store) as store:
        assert set(store.catch_up_days("arxiv").values()) == {"done"}
        assert store.catch_up_summary("arxiv")["new"] == 2500
    machine.run(WEDNESDAY.replace(hour=14))
    assert len(machine.api_queries()) == 4  # done days are not fetched again


def test_catch_up_reaches_back_catch_up_days_only(tmp_path, http_server):
    machine = Machine(tmp_path, http_server, catch_up_days=2)
    machine.run(FRIDAY)
    machine.feed("2611.00004")
    report = machine.run(WEDNESDAY)
    [query] = machine.api_queries()
    assert query["search_query"] == ["(cat:cs.CL OR cat:cs.LG) AND submittedDate:"
                                     "[202611201900 TO 202611231900]"]
    assert report.sources[0].catch_up == "announcement day Mon 23 Nov"


def test_catch_up_days_0_turns_it_off(tmp_path, http_server):
    machine = Machine(tmp_path, http_server, catch_up_days=0)
    machine.run(FRIDAY)
    machine.feed("2611.00004")
    report = machine.run(WEDNESDAY)
    assert machine.api_queries() == [] and report.sources[0].catch_up is None


def test_a_backfilled_paper_follows_the_sources_announce_types(tmp_path, http_server):
    machine = Machine(tmp_path, http_server, announce_types='["new"]')
    machine.run(FRIDAY)
    machine.feed("2611.00004")
    machine.api(Route(body=atom([("2611.00002", "LoRA own", "cs.LG"),
                                 ("2611.00003", "LoRA cross-listed", "math.OC")], 2)))
    machine.run(WEDNESDAY)
    assert "arxiv:2611.00003" not in machine.channel.sent
    assert "arxiv:2611.00002" in machine.channel.sent


def test_catch_up_goes_through_the_shared_arxiv_pacer():
    """Real arXiv addresses, answered in-process: the API call waits its 3 s after the feed,
    and the second run's feed its 3 s after the first run's (one pace for the process)."""
    import tempfile
    from pathlib import Path

    sleeps: list[float] = []
    hosts: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        if request.url.host == "export.arxiv.org":
            return httpx.Response(200, content=atom([("2611.00002", "LoRA", "cs.CL")], 1))
        return httpx.Response(200, content=rss("2611.00001"))

    with tempfile.TemporaryDirectory() as folder:
        config = write_config(Path(folder), """
[http]
arxiv_interval_seconds = 3
max_retries = 0
[[sources]]
name = "arxiv"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[watchlists]]
name = "lora"
keywords = ["LoRA"]
channels = ["chat"]
[channels.chat]
kind = "slack"
webhook_url_env = "HOOK"
""")
        settings = load_settings(config, env={"HOOK": "https://hooks.example/x"})
        for now in (FRIDAY, WEDNESDAY):
            run_once(settings, seams=Seams(transport=httpx.MockTransport(answer),
                                           sleep=sleeps.append, now=lambda now=now: now,
                                           channel_factory=Channel()))
    assert hosts == ["rss.arxiv.org", "rss.arxiv.org", "export.arxiv.org"]
    # The second run's feed waits what is left of the 3 s (its first run's work took some);
    # the API call right after it waits nearly all of them.
    assert len(sleeps) == 2 and 0 < sleeps[0] <= 3 and 1.5 < sleeps[1] <= 3


def test_pending_days_older_than_catch_up_days_are_given_up(tmp_path, http_server, caplog):
    machine = Machine(tmp_path, http_server, catch_up_days=3)
    machine.run(FRIDAY)
    machine.feed("2611.00004")
    machine.api(Route(status=503, body=b"down"))
    machine.run(WEDNESDAY)
    with Store.open(machine.store) as store:
        assert store.catch_up_days("arxiv") == {"2026-11-22": "pending", "2026-11-23": "pending"}
    machine.api(Route(body=atom([], 0)))
    asked = len(machine.api_queries())
    # Friday 27 Nov: three days back reach Tuesday 12:00 UTC, after Monday's announcement;
    # Wednesday's listing came and went since the last read and is fetched
    machine.run(datetime(2026, 11, 27, 12, 0, tzinfo=UTC))
    queries = machine.api_queries()[asked:]
    assert [q["search_query"] for q in queries] == [
        ["(cat:cs.CL OR cat:cs.LG) AND submittedDate:[202611241900 TO 202611251900]"]]
    with Store.open(machine.store) as store:
        assert store.catch_up_days("arxiv") == {"2026-11-22": "expired",
                                                "2026-11-23": "expired",
                                                "2026-11-25": "done"}
    assert ("gives up the catch-up of 2026-11-22, 2026-11-23: older than catch_up_days"
            in caplog.text)


@pytest.mark.parametrize("categories, query", [
    (("cs.CL", "cs.LG"), "cat:cs.CL OR cat:cs.LG"),
    (("cs", "hep-th"), "cat:cs.* OR cat:hep-th"),  # a whole archive; one without classes
])
def test_the_api_query_covers_what_the_listing_covers(categories, query):
    assert api_query(categories) == query
