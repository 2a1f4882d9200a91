"""Benchmark: 1,000 watchlists learning from hundreds of ratings each, in a real SQLite store.

Trains every model, runs again with nothing changed (saved models are loaded by their
ratings' fingerprint) and with one change; beside each, the previous way in the same run:
four fits a model (one, plus three for the calibration) on up to 1,000 unrated papers,
ratings read twice and every model decoded whole. Scores a 2,000-paper day against all
models in a fresh process, so that its peak memory is the scoring's own, beside the
models alone where a watchlist's likes are few enough (``--likes 50``) for each paper to be
compared with them too; prints model sizes beside dense coefficients.

Run: .venv/bin/python bench/bench_training.py [--watchlists 1000] [--previous 100] [--likes 100]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import digest.ranking.model as ranking  # noqa: E402
from digest.config import WatchlistSettings  # noqa: E402
from digest.models import Paper  # noqa: E402
from digest.pipeline import learned_models, liked_texts  # noqa: E402
from digest.ranking import LIKED_SEEDS, Corpus, WatchlistModel, featurize  # noqa: E402
from digest.ranking.features import N_FEATURES  # noqa: E402
from digest.scoring import Matcher  # noqa: E402
from digest.similarity import SimilarityIndex  # noqa: E402
from digest.similarity import tokens as similarity_tokens  # noqa: E402
from digest.sources.arxiv_rss import parse  # noqa: E402
from digest.sources.base import SourceState  # noqa: E402
from digest.store import Store  # noqa: E402

REAL_DAY = (Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
            / "arxiv_rss_all-archives_2024-11-28.xml")
NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
DAY_SIZE = 2000
LIKES, DISLIKES = 100, 200
PREVIOUS_BACKGROUND = 1000  # unrated papers the previous way trained every model on
WORDS = ("graph network attention transformer diffusion robot policy quantum spin lattice "
         "galaxy cluster protein folding language model speech audio image segmentation "
         "retrieval reward sparse kernel optimisation convex bound theorem manifold fluid "
         "turbulence plasma neutrino dark matter gauge field catalyst battery").split()


def peak_mb() -> float:
    """This process's peak resident memory. VmHWM, where Linux has it: ru_maxrss of a
    process started by another would count the parent's memory at the fork as well."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generated_day(rng: random.Random, count: int) -> list[Paper]:
    categories = ["cs.LG", "cs.CV", "cs.CL", "quant-ph", "astro-ph.GA", "math.OC", "q-bio.BM"]
    papers = []
    for i in range(count):
        category = rng.choice(categories)
        title = " ".join(rng.choices(WORDS, k=8))
        abstract = " ".join(rng.choices(WORDS, k=120))
        papers.append(Paper(key=f"gen:{i}", title=title, url="", abstract=abstract,
                            categories=(category,), primary_category=category))
    return papers


def papers_and_day(rng: random.Random) -> tuple[list[Paper], list[Paper], str]:
    """The stored papers, the day to score (the stored ones again plus new-keyed copies up
    to DAY_SIZE), and where they come from. The same in the scoring process."""
    if REAL_DAY.is_file():
        papers = parse(REAL_DAY.read_bytes())
        origin = f"the real arXiv day {REAL_DAY.name} ({len(papers)} papers)"
    else:
        papers = generated_day(rng, 1500)
        origin = "generated text (the real arXiv day is not there)"
    day = papers + [replace(p, key=f"{p.key}#copy") for p in papers][: DAY_SIZE - len(papers)]
    day += generated_day(rng, max(0, DAY_SIZE - len(day)))
    return papers, day, origin


def watchlists_named(count: int) -> list[WatchlistSettings]:
    return [WatchlistSettings(name=f"w{i:04d}", channels=("mail",), feedback_weight=5.0)
            for i in range(count)]


# ------------------------------------------------------------------ the previous way

