"""Benchmark: whole `paper-digest run --once` passes, each in a process of its own, against
a generated arXiv listing on a local HTTP server and one local SMTP server (aiosmtpd).

Every watchlist has its own email channel, all pointed at the same SMTP server on 127.0.0.1.
The listing is generated from a seed: made-up topic terms, author names and real arXiv
categories, each watchlist with 3-6 of those terms, some authors and some category
filters, so that it matches a few percent of the papers; one paper of each listing is
given each watchlist's first term, so every watchlist has something to send. Each run is
checked: its exit status, and the messages the SMTP server received against those
expected (one digest per watchlist). Figures are printed, never judged.

Scenarios (only those asked for run; the scale one when none is):
  (scale)               --watchlists N, --items M, --repeat K runs, each from an empty
                        store: wall time, CPU time (user+sys) and peak RSS of the run, its
                        worker processes included
  --days D              D consecutive runs on one store, each with a new listing of M
                        papers never seen before: per run, the figures and the store's size
  --feed-sizes A,B,...  one run per listing size, at N watchlists, each from an empty store
  --stored-papers P     N watchlists that also have a similar_to seed, on a store already
                        holding P papers of the year before: two consecutive days of M
  --history-days H      N watchlists on a store already holding H days of history before
                        the window: M papers a day, a digest of 25 of them a day to each
                        channel, sent; then one day's run on it (the daily run should not
                        notice the history)
  --rss2email           rss2email (one email per item, then its digest mode) beside
                        paper-digest sending one digest of one watchlist matching every
                        paper, all on the same M-item listing and SMTP server, K runs each
  --profile             one run at N watchlists under cProfile: the 25 functions with the
                        most cumulative time, and the 15 with the most time of their own

Run: .venv/bin/python bench/bench_scale.py [--watchlists 1000] [--items 2000] [--repeat 5]
       [--days D] [--feed-sizes 2000,20000,100000] [--stored-papers 500000]
       [--history-days 365] [--rss2email] [--profile] [--seed 1]
       [--source DIR] [--keep] [--timeout 1800]
e.g. .venv/bin/python bench/bench_scale.py --watchlists 1000 --items 2000 --repeat 5

--source DIR measures another revision of the product with the same harness, e.g. the
one before a change:  git archive COMMIT | tar -x -C /tmp/before  then  --source /tmp/before

rss2email is installed on first use into bench/.cache/rss2email-venv (a virtualenv of its
own, through pip and the package index) and reused after. The servers run in this process,
so their work shares the machine with the measured run, as a real relay would.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import os
import pstats
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from random import Random
from typing import Any
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"
RSS2EMAIL_VENV = CACHE / "rss2email-venv"
COMMAND = ".venv/bin/python bench/bench_scale.py"
BIN = Path(sys.executable).parent
SOURCE_NAME = "bench-listing"
SENDER = "Paper Digest <digest@bench.example>"
MAX_PAPERS = 25  # the product's default max_papers, written out so the table can say it

# ------------------------------------------------------------------ the vocabulary

# Topic terms are made-up words (consonant-vowel syllables), so they never occur inside
# the ordinary words around them and no term is another's plural or spelling variant: the
# generator then knows exactly which watchlist matches which paper. They end in none of
# s, n, a, e, i (no plural or singular form of one is another) and hold no s or z (no
# British -ise spelling to fold).
CONSONANTS = "bdfgklmprtv"
VOWELS = "aeiou"
FINALS = "rlkmtd"
SINGLE_TERMS = 1800
PHRASE_TERMS = 600  # two-word terms, written as one phrase in a paper
ZIPF = 0.4  # popularity of the n-th term ~ 1/n^ZIPF, for papers and watchlists alike

FILLER = """
a an the of for to in on with by from and or as at via we our this that these which
is are be can show shows propose proposes present study studies introduce evaluate
method methods approach framework model models results analysis performance training
learning data task tasks efficient robust scalable novel new simple effective improved
large small deep neural general adaptive structured sparse dense online offline prior
experiments benchmark baseline accuracy error loss cost memory time speed quality
across under over between within than while both each several many most more fewer
setting settings problem problems solution theory empirical practical real world
demonstrate outperform achieve reduce improve enable provide yield extend compare
existing recent standard strong weak open public diverse multiple single joint
representation representations features signal inference optimization objective
""".split()
FILLER_SET = frozenset(FILLER)
TITLE_WORDS = """Towards Efficient Robust Scalable Learning with for via and in on Beyond
Rethinking Understanding Improving Fast Adaptive Sparse Deep Neural Structured
Analysis Models Methods Framework Approach""".split()
OPENINGS = ("In this paper we", "This paper", "In this paper, we", "We present in this paper")
FIRST_NAMES = """Ana Mei Pavel Tobias Yuki Sinong Amara Lucas Ingrid Omar Priya Jonas
Elena Kwame Sofia Hiro Nadia Mateo Freya Ravi Chloe Dmitri Aisha Bruno Lena Kenji Zara
Felix Maya Tariq Olga Diego Hana Simon Leila Marco Noor Erik Ines Arjun Clara Viktor
Rosa Samir Alma Theo Yara Hugo Mira Emil Sana Carlos Ada Ivan Nora Luca Esme Rafael""".split()
LAST_NAMES = """Souza Keller Novak Sato Wang Okafor Lindqvist Haddad Sharma Becker
Moreau Tanaka Kowalski Mensah Rossi Nakamura Fischer Petrov Khan Duarte Jensen Ito
Horvat Mwangi Laurent Suzuki Almeida Nilsson Brennan Yilmaz Castillo Park Dubois
Ferreira Gallagher Hoffmann Iwasaki Johansson Kaplan Lopez Marino Nguyen Oliveira
Pereira Quinn Romero Schmidt Takahashi Usman Vasquez Weber Xu Yamamoto Zhang Abebe
Bianchi Costa Dimitrov Eriksen Fontaine Gomez Huang Ibrahim Jovanovic Kim Larsen
Moretti Nakashima Ortega Popescu Reyes Silva Torres Ueda Varga Watanabe""".split()
AUTHORS = 3000
# Real arXiv categories (a config names them, and `check` refuses unknown ones), weighted
# roughly as in a machine-learning listing.
CATEGORIES = {"cs.LG": 30, "cs.CL": 20, "cs.CV": 18, "cs.AI": 12, "stat.ML": 6, "cs.RO": 5,
              "cs.IR": 4, "cs.CR": 4, "cs.SE": 3, "cs.DC": 3, "cs.NE": 2, "cs.HC": 2,
              "cs.DB": 2, "eess.IV": 2, "eess.AS": 2, "math.OC": 2, "cs.SD": 1, "cs.MA": 1,
              "q-bio.QM": 1, "physics.comp-ph": 1}


def _token(rng: Random) -> str:
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(3)) + \
        rng.choice(FINALS)


@dataclass(frozen=True)
class Vocabulary:
    terms: tuple[str, ...]  # the most popular first
    cumulative: tuple[float, ...]  # cumulative popularity, for Random.choices
    authors: tuple[str, ...]

    @classmethod
    def make(cls, seed: int) -> Vocabulary:
        rng = Random(f"vocabulary-{seed}")
        tokens: list[str] = []
        seen: set[str] = set()
        while len(tokens) < SINGLE_TERMS + 2 * PHRASE_TERMS:
            token = _token(rng)
            if token not in seen and token not in FILLER_SET:
                seen.add(token)
                tokens.append(token)
        singles = tokens[:SINGLE_TERMS]
        pairs = tokens[SINGLE_TERMS:]
        phrases = [f"{a} {b}" for a, b in zip(pairs[::2], pairs[1::2], strict=True)]
        terms = singles + phrases
        rng.shuffle(terms)
        cumulative = tuple(itertools.accumulate(1 / (n + 1) ** ZIPF for n in range(len(terms))))
        names = [f"{first} {last}" for first in FIRST_NAMES for last in LAST_NAMES]
        authors = tuple(rng.sample(names, min(AUTHORS, len(names))))
        return cls(terms=tuple(terms), cumulative=cumulative, authors=authors)

    def draw_terms(self, rng: Random, count: int) -> list[str]:
        """``count`` distinct terms, the popular ones more often."""
        chosen: dict[str, None] = {}
        while len(chosen) < count:
            total = self.cumulative[-1]
            index = bisect.bisect_right(self.cumulative, rng.random() * total)
            chosen[self.terms[min(index, len(self.terms) - 1)]] = None
        return list(chosen)


def draw_categories(rng: Random, count: int) -> list[str]:
    chosen: dict[str, None] = {}
    names, weights = list(CATEGORIES), list(CATEGORIES.values())
    while len(chosen) < count:
        chosen[rng.choices(names, weights)[0]] = None
    return list(chosen)


# ------------------------------------------------------------------ watchlists and listings


@dataclass(frozen=True)
class WatchlistSpec:
    name: str
    keywords: tuple[str, ...]
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()  # a filter: only papers listed in one of these
    max_papers: int = MAX_PAPERS
    similar_to: tuple[str, ...] = ()  # seed texts


def make_watchlists(count: int, vocabulary: Vocabulary, seed: int) -> list[WatchlistSpec]:
    """3-6 terms each; half follow 1-2 authors; three in ten filter on 2-4 categories."""
    rng = Random(f"watchlists-{seed}")
    width = len(str(count))
    specs = []
    for number in range(1, count + 1):
        keywords = vocabulary.draw_terms(rng, rng.randint(3, 6))
        roll = rng.random()
        authors = rng.sample(vocabulary.authors, 0 if roll < 0.5 else 1 if roll < 0.8 else 2)
        categories = draw_categories(rng, rng.randint(2, 4)) if rng.random() < 0.3 else []
        specs.append(WatchlistSpec(name=f"watch-{number:0{width}d}", keywords=tuple(keywords),
                                   authors=tuple(authors), categories=tuple(categories)))
    return specs


def broad_watchlist() -> WatchlistSpec:
    """One watchlist matching every paper: each abstract opens with "this paper"."""
    return WatchlistSpec(name="everything", keywords=("paper",))


@dataclass(frozen=True)
class ListedPaper:
    """What the generator put into one item, to know which watchlists it matches."""

    arxiv_id: str
    terms: frozenset[str]
    authors: tuple[str, ...]
    categories: tuple[str, ...]


@dataclass(frozen=True)
class Listing:
    body: bytes
    papers: tuple[ListedPaper, ...]


def arxiv_id(number: int) -> str:
    """A distinct new-style arXiv id for each number: 100,000 to a month from 2601."""
    month = number // 100_000
    return f"{26 + month // 12:02d}{month % 12 + 1:02d}.{number % 100_000:05d}"


def _sentence(rng: Random, opening: str | None, terms: Sequence[str]) -> str:
    words = rng.choices(FILLER, k=rng.randint(8, 14))
    for term in terms:
        words.insert(rng.randint(0, len(words)), term)
    text = " ".join(words)
    if opening:
        text = f"{opening} {text}"
    return text[0].upper() + text[1:] + "."


def make_listing(count: int, *, first: int, vocabulary: Vocabulary,
                 watchlists: Sequence[WatchlistSpec], seed: int,
                 published: datetime | None = None) -> Listing:
    """An arXiv RSS listing of ``count`` papers numbered from ``first``, as rss.arxiv.org
    writes it; each watchlist's first term is given to one paper drawn at random."""
    rng = Random(f"listing-{seed}-{first}-{count}")
    planted: dict[int, list[WatchlistSpec]] = defaultdict(list)
    for watchlist in watchlists:
        planted[rng.randrange(count)].append(watchlist)
    date = format_datetime(published or datetime.now(UTC).replace(
        hour=5, minute=0, second=0, microsecond=0))
    parts = [
        "<?xml version='1.0' encoding='UTF-8'?>\n"
        '<rss xmlns:arxiv="http://arxiv.org/schemas/atom" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:atom="http://www.w3.org/2005/Atom" version="2.0">\n<channel>\n'
        "<title>cs.LG updates on arXiv.org</title>\n"
        "<link>http://rss.arxiv.org/rss/cs.LG</link>\n"
        "<description>cs.LG updates on the arXiv.org e-print archive.</description>\n"
        f"<language>en-us</language>\n<lastBuildDate>{date}</lastBuildDate>\n"
        f"<pubDate>{date}</pubDate>\n"]
    papers = []
    for index in range(count):
        paper_id = arxiv_id(first + index)
        title_terms = vocabulary.draw_terms(rng, 2)
        abstract_terms = vocabulary.draw_terms(rng, rng.randint(3, 6))
        categories = draw_categories(rng, rng.randint(1, 3))
        for watchlist in planted.get(index, ()):
            abstract_terms.append(watchlist.keywords[0])
            if watchlist.categories and not set(watchlist.categories) & set(categories):
                categories.append(watchlist.categories[0])
        authors = rng.sample(vocabulary.authors, rng.randint(2, 6))
        title_words = rng.choices(TITLE_WORDS, k=rng.randint(3, 6))
        for term in title_terms:
            title_words.insert(rng.randint(0, len(title_words)), term.title())
        title = " ".join(title_words)
        sentences = []
        per_sentence = max(1, -(-len(abstract_terms) // 5))
        for number in range(5):
            chunk = abstract_terms[number * per_sentence:(number + 1) * per_sentence]
            sentences.append(_sentence(rng, rng.choice(OPENINGS) if number == 0 else None,
                                       chunk))
        abstract = " ".join(sentences)
        announce = "new" if rng.random() < 0.8 else "cross"
        category_tags = "".join(f"<category>{escape(c)}</category>\n" for c in categories)
        parts.append(
            f"<item>\n<title>{escape(title)}</title>\n"
            f"<link>https://arxiv.org/abs/{paper_id}</link>\n"
            f"<description>arXiv:{paper_id}v1 Announce Type: {announce} \n"
            f"Abstract: {escape(abstract)}</description>\n"
            f'<guid isPermaLink="false">oai:arXiv.org:{paper_id}v1</guid>\n'
            f"{category_tags}<pubDate>{date}</pubDate>\n"
            f"<arxiv:announce_type>{announce}</arxiv:announce_type>\n"
            "<dc:rights>http://creativecommons.org/licenses/by/4.0/</dc:rights>\n"
            f"<dc:creator>{escape(', '.join(authors))}</dc:creator>\n</item>\n")
        papers.append(ListedPaper(arxiv_id=paper_id,
                                  # every abstract opens with "this paper": see OPENINGS
                                  terms=frozenset([*title_terms, *abstract_terms, "paper"]),
                                  authors=tuple(authors), categories=tuple(categories)))
    parts.append("</channel>\n</rss>\n")
    return Listing(body="".join(parts).encode("utf-8"), papers=tuple(papers))


def expected_matches(watchlists: Sequence[WatchlistSpec],
                     papers: Sequence[ListedPaper]) -> list[int]:
    """How many papers each watchlist matches: a term or an author of its own, within
    its categories. Every positive term scores at least min_score 1, so one is enough."""
    by_term: dict[str, set[int]] = defaultdict(set)
    by_author: dict[str, set[int]] = defaultdict(set)
    for index, paper in enumerate(papers):
        for term in paper.terms:
            by_term[term].add(index)
        for author in paper.authors:
            by_author[author].add(index)
    counts = []
    for watchlist in watchlists:
        hits: set[int] = set()
        for keyword in watchlist.keywords:
            hits |= by_term.get(keyword, set())
        for author in watchlist.authors:
            hits |= by_author.get(author, set())
        if watchlist.categories:
            wanted = set(watchlist.categories)
            hits = {i for i in hits if wanted & set(papers[i].categories)}
        counts.append(len(hits))
    return counts


# ------------------------------------------------------------------ the configuration


def _toml(value: Any) -> str:
    """A TOML value for a string or a list of strings (JSON's escapes are TOML's)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return "[" + ", ".join(_toml(v) for v in value) + "]"


def write_config(directory: Path, *, feed_url: str, smtp_port: int,
                 watchlists: Sequence[WatchlistSpec], feed_bytes: int,
                 shared_channel: bool = False) -> Path:
    """A config for `paper-digest run`: the store in ``directory``, one arxiv_rss source,
    and an email channel per watchlist (or one for all with ``shared_channel``)."""
    max_body_mb = max(50, -(-feed_bytes * 2 // 2**20))
    lines = [
        "version = 1", "",
        "[store]", f"path = {_toml(str(directory / 'digest.db'))}", "",
        "[http]",
        "interval_seconds = 0",
        "timeout_seconds = 300",
        f"max_body_mb = {max_body_mb}", "",
        "[arxiv]",
        "catch_up_days = 0  # the listing is the only source; no arXiv API behind it", "",
        "[[sources]]",
        f"name = {_toml(SOURCE_NAME)}",
        'kind = "arxiv_rss"',
        f"url = {_toml(feed_url)}", "",
    ]
    channels = []
    for number, watchlist in enumerate(watchlists, start=1):
        channel = "mail" if shared_channel else f"mail-{watchlist.name}"
        lines += ["[[watchlists]]", f"name = {_toml(watchlist.name)}",
                  f"keywords = {_toml(watchlist.keywords)}"]
        if watchlist.authors:
            lines.append(f"authors = {_toml(watchlist.authors)}")
        if watchlist.categories:
            lines.append(f"categories = {_toml(watchlist.categories)}")
        if watchlist.similar_to:
            lines.append(f"similar_to = {_toml(watchlist.similar_to)}")
        lines += [f"max_papers = {watchlist.max_papers}", f"channels = {_toml([channel])}", ""]
        if channel not in channels:
            channels.append(channel)
            recipient = "reader@bench.example" if shared_channel else \
                f"reader-{number}@bench.example"
            channels_block = [
                f"[channels.{channel}]", 'kind = "email"', 'smtp_host = "127.0.0.1"',
                f"smtp_port = {smtp_port}", 'security = "none"', f"from = {_toml(SENDER)}",
                f"to = {_toml([recipient])}", ""]
            lines += channels_block
    path = directory / "digest.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# ------------------------------------------------------------------ the servers


class FeedServer:
    """Serves one listing at /rss over HTTP on 127.0.0.1; the listing can be swapped."""

    def __init__(self) -> None:
        self.body = b""
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.requests += 1
                body = server.body if self.path.split("?", 1)[0] == "/rss" else b""
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the reader gave up; its run reports why

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/rss"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class MailCounter:
    """aiosmtpd handler: counts the messages accepted, their recipients and bytes."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages = 0
        self.recipients: set[str] = set()
        self.bytes = 0

    def reset(self) -> None:
        with self.lock:
            self.messages, self.recipients, self.bytes = 0, set(), 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        with self.lock:
            self.messages += 1
            self.recipients.update(envelope.rcpt_tos)
            self.bytes += len(envelope.content or b"")
        return "250 Message accepted for delivery"


class MailServer:
    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.counter = MailCounter()
        # Port 0 cannot be asked of the controller (it connects to check it is up).
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.controller = Controller(self.counter, hostname="127.0.0.1", port=self.port,
                                     data_size_limit=256 * 2**20)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()


# ------------------------------------------------------------------ measuring a child


@dataclass(frozen=True)
class Sample:
    """One child process: wall and CPU seconds, peak RSS, exit status, what it printed,
    and what the SMTP server received while it ran."""

    wall: float
    user: float
    system: float
    peak_rss_kib: int
    status: int
    stdout: str
    stderr: str
    messages: int = 0
    mail_bytes: int = 0

    @property
    def cpu(self) -> float:
        return self.user + self.system

    @property
    def peak_rss_mib(self) -> float:
        return self.peak_rss_kib / 1024


# Starts the measured command from a small process of its own and reports the command's own
# rusage. On Linux a child forked from this (large) benchmark process and then exec'ing the
# command keeps, as its peak RSS, this process's size at the fork: at 100,000 items that
# was the generated listing, not the run. A run may start worker processes (composing
# digests), whose memory ru_maxrss does not add to the run's: the launcher also samples the
# RSS of the command and all its descendants together every 20 ms, and the peak reported is
# the larger of the two.
LAUNCHER = """
import json, os, sys, threading, time
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
peak = [0]
def tree_rss(root):
    total, todo = 0, [root]
    while todo:
        proc = todo.pop()
        try:
            with open(f"/proc/{proc}/status") as status:
                total += next(int(l.split()[1]) for l in status if l.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{proc}/task"):
                with open(f"/proc/{proc}/task/{task}/children") as children:
                    todo += [int(c) for c in children.read().split()]
        except (OSError, StopIteration, ValueError):
            pass
    return total
def sample():
    while True:
        peak[0] = max(peak[0], tree_rss(pid))
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    json.dump([usage.ru_utime, usage.ru_stime, max(usage.ru_maxrss, peak[0])], report)
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def measure(argv: Sequence[str], *, cwd: Path, timeout: float,
            env: dict[str, str] | None = None) -> Sample:
    """Run ``argv`` to its end; its rusage (its waited-for workers' CPU included) comes from
    wait4 in a small launcher, its peak RSS (KiB) with its workers' as sampled there."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "rusage.json"
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(report), *argv],
                                 cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 env=env, start_new_session=True)
        # Bounded: a run that hangs is killed (launcher and command), and reported by its
        # status.
        watchdog = threading.Timer(timeout, lambda: os.killpg(child.pid, signal.SIGKILL))
        watchdog.start()
        try:
            child.wait()
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - started
        user, system, peak = json.loads(report.read_text()) if report.exists() else (0, 0, 0)
        out.seek(0)
        err.seek(0)
        return Sample(wall=wall, user=user, system=system, peak_rss_kib=peak,
                      status=child.returncode,
                      stdout=out.read().decode("utf-8", "replace"),
                      stderr=err.read().decode("utf-8", "replace"))


def revision(tree: Path) -> str:
    """The commit a source tree is at, and whether its product code differs from it."""
    def git(*args: str) -> str:
        # --no-optional-locks: only reads, never takes the index lock from a concurrent commit
        return subprocess.run(["git", "--no-optional-locks", "-C", str(tree), *args],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    try:
        head = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--", "digest", "templates", "pyproject.toml")
    except (OSError, subprocess.SubprocessError):
        head = changed = ""
    if not head or not (tree / ".git").exists():
        return "not a git checkout"
    return f"commit {head}" + (" with uncommitted changes to the product" if changed else "")


def paper_digest() -> list[str]:
    script = BIN / "paper-digest"
    return [str(script)] if script.exists() else [sys.executable, "-m", "digest"]


@dataclass
class Bench:
    """The servers and options every scenario shares, and whether every check held."""

    feed: FeedServer
    mail: MailServer
    seed: int
    timeout: float
    keep: bool
    vocabulary: Vocabulary
    source: Path | None = None  # a source tree to run the product from, else the installed one
    ok: bool = True

    def product(self) -> list[str]:
        return [sys.executable, "-m", "digest"] if self.source else paper_digest()

    def environment(self) -> dict[str, str] | None:
        """With a source tree, its ``digest`` comes first on the path; the dependencies
        are this interpreter's."""
        if self.source is None:
            return None
        path = [str(self.source), *filter(None, [os.environ.get("PYTHONPATH")])]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}

    def options(self) -> str:
        """The options every scenario's command line repeats when they are not the default."""
        text = f" --seed {self.seed}" if self.seed != 1 else ""
        return text + (f" --source {self.source}" if self.source else "")

    def describe(self) -> str:
        """Which code is measured: where ``digest`` is imported from, and its revision."""
        # From a folder of no package, as the runs are (cwd comes first on the path).
        found = subprocess.run([sys.executable, "-c", "import digest; print(digest.__file__)"],
                               capture_output=True, text=True, timeout=60,
                               env=self.environment(), cwd=tempfile.gettempdir())
        package = Path(found.stdout.strip() or "?").parent
        tree = self.source or ROOT
        return f"{' '.join(self.product())}, digest from {package} ({revision(tree)})"

    def run(self, argv: Sequence[str], cwd: Path) -> Sample:
        self.mail.counter.reset()
        sample = measure(argv, cwd=cwd, timeout=self.timeout, env=self.environment())
        counter = self.mail.counter
        with counter.lock:
            messages, size = counter.messages, counter.bytes
        return replace(sample, messages=messages, mail_bytes=size)

    def check(self, sample: Sample, *, expected: int, what: str) -> bool:
        """Exit status 0 and the expected messages received; else say what went wrong."""
        good = sample.status == 0 and sample.messages == expected
        if not good:
            self.ok = False
            tail = "\n    ".join((sample.stderr.strip() or sample.stdout.strip())
                                 .splitlines()[-8:])
            print(f"  CHECK FAILED {what}: exit status {sample.status}, "
                  f"{sample.messages} messages received, {expected} expected\n    {tail}")
        return good

    def workdir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"bench-scale-{prefix}-"))

    def done_with(self, directory: Path) -> None:
        if self.keep:
            print(f"  (kept {directory})")
        else:
            shutil.rmtree(directory, ignore_errors=True)


