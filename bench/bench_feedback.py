"""Benchmark: one day of a reader's ratings, replayed over the labelled evaluation set.

The papers of tests/eval/papers.jsonl are split by their number: odd (eval-001, -003, ...)
are day 1, even are day 2; tests/eval/heldout.jsonl is day 3. Day 1 goes through a real
store and the watchlists of tests/eval/watchlists.toml; the reader rates that day's digests
by the labels (like what is relevant, dislike what is not). The next day is then scored
with the models the pipeline trains (`learned_models`, as `run_once` does) and compared
with keywords alone and with the scorer without ratings.

Day 2 is the development day: the ranking's constants were chosen on it. Day 3 is held
out: it was written with the rest, and scored only once the constants were fixed.

Run: .venv/bin/python bench/bench_feedback.py [--day 2|3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from evaluation import EVAL, NOW, Scores, keyword_baseline, load  # noqa: E402

import digest.pipeline as pipeline  # noqa: E402
import digest.ranking.model as ranking_model  # noqa: E402
from digest.config import WatchlistSettings  # noqa: E402
from digest.models import Paper, paper_key  # noqa: E402
from digest.pipeline import build_matcher  # noqa: E402
from digest.sources.base import SourceState  # noqa: E402
from digest.store import Store  # noqa: E402

DAY1, DAY2 = NOW, NOW + timedelta(days=1)
HELD_OUT = EVAL / "heldout.jsonl"


def day_of(paper: Paper) -> int:
    return 1 if int(paper.key.rsplit("-", 1)[1]) % 2 else 2


def held_out() -> tuple[list[Paper], dict[str, set[str]]]:
    """Day 3: the held-out papers and the ids relevant to each watchlist."""
    papers: list[Paper] = []
    relevant: dict[str, set[str]] = {}
    for line in HELD_OUT.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        papers.append(Paper(
            key=paper_key(guid=row["id"]), title=row["title"], url="", abstract=row["abstract"],
            authors=tuple(row["authors"]), categories=tuple(row["categories"]),
            primary_category=row["categories"][0]))
        for name in row["relevant_to"]:
            relevant.setdefault(name, set()).add(f"guid:{row['id']}")
    return papers, relevant


def scores(found: Callable[[WatchlistSettings], set[str]], watchlists: list[WatchlistSettings],
           relevant: dict[str, set[str]]) -> dict[str, Scores]:
    out = {}
    for w in watchlists:
        chosen, wanted = found(w), relevant.get(w.name, set())
        out[w.name] = Scores(len(chosen & wanted), len(chosen - wanted), len(wanted - chosen))
    return out


def macro(result: dict[str, Scores]) -> float:
    return sum(s.f1 for s in result.values()) / len(result)


def replay(watchlists: list[WatchlistSettings], day1: list[Paper], day2: list[Paper],
           relevant: dict[str, set[str]], *, missed: bool, rate: bool = True
           ) -> tuple[dict[str, set[str]], dict[str, tuple[int, int]]]:
    """Run day 1, rate, run day 2 in a fresh store: day 2's matches and the ratings given."""
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "d.db") as store:
        store.record_batch("eval", day1, SourceState(), DAY1)
        sent = build_matcher(watchlists, store, now=lambda: DAY1).match_many(day1, now=DAY1)
        given: dict[str, tuple[int, int]] = {}
        for w in watchlists:
            ranked = sorted(sent[w.name], key=lambda m: -m.score)[: w.max_papers]
            ratings = {m.paper.key: m.paper.key in relevant.get(w.name, ()) for m in ranked}
            if missed:  # found in the archive: the relevant papers the digest did not bring
                ratings.update({p.key: True for p in day1 if p.key in relevant.get(w.name, ())})
            for key, liked in ratings.items() if rate else ():
                store.rate(watchlist=w.name, paper_key=key, action="like" if liked else "dislike",
                           origin="bench", now=DAY1 + timedelta(hours=3))
            given[w.name] = (sum(ratings.values()), sum(not v for v in ratings.values()))
        store.record_batch("eval", day2, SourceState(), DAY2)
        matched = build_matcher(watchlists, store, now=lambda: DAY2).match_many(day2, now=DAY2)
        return {name: {m.paper.key for m in found} for name, found in matched.items()}, given


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--day", type=int, choices=(2, 3), action="append",
                        help="the day to score after day 1's ratings (default: 2, then 3)")
    args = parser.parse_args()
    papers, relevant_all, settings = load()
    watchlists = list(settings.watchlists)
    day1 = [p for p in papers if day_of(p) == 1]
    day2 = [p for p in papers if day_of(p) == 2]
    day3, relevant3 = held_out()
    print(f"command: {Path(sys.executable).name} {' '.join(sys.argv)}")
    print(f"set: tests/eval/papers.jsonl, {len(papers)} papers: day 1 = odd-numbered "
          f"({len(day1)}), day 2 = even-numbered ({len(day2)}); day 3 = "
          f"tests/eval/heldout.jsonl ({len(day3)}); {len(watchlists)} watchlists "
          f"(tests/eval/watchlists.toml), feedback_weight {watchlists[0].feedback_weight:g}")
    print("protocol: the models learn from day 1's ratings only, and score the next day; "
          "the constants were chosen on day 2 (development); day 3 (held out) was not "
          "scored until they were fixed")
    print("reader: likes the day-1 digest's relevant papers, dislikes the rest of it; "
          "variant B also likes the day-1 relevant papers the digest missed (found in the "
          "archive: a digest cannot show them)")
    for number in args.day or (2, 3):
        day, relevant_day = (day2, relevant_all) if number == 2 else (day3, relevant3)
        relevant = {n: {k for k in keys if any(p.key == k for p in day)}
                    for n, keys in relevant_day.items()}
        role = "development" if number == 2 else "held out"
        print(f"\n== day {number} ({role}): {len(day)} papers, "
              f"{sum(map(len, relevant.values()))} relevant (watchlist, paper) pairs\n")
        compare(watchlists, day1, day, relevant_all, relevant)
        sweep(watchlists, day1, day, relevant_all, relevant)
    print("\ncolumns: keywords = each watchlist's keywords as plain whole words; no ratings = "
          "paper-digest's scorer; A, B = with the models trained on day-1 ratings; ratings "
          "only = the same watchlists with no keywords, query or filters, trained as in B")