def previous_train(corpus: Corpus, ratings: Mapping[str, int], background: Sequence[str]) -> int:
    """The training this project did before, kept here as the baseline: a fit on all
    papers plus three for the calibration, columns sliced, profiles built row by row."""
    liked = [k for k, v in ratings.items() if v > 0 and k in corpus]
    disliked = [k for k, v in ratings.items() if v < 0 and k in corpus]
    unrated = [k for k in background if k in corpus and k not in ratings]
    keys = liked + disliked + unrated
    rows = corpus.rows_of(keys)
    labels = np.array([1] * len(liked) + [0] * (len(disliked) + len(unrated)))
    negative = np.array([1.0] * len(disliked) + [ranking.BACKGROUND_WEIGHT] * len(unrated))
    weight = np.concatenate([np.full(len(liked), negative.sum() / len(liked)), negative])
    weight *= len(keys) / weight.sum()
    columns = np.unique(rows.indices)
    present = np.bincount(rows.indices, minlength=N_FEATURES)
    rarity = (np.log((1 + len(keys)) / (1 + present)) + 1.0).astype(np.float32)
    design = rows[:, columns].multiply(rarity[columns]).tocsr()
    fits = [ranking._fit(design, labels, weight)]
    fold = np.empty(len(labels), dtype=np.int64)
    for label in (0, 1):
        members = np.flatnonzero(labels == label)
        fold[members] = np.arange(len(members)) % 3
    held_out = np.zeros(len(labels))
    for k in range(3):
        seen = fold != k
        fits.append(ranking._fit(design[seen], labels[seen], weight[seen]))
        held_out[~seen] = fits[-1].decision_function(design[~seen])
    ranking._platt(held_out, labels.astype(float), weight)
    effective = fits[0].coef_.ravel()
    keep = np.argsort(-np.abs(effective))[:ranking.MAX_COEFFICIENTS]
    rated = rows[:len(liked) + len(disliked)]
    profiles = []
    for i in range(rated.shape[0]):
        start, end = rated.indptr[i], rated.indptr[i + 1]
        values = rated.data[start:end] * rarity[rated.indices[start:end]]
        profiles.append(np.sort(np.argsort(-values)[:ranking.PROFILE_TERMS]))
    return len(keep) + len(profiles)


def previous_unchanged_run(store: Store) -> int:
    """Ratings read twice, and every saved model decoded whole, weights and reasons."""
    store.ratings()
    store.ratings_fingerprints()
    decoded = [WatchlistModel.from_bytes(blob) for _, blob in store.saved_models().values()]
    return sum(len(m.rated) + m.profiles.nnz for m in decoded)


# ------------------------------------------------------------------ scoring, on its own

def score(database: str, count: int, whole: bool, likeness: bool) -> None:
    """In a fresh process: load the saved models as a run does, score the day, print JSON.

    Without ``likeness``, no paper is compared with the liked papers: the models alone."""
    _, day, _ = papers_and_day(random.Random(20261120))
    watchlists = watchlists_named(count)
    with Store.open(database) as store:
        models, ratings = learned_models(watchlists, store, NOW)
        if whole:  # as before: every model's rated papers and profiles decoded up front
            for model in models.values():
                model.profiles  # noqa: B018
        # the day's papers are in the store when a run scores them
        store.record_batch("day", day, SourceState(), NOW)
        start = time.perf_counter()
        liked = liked_texts(watchlists, ratings, store) if likeness else {}
        index = (SimilarityIndex.from_counts(*store.term_weights(similarity_tokens)[:2])
                 if liked else None)
    matcher = Matcher(watchlists, models=models, ratings=ratings, similarity=index, liked=liked)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    leans = matcher.learning.lean(featurize(day))
    product = time.perf_counter() - start
    start = time.perf_counter()
    matched = matcher.match_many(day, now=NOW)
    scored = time.perf_counter() - start
    sample = day[:20]
    start = time.perf_counter()
    looped = [[models[name].lean(featurize([paper]))[0] for name in matcher.learning.names]
              for paper in sample]
    loop = (time.perf_counter() - start) / (len(sample) * len(models))
    print(json.dumps({"models": len(models), "papers": len(day), "product": product,
                      "setup": setup,
                      "scored": scored, "sent": sum(len(m) for m in matched.values()),
                      "loop": loop, "peak": peak_mb(),
                      "agree": bool(np.allclose(np.array(looped), leans[:len(sample)],
                                                atol=1e-5))}))