# ------------------------------------------------------------------ printing


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns aligned: the first to the left, the others to the right."""
    text = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in text) for i in range(len(headers))]
    lines = []
    for row in text:
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                       strict=True)]
        lines.append("  " + "  ".join(cells).rstrip())
    return "\n".join(lines)


def n_runs(count: int) -> str:
    return f"{count} run{'s' if count != 1 else ''}"


def spread(values: Sequence[float], digits: int = 2) -> list[str]:
    return [f"{min(values):.{digits}f}", f"{statistics.median(values):.{digits}f}",
            f"{max(values):.{digits}f}"]


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def store_size(directory: Path) -> int:
    return sum(p.stat().st_size for p in (directory / "digest.db",
                                          directory / "digest.db-wal") if p.exists())


_SUMMARY = re.compile(r"^(\d+) new papers?; (\d+) digests? delivered", re.MULTILINE)
_WATCHLIST = re.compile(r"^  (\S+): (\d+) of (\d+) recent papers? matched", re.MULTILINE)


@dataclass(frozen=True)
class Summary:
    """What a run's own summary said."""

    new_papers: int | None
    delivered: int | None
    matched: dict[str, int]
    recent: int | None


def summary(stdout: str) -> Summary:
    total = _SUMMARY.search(stdout)
    rows = _WATCHLIST.findall(stdout)
    return Summary(new_papers=int(total.group(1)) if total else None,
                   delivered=int(total.group(2)) if total else None,
                   matched={name: int(matched) for name, matched, _ in rows},
                   recent=int(rows[0][2]) if rows else None)