def compare(watchlists: list[WatchlistSettings], day1: list[Paper], day: list[Paper],
            relevant_all: dict[str, set[str]], relevant: dict[str, set[str]]) -> None:
    """P, R and F1 per watchlist on ``day``: keywords, no ratings, A, B, ratings only."""
    columns: dict[str, dict[str, Scores]] = {}
    columns["keywords"] = scores(keyword_baseline(day), watchlists, relevant)
    plain, _ = replay(watchlists, day1, day, relevant_all, missed=False, rate=False)
    columns["no ratings"] = scores(lambda w: plain[w.name], watchlists, relevant)
    digest_only, given_a = replay(watchlists, day1, day, relevant_all, missed=False)
    columns["A: digest"] = scores(lambda w: digest_only[w.name], watchlists, relevant)
    with_missed, given_b = replay(watchlists, day1, day, relevant_all, missed=True)
    columns["B: +missed"] = scores(lambda w: with_missed[w.name], watchlists, relevant)
    only, _ = replay(ratings_only(watchlists), day1, day, relevant_all, missed=True)
    columns["ratings only"] = scores(lambda w: only[w.name], watchlists, relevant)

    header = "".join(f"{name:>20}" for name in columns)
    print(f"{'watchlist':19} {'rel':>3} {'A +/-':>6} {'B +/-':>6}{header}")
    print(f"{'':30}" + "".join(f"{'P    R    F1':>20}" for _ in columns))
    for w in watchlists:
        a, b = given_a[w.name], given_b[w.name]
        cells = "".join(f"  {c[w.name].precision:5.2f}{c[w.name].recall:5.2f}{c[w.name].f1:6.3f}"
                        for c in columns.values())
        print(f"{w.name:19} {len(relevant.get(w.name, ())):3} {a[0]:>3}/{a[1]:<2} "
              f"{b[0]:>3}/{b[1]:<2}{cells}")
    print(f"{'macro-F1':36}" + "".join(f"{macro(c):20.3f}" for c in columns.values()))


def ratings_only(watchlists: list[WatchlistSettings]) -> list[WatchlistSettings]:
    return [WatchlistSettings(name=w.name, channels=w.channels,
                              feedback_weight=w.feedback_weight) for w in watchlists]


def sweep(watchlists: list[WatchlistSettings], day1: list[Paper], day: list[Paper],
          relevant_all: dict[str, set[str]], relevant: dict[str, set[str]]) -> None:
    """Macro-F1 on ``day`` of ratings-only watchlists given their first k day-1 likes, with
    and without comparing papers to the liked ones (the model alone, from MIN_LIKES)."""
    alone = ratings_only(watchlists)
    print("\nfew likes (ratings-only watchlists, each given its first k day-1 relevant papers "
          f"as likes and nothing else; a model needs {ranking_model.MIN_LIKES}):")
    print(f"  {'likes':>5}  {'model and likeness':>18}  {'model alone':>11}")
    for k in (1, 2, 3, 5, 100):
        picked = {n: set(sorted(k_ for k_ in relevant_all.get(n, ())
                                if any(p.key == k_ for p in day1))[:k])
                  for n in relevant_all}
        cells = []
        for likeness in (True, False):
            result = replay_likes(alone, day1, day, picked, likeness=likeness)
            cells.append(macro(scores(lambda w: result[w.name], alone, relevant)))  # noqa: B023
        print(f"  {('all' if k == 100 else k):>5}  {cells[0]:18.3f}  {cells[1]:11.3f}")


def replay_likes(watchlists: list[WatchlistSettings], day1: list[Paper], day2: list[Paper],
                 likes: dict[str, set[str]], *, likeness: bool = True) -> dict[str, set[str]]:
    """Day 2's matches after these likes; without ``likeness``, as scored by the model
    alone (no paper compared with the liked ones)."""
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder) / "d.db") as store:
        store.record_batch("eval", day1, SourceState(), DAY1)
        for w in watchlists:
            for key in likes.get(w.name, ()):
                store.rate(watchlist=w.name, paper_key=key, action="like", origin="bench",
                           now=DAY1 + timedelta(hours=3))
        store.record_batch("eval", day2, SourceState(), DAY2)
        saved = pipeline.liked_texts
        if not likeness:
            pipeline.liked_texts = lambda *args: {}
        try:
            matched = build_matcher(watchlists, store, now=lambda: DAY2).match_many(day2,
                                                                                    now=DAY2)
        finally:
            pipeline.liked_texts = saved
        return {name: {m.paper.key for m in found} for name, found in matched.items()}


if __name__ == "__main__":
    main()
