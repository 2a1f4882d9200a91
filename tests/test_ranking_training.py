"""What training costs: fits per model, unrated papers used, ratings read, models decoded."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import digest.pipeline as pipeline
import digest.ranking.model as ranking
from digest.config import WatchlistSettings
from digest.models import Paper
from digest.ranking import Corpus, WatchlistModel, train
from digest.sources.base import SourceState
from digest.store import Store

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
SPEECH = ["Streaming speech recognition with chunked attention",
          "Speech recognition for accented English",
          "Self-supervised speech representations for low-resource recognition",
          "Contextual biasing of speech recognizers",
          "Noise-robust speech recognition on factory floors"]


def paper(key: str, title: str) -> Paper:
    return Paper(key=key, title=title, url="", abstract=f"{title}, measured in the field.")


def speech() -> list[Paper]:
    return [paper(f"s{i}", title) for i, title in enumerate(SPEECH)]


def filler(count: int) -> list[Paper]:
    topics = ["glacier", "coral", "traffic", "auction", "battery", "soil", "wind", "bridge",
              "volcano", "fishery", "seismic", "methane", "tide", "asteroid", "forest"]
    return [paper(f"f{i}", f"A study of {topics[i % len(topics)]} site {i}")
            for i in range(count)]


def test_a_model_takes_one_fit_per_fold_and_no_more(monkeypatch):
    fits = []
    real = ranking._fit

    def counting(design, labels, weight):
        fits.append(design.shape[0])
        return real(design, labels, weight)

    monkeypatch.setattr(ranking, "_fit", counting)
    papers = [*speech(), *filler(30)]
    model = train(Corpus(papers), {f"s{i}": 1 for i in range(5)},
                  [p.key for p in papers[5:]])
    assert model is not None and len(model.weights) > 0
    assert len(fits) == ranking.CALIBRATION_FOLDS
    assert all(rows < len(papers) for rows in fits)  # each fold holds some papers out


def test_no_more_unrated_papers_than_the_bound_are_learned_from():
    papers = [*speech(), *filler(ranking.MAX_BACKGROUND + 50)]
    model = train(Corpus(papers), {f"s{i}": 1 for i in range(5)},
                  [p.key for p in papers[5:]])
    assert model is not None and model.trained_on == (5, 0, ranking.MAX_BACKGROUND)


def test_the_same_ratings_give_the_same_model():
    papers = [*speech(), *filler(40)]
    ratings, background = {f"s{i}": 1 for i in range(4)}, [p.key for p in papers[5:]]
    first = train(Corpus(papers), ratings, background)
    again = train(Corpus(papers), ratings, background)
    assert first is not None and again is not None
    assert first.to_bytes() == again.to_bytes()


def test_a_model_whose_rated_papers_are_unreadable_still_scores(caplog):
    papers = [*speech(), *filler(30)]
    corpus = Corpus(papers)
    model = train(corpus, {f"s{i}": 1 for i in range(4)}, [p.key for p in papers[5:]])
    assert model is not None
    blob = bytearray(model.to_bytes())
    blob[-40:] = b"\xff" * 40  # the end holds the rated papers, compressed apart
    again = WatchlistModel.from_bytes(bytes(blob))
    assert np.allclose(again.lean(corpus.rows), model.lean(corpus.rows), atol=1e-6)
    with caplog.at_level(logging.WARNING):
        assert again.rated == ()
    assert "rated papers unreadable" in caplog.text
    assert again.nearest(corpus.rows[:2], np.array([True, True])) == [None, None]


# ---------------------------------------------------------------- through the store

@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "digest.db") as opened:
        opened.record_batch("feed", [*speech(), *filler(30)], SourceState(),
                            NOW - timedelta(days=2))
        yield opened


def watchlist(name: str) -> WatchlistSettings:
    return WatchlistSettings(name=name, channels=("mail",), feedback_weight=5.0)


def rate(store: Store, name: str, keys: list[str], action: str = "like") -> None:
    for key in keys:
        store.rate(watchlist=name, paper_key=key, action=action, origin="web", now=NOW)


def test_fingerprints_from_ratings_already_read_are_the_stored_ones(store):
    rate(store, "asr", ["s0", "s1", "s2"])
    rate(store, "asr", ["f0"], "dislike")
    rate(store, "other", ["s3"], "save")
    assert store.ratings_fingerprints(store.ratings()) == store.ratings_fingerprints()


def test_a_run_with_nothing_changed_reads_the_ratings_once_and_trains_nothing(store,
                                                                           monkeypatch):
    lists = [watchlist("asr"), watchlist("other")]
    rate(store, "asr", ["s0", "s1", "s2"])
    rate(store, "other", ["s2", "s3", "s4"])
    pipeline.learned_models(lists, store, NOW)
    reads, trainings = [], []
    real_ratings, real_train = store.ratings, pipeline.train
    monkeypatch.setattr(store, "ratings", lambda *a: reads.append(a) or real_ratings(*a))
    monkeypatch.setattr(pipeline, "train", lambda *a: trainings.append(a) or real_train(*a))
    models, ratings = pipeline.learned_models(lists, store, NOW)
    assert sorted(models) == ["asr", "other"] and ratings["asr"] == {"s0": 1, "s1": 1, "s2": 1}
    assert len(reads) == 1 and trainings == []