def describe_matches(counts: Sequence[int], items: int) -> str:
    median = statistics.median(counts)
    return (f"papers matched per watchlist (generator): min {min(counts)}, median {median:g}, "
            f"max {max(counts)} of {items} ({100 * median / items:.1f}% at the median), "
            f"{sum(counts)} matches in all")


def agreement(expected: Sequence[int], watchlists: Sequence[WatchlistSpec],
              said: Summary) -> str:
    same = sum(said.matched.get(w.name) == n for w, n in zip(watchlists, expected,
                                                             strict=True))
    return (f"the run's own summary: {said.new_papers} new papers, {said.delivered} digests "
            f"delivered; its matches per watchlist equal the generator's for "
            f"{same} of {len(watchlists)} watchlists")


def sample_rows(samples: Sequence[Sample]) -> list[list[str]]:
    return [
        ["wall (s)", *spread([s.wall for s in samples])],
        ["CPU user+sys (s)", *spread([s.cpu for s in samples])],
        ["  user (s)", *spread([s.user for s in samples])],
        ["  sys (s)", *spread([s.system for s in samples])],
        ["peak RSS (MiB)", *spread([s.peak_rss_mib for s in samples], 1)],
    ]


# ------------------------------------------------------------------ scenarios


def scale(bench: Bench, *, watchlists: int, items: int, repeat: int) -> None:
    command = f"{COMMAND} --watchlists {watchlists} --items {items} --repeat {repeat}"
    command += bench.options()
    specs = make_watchlists(watchlists, bench.vocabulary, bench.seed)
    listing = make_listing(items, first=0, vocabulary=bench.vocabulary, watchlists=specs,
                           seed=bench.seed)
    counts = expected_matches(specs, listing.papers)
    expected = sum(1 for n in counts if n)
    bench.feed.body = listing.body
    print(f"\n== scale: {watchlists} watchlists, each with its own email channel, one SMTP "
          f"server; a {items}-item listing; {n_runs(repeat)}, each from an empty store")
    print(f"command: {command}")
    print(f"listing: {items} items, {mib(len(listing.body))}; "
          f"{describe_matches(counts, items)}")
    samples: list[Sample] = []
    for number in range(1, repeat + 1):
        directory = bench.workdir("scale")
        config = write_config(directory, feed_url=bench.feed.url, smtp_port=bench.mail.port,
                              watchlists=specs, feed_bytes=len(listing.body))
        sample = bench.run([*bench.product(), "run", "--once", "--config", str(config)],
                           directory)
        bench.check(sample, expected=expected, what=f"run {number}")
        if number == 1:
            print("  " + agreement(counts, specs, summary(sample.stdout)))
        samples.append(sample)
        bench.done_with(directory)
    statuses = sorted({s.status for s in samples})
    print(table(["", "min", "median", "max"], [
        *sample_rows(samples),
        ["messages received", *spread([s.messages for s in samples], 0)],
        ["mail received (MiB)", *spread([s.mail_bytes / 2**20 for s in samples], 1)],
    ]))
    print(f"  expected messages: {expected} per run (one digest per watchlist); exit status "
          f"{', '.join(map(str, statuses))} in {repeat} of {repeat} runs; "
          f"max_papers {MAX_PAPERS}")


