"""Kept matches: a run that scores only new and changed papers sends exactly what scoring
the whole window every run sends, day after day, through edits, ratings, replacements,
failures and papers leaving the window."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from digest.config import load_settings
from digest.deliver.base import Composed
from digest.errors import DeliveryError
from digest.models import Paper
from digest.pipeline import Seams, run_once
from digest.store import Store

START = datetime(2026, 11, 16, 7, 0, tzinfo=UTC)
FEED = "https://rss.arxiv.org/rss/cs.CL+cs.LG"
WORDS = ["LoRA", "adapter", "quantization", "speech", "retrieval", "agents", "diffusion",
         "alignment", "pruning", "distillation", "optics", "graphs", "benchmark", "tokens"]
AUTHORS = ["Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov"]

WATCHLISTS = """
[[watchlists]]
name = "lora"
keywords = ["LoRA", "adapter"]
channels = ["mail", "chat"]
max_papers = 3
[[watchlists]]
name = "compress"
keywords = [{{ term = "quantization", weight = 2 }}, "pruning", {compress}]
exclude = ["optics"]
channels = ["mail"]
max_papers = 4
[[watchlists]]
name = "people"
authors = ["Grace Hopper", {{ name = "A. Turing", initials = true }}]
channels = ["chat"]
[[watchlists]]
name = "gated"
keywords = ["retrieval", "agents"]
query = "LoRA OR speech"
categories = ["cs.CL"]
channels = ["chat"]
[[watchlists]]
name = "fresh"
keywords = ["diffusion", "alignment"]
recency_boost = 2.0
channels = ["mail"]
max_papers = 2
{extra}
"""
# Watchlists that weigh a paper's words by the store's word counts: seeds, and likes.
ALIKE = """
[[watchlists]]
name = "alike"
similar_to = ["LoRA adapter meets quantization. We study speech and agents in depth."]
min_similarity = 0.2
channels = ["chat"]
max_papers = 3
[[watchlists]]
name = "taste"
feedback_weight = 5
channels = ["mail"]
max_papers = 3
"""


def references(count: int) -> list[Paper]:
    """Older papers for the store to hold, never news: with them, a day's papers move the
    word counts by a few hundredths, and the counts similarity is weighed by hold a while."""
    rng = random.Random(11)
    return [Paper(key=f"arxiv:2601.{n:05d}", arxiv_id=f"2601.{n:05d}", url="u",
                  title=" ".join(rng.sample(WORDS, 3)),
                  abstract=" ".join(rng.choice(WORDS) for _ in range(8)),
                  published=START - timedelta(days=300)) for n in range(count)]


def rss(items: list[dict[str, Any]]) -> bytes:
    body = "".join(
        f"<item><title>{p['title']}</title><link>https://arxiv.org/abs/{p['id']}</link>"
        f"<pubDate>{p['date']}</pubDate>"
        f"<description>arXiv:{p['id']}v{p['version']} Announce Type: {p['type']} Abstract: "
        f"{p['abstract']}</description><guid>oai:arXiv.org:{p['id']}v{p['version']}</guid>"
        + "".join(f"<category>{c}</category>" for c in p["categories"])
        + f"<dc:creator>{', '.join(p['authors'])}</dc:creator>"
        f'<arxiv:announce_type>{p["type"]}</arxiv:announce_type></item>' for p in items)
    return ("<rss version='2.0' xmlns:arxiv='http://arxiv.org/schemas/atom' "
            "xmlns:dc='http://purl.org/dc/elements/1.1/'><channel><title>cs.CL</title>"
            f"{body}</channel></rss>").encode()


def day_listing(day: int, rng: random.Random) -> list[dict[str, Any]]:
    items = []
    for n in range(30):
        words = rng.sample(WORDS, 3)
        items.append({
            "id": f"2611.{day:02d}{n:03d}", "version": 1, "type": "new",
            "date": format_datetime(START + timedelta(days=day, hours=-(n % 20))),
            "title": f"{words[0]} meets {words[1]}",
            "abstract": f"We study {words[2]} and {rng.choice(WORDS)} in depth.",
            "categories": rng.sample(["cs.CL", "cs.LG", "cs.CV"], rng.randint(1, 2)),
            "authors": rng.sample(AUTHORS, rng.randint(1, 3))})
    return items


class Recorder:
    """A channel that records what each digest held, down to scores and reasons."""

    def __init__(self, name: str, sent: list[dict[str, Any]], failing: set[str]) -> None:
        self.kind, self.name, self.sent, self.failing = "fake", name, sent, failing

    def compose(self, digest) -> Composed:
        return Composed({"kind": "fake", "watchlist": digest.watchlist,
                         "papers": [[m.paper.key, m.score, [r.describe() for r in m.reasons]]
                                    for m in digest.matches],
                         "matched": digest.matched, "messages": ["one"]}, digest)

    def send(self, payload, *, parts_sent: int, on_part_sent: Callable[[int], None]) -> None:
        if self.name in self.failing:
            raise DeliveryError("down for today", channel=self.name)
        self.sent.append({"channel": self.name, **payload})
        on_part_sent(1)

    def close(self) -> None:
        pass


class Install:
    """One store and config, run day by day on the same listings."""

    def __init__(self, directory: Path, *, incremental: bool) -> None:
        directory.mkdir()
        self.directory, self.incremental = directory, incremental
        self.sent: list[dict[str, Any]] = []
        self.failing: set[str] = set()
        self.config = directory / "digest.toml"
        self.write(extra="", lookback=3)

    def write(self, *, extra: str, lookback: int, compress: str = '"distillation"') -> None:
        self.config.write_text(f"""
