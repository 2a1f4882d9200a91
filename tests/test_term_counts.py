"""similar_to's word counts kept in the store: brought up to date run by run, they equal a
count over the whole store, through new papers, new versions, other changes and pruning."""

from __future__ import annotations

import random
import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from digest.models import Paper
from digest.similarity import SimilarityIndex, tokens
from digest.store import Store
from digest.store.schema import MIGRATIONS, statements

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
WORDS = ["adapter", "rank", "speech", "graph", "molecule", "quantization", "retrieval",
         "agent", "diffusion", "protein", "lens", "kernel", "token", "cache", "prune"]


def paper(number: int, rng: random.Random, version: int = 1) -> Paper:
    return Paper(key=f"arxiv:2611.{number:05d}", arxiv_id=f"2611.{number:05d}",
                 version=version, url="u", title=" ".join(rng.sample(WORDS, 3)),
                 abstract=" ".join(rng.choice(WORDS) for _ in range(12)),
                 categories=("cs.CL",))


def whole_count(store: Store) -> tuple[dict[str, int], int]:
    index = SimilarityIndex(store.texts())
    return dict(index.df), index.size


def test_kept_counts_equal_a_count_over_the_whole_store(tmp_path):
    rng = random.Random(5)
    lines: list[str] = []
    with Store.open(tmp_path / "digest.db") as store:
        store.record_references([paper(n, rng) for n in range(40)], NOW)
        assert store.term_counts(tokens, lines.append) == whole_count(store)
        assert lines and lines[0].startswith("counting the words of 40 stored papers")
        stored = {n: paper(n, rng) for n in range(40)}
        next_number = 40
        for day in range(1, 8):
            when = NOW + timedelta(days=day)
            for _ in range(rng.randint(3, 8)):  # new papers
                stored[next_number] = paper(next_number, rng)
                store.record_references([stored[next_number]], when)
                next_number += 1
            for number in rng.sample(sorted(stored), 4):  # new versions, new text
                old = stored[number]
                stored[number] = replace(paper(number, rng, (old.version or 1) + 1))
                store.record_references([stored[number]], when)
                if rng.random() < 0.5:  # changed twice before the next count
                    stored[number] = replace(paper(number, rng, (old.version or 1) + 2))
                    store.record_references([stored[number]], when)
            for number in rng.sample(sorted(stored), 3):  # a change scoring reads, same text
                stored[number] = replace(stored[number], upvotes=day * 10)
                store.record_references([stored[number]], when)
            for number in rng.sample(sorted(stored), 2):  # pruned
                store.db.execute("DELETE FROM papers WHERE key = ?", [stored.pop(number).key])
            if day % 3 == 0:  # a run without similar_to: nothing counted that day
                continue
            assert store.term_counts(tokens) == whole_count(store), f"day {day}"
        assert store.db.execute("SELECT COUNT(*) FROM term_counts_retired").fetchone()[0] == 0


def test_a_store_never_counted_keeps_no_retired_texts(tmp_path):
    rng = random.Random(1)
    with Store.open(tmp_path / "digest.db") as store:
        store.record_references([paper(1, rng)], NOW)
        store.record_references([paper(1, rng, version=2)], NOW)
        store.db.execute("DELETE FROM papers")
        assert store.db.execute("SELECT COUNT(*) FROM term_counts_retired").fetchone()[0] == 0


def test_the_counts_similarity_is_weighed_by_hold_until_a_twentieth_of_the_store_moved(
        tmp_path):
    rng = random.Random(9)
    with Store.open(tmp_path / "digest.db") as store:
        store.record_references([paper(n, rng) for n in range(100)], NOW)
        first = store.term_weights(tokens)
        assert first[:2] == whole_count(store)
        store.record_references([paper(n, rng) for n in range(100, 105)], NOW)  # 5%: holds
        assert store.term_weights(tokens) == first
        assert store.term_counts(tokens) == whole_count(store) != first[:2]
        store.record_references([paper(105, rng)], NOW)  # over 5%: taken anew
        again = store.term_weights(tokens)
        assert again[:2] == whole_count(store) and again[2] > first[2]
        # as many papers as before, new versions with new texts: each text came and went
        store.record_references([paper(n, rng, version=2) for n in (1, 2)], NOW)
        assert store.term_weights(tokens) == again  # 4 of 106 moved: held
        store.record_references([paper(3, rng, version=2)], NOW)
        last = store.term_weights(tokens)  # 6 of 106 moved: taken anew
        assert last[1] == again[1] and last[:2] == whole_count(store) and last[2] > again[2]


def test_counts_taken_under_schema_12_carry_on_under_13(tmp_path):
    """Schema 12 kept the taken counts without what moved since or which taking it was."""
    path = tmp_path / "digest.db"
    rng = random.Random(4)
    with closing(sqlite3.connect(path)) as db:
        for number, script in enumerate(MIGRATIONS[:12], start=1):
            for statement in statements(script):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number}")
        db.execute("INSERT INTO term_weights_state (id, papers, taken) VALUES (1, 100, 7)")
        db.commit()
    with Store.open(path) as store:
        store.record_references([paper(n, rng) for n in range(100)], NOW)
        counts, papers, taking = store.term_weights(tokens)
        # the words were never counted: counted now, and taken anew, the second time
        assert (counts, papers) == whole_count(store) and taking == 2