def days(bench: Bench, *, watchlists: int, items: int, count: int) -> None:
    command = f"{COMMAND} --watchlists {watchlists} --items {items} --days {count}"
    command += bench.options()
    specs = make_watchlists(watchlists, bench.vocabulary, bench.seed)
    print(f"\n== days: {count} consecutive runs on one store, {watchlists} watchlists, "
          f"each run with a new listing of {items} papers never seen before")
    print(f"command: {command}")
    directory = bench.workdir("days")
    config: Path | None = None
    rows = []
    for day in range(1, count + 1):
        listing = make_listing(items, first=(day - 1) * items, vocabulary=bench.vocabulary,
                               watchlists=specs, seed=bench.seed)
        bench.feed.body = listing.body
        if config is None:
            config = write_config(directory, feed_url=bench.feed.url,
                                  smtp_port=bench.mail.port, watchlists=specs,
                                  feed_bytes=len(listing.body))
        # Each listing gives every watchlist a paper, so each run sends every digest.
        expected = watchlists
        sample = bench.run([*bench.product(), "run", "--once", "--config", str(config)],
                           directory)
        bench.check(sample, expected=expected, what=f"day {day}")
        said = summary(sample.stdout)
        rows.append([f"day {day}", said.new_papers, said.recent, f"{sample.wall:.2f}",
                     f"{sample.cpu:.2f}", f"{sample.peak_rss_mib:.1f}",
                     f"{store_size(directory) / 2**20:.1f}",
                     f"{sample.messages}/{expected}", sample.status])
    print(table(["", "new papers", "papers in window", "wall (s)", "CPU (s)",
                 "peak RSS (MiB)", "store (MiB)", "messages", "exit"], rows))
    print("  every run is on today's date, so the lookback window (store.lookback_days, 7) "
          "grows with each run; a product that keeps its matches between runs scores only "
          "the new papers; the store size is the file and its -wal")
    bench.done_with(directory)


