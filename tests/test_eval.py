"""Quality floor: precision and recall on the labelled evaluation set may not drop.

The floors are the figures the scorer reached when the set was written
(`make bench` prints them beside a plain keyword baseline). Raise them when the
scorer improves; a change that lowers one is a regression to explain, not to paper over.
"""

import pytest
from evaluation import evaluate, keyword_baseline, load, micro, scorer

# watchlist: (precision, recall) reached on tests/eval/ when the floor was set
FLOORS = {
    "peft": (1.0, 1.0),
    "kv-cache": (0.909, 1.0),
    "quantization": (1.0, 1.0),
    "rlhf": (1.0, 0.727),
    "molecular-gnn": (1.0, 0.6),
    "speech-recognition": (1.0, 1.0),
    "author-watch": (1.0, 1.0),
}
MICRO_FLOOR = (0.987, 0.915)


@pytest.fixture(scope="module")
def results():
    papers, relevant, settings = load()
    return (evaluate(scorer(papers, settings), papers, relevant, settings),
            evaluate(keyword_baseline(papers), papers, relevant, settings))


def test_the_set_is_large_and_labelled_by_topic():
    papers, relevant, settings = load()
    assert len(papers) >= 150
    assert len(settings.watchlists) >= 6
    assert all(len(relevant[w.name]) >= 10 for w in settings.watchlists)
    unlabelled = [p for p in papers if not any(p.key in ids for ids in relevant.values())]
    assert len(unlabelled) >= 50  # hard negatives and background papers


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_precision_and_recall_hold_their_floor(results, name):
    ours, _ = results
    precision, recall = FLOORS[name]
    assert ours[name].precision >= precision - 1e-3, ours[name]
    assert ours[name].recall >= recall - 1e-3, ours[name]


def test_the_scorer_beats_the_plain_keyword_baseline_overall(results):
    ours, baseline = results
    total, base = micro(ours), micro(baseline)
    assert total.precision >= MICRO_FLOOR[0] - 1e-3 and total.recall >= MICRO_FLOOR[1] - 1e-3
    assert total.f1 > base.f1
