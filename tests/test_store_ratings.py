"""Ratings, their undo log, reference papers and the model cache, in a real SQLite file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from digest.errors import StoreError
from digest.models import Paper
from digest.sources.base import SourceState
from digest.store import Store

NOW = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)


def paper(n: int, **extra) -> Paper:
    return Paper(key=f"arxiv:2611.0000{n}", title=f"Paper {n}", url="", arxiv_id=f"2611.0000{n}",
                 **extra)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "digest.db") as opened:
        opened.record_batch("feed", [paper(1), paper(2), paper(3)], SourceState(), NOW)
        yield opened


def test_a_second_identical_rating_records_nothing_new(store):
    first = store.rate(watchlist="w", paper_key="arxiv:2611.00001", action="like",
                       origin="web", now=NOW)
    again = store.rate(watchlist="w", paper_key="arxiv:2611.00001", action="like",
                       origin="web", now=NOW)
    assert first.changed and not again.changed
    events = store.db.execute("SELECT count(*) FROM rating_events").fetchone()[0]
    assert events == 1
    assert store.ratings() == {"w": {"arxiv:2611.00001": 1}}


def test_undo_puts_back_what_the_click_replaced(store):
    store.rate(watchlist="w", paper_key="arxiv:2611.00001", action="like", origin="web", now=NOW)
    changed = store.rate(watchlist="w", paper_key="arxiv:2611.00001", action="dislike",
                         origin="web", now=NOW)
    assert store.ratings("w") == {"w": {"arxiv:2611.00001": -1}}
    undone = store.undo_rating(changed.event_id, NOW)
    assert undone is not None and undone.action == "like"
    assert store.ratings("w") == {"w": {"arxiv:2611.00001": 1}}
    assert store.undo_rating(changed.event_id, NOW) is None  # once only


def test_undoing_the_first_rating_removes_it(store):
    outcome = store.rate(watchlist="w", paper_key="arxiv:2611.00002", action="save",
                         origin="cli", now=NOW)
    store.undo_rating(outcome.event_id, NOW)
    assert store.ratings() == {}


def _rate(store: Store, action: str) -> int:
    outcome = store.rate(watchlist="w", paper_key="arxiv:2611.00001", action=action,
                         origin="web", now=NOW)
    assert outcome.event_id is not None
    return outcome.event_id


def test_undoing_every_click_in_any_order_leaves_the_paper_unrated(store):
    # More like this, then not for me; undo the first click's page, then the second's.
    liked, disliked = _rate(store, "like"), _rate(store, "dislike")
    first = store.undo_rating(liked, NOW)
    assert first is not None and first.action == "dislike"  # the later click stands
    assert store.ratings() == {"w": {"arxiv:2611.00001": -1}}
    second = store.undo_rating(disliked, NOW)
    # Not the like it replaced: that click was taken back already.
    assert second is not None and second.action is None
    assert store.ratings() == {}


def test_undoing_an_old_click_leaves_a_later_one_of_the_same_kind(store):
    liked, _, liked_again = _rate(store, "like"), _rate(store, "dislike"), _rate(store, "like")
    assert liked != liked_again
    outcome = store.undo_rating(liked, NOW)
    assert outcome is not None and outcome.action == "like"
    assert store.ratings() == {"w": {"arxiv:2611.00001": 1}}


def test_undoing_the_latest_click_goes_back_to_the_latest_still_standing(store):
    liked, saved, disliked = _rate(store, "like"), _rate(store, "save"), _rate(store, "dislike")
    store.undo_rating(saved, NOW)
    outcome = store.undo_rating(disliked, NOW)
    assert outcome is not None and outcome.action == "like"
    assert store.ratings() == {"w": {"arxiv:2611.00001": 1}}
    assert store.db.execute("SELECT action FROM ratings").fetchall() == [("like",)]
    store.undo_rating(liked, NOW)
    assert store.ratings() == {}


def test_readers_ratings_are_summed_and_a_tie_is_left_out(store):
    for recipient, action in (("a@x.org", "like"), ("b@x.org", "dislike")):
        store.rate(watchlist="w", paper_key="arxiv:2611.00001", action=action,
                   recipient=recipient, origin="web", now=NOW)
    store.rate(watchlist="w", paper_key="arxiv:2611.00002", action="save", origin="web",
               now=NOW)
    assert store.ratings() == {"w": {"arxiv:2611.00002": 1}}


def test_fingerprints_change_exactly_when_ratings_do(store):
    store.rate(watchlist="w", paper_key="arxiv:2611.00001", action="like", origin="web", now=NOW)
    before = store.ratings_fingerprints()
    store.rate(watchlist="w", paper_key="arxiv:2611.00001", action="save", origin="web", now=NOW)
    assert store.ratings_fingerprints() == before  # save counts as like: same training data
    store.rate(watchlist="w", paper_key="arxiv:2611.00002", action="dislike", origin="web",
               now=NOW)
    assert store.ratings_fingerprints()["w"] != before["w"]


def test_models_are_kept_by_watchlist_with_their_fingerprint(store):
    store.save_model("w", "abc", b"\x00model", NOW)
    store.save_model("w", "def", b"\x01model", NOW)
    assert store.saved_models() == {"w": ("def", b"\x01model")}


def test_reference_papers_stay_out_of_the_lookback_window(store):
    old = paper(7, published=NOW - timedelta(days=400))
    fresh = paper(8)
    assert store.record_references([old, fresh], NOW) == 2
    recent = {p.key for p in store.recent(NOW - timedelta(days=7))}
    assert old.key not in recent and fresh.key in recent
    assert store.paper(old.key) is not None
    assert store.record_references([old], NOW) == 0


def test_a_rating_of_an_unknown_paper_is_a_store_error(store):
    with pytest.raises(StoreError, match="cannot record a rating"):
        store.rate(watchlist="w", paper_key="arxiv:9999.99999", action="like", origin="web",
                   now=NOW)