# Fills a store with old papers through the measured product's own Store, in its own
# process: title and abstract from a word list, first seen over the year before the runs.
FILL_STORE = """
import random, sys
from datetime import UTC, datetime, timedelta
from digest.models import Paper
from digest.sources.base import SourceState
from digest.store import Store
path, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
words = [line.strip() for line in sys.stdin if line.strip()]
start = datetime.now(UTC) - timedelta(days=365)
with Store.open(path) as store:
    for chunk in range(0, count, 10_000):
        when = start + timedelta(days=330 * chunk / count)
        papers = [Paper(key=f"arxiv:old.{n:07d}", arxiv_id=f"old.{n:07d}", url="u",
                        title=" ".join(rng.choices(words, k=9)),
                        abstract=" ".join(rng.choices(words, k=150)))
                  for n in range(chunk, min(count, chunk + 10_000))]
        store.record_batch("old", papers, SourceState(), when)
"""


def stored_papers(bench: Bench, *, watchlists: int, items: int, stored: int) -> None:
    """Three consecutive days with ``watchlists`` similar_to watchlists, on a store that
    already holds ``stored`` papers from the year before. The first run prunes what is
    older than keep_days; from the third, a day adds and prunes about what the next does."""
    command = f"{COMMAND} --watchlists {watchlists} --items {items} --stored-papers {stored}"
    command += bench.options()
    rng = Random(f"similar-{bench.seed}")
    specs = [replace(spec, similar_to=(
        " ".join([*rng.choices(FILLER, k=12), *spec.keywords[:2]]),))
        for spec in make_watchlists(watchlists, bench.vocabulary, bench.seed)]
    print(f"\n== stored papers: {watchlists} watchlists with similar_to, on a store already "
          f"holding {stored} papers; three consecutive days, a new {items}-paper listing each")
    print(f"command: {command}")
    directory = bench.workdir("stored")
    words = "\n".join(FILLER + list(bench.vocabulary.terms)) + "\n"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", FILL_STORE, str(directory / "digest.db"),
                    str(stored), str(bench.seed)], input=words, text=True, check=True,
                   env=bench.environment(), cwd=directory, timeout=bench.timeout)
    print(f"  store filled with {stored} papers in {time.perf_counter() - started:.1f} s, "
          f"{store_size(directory) / 2**20:.1f} MiB")
    daily_runs(bench, directory, specs, items=items, after="", days=3)
    bench.done_with(directory)


