"""bench/bench_scale.py: its generated listing and config are what the product reads, its
measurements come from the child process, and one tiny run delivers every digest."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from digest.sources import arxiv_rss

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = datetime(2026, 11, 19, 5, tzinfo=UTC)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_scale",
                                                  ROOT / "bench" / "bench_scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_scale"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_listing_is_an_arxiv_listing_the_product_reads(bench: ModuleType) -> None:
    vocabulary = bench.Vocabulary.make(1)
    watchlists = bench.make_watchlists(3, vocabulary, 1)
    listing = bench.make_listing(30, first=0, vocabulary=vocabulary, watchlists=watchlists,
                                 seed=1, published=PUBLISHED)
    papers = arxiv_rss.parse(listing.body)
    assert [p.arxiv_id for p in papers] == [p.arxiv_id for p in listing.papers]
    assert len({p.key for p in papers}) == 30
    assert {p.announce_type for p in papers} <= {"new", "cross"}
    assert [p.authors for p in papers] == [p.authors for p in listing.papers]
    assert [p.categories for p in papers] == [p.categories for p in listing.papers]
    assert all(p.published == PUBLISHED and p.abstract and p.title for p in papers)

    again = bench.make_listing(30, first=0, vocabulary=bench.Vocabulary.make(1),
                               watchlists=watchlists, seed=1, published=PUBLISHED)
    assert again.body == listing.body  # the same seed gives the same bytes
    later = bench.make_listing(30, first=30, vocabulary=vocabulary, watchlists=watchlists,
                               seed=1, published=PUBLISHED)
    assert not {p.arxiv_id for p in later.papers} & {p.arxiv_id for p in listing.papers}


def test_watchlists_match_a_few_percent_and_each_at_least_one_paper(
        bench: ModuleType) -> None:
    vocabulary = bench.Vocabulary.make(1)
    watchlists = bench.make_watchlists(200, vocabulary, 1)
    listing = bench.make_listing(2000, first=0, vocabulary=vocabulary, watchlists=watchlists,
                                 seed=1)
    counts = bench.expected_matches(watchlists, listing.papers)
    assert min(counts) >= 1
    assert 0.005 < sorted(counts)[len(counts) // 2] / 2000 < 0.05
    assert all(3 <= len(w.keywords) <= 6 for w in watchlists)
    assert any(w.authors for w in watchlists) and any(w.categories for w in watchlists)
    assert bench.expected_matches([bench.broad_watchlist()], listing.papers) == [2000]


def test_generated_config_passes_check(bench: ModuleType, tmp_path: Path) -> None:
    vocabulary = bench.Vocabulary.make(1)
    config = bench.write_config(tmp_path, feed_url="http://127.0.0.1:8000/rss",
                                smtp_port=2525,
                                watchlists=bench.make_watchlists(20, vocabulary, 1),
                                feed_bytes=1000)
    done = subprocess.run([sys.executable, "-m", "digest", "check", "--config", str(config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok (1 source, 20 watchlists, 20 channels)" in done.stdout


def test_measure_reports_the_childs_own_peak_memory_and_status(
        bench: ModuleType, tmp_path: Path) -> None:
    sample = bench.measure([sys.executable, "-c",
                            "import sys; block = bytearray(80 * 2**20); print(len(block)); "
                            "sys.exit(3)"], cwd=tmp_path, timeout=60)
    assert sample.status == 3
    assert sample.stdout.strip() == str(80 * 2**20)
    assert sample.peak_rss_mib >= 80
    assert sample.cpu > 0 and sample.wall > 0

    hung = bench.measure([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path,
                         timeout=0.5)
    assert hung.status == -9  # killed by the watchdog, not waited for


@pytest.mark.integration
def test_a_tiny_run_delivers_one_digest_per_watchlist(
        bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--watchlists", "3", "--items", "30", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert ".venv/bin/python bench/bench_scale.py --watchlists 3 --items 30 --repeat 1" in out
    assert "30 new papers, 3 digests delivered" in out
    assert "equal the generator's for 3 of 3 watchlists" in out
    assert re.search(r"^  messages received +3 +3 +3$", out, re.MULTILINE)
    for row in ("wall \\(s\\)", "CPU user\\+sys \\(s\\)", "peak RSS \\(MiB\\)"):
        figures = re.search(rf"^  {row} +([\d.]+) +([\d.]+) +([\d.]+)$", out, re.MULTILINE)
        assert figures, row
        assert float(figures.group(2)) > 0
    assert "exit status 0 in 1 of 1 runs" in out
    assert "CHECK FAILED" not in out


def test_a_tiny_history_is_filled_and_the_runs_after_it_deliver(
        bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    """The history scenario fills the store through the product's schema, and the two
    runs after it each send every digest: the history's deliveries are of other papers."""
    assert bench.main(["--watchlists", "2", "--items", "30", "--history-days", "3"]) == 0
    out = capsys.readouterr().out
    assert "--watchlists 2 --items 30 --history-days 3" in out
    assert "6 digests, 150 deliveries" in out
    assert re.search(r"^  day 1 +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+ +2/2 +0$", out, re.MULTILINE)
    assert re.search(r"^  day 2 +[\d.]+ +[\d.]+ +[\d.]+ +[\d.]+ +2/2 +0$", out, re.MULTILINE)
    assert "CHECK FAILED" not in out
