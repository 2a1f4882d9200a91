"""A cut digest's "N more" line links the web app's page of the papers it left out.

End to end: `run --once` sends to a real SMTP server and a real webhook, and the real web
app under uvicorn serves the page that line links to.
"""

from __future__ import annotations

import email
import html as html_text
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from email.policy import default as default_policy
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from conftest import SAMPLES, LocalServer, Route, SmtpInbox, free_port, write_config

from digest.cli import main
from digest.config import Settings, load_settings
from digest.deliver.base import Composed
from digest.errors import StoreError
from digest.feedback import ACTIONS, LinkSigner, MoreLink, more_page_url, rating_urls
from digest.models import Digest
from digest.pipeline import Seams, build_matcher, run_once
from digest.render import RATING_LABELS
from digest.scoring import rank
from digest.store import LeftOut, Store
from digest.store.db import unpack_payload
from digest.web.server import start_in_background

KEY = "m" * 40
OTHER_KEY = "q" * 40
WATCHLIST = "efficient-llms"
MAX_PAPERS = 2
SLACK_LINK = re.compile(r"<([^|<>]+)\|([^<>]+)>")
LABEL_ACTION = {label: action for action, label in RATING_LABELS.items()}
PLAIN_NOTE = re.compile(r"(\d+) more matched; they did not fit here and wait for the next "
                        r"digest\.")

pytestmark = pytest.mark.integration


@dataclass
class Run:
    config: Path
    settings: Settings
    inbox: SmtpInbox
    server: LocalServer
    base_url: str


def _config_body(*, rss_url: str, smtp_port: int, web: str, slack: bool = True) -> str:
    channels = '["mail", "chat"]' if slack else '["mail"]'
    chat = """
[channels.chat]
kind = "slack"
webhook_url_env = "MORE_SLACK_HOOK"
timeout_seconds = 5
""" if slack else ""
    return f"""
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
retry_backoff_seconds = 0
timeout_seconds = 5
{web}
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL", "cs.LG"]
url = "{rss_url}"
[[watchlists]]
name = "{WATCHLIST}"
keywords = ["LoRA", {{ term = "key-value cache", weight = 2 }}, "quantization", "language"]
max_papers = {MAX_PAPERS}
channels = {channels}
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from = "Paper Digest <digest@example.org>"
to = ["team@example.org"]
timeout_seconds = 5
{chat}"""