def daily_runs(bench: Bench, directory: Path, specs: list[WatchlistSpec], *, items: int,
               after: str, days: int = 2) -> None:
    """``days`` consecutive runs on the store in ``directory``, a new listing each, and
    their figures; every watchlist sends a digest each day."""
    config: Path | None = None
    rows = []
    for day in range(1, days + 1):
        listing = make_listing(items, first=(day - 1) * items, vocabulary=bench.vocabulary,
                               watchlists=specs, seed=bench.seed)
        bench.feed.body = listing.body
        if config is None:
            config = write_config(directory, feed_url=bench.feed.url,
                                  smtp_port=bench.mail.port, watchlists=specs,
                                  feed_bytes=len(listing.body))
        sample = bench.run([*bench.product(), "run", "--once", "--config", str(config)],
                           directory)
        bench.check(sample, expected=len(specs), what=f"day {day}{after}")
        rows.append([f"day {day}", f"{sample.wall:.2f}", f"{sample.cpu:.2f}",
                     f"{sample.peak_rss_mib:.1f}", f"{store_size(directory) / 2**20:.1f}",
                     f"{sample.messages}/{len(specs)}", sample.status])
    print(table(["", "wall (s)", "CPU (s)", "peak RSS (MiB)", "store (MiB)", "messages",
                 "exit"], rows))


# Fills a store with a history before the window, through the measured product's own
# schema (opened by its Store, so migrated), in bulk SQL: ``days`` days of ``items`` papers
# up to yesterday, each day a sent digest of 25 of them to every watchlist's channel, with
# its deliveries. Papers, digests and deliveries are the tables a year of running grows;
# payloads are the placeholder that pruning leaves, as they would be after 30 days.
FILL_HISTORY = """
import random, sys
from datetime import UTC, datetime, timedelta
from digest.store import Store
from digest.store.db import PRUNED_PAYLOAD
path, days, items, seed = sys.argv[1], *map(int, sys.argv[2:5])
names = sys.argv[5:]
rng = random.Random(seed)
start = datetime.now(UTC) - timedelta(days=days)
with Store.open(path) as store:
    db = store.db.conn
    next_id = 1
    for day in range(days):
        when = (start + timedelta(days=day)).isoformat(timespec="seconds")
        keys = [f"arxiv:hist.{day:04d}{n:05d}" for n in range(items)]
        db.executemany("INSERT INTO papers (key, title, first_seen, updated_at) "
                       "VALUES (?, 'an old paper', ?, ?)", [(k, when, when) for k in keys])
        db.executemany("INSERT INTO sightings (paper_key, source, first_seen, last_seen) "
                       "VALUES (?, 'bench-listing', ?, ?)", [(k, when, when) for k in keys])
        digests, papers, deliveries = [], [], []
        for watchlist in names:
            channel = f"mail-{watchlist}"
            digests.append((next_id, channel, watchlist, PRUNED_PAYLOAD, when, when))
            for rank, key in enumerate(rng.sample(keys, min(25, items)), start=1):
                papers.append((next_id, key, rank, 1.0))
                deliveries.append((channel, key, next_id, when))
            next_id += 1
        db.executemany("INSERT INTO digests (id, channel, watchlist, status, payload, "
                       "created_at, updated_at) VALUES (?, ?, ?, 'sent', ?, ?, ?)", digests)
        db.executemany("INSERT INTO digest_papers (digest_id, paper_key, rank, score) "
                       "VALUES (?, ?, ?, ?)", papers)
        db.executemany("INSERT INTO deliveries (channel, paper_key, digest_id, delivered_at) "
                       "VALUES (?, ?, ?, ?)", deliveries)
        db.commit()
    print(next_id - 1, "digests,", len(deliveries) * days, "deliveries")
"""


def history(bench: Bench, *, watchlists: int, items: int, days: int) -> None:
    """One day's run on a store that already holds ``days`` days of papers, digests and
    deliveries to each of the ``watchlists`` channels, all older than the window."""
    command = f"{COMMAND} --watchlists {watchlists} --items {items} --history-days {days}"
    command += bench.options()
    specs = make_watchlists(watchlists, bench.vocabulary, bench.seed)
    print(f"\n== history: {watchlists} watchlists on a store already holding {days} days "
          f"before the window ({items} papers a day, a digest of 25 a day to each channel)")
    print(f"command: {command}")
    directory = bench.workdir("history")
    started = time.perf_counter()
    filled = subprocess.run(
        [sys.executable, "-c", FILL_HISTORY, str(directory / "digest.db"), str(days),
         str(items), str(bench.seed), *(spec.name for spec in specs)],
        capture_output=True, text=True, check=True, env=bench.environment(), cwd=directory,
        timeout=bench.timeout)
    print(f"  store filled in {time.perf_counter() - started:.1f} s: "
          f"{filled.stdout.strip()}, {store_size(directory) / 2**20:.0f} MiB")
    daily_runs(bench, directory, specs, items=items, after=" after the history")
    print("  each day also prunes the day that left store.keep_days (365); compare with "
          "--days, whose first run starts from an empty store")
    bench.done_with(directory)