version = 1
[store]
path = "{self.directory / 'digest.db'}"
lookback_days = {lookback}
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
max_retries = 0
[[sources]]
name = "arxiv"
kind = "arxiv_rss"
categories = ["cs.CL", "cs.LG"]
announce_types = ["new", "cross", "replace"]
[channels.mail]
kind = "email"
from = "d@example.org"
to = ["t@example.org"]
[channels.chat]
kind = "slack"
webhook_url_env = "HOOK"
""" + WATCHLISTS.format(extra=extra, compress=compress))

    def run(self, listing: bytes, now: datetime) -> list[tuple[str, int, int, int]]:
        settings = load_settings(self.config, env={"HOOK": "https://hooks.example/x"})
        seams = Seams(
            transport=httpx.MockTransport(lambda request: httpx.Response(200, content=listing)),
            sleep=lambda s: None, now=lambda: now, incremental=self.incremental,
            channel_factory=lambda c: Recorder(c.name, self.sent, self.failing))
        report = run_once(settings, seams=seams)
        return [(w.name, w.recent, w.matched, w.unsent) for w in report.watchlists]


def test_kept_matches_send_what_scoring_the_whole_window_sends(tmp_path):
    kept, whole = (Install(tmp_path / "kept", incremental=True),
                   Install(tmp_path / "whole", incremental=False))
    for install in (kept, whole):
        install.write(extra=ALIKE, lookback=3)
        with Store.open(install.directory / "digest.db") as store:
            store.record_references(references(1000), START - timedelta(days=1))
    rng = random.Random(7)
    listings: list[list[dict[str, Any]]] = []
    scored_then: list[int] = []
    for day in range(7):
        now = START + timedelta(days=day)
        items = day_listing(day, rng)
        if day == 2:  # yesterday's papers replaced: new abstracts that match differently
            for old in listings[-1][:6]:
                items.append({**old, "version": 2, "type": "replace",
                              "abstract": "A LoRA adapter for quantization and speech."})
        if day == 1:  # likes for the watchlist of ratings alone
            for install in (kept, whole):
                with Store.open(install.directory / "digest.db") as store:
                    for key in ("arxiv:2611.00001", "arxiv:2611.00002"):
                        store.rate(watchlist="taste", paper_key=key, action="like",
                                   origin="cli", now=now)
        if day == 3:  # a watchlist edited, and one added
            for install in (kept, whole):
                install.write(extra=ALIKE + '[[watchlists]]\nname = "graphs"\n'
                                    'keywords = ["graphs"]\nchannels = ["mail"]', lookback=3,
                              compress='"tokens"')
        if day == 4:  # a channel down for the day: its digests wait
            for install in (kept, whole):
                install.failing = {"chat"}
        if day == 5:
            for install in (kept, whole):
                install.failing = set()
                with Store.open(install.directory / "digest.db") as store:
                    for key in [f"arxiv:2611.04{n:03d}" for n in range(0, 30, 3)]:
                        store.rate(watchlist="lora", paper_key=key, action="dislike",
                                   origin="cli", now=now)
        if day == 6:  # a longer window brings back papers that had left it
            for install in (kept, whole):
                install.write(extra=ALIKE, lookback=5, compress='"tokens"')
        listings.append(items)
        listing = rss(items)
        assert kept.run(listing, now) == whole.run(listing, now), f"day {day}"
        assert kept.sent == whole.sent, f"day {day}"
        with Store.open(kept.directory / "digest.db") as store:
            scored_then.append(store.db.execute("SELECT COUNT(*) FROM matches").fetchone()[0])
    assert len(kept.sent) > 20
    assert {d["watchlist"] for d in kept.sent} == {"lora", "compress", "people", "gated",
                                                   "fresh", "graphs", "alike", "taste"}
    assert all(scored_then)


def scoring_lines(install: Install, days: int) -> list[str]:
    """The "scoring ..." progress lines of ``days`` daily runs, each on a new listing."""
    rng = random.Random(3)
    lines: list[str] = []
    for day in range(days):
        listing = rss(day_listing(day, rng))
        settings = load_settings(install.config, env={"HOOK": "https://hooks.example/x"})
        seams = Seams(
            transport=httpx.MockTransport(lambda request, body=listing: httpx.Response(
                200, content=body)),
            sleep=lambda s: None, now=lambda day=day: START + timedelta(days=day),
            channel_factory=lambda c: Recorder(c.name, install.sent, install.failing))
        run_once(settings, seams=seams, progress=lines.append)
    return [line for line in lines if line.startswith("scoring ")]


def test_a_steady_day_scores_only_the_new_papers(tmp_path):
    scoring = scoring_lines(Install(tmp_path / "kept", incremental=True), 3)
    # Day 1 scores its 30 papers for every watchlist; later days score only their own 30
    # for all but the one with a recency boost, which is scored over the window each day.
    assert scoring[0] == "scoring 30 papers against 5 watchlists"
    assert scoring[1:] == [
        "scoring 60 papers against 1 watchlist",
        "scoring 30 new or changed papers against 4 watchlists (the rest of the window is "
        "kept)",
        "scoring 90 papers against 1 watchlist",
        "scoring 30 new or changed papers against 4 watchlists (the rest of the window is "
        "kept)"]


def test_likeness_kept_while_the_word_counts_hold_is_not_scored_again(tmp_path):
    install = Install(tmp_path / "kept", incremental=True)
    install.write(extra=ALIKE, lookback=3)
    with Store.open(install.directory / "digest.db") as store:
        store.record_references(references(2000), START - timedelta(days=1))
    scoring = scoring_lines(install, 3)
    # 30 papers a day on 2,000 move the counts by 1.5%: the seeded watchlist keeps what
    # it scored, and only the one with a recency boost is scored over the window
    assert scoring[1:] == [
        "scoring 60 papers against 1 watchlist",
        "scoring 30 new or changed papers against 6 watchlists (the rest of the window is "
        "kept)",
        "scoring 90 papers against 1 watchlist",
        "scoring 30 new or changed papers against 6 watchlists (the rest of the window is "
        "kept)"]
    assert any(d["watchlist"] == "alike" for d in install.sent)


@pytest.mark.parametrize("change", ["abstract", "categories", "upvotes"])
def test_a_change_to_what_scoring_reads_marks_the_paper_for_scoring(tmp_path, change):
    from digest.models import Paper
    with Store.open(tmp_path / "s.db") as store:
        paper = Paper(key="arxiv:2611.00001", title="T", url="u", abstract="a",
                      categories=("cs.CL",), arxiv_id="2611.00001", version=1)
        store.record_references([paper], START)
        first = store.last_change()
        store.record_references([paper], START)  # the same again: nothing changed
        assert store.last_change() == first
        changed = {"abstract": {"abstract": "b", "version": 2},
                   "categories": {"categories": ("cs.CL", "cs.LG")},
                   "upvotes": {"upvotes": 5}}[change]
        from dataclasses import replace
        store.record_references([replace(paper, **changed)], START)
        assert store.last_change() > first
        assert [p.key for chunk in store.changed_since(START - timedelta(days=1), first)
                for p in chunk] == [paper.key]
