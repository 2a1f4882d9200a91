"""Benchmark: 1,000 watchlists x 20 terms over 5,000 papers, one compiled matcher against
a per-term regex baseline, in the same run, checking that both find the same matches.

Run: .venv/bin/python bench/bench_matching.py [--watchlists 1000] [--terms 20] [--papers 5000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from digest.config import Keyword, WatchlistSettings
from digest.models import Paper
from digest.scoring import Matcher
from digest.similarity import STOPWORDS
from digest.sources import arxiv_rss
from digest.terms import NormalText, parse_term

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 20, tzinfo=UTC)
WORD = re.compile(r"[A-Za-z][A-Za-z\-]+")


def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


REAL_DAY = ROOT.parent / "shared" / "fixtures" / "real" / "arxiv_rss_all-archives_2024-11-28.xml"


def corpus_words() -> tuple[list[list[str]], str]:
    """Sentences of a real arXiv day (1,504 papers, every archive) when it is beside the
    repo; else of the project's own evaluation set, a far smaller vocabulary."""
    texts = []
    if REAL_DAY.exists():
        for paper in arxiv_rss.parse(REAL_DAY.read_bytes()):
            texts.append(paper.title)
            texts += re.split(r"(?<=\.)\s+", paper.abstract)
        what = f"sentences of {REAL_DAY.name}"
    else:
        for line in (ROOT / "tests" / "eval" / "papers.jsonl").read_text().splitlines():
            row = json.loads(line)
            texts += [row["title"], row["abstract"]]
        what = "sentences of tests/eval/papers.jsonl (the real listing was not found)"
    return [words for t in texts if (words := WORD.findall(t))], what


def make_papers(count: int, rng: random.Random, sentences: list[list[str]]) -> list[Paper]:
    """Papers stitched from real sentences: realistic vocabulary and hit rates."""
    papers = []
    for i in range(count):
        title = " ".join(rng.choice(sentences)[:12])
        abstract = " ".join(" ".join(rng.choice(sentences)) + "." for _ in range(6))
        papers.append(Paper(key=f"bench:{i}", title=title, url="", abstract=abstract))
    return papers


def make_watchlists(count: int, terms: int, rng: random.Random,
                    sentences: list[list[str]]) -> list[WatchlistSettings]:
    """Terms are 1-3 word phrases of topic words from the same sentences, as people write
    them: no stop words, nothing in more than 0.2% of sentences; some with a wildcard."""
    df: dict[str, int] = {}
    for sentence in sentences:
        for word in {w.lower() for w in sentence}:
            df[word] = df.get(word, 0) + 1
    rare = len(sentences) * 0.002

    def topical(word: str) -> bool:
        word = word.lower()
        return len(word) >= 4 and word not in STOPWORDS and df.get(word, 0) <= rare

    out = []
    for w in range(count):
        chosen: dict[str, Keyword] = {}
        while len(chosen) < terms:
            sentence = rng.choice(sentences)
            size = rng.choice((1, 1, 2, 2, 3))
            if len(sentence) < size:
                continue
            start = rng.randrange(len(sentence) - size + 1)
            words = sentence[start:start + size]
            if not all(topical(word) for word in words):
                continue
            text = " ".join(words).lower()
            if size == 1 and len(text) >= 7 and rng.random() < 0.1:
                text = text[:-3] + "*"
            try:
                chosen.setdefault(text, Keyword(parse_term(text)))
            except ValueError:
                continue
        out.append(WatchlistSettings(name=f"w{w}", channels=("c",),
                                     keywords=tuple(chosen.values())))
    return out


MATCHER: Matcher | None = None  # set before forking, so workers share it


def match_chunk(papers: list[Paper]) -> set[int]:
    """Matched pairs, each packed in one int so that workers hand back little to pickle."""
    assert MATCHER is not None
    return {int(paper.key[6:]) << 20 | int(match.watchlist[1:]) for paper in papers
            for match in MATCHER.match(paper, now=NOW)}


def unpack(pairs: set[int]) -> set[tuple[str, str]]:
    return {(f"bench:{pair >> 20}", f"w{pair & 0xFFFFF}") for pair in pairs}