def feed_sizes(bench: Bench, *, watchlists: int, sizes: Sequence[int]) -> None:
    command = f"{COMMAND} --watchlists {watchlists} --feed-sizes {','.join(map(str, sizes))}"
    command += bench.options()
    specs = make_watchlists(watchlists, bench.vocabulary, bench.seed)
    print(f"\n== feed sizes: {watchlists} watchlists, one run per listing size, each from an "
          "empty store")
    print(f"command: {command}")
    rows = []
    for size in sizes:
        started = time.perf_counter()
        listing = make_listing(size, first=0, vocabulary=bench.vocabulary, watchlists=specs,
                               seed=bench.seed)
        made = time.perf_counter() - started
        counts = expected_matches(specs, listing.papers)
        expected = sum(1 for n in counts if n)
        bench.feed.body = listing.body
        directory = bench.workdir(f"feed-{size}")
        config = write_config(directory, feed_url=bench.feed.url, smtp_port=bench.mail.port,
                              watchlists=specs, feed_bytes=len(listing.body))
        sample = bench.run([*bench.product(), "run", "--once", "--config", str(config)],
                           directory)
        bench.check(sample, expected=expected, what=f"{size} items")
        rows.append([f"{size} items", f"{len(listing.body) / 2**20:.1f}",
                     f"{statistics.median(counts):g}", f"{sample.wall:.2f}",
                     f"{sample.cpu:.2f}", f"{sample.peak_rss_mib:.1f}",
                     f"{store_size(directory) / 2**20:.1f}", f"{sample.messages}/{expected}",
                     sample.status, f"{made:.1f}"])
        bench.feed.body = b""
        del listing
        bench.done_with(directory)
    print(table(["", "listing (MiB)", "median matches", "wall (s)", "CPU (s)",
                 "peak RSS (MiB)", "store (MiB)", "messages", "exit", "generated in (s)"],
                rows))


def ensure_rss2email() -> Path | None:
    """The r2e command of bench/.cache/rss2email-venv, made on first use; None if it
    cannot be installed (offline, no pip)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    ignore = CACHE / ".gitignore"
    if not ignore.exists():  # keeps the virtualenv out of version control
        ignore.write_text("# made by bench/bench_scale.py: nothing here is kept\n*\n")
    r2e = RSS2EMAIL_VENV / "bin" / "r2e"
    if r2e.exists():
        return r2e
    print(f"installing rss2email into {RSS2EMAIL_VENV.relative_to(ROOT)} ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(RSS2EMAIL_VENV)],
                       check=True, capture_output=True, timeout=300)
        subprocess.run([str(RSS2EMAIL_VENV / "bin" / "python"), "-m", "pip", "install",
                        "--quiet", "--disable-pip-version-check", "rss2email"],
                       check=True, capture_output=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        output = getattr(exc, "stderr", b"") or b""
        reason = output.decode("utf-8", "replace").strip().splitlines()[-1:] or [str(exc)]
        print(f"rss2email could not be installed ({reason[0]}): no rss2email baseline in "
              "this run")
        shutil.rmtree(RSS2EMAIL_VENV, ignore_errors=True)
        return None
    return r2e if r2e.exists() else None


def rss2email_config(path: Path, *, feed_url: str, smtp_port: int, digest: bool) -> None:
    path.write_text("\n".join([
        "[DEFAULT]",
        "from = bench@bench.example",
        "to = reader@bench.example",
        "email-protocol = smtp",
        "smtp-server = 127.0.0.1",
        f"smtp-port = {smtp_port}",
        "smtp-ssl = False",
        "smtp-auth = False",
        "same-server-fetch-interval = 0",
        f"digest = {digest}",
        "verbose = warning",
        "",
        "[feed.bench]",
        f"url = {feed_url}",
        "",
    ]), encoding="utf-8")


def baseline(bench: Bench, *, items: int, repeat: int) -> None:
    command = f"{COMMAND} --rss2email --items {items} --repeat {repeat}"
    command += bench.options()
    broad = broad_watchlist()
    listing = make_listing(items, first=0, vocabulary=bench.vocabulary, watchlists=[],
                           seed=bench.seed)
    bench.feed.body = listing.body
    print(f"\n== rss2email baseline: the same {items}-item listing, the same SMTP server, "
          f"{n_runs(repeat)} each from an empty state")
    print(f"command: {command}")
    results: dict[str, list[Sample]] = {}
    matched = expected_matches([broad], listing.papers)[0]
    runs: list[tuple[str, int, Callable[[Path], list[str]]]] = []

    def paper_digest_run(directory: Path) -> list[str]:
        config = write_config(directory, feed_url=bench.feed.url, smtp_port=bench.mail.port,
                              watchlists=[broad], feed_bytes=len(listing.body),
                              shared_channel=True)
        return [*bench.product(), "run", "--once", "--config", str(config)]

    runs.append((f"paper-digest, 1 watchlist matching all ({MAX_PAPERS} papers sent)", 1,
                 paper_digest_run))
    r2e = ensure_rss2email()
    if r2e is not None:
        version = subprocess.run([str(r2e), "--version"], capture_output=True, text=True,
                                 timeout=60).stdout.strip()
        print(f"  rss2email: {version} from {RSS2EMAIL_VENV.relative_to(ROOT)}")

        def r2e_run(digest: bool) -> Callable[[Path], list[str]]:
            def argv(directory: Path) -> list[str]:
                config = directory / "rss2email.cfg"
                rss2email_config(config, feed_url=bench.feed.url, smtp_port=bench.mail.port,
                                 digest=digest)
                return [str(r2e), "-c", str(config), "-d", str(directory / "r2e.json"), "run"]
            return argv

        runs.append(("rss2email, one email per item", items, r2e_run(False)))
        runs.append(("rss2email, digest = True", 1, r2e_run(True)))
    print(f"  (the paper-digest watchlist matches {matched} of {items} papers; it sends "
          f"the top {MAX_PAPERS} in one email)")
    rows = []
    for label, expected, argv in runs:
        samples = []
        for number in range(1, repeat + 1):
            directory = bench.workdir("baseline")
            sample = bench.run(argv(directory), directory)
            bench.check(sample, expected=expected, what=f"{label}, run {number}")
            samples.append(sample)
            bench.done_with(directory)
        results[label] = samples
        rows.append([label, f"{statistics.median(s.wall for s in samples):.2f}",
                     f"{statistics.median(s.cpu for s in samples):.2f}",
                     f"{statistics.median(s.peak_rss_mib for s in samples):.1f}",
                     f"{statistics.median(s.messages for s in samples):g}",
                     f"{statistics.median(s.mail_bytes for s in samples) / 2**20:.2f}"])
    print(table(["medians", "wall (s)", "CPU (s)", "peak RSS (MiB)", "messages",
                 "mail (MiB)"], rows))
    if r2e is None:
        print("  rss2email could not be installed: only paper-digest's figures are shown")
        return
    ours = results[runs[0][0]]
    for label, _, _ in runs[1:]:
        theirs = results[label]
        ratio = [statistics.median(s.wall for s in ours) / statistics.median(
                     s.wall for s in theirs),
                 statistics.median(s.cpu for s in ours) / statistics.median(
                     s.cpu for s in theirs),
                 statistics.median(s.peak_rss_kib for s in ours) / statistics.median(
                     s.peak_rss_kib for s in theirs)]
        print(f"  paper-digest / {label}: wall x{ratio[0]:.2f}, CPU x{ratio[1]:.2f}, "
              f"peak RSS x{ratio[2]:.2f}")


def _where(function: tuple[str, int, str], tree: Path) -> str:
    """A profile entry's place, short: the path inside the source tree or site-packages."""
    filename, line, name = function
    if filename == "~":
        return name  # a built-in: "<built-in method ...>"
    path = filename
    if "/site-packages/" in path:
        path = path.split("/site-packages/", 1)[1]
    elif path.startswith(str(tree) + "/"):
        path = path[len(str(tree)) + 1:]
    elif "/lib/python" in path:
        path = "stdlib/" + path.split("/lib/python", 1)[1].split("/", 1)[-1]
    return f"{path}:{line} {name}"


