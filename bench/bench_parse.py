"""Benchmark: parsing a full arXiv day, and recording it in the store.

Prints figures and the command that produced them. Parsing is compared with feedparser on
the same bytes in the same run; recording with one transaction per paper.
Run: .venv/bin/python bench/bench_parse.py [--repeat N]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import feedparser

from digest.sources import arxiv_rss
from digest.sources.base import SourceState
from digest.store import Store

ROOT = Path(__file__).resolve().parent.parent
REAL_DAY = ROOT.parent / "shared" / "fixtures" / "real" / "arxiv_rss_all-archives_2024-11-28.xml"
SAMPLE = ROOT / "config" / "sample-data" / "arxiv_rss_cs.CL+cs.LG.xml"


def listing() -> tuple[bytes, str]:
    """The real all-archives day when it is beside the repo, else the sample repeated."""
    if REAL_DAY.exists():
        return REAL_DAY.read_bytes(), f"{REAL_DAY.name} (real, 1504 items)"
    head, _, rest = SAMPLE.read_text().partition("<item>")
    items, _, tail = ("<item>" + rest).rpartition("</item>")
    copies = []
    for n in range(60):
        copies.append((items + "</item>").replace("2611.040", f"2611.{n:03d}"))
    return (head + "\n".join(copies) + tail).encode(), "sample listing x60 (synthetic)"


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds over ``repeat`` runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


_CHILD = """
import sys
from pathlib import Path
import feedparser
from digest.sources import arxiv_rss

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

content = Path(sys.argv[2]).read_bytes()
open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current size
before = status("VmRSS:")
result = arxiv_rss.parse(content) if sys.argv[1] == "lxml" else feedparser.parse(content)
print(status("VmHWM:") - before)
"""


def peak_rss_mb(parser_name: str, content: bytes) -> float:
    """Growth of peak resident memory while parsing, in a fresh process (C memory too)."""
    with tempfile.NamedTemporaryFile(suffix=".xml") as handle:
        handle.write(content)
        handle.flush()
        out = subprocess.run([sys.executable, "-c", _CHILD, parser_name, handle.name],
                             capture_output=True, text=True, check=True).stdout
    return int(out.strip()) / 1024  # /proc reports KiB


def record_per_paper(path: Path, papers: list) -> None:
    with Store.open(path) as store:
        now = datetime.now(UTC)
        for paper in papers:
            store.record_batch("bench", [paper], SourceState(), now)


def record_batch(path: Path, papers: list) -> None:
    with Store.open(path) as store:
        store.record_batch("bench", papers, SourceState(), datetime.now(UTC))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    content, what = listing()
    papers = arxiv_rss.parse(content)
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"feedparser {feedparser.__version__}")
    print(f"input: {what}, {len(content) / 1e6:.1f} MB, {len(papers)} papers")

    ours = timed(lambda: arxiv_rss.parse(content), args.repeat)
    base = timed(lambda: feedparser.parse(content), max(1, args.repeat // 2))
    ours_mem, base_mem = peak_rss_mb("lxml", content), peak_rss_mb("feedparser", content)
    print("\nparse a day's listing               median s   papers/s   peak RSS growth MB")
    print(f"  arxiv_rss.parse (lxml)            {ours:8.3f} {len(papers) / ours:10.0f}"
          f" {ours_mem:9.1f}")
    print(f"  feedparser.parse (baseline)       {base:8.3f} {len(papers) / base:10.0f}"
          f" {base_mem:9.1f}")
    print(f"  ratio: lxml parser is {base / ours:.1f}x faster than feedparser")

    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))
        batch = timed(lambda: record_batch(Path(tmp) / f"b{next(counter)}.db", papers),
                         args.repeat)
        single = timed(lambda: record_per_paper(Path(tmp) / f"s{next(counter)}.db",
                                                   papers), 1)
    print("\nrecord the day in a new store        median s   papers/s")
    print(f"  one transaction per source        {batch:8.3f} {len(papers) / batch:10.0f}")
    print(f"  one transaction per paper (base)  {single:8.3f} {len(papers) / single:10.0f}")
    print(f"  ratio: {single / batch:.1f}x")


if __name__ == "__main__":
    main()