def scored_in_a_process(database: Path, count: int, *, whole: bool = False,
                        likeness: bool = True) -> dict:
    command = [sys.executable, __file__, "--score", str(database), "--watchlists", str(count)]
    command += ["--whole"] if whole else []
    command += [] if likeness else ["--no-likeness"]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watchlists", type=int, default=1000)
    parser.add_argument("--previous", type=int, default=100,
                        help="watchlists trained the previous way, to time it")
    parser.add_argument("--likes", type=int, default=LIKES,
                        help=f"likes a watchlist (default {LIKES}); up to {LIKED_SEEDS}, "
                             "scoring also compares each paper with them")
    parser.add_argument("--score", help=argparse.SUPPRESS)
    parser.add_argument("--whole", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--no-likeness", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.score:
        score(args.score, args.watchlists, args.whole, not args.no_likeness)
        return
    rng = random.Random(20261120)
    papers, day, origin = papers_and_day(rng)
    by_category: dict[str, list[str]] = defaultdict(list)
    for p in papers:
        by_category[p.primary_category or "none"].append(p.key)
    topics = [c for c, keys in by_category.items() if len(keys) >= 20]
    all_keys = [p.key for p in papers]
    watchlists = watchlists_named(args.watchlists)
    names = [w.name for w in watchlists]

    print(f"command: {Path(sys.executable).name} {' '.join(sys.argv)}")
    print(f"papers: {origin}; scoring day {len(day)} papers")
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "b.db"
        with Store.open(database) as store:
            store.record_batch("arxiv", papers, SourceState(), NOW - timedelta(days=2))
            rows = []
            for name in names:
                topic = rng.choice(topics)
                liked = rng.sample(by_category[topic], min(args.likes,
                                                           len(by_category[topic])))
                chosen = set(liked)
                others = [k for k in rng.sample(all_keys, DISLIKES * 2) if k not in chosen]
                rows += [(name, k, "like", 1) for k in liked]
                rows += [(name, k, "dislike", -1) for k in others[:DISLIKES]]
            # Bulk insert for the set-up only; the benchmark reads them the way a run does.
            with store.db.conn:
                store.db.conn.executemany(
                    "INSERT INTO ratings (watchlist, paper_key, recipient, action, value, "
                    "origin, created_at) VALUES (?, ?, '', ?, ?, 'bench', ?)",
                    [(*row, NOW.isoformat()) for row in rows])
            print(f"watchlists: {len(names)}, each a topic (a primary category with >= 20 "
                  f"papers): up to {args.likes} likes in it and {DISLIKES} dislikes elsewhere; "
                  f"{len(rows)} ratings in all")
            print(f"peak RSS after set-up: {peak_mb():.0f} MB\n")

            start = time.perf_counter()
            models, _ = learned_models(watchlists, store, NOW)
            first = time.perf_counter() - start
            print(f"train all {len(models)} models and save them: {first:.1f} s "
                  f"({first / max(len(models), 1) * 1000:.0f} ms a model, "
                  f"{ranking.CALIBRATION_FOLDS} fits each, at most "
                  f"{ranking.MAX_BACKGROUND} unrated papers); peak RSS {peak_mb():.0f} MB")

            ratings = store.ratings()
            background = sorted((p.key for p in papers),
                                key=lambda k: hashlib.sha1(k.encode()).hexdigest())
            background = background[:PREVIOUS_BACKGROUND]
            sample = names[:args.previous]
            corpus = Corpus([*store.papers({k for n in sample for k in ratings[n]}).values(),
                             *store.papers(background).values()])
            start = time.perf_counter()
            for name in sample:
                previous_train(corpus, ratings[name], background)
            previous = (time.perf_counter() - start) / len(sample)
            print(f"baseline, the previous training (4 fits a model, {len(background)} unrated "
                  f"papers, on the first {len(sample)} watchlists): "
                  f"{previous * 1000:.0f} ms a model -> {previous * len(models):.0f} s for "
                  f"all, {previous * len(models) / first:.1f}x\n")

            start = time.perf_counter()
            loaded, _ = learned_models(watchlists, store, NOW)
            unchanged = time.perf_counter() - start
            start = time.perf_counter()
            previous_unchanged_run(store)
            before = time.perf_counter() - start
            print(f"next run, nothing changed (fingerprints match, {len(loaded)} models loaded, "
                  f"their rated papers decoded when a reason needs them): {unchanged:.2f} s; "
                  f"baseline, ratings read twice and every model decoded whole: "
                  f"{before:.2f} s -> {before / unchanged:.1f}x")

            store.rate(watchlist=names[0], paper_key=all_keys[0], action="dislike",
                       origin="bench", now=NOW)
            start = time.perf_counter()
            learned_models(watchlists, store, NOW)
            one = time.perf_counter() - start
            print(f"next run, one watchlist's ratings changed: {one:.2f} s; baseline, retrain "
                  f"everything every run: {first:.1f} s -> {first / one:.0f}x\n")
            sizes = sorted(len(blob) for _, blob in store.saved_models().values())

        result = scored_in_a_process(database, args.watchlists)
        whole = scored_in_a_process(database, args.watchlists, whole=True)
        alone = scored_in_a_process(database, args.watchlists, likeness=False)
    pairs = result["papers"] * result["models"]
    print(f"score {result['papers']} papers x {result['models']} models, in a fresh process "
          f"that loads the saved models as a run does: features + one sparse product "
          f"{result['product']:.2f} s ({pairs / result['product'] / 1e6:.1f} M pairs/s); "
          f"match_many with reasons {result['scored']:.1f} s, {result['sent']} matches named "
          f"by their nearest rated paper; peak RSS {result['peak']:.0f} MB")
    print(f"  with up to {LIKED_SEEDS} likes, each paper is also compared with a watchlist's "
          f"likes: setting up the matcher (with the store's word counts and the likes' "
          f"profiles) {result['setup']:.1f} s, against {alone['setup']:.1f} s for the models "
          "alone")
    print(f"baseline, the same with every model decoded whole up front: peak RSS "
          f"{whole['peak']:.0f} MB, match_many {whole['scored']:.1f} s")
    print(f"baseline, the models alone (no paper compared with the likes): match_many "
          f"{alone['scored']:.1f} s, {alone['sent']} matches, peak RSS {alone['peak']:.0f} MB")
    loop = result["loop"]
    print(f"baseline, a Python loop over pairs (each model's lean of each paper, on 20 "
          f"papers): {1 / loop:,.0f} pairs/s -> {pairs * loop:.0f} s for the day, "
          f"{pairs * loop / result['product']:.0f}x the product (same leans: "
          f"{result['agree']})\n")

    dense = N_FEATURES * 4
    print(f"model bytes: median {sizes[len(sizes) // 2] / 1024:.0f} KB, max "
          f"{sizes[-1] / 1024:.0f} KB, all {sum(sizes) / 1e6:.0f} MB; dense float32 "
          f"coefficients alone {dense / 1024:.0f} KB a model, {dense * len(sizes) / 1e6:.0f} "
          f"MB in all -> {dense / sizes[len(sizes) // 2]:.0f}x larger")


if __name__ == "__main__":
    main()