def profile(bench: Bench, *, watchlists: int, items: int, top: int = 25) -> None:
    command = f"{COMMAND} --profile --watchlists {watchlists} --items {items}"
    command += bench.options()
    specs = make_watchlists(watchlists, bench.vocabulary, bench.seed)
    listing = make_listing(items, first=0, vocabulary=bench.vocabulary, watchlists=specs,
                           seed=bench.seed)
    expected = sum(1 for n in expected_matches(specs, listing.papers) if n)
    bench.feed.body = listing.body
    directory = bench.workdir("profile")
    config = write_config(directory, feed_url=bench.feed.url, smtp_port=bench.mail.port,
                          watchlists=specs, feed_bytes=len(listing.body))
    output = directory / "run.prof"
    print(f"\n== profile: one run under cProfile, {watchlists} watchlists, {items}-item "
          "listing, from an empty store")
    print(f"command: {command}")
    sample = bench.run([sys.executable, "-m", "cProfile", "-o", str(output), "-m", "digest",
                        "run", "--once", "--config", str(config)], directory)
    # cProfile swallows the run's exit status; the messages still tell whether it worked.
    bench.check(sample, expected=expected, what="profiled run")
    print(f"  wall {sample.wall:.2f} s under the profiler, CPU {sample.cpu:.2f} s, peak RSS "
          f"{sample.peak_rss_mib:.1f} MiB, {sample.messages}/{expected} messages")
    if not output.exists():
        print("  no profile was written")
        bench.ok = False
        bench.done_with(directory)
        return
    stats = pstats.Stats(str(output))
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    for key, label in ((3, "cumulative"), (2, "own (tottime)")):
        ranked = sorted(entries.items(), key=lambda kv: kv[1][key], reverse=True)
        count = top if key == 3 else 15
        print(f"  top {count} by {label} time, of {total:.2f} s profiled:")
        print(table(["function", "calls", "own (s)", "cumulative (s)", "cum %"], [
            [_where(function, bench.source or ROOT),
             calls if calls == primitive else f"{calls}/{primitive}",
             f"{own:.3f}", f"{cumulative:.3f}", f"{100 * cumulative / total:.1f}"]
            for function, (primitive, calls, own, cumulative, _) in ranked[:count]]))
    bench.done_with(directory)


# ------------------------------------------------------------------ main


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of numbers") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("one or more positive numbers")
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--watchlists", type=int, default=1000,
                        help="watchlists, each with its own email channel (1000)")
    parser.add_argument("--items", type=int, default=2000, help="papers in the listing (2000)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (5)")
    parser.add_argument("--days", type=int, default=0,
                        help="consecutive runs on one store, a new listing each")
    parser.add_argument("--feed-sizes", type=_sizes, default=None,
                        help="listing sizes, one run each, e.g. 2000,20000,100000")
    parser.add_argument("--stored-papers", type=int, default=0,
                        help="two days of similar_to watchlists on a store already holding "
                             "this many papers, e.g. 500000")
    parser.add_argument("--history-days", type=int, default=0,
                        help="one day's run on a store already holding this many days of "
                             "papers, digests and deliveries, e.g. 365")
    parser.add_argument("--rss2email", action="store_true",
                        help="compare with rss2email, per item and in its digest mode")
    parser.add_argument("--profile", action="store_true",
                        help="one run under cProfile: where the time goes")
    parser.add_argument("--seed", type=int, default=1, help="of the generated data (1)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds after which a run is killed (1800)")
    parser.add_argument("--source", type=Path, default=None,
                        help="run the product from this source tree (a checkout, or an "
                             "export such as `git archive COMMIT | tar -x -C DIR`) instead "
                             "of the installed one")
    parser.add_argument("--keep", action="store_true",
                        help="keep each run's folder (store, config) and print where")
    args = parser.parse_args(argv)
    if args.watchlists < 1 or args.items < 1 or args.repeat < 1 or args.days < 0:
        parser.error("--watchlists, --items and --repeat must be at least 1, --days 0 or more")
    if args.source is not None:
        args.source = args.source.resolve()
        if not (args.source / "digest" / "__init__.py").is_file():
            parser.error(f"--source {args.source}: no digest package there")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        mail = MailServer()
    except ImportError:
        print("aiosmtpd is not installed: .venv/bin/python -m pip install -e '.[test]'")
        return 2
    feed = FeedServer()
    bench = Bench(feed=feed, mail=mail, seed=args.seed, timeout=args.timeout, keep=args.keep,
                  vocabulary=Vocabulary.make(args.seed), source=args.source)
    print(f"paper-digest: {bench.describe()}; Python {sys.version.split()[0]}; "
          f"{os.cpu_count()} CPUs; listing at {feed.url}, SMTP at 127.0.0.1:{mail.port}")
    try:
        asked = (args.days or args.feed_sizes or args.rss2email or args.profile
                 or args.stored_papers or args.history_days)
        if not asked:
            scale(bench, watchlists=args.watchlists, items=args.items, repeat=args.repeat)
        if args.days:
            days(bench, watchlists=args.watchlists, items=args.items, count=args.days)
        if args.feed_sizes:
            feed_sizes(bench, watchlists=args.watchlists, sizes=args.feed_sizes)
        if args.stored_papers:
            stored_papers(bench, watchlists=args.watchlists, items=args.items,
                          stored=args.stored_papers)
        if args.history_days:
            history(bench, watchlists=args.watchlists, items=args.items,
                    days=args.history_days)
        if args.rss2email:
            baseline(bench, items=args.items, repeat=args.repeat)
        if args.profile:
            profile(bench, watchlists=args.watchlists, items=args.items)
    finally:
        feed.close()
        mail.close()
    if not bench.ok:
        print("\nsome checks failed (see CHECK FAILED above)")
    return 0 if bench.ok else 1


if __name__ == "__main__":
    sys.exit(main())