def regex_matches(papers: list[Paper], watchlists: list[WatchlistSettings]) -> set:
    """(paper, watchlist) pairs where any term's own regex finds the term: in the raw text
    for a regex, in the normal form (computed once per paper) for words, and in the other
    readings of its hyphenated words (pre-training as pretraining)."""
    compiled = [(w.name, [(k.term.on_raw_text, k.term.compiled()) for k in w.keywords])
                for w in watchlists]
    found = set()
    for paper in papers:
        normal = [NormalText(paper.title), NormalText(paper.abstract)]
        texts = {True: [paper.title, paper.abstract],
                 False: [text.text for text in normal]
                 + [reading.text for text in normal for reading in text.readings()]}
        for name, patterns in compiled:
            if any(p.search(text) for raw, p in patterns for text in texts[raw]):
                found.add((paper.key, name))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--watchlists", type=int, default=1000)
    parser.add_argument("--terms", type=int, default=20)
    parser.add_argument("--papers", type=int, default=5000)
    parser.add_argument("--baseline-watchlists", type=int, default=100)
    parser.add_argument("--baseline-papers", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    sentences, source = corpus_words()
    papers = make_papers(args.papers, rng, sentences)
    watchlists = make_watchlists(args.watchlists, args.terms, rng, sentences)
    print(f"command: {Path(sys.executable).name} {' '.join(sys.argv)}")
    print(f"machine: {os.cpu_count()} cores")
    chars = sum(len(p.title) + len(p.abstract) for p in papers)
    print(f"workload: {args.watchlists} watchlists x {args.terms} terms, {args.papers} papers "
          f"({chars / len(papers):.0f} characters each on average), stitched from {source}\n")

    global MATCHER
    rss_before = vm_kib("VmRSS:")
    start = time.perf_counter()
    MATCHER = Matcher(watchlists)
    build = time.perf_counter() - start
    rss_built = vm_kib("VmRSS:")
    pairs = args.papers * args.watchlists
    print("one compiled matcher (Aho-Corasick)")
    print(f"  compile: {build:.2f} s, memory: +{(rss_built - rss_before) / 1024:.1f} MB RSS "
          f"for {sum(len(w.keywords) for w in watchlists):,} terms")
    start = time.perf_counter()
    packed = match_chunk(papers)
    elapsed = time.perf_counter() - start
    found = unpack(packed)
    print(f"  1 process:  {elapsed:.2f} s for {pairs:,} paper x watchlist pairs = "
          f"{pairs / elapsed:,.0f} pairs/s ({len(found):,} matches)")
    if args.processes > 1:
        chunks = [papers[i::args.processes] for i in range(args.processes)]
        start = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(args.processes) as pool:
            parts = pool.map(match_chunk, chunks)
        parallel = time.perf_counter() - start
        together = unpack(set().union(*parts))
        print(f"  {args.processes} processes: {parallel:.2f} s = {pairs / parallel:,.0f} pairs/s "
              f"(papers split between processes that share the compiled matcher; "
              f"same matches: {together == found})")
        elapsed = min(elapsed, parallel)

    sub_papers = papers[: args.baseline_papers]
    sub_lists = watchlists[: args.baseline_watchlists]
    start = time.perf_counter()
    expected = regex_matches(sub_papers, sub_lists)
    base_elapsed = time.perf_counter() - start
    base_pairs = len(sub_papers) * len(sub_lists)
    print(f"\nper-term regex baseline, on the first {len(sub_lists)} watchlists x "
          f"{len(sub_papers)} papers")
    print(f"  match:   {base_elapsed:.2f} s for {base_pairs:,} pairs = "
          f"{base_pairs / base_elapsed:,.0f} pairs/s")
    keys = {p.key for p in sub_papers}
    names = {w.name for w in sub_lists}
    ours = {(k, n) for k, n in found if k in keys and n in names}
    same = ours == expected
    print(f"  same matches as the matcher on that subset: {same} ({len(expected):,} pairs)")
    print(f"\nratio: the compiled matcher's best rate is "
          f"{(pairs / elapsed) / (base_pairs / base_elapsed):,.0f}x the baseline's pairs/s")
    if not same:
        print(f"  only matcher: {sorted(ours - expected)[:5]}")
        print(f"  only regex:   {sorted(expected - ours)[:5]}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