@pytest.fixture
def make_run(tmp_path: Path, http_server: LocalServer, smtp_server: tuple[SmtpInbox, int],
             monkeypatch: pytest.MonkeyPatch) -> Callable[..., Run]:
    """A config whose watchlist matches more than max_papers of the sample feed's papers."""
    inbox, smtp_port = smtp_server
    rss_url = http_server.route("/rss/cs.CL+cs.LG", Route(
        body=(SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml").read_bytes(),
        headers={"Content-Type": "application/rss+xml"}))
    monkeypatch.setenv("MORE_SLACK_HOOK", http_server.route("/hook", Route(body=b"ok")))
    monkeypatch.setenv("MORE_WEB_KEY", KEY)

    def make(*, web: bool = True, slack: bool = True) -> Run:
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        section = (f'[web]\nbase_url = "{base_url}"\nhost = "127.0.0.1"\nport = {port}\n'
                   'secret_env = "MORE_WEB_KEY"\n') if web else ""
        config = write_config(tmp_path, _config_body(rss_url=rss_url, smtp_port=smtp_port,
                                                     web=section, slack=slack))
        return Run(config, load_settings(config), inbox, http_server, base_url)

    return make


@pytest.fixture
def web_run(make_run: Callable[..., Run]) -> Iterator[tuple[Run, httpx.Client]]:
    """A run done, and the web app serving on the address its links name."""
    run = make_run()
    assert main(["run", "--once", "--config", str(run.config)]) == 0
    server = start_in_background(run.settings)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            yield run, client
    finally:
        server.stop()


def the_email(run: Run) -> tuple[str, str]:
    """(plain text, HTML) of the one email the run sent."""
    assert len(run.inbox.messages) == 1
    message = email.message_from_bytes(run.inbox.messages[0][2], policy=default_policy)
    text, html = (message.get_body((part,)) for part in ("plain", "html"))
    assert text is not None and html is not None
    return (text.get_content().replace("\r\n", "\n"),
            html.get_content().replace("\r\n", "\n"))


class Anchors(HTMLParser):
    """Every <a href> of a page with its text, and the rank of the list item it is in."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str, str]] = []  # (item id, href, text)
        self._item = ""
        self._open: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "li":
            self._item = dict(attrs).get("id") or ""
        if tag == "a":
            self._open = [dict(attrs).get("href") or "", ""]

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open[1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._open is not None:
            self.links.append((self._item, self._open[0], self._open[1]))
            self._open = None


def listed(page: str) -> list[tuple[str, str, dict[str, str]]]:
    """(item id, abstract URL, rating URLs by action) of each paper a page lists, in order."""
    parser = Anchors()
    parser.feed(page)
    out: list[tuple[str, str, dict[str, str]]] = []
    for item, href, text in parser.links:
        if not item:
            continue
        if not out or out[-1][0] != item:
            out.append((item, href, {}))
        elif text in LABEL_ACTION:
            out[-1][2][LABEL_ACTION[text]] = href
    return out


def ranking(settings: Settings) -> list[str]:
    """The keys of every paper the watchlist matches in the store, best first."""
    with Store.open(settings.store.path) as store:
        matcher = build_matcher(settings.watchlists, store, now=lambda: datetime.now(UTC))
        papers = store.recent(datetime.now(UTC) - timedelta(days=3650))
        scored = matcher.match_many(papers, now=datetime.now(UTC))
    return [m.paper.key for m in rank(scored[WATCHLIST])]


def abs_url(key: str) -> str:
    return "https://arxiv.org/abs/" + key.removeprefix("arxiv:")


def more_link_of(text: str, html: str) -> tuple[str, int]:
    """The "N more" URL both parts of the email carry, and N."""
    found = re.search(r"^(\d+) more matched: read them on the web\. (\S+)$", text, re.M)
    assert found, text
    count, url = int(found.group(1)), found.group(2)
    anchors = Anchors()
    anchors.feed(html)
    assert ("", url, f"{count} more matched: read them on the web.") in anchors.links
    return url, count


def ratings(settings: Settings) -> list[tuple[str, ...]]:
    with Store.open(settings.store.path) as store:
        return [tuple(row) for row in store.db.execute(
            "SELECT watchlist, paper_key, action, origin FROM ratings")]


# ------------------------------------------------------------------ end to end


def test_the_emails_n_more_line_links_a_page_of_exactly_the_left_out_papers(web_run):
    run, client = web_run
    text, html = the_email(run)
    url, count = more_link_of(text, html)
    assert url.startswith(run.base_url + "/more/")
    assert not PLAIN_NOTE.search(text) and not PLAIN_NOTE.search(html)

    ranked = ranking(run.settings)
    assert len(ranked) > MAX_PAPERS + 1  # the sample feed gives the cut something to leave
    sent = [href for href in re.findall(r'<a href="(https://arxiv\.org/abs/[^"]+)"', html)]
    assert list(dict.fromkeys(sent)) == [abs_url(k) for k in ranked[:MAX_PAPERS]]
    assert count == len(ranked) - MAX_PAPERS

    page = client.get(urlsplit(url).path)
    assert page.status_code == 200
    assert page.headers["referrer-policy"] == "no-referrer"
    assert "'nonce-" in page.headers["content-security-policy"]
    papers = listed(page.text)
    assert [item for item, _, _ in papers] == [f"p{n}" for n in range(MAX_PAPERS + 1,
                                                                     len(ranked) + 1)]
    assert [href for _, href, _ in papers] == [abs_url(k) for k in ranked[MAX_PAPERS:]]
    assert f"{count} more papers for {WATCHLIST}" in page.text
    assert page.text.count("Why: ") == count
    signer = LinkSigner(KEY)
    with Store.open(run.settings.store.path) as store:
        for key, (_, _, links) in zip(ranked[MAX_PAPERS:], papers, strict=True):
            paper = store.paper(key)
            assert paper is not None
            assert paper.authors[0] in html_text.unescape(page.text)
            assert paper.abstract[:60] in html_text.unescape(page.text)
            assert links == rating_urls(signer, run.base_url, watchlist=WATCHLIST,
                                        paper_key=key)


def test_a_rating_link_on_the_page_records_for_that_paper(web_run):
    run, client = web_run
    url, _ = more_link_of(*the_email(run))
    _, paper_url, links = listed(client.get(urlsplit(url).path).text)[-1]
    assert set(links) == set(ACTIONS)
    shown = client.get(urlsplit(links["dislike"]).path)
    assert shown.status_code == 200 and "not for me" in shown.text
    assert ratings(run.settings) == []  # showing records nothing; the page's POST does
    recorded = client.post(urlsplit(links["dislike"]).path)
    assert recorded.status_code == 200 and "Recorded: not for me" in recorded.text
    key = "arxiv:" + paper_url.rsplit("/", 1)[1]
    assert ratings(run.settings) == [(WATCHLIST, key, "dislike", "web")]


def test_the_slack_n_more_line_links_its_own_page_of_the_same_papers(web_run):
    run, client = web_run
    email_url, count = more_link_of(*the_email(run))
    posts = [hit.json() for hit in run.server.hits("/hook")]
    tail = posts[-1]["blocks"][-1]["elements"][0]["text"]
    found = SLACK_LINK.fullmatch(tail)
    assert found, tail
    slack_url, label = found.groups()
    assert label == f"{count} more matched: read them on the web."
    assert slack_url.startswith(run.base_url + "/more/") and slack_url != email_url
    pages = [listed(client.get(urlsplit(u).path).text) for u in (email_url, slack_url)]
    assert [href for _, href, _ in pages[1]] == [href for _, href, _ in pages[0]]
    assert len(pages[1]) == count


def test_without_the_web_app_the_email_keeps_the_plain_note_and_records_no_overflow(
        make_run):
    run = make_run(web=False, slack=False)
    assert main(["run", "--once", "--config", str(run.config)]) == 0
    text, html = the_email(run)
    found = PLAIN_NOTE.search(text)
    assert found and PLAIN_NOTE.search(html)
    assert int(found.group(1)) == len(ranking(run.settings)) - MAX_PAPERS
    assert "/more/" not in text + html
    with Store.open(run.settings.store.path) as store:
        assert store.db.execute("SELECT count(*) FROM digest_overflow").fetchone()[0] == 0


# ------------------------------------------------------------------ refusals


def _token(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _altered(url: str) -> str:
    body, signature = _token(url).rsplit(".", 1)
    return f"{body}.{'A' if signature[0] != 'A' else 'B'}{signature[1:]}"


def _digest_row(settings: Settings) -> tuple[int, datetime]:
    with Store.open(settings.store.path) as store:
        row = store.db.execute("SELECT id, created_at FROM digests WHERE channel = 'mail'"
                               ).fetchone()
    return int(row[0]), datetime.fromisoformat(row[1])


def _signed(settings: Settings, *, key: str = KEY, digest_id: int | None = None,
            created_at: datetime | None = None, watchlist: str = WATCHLIST) -> str:
    real_id, real_at = _digest_row(settings)
    link = MoreLink(digest_id=real_id if digest_id is None else digest_id,
                    watchlist=watchlist, created_at=real_at if created_at is None
                    else created_at)
    return _token(more_page_url(LinkSigner(key), "https://x", link))


BAD_TOKENS: dict[str, Callable[[Settings, str], str]] = {
    "altered signature": lambda settings, url: _altered(url),
    "another digest's id under this signature": lambda settings, url: (
        _signed(settings, digest_id=2).rsplit(".", 1)[0] + "." + _token(url).rsplit(".", 1)[1]),
    "signed with another key": lambda settings, url: _signed(settings, key=OTHER_KEY),
    "a rating token": lambda settings, url: _token(rating_urls(
        LinkSigner(KEY), "https://x", watchlist=WATCHLIST, paper_key="arxiv:2611.04001")["like"]),
    "an undo token": lambda settings, url: LinkSigner(KEY).undo_token(1),
    "not a token": lambda settings, url: "hello",
}


@pytest.mark.parametrize("make_token", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_a_forged_token_is_403_and_reveals_nothing(web_run, make_token):
    run, client = web_run
    url, _ = more_link_of(*the_email(run))
    answer = client.get("/more/" + make_token(run.settings, url))
    assert answer.status_code == 403 and "not valid" in answer.text
    assert WATCHLIST not in answer.text and "arxiv.org" not in answer.text
    assert answer.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("change", [
    pytest.param({"digest_id": 999}, id="no such digest"),
    # SQLite gives a pruned digest's id to the next one: the old link must not open it.
    pytest.param({"created_at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)},
                 id="the id of a digest recorded at another moment"),
    pytest.param({"watchlist": "other-list"}, id="another watchlist's digest"),
])
def test_a_validly_signed_link_to_no_such_digest_is_404(web_run, change):
    run, client = web_run
    answer = client.get("/more/" + _signed(run.settings, **change))
    assert answer.status_code == 404 and "Digest not found" in answer.text
    assert "arxiv.org/abs" not in answer.text


def test_a_watchlist_renamed_since_keeps_its_links_working(web_run):
    run, client = web_run
    url, count = more_link_of(*the_email(run))
    renamed = replace(run.settings, watchlists=tuple(
        replace(w, name="llm-efficiency", previous_names=(WATCHLIST,))
        for w in run.settings.watchlists), web=replace(run.settings.web, port=free_port()))
    with Store.open(run.settings.store.path) as store:
        store.rename("watchlist", WATCHLIST, "llm-efficiency", datetime.now(UTC))
    server = start_in_background(renamed)
    try:
        page = httpx.get(server.url + urlsplit(url).path, timeout=10)
    finally:
        server.stop()
    assert page.status_code == 200 and len(listed(page.text)) == count
    assert f"{count} more papers for llm-efficiency" in page.text


def test_a_store_that_cannot_be_read_is_503(web_run, tmp_path):
    run, _ = web_run
    url, _ = more_link_of(*the_email(run))
    broken = tmp_path / "not-a-db"
    broken.write_bytes(b"this is not sqlite" * 100)
    moved = replace(run.settings, store=replace(run.settings.store, path=broken),
                    web=replace(run.settings.web, port=free_port()))
    server = start_in_background(moved)
    try:
        answer = httpx.get(server.url + urlsplit(url).path, timeout=10)
    finally:
        server.stop()
    assert answer.status_code == 503 and "try the link again" in answer.text


# ------------------------------------------------------------------ pipeline and store


class CuttingChannel:
    """Keeps only the top paper, as an email over its size limit does, and carries the
    digest's "N more" URL in its payload."""

    kind = "cutting"

    def compose(self, digest: Digest) -> Composed:
        kept = replace(digest, matches=digest.matches[:1])
        return Composed(payload={"kind": self.kind, "more_url": kept.more_url,
                                 "left_out": kept.left_out}, digest=kept)

    def send(self, payload: dict[str, Any], **_: Any) -> None:
        return None

    def close(self) -> None:
        return None


def test_papers_a_channel_drops_for_size_are_recorded_too(make_run):
    run = make_run(slack=False)
    settings = replace(run.settings, watchlists=tuple(
        replace(w, max_papers=25) for w in run.settings.watchlists))
    report = run_once(settings, seams=Seams(channel_factory=lambda _: CuttingChannel()))
    assert [d.status for d in report.deliveries] == ["sent"]
    ranked = ranking(settings)
    with Store.open(settings.store.path) as store:
        digest_id, payload = store.db.execute("SELECT id, payload FROM digests").fetchone()
        found = store.digest_left_out(digest_id)
    payload = unpack_payload(payload)
    assert payload["left_out"] == len(ranked) - 1
    link = LinkSigner(KEY).verify_more(_token(payload["more_url"]))
    assert link is not None and (link.digest_id, link.watchlist) == (digest_id, WATCHLIST)
    assert found is not None and int(found.created_at.timestamp()) == int(
        link.created_at.timestamp())
    assert [p.paper_key for p in found.papers] == ranked[1:]
    assert [p.rank for p in found.papers] == list(range(2, len(ranked) + 1))
    assert found.total == len(ranked) - 1
    assert all(p.reasons and all(isinstance(r, str) for r in p.reasons) for p in found.papers)


def test_pruning_a_digest_removes_what_it_left_out(tmp_path):
    now = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    with Store.open(tmp_path / "digest.db") as store:
        digest = Digest(watchlist=WATCHLIST, channel="mail", matches=(), created_at=now,
                        matched=2)
        reserved = store.next_digest_id()
        digest_id = store.create_digest(digest, {}, now, digest_id=reserved, left_out=[
            LeftOut("arxiv:2611.00001", 1, 2.0, ('"LoRA" in title',)),
            LeftOut("arxiv:2611.00002", 2, 1.0)])
        assert digest_id == reserved
        assert store.next_digest_id() == reserved + 1
        store.mark_sent(digest_id, now)
        pruned = store.prune(now + timedelta(days=400), keep_days=365, keep_payload_days=0)
        assert pruned.digests == 1
        assert store.digest_left_out(digest_id) is None
        assert store.db.execute("SELECT count(*) FROM digest_overflow").fetchone()[0] == 0


def test_recording_under_an_id_taken_since_fails_instead_of_mislinking(tmp_path):
    now = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
    digest = Digest(watchlist=WATCHLIST, channel="mail", matches=(), created_at=now)
    with Store.open(tmp_path / "digest.db") as store:
        reserved = store.next_digest_id()
        store.create_digest(digest, {}, now)
        with pytest.raises(StoreError):
            store.create_digest(digest, {}, now, digest_id=reserved)


def test_a_watchlist_no_longer_configured_is_410(web_run):
    run, _ = web_run
    url, _ = more_link_of(*the_email(run))
    retired = replace(run.settings, watchlists=tuple(
        replace(w, name="something-else") for w in run.settings.watchlists),
        web=replace(run.settings.web, port=free_port()))
    server = start_in_background(retired)
    try:
        answer = httpx.get(server.url + urlsplit(url).path, timeout=10)
    finally:
        server.stop()
    assert answer.status_code == 410 and WATCHLIST in answer.text
    assert "arxiv.org/abs" not in answer.text
