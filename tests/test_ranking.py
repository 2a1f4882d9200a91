"""What learns from ratings: when a model starts, its bytes, its reasons, vetoes, retraining."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

import digest.pipeline as pipeline
from digest.config import Keyword, WatchlistSettings
from digest.feedback import next_step
from digest.models import Match, Paper, Reason
from digest.ranking import (
    MIN_LIKES,
    Corpus,
    ModelError,
    ModelSet,
    WatchlistModel,
    train,
)
from digest.ranking.model import MIN_BACKGROUND, UNLIKE_SHARE
from digest.render import describe_reasons
from digest.scoring import Matcher
from digest.similarity import SimilarityIndex
from digest.sources.base import SourceState
from digest.store import Store
from digest.terms import parse_term

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)

SPEECH = [
    ("Streaming speech recognition with chunked attention",
     "A streaming recognizer transcribes speech with low latency and a lower word error rate."),
    ("Speech recognition for accented English",
     "Accent-robust acoustic models cut the word error rate of speech recognition systems."),
    ("Self-supervised speech representations for low-resource recognition",
     "Pretrained speech encoders help recognition of spoken languages with little transcribed "
     "audio."),
    ("Contextual biasing of speech recognizers",
     "Rare names in spoken queries are recognized better when the recognizer is biased with "
     "a contact list."),
    ("Noise-robust speech recognition on factory floors",
     "Speech recognition in loud factories improves with multi-condition acoustic training."),
]
OPTICS = [
    ("Metasurface lenses for compact cameras", "Flat optics focus light with nanopillars."),
    ("Adaptive optics for ground telescopes", "Deformable mirrors correct atmospheric blur."),
    ("Photonic crystal fibres for sensing", "Hollow-core fibres guide light for gas sensing."),
]
FILLER = ["galaxy cluster lensing", "coral reef bleaching", "traffic signal timing",
          "glacier melt modelling", "auction mechanism design", "protein folding kinetics",
          "battery cathode ageing", "soil moisture mapping", "wind turbine wakes",
          "epidemic contact tracing", "bridge fatigue cracks", "volcanic ash dispersion",
          "urban heat islands", "fishery stock assessment", "seismic noise imaging",
          "rice paddy methane", "ocean wave forecasting", "river sediment transport",
          "asteroid spin states", "bird migration routes", "forest fire spread",
          "lithium brine extraction", "dune migration rates", "tidal energy arrays",
          "permafrost carbon release"]


def paper(key: str, title: str, abstract: str = "", **extra) -> Paper:
    return Paper(key=key, title=title, url="", abstract=abstract, **extra)


def speech(i: int) -> Paper:
    return paper(f"s{i}", *SPEECH[i])


def optics(i: int) -> Paper:
    return paper(f"o{i}", *OPTICS[i])


def filler() -> list[Paper]:
    return [paper(f"f{i}", f"A study of {topic}", f"We measure {topic} in the field.")
            for i, topic in enumerate(FILLER)]


def corpus() -> Corpus:
    return Corpus([*(speech(i) for i in range(len(SPEECH))),
                   *(optics(i) for i in range(len(OPTICS))), *filler()])


BACKGROUND = [p.key for p in filler()]


def liked(n: int) -> dict[str, int]:
    return {f"s{i}": 1 for i in range(n)}


def watchlist(name: str = "asr", **extra) -> WatchlistSettings:
    return WatchlistSettings(name=name, channels=("mail",), **extra)


def keywords(*terms: str) -> tuple[Keyword, ...]:
    return tuple(Keyword(parse_term(t)) for t in terms)


# ---------------------------------------------------------------- when a model starts

def test_no_model_before_the_minimum_of_likes():
    assert train(corpus(), liked(MIN_LIKES - 1), BACKGROUND) is None
    model = train(corpus(), liked(MIN_LIKES), BACKGROUND)
    assert model is not None and model.likes == MIN_LIKES


def test_likes_alone_need_enough_unrated_papers_to_stand_for_the_negatives():
    assert train(corpus(), liked(3), BACKGROUND[:MIN_BACKGROUND - 1]) is None
    assert train(corpus(), liked(3), BACKGROUND[:MIN_BACKGROUND]) is not None
    # explicit dislikes are negatives enough
    assert train(corpus(), {**liked(3), "o0": -1}) is not None


def test_rated_papers_the_corpus_lacks_are_skipped():
    ratings = {**liked(2), "gone-1": 1, "gone-2": 1}
    assert train(corpus(), ratings, BACKGROUND) is None


# ---------------------------------------------------------------- bytes

def test_a_model_round_trips_through_bytes_and_stays_small():
    model = train(corpus(), {**liked(4), "o0": -1}, BACKGROUND)
    assert model is not None
    blob = model.to_bytes()
    again = WatchlistModel.from_bytes(blob)
    rows = corpus().rows
    assert np.allclose(again.lean(rows), model.lean(rows), atol=1e-6)
    assert [p.key for p in again.rated] == [p.key for p in model.rated]
    assert again.trained_on == model.trained_on
    assert again.alone == model.alone
    assert len(blob) < 100_000


@pytest.mark.parametrize("blob", [b"", b"not a model", b"PDRM\x01\x00x\x9c\x03\x00"],
                         ids=["empty", "text", "cut short"])
def test_bytes_that_are_not_a_model_raise_model_error(blob):
    with pytest.raises(ModelError):
        WatchlistModel.from_bytes(blob)


def test_a_model_cut_short_raises_model_error():
    blob = train(corpus(), liked(3), BACKGROUND).to_bytes()
    with pytest.raises(ModelError):
        WatchlistModel.from_bytes(blob[: len(blob) // 2])


def test_a_model_of_another_format_is_refused(monkeypatch):
    import digest.ranking.model as module

    blob = train(corpus(), liked(3), BACKGROUND).to_bytes()
    monkeypatch.setattr(module, "FORMAT", module.FORMAT + 1)
    with pytest.raises(ModelError, match="format"):
        WatchlistModel.from_bytes(blob)


# ---------------------------------------------------------------- scoring

def test_all_models_score_all_papers_in_one_product_and_agree_with_each_model():
    c = corpus()
    models = {"asr": train(c, liked(3), BACKGROUND),
              "optics": train(c, {"o0": 1, "o1": 1, "o2": 1}, BACKGROUND)}
    leans = ModelSet(models).lean(c.rows)
    assert leans.shape == (c.rows.shape[0], 2)
    for column, model in enumerate(models.values()):
        assert np.allclose(leans[:, column], model.lean(c.rows), atol=1e-6)


def test_a_paper_gets_the_liked_paper_it_is_closest_to_as_its_reason():
    c = corpus()
    model = train(c, {"s0": 1, "s1": 1, "s3": 1}, BACKGROUND)
    matcher = Matcher([watchlist(keywords=keywords("speech"))], models={"asr": model})
    new = paper("n1", "Biasing speech recognizers towards contact names",
                "Contact names in spoken queries are recognized once the recognizer is biased.")
    [match] = matcher.match(new, now=NOW)
    learned = [r for r in match.reasons if r.kind == "liked"]
    assert learned and learned[0].value == SPEECH[3][0]
    assert learned[0].describe() == f'close to "{SPEECH[3][0]}", which you liked'
    assert 0 < learned[0].points <= 5.0


def test_the_learned_points_stay_within_feedback_weight():
    c = corpus()
    model = train(c, liked(5), BACKGROUND)
    matcher = Matcher([watchlist(feedback_weight=2.0)], models={"asr": model})
    for explanation in (matcher.explain(p, now=NOW)[0] for p in c.papers.values()):
        learned = [r for r in explanation.reasons if r.kind in ("liked", "unliked")]
        assert len(learned) == 1 and -2.0 <= learned[0].points <= 2.0


def test_a_disliked_paper_never_passes_that_watchlist_and_explain_says_why():
    settings = [watchlist(keywords=keywords("speech recognition")),
                watchlist("other", keywords=keywords("speech recognition"))]
    matcher = Matcher(settings, ratings={"asr": {"s1": -1}})
    disliked = speech(1)
    assert [m.watchlist for m in matcher.match(disliked, now=NOW)] == ["other"]
    verdict = {e.watchlist: e for e in matcher.explain(disliked, now=NOW)}
    assert not verdict["asr"].passed
    assert "disliked" in verdict["asr"].verdict
    assert verdict["other"].passed


def test_a_liked_paper_is_not_sent_to_that_watchlist_again_and_explain_says_why():
    settings = [watchlist(keywords=keywords("speech recognition")),
                watchlist("other", keywords=keywords("speech recognition"))]
    matcher = Matcher(settings, ratings={"asr": {"s1": 1}})
    liked = speech(1)
    assert [m.watchlist for m in matcher.match(liked, now=NOW)] == ["other"]
    verdict = {e.watchlist: e for e in matcher.explain(liked, now=NOW)}
    assert not verdict["asr"].passed
    assert verdict["asr"].verdict == "liked by a reader for this watchlist, who has it already"
    assert verdict["other"].passed
    assert [m.watchlist for m in matcher.match(speech(0), now=NOW)] == ["asr", "other"]


def test_a_ratings_only_watchlist_sends_what_is_close_to_its_likes():
    c = corpus()
    model = train(c, liked(4), BACKGROUND)
    matcher = Matcher([watchlist("taste", feedback_weight=5.0)], models={"taste": model})
    close = paper("n1", "Speech recognition of spoken dialects",
                  "Dialect speech is transcribed by a recognizer with a lower word error rate.")
    far = paper("n2", "Liquid lenses for phone cameras", "Tunable optics focus light fast.")
    found = matcher.match_many([close, far], now=NOW)["taste"]
    assert [m.paper.key for m in found] == ["n1"]
    assert found[0].reasons[-1].kind == "liked"
    assert not matcher.explain(far, now=NOW)[0].passed


def test_without_a_model_a_ratings_only_watchlist_sends_nothing():
    matcher = Matcher([watchlist("taste", feedback_weight=5.0)])
    assert matcher.match_many([speech(0), optics(0)], now=NOW) == {"taste": []}


def likeness(*likes: Paper, **extra) -> Matcher:
    """A matcher whose watchlists are given these liked papers' texts, as the pipeline does."""
    texts = {p.key: f"{p.title}. {p.abstract}" for p in likes}
    index = SimilarityIndex(f"{p.title}. {p.abstract}" for p in
                            [*(speech(i) for i in range(len(SPEECH))), *filler()])
    names = extra.pop("names", ("taste",))
    taken = extra.pop("taken", "counts of 8 papers")
    return Matcher([watchlist(name, **extra) for name in names], similarity=index,
                   liked={name: texts for name in names}, similarity_taken=taken)


def test_one_like_is_enough_for_a_ratings_only_watchlist_to_send_papers_like_it():
    matcher = likeness(speech(0))  # one like: too few for a model
    close = paper("n1", "Streaming speech recognition for meetings",
                  "A streaming recognizer transcribes meeting speech with a low word error rate.")
    far = paper("n2", "Liquid lenses for phone cameras", "Tunable optics focus light fast.")
    found = matcher.match_many([close, far, speech(0)], now=NOW)["taste"]
    assert [m.paper.key for m in found] == ["n1"]  # not far, nor the liked paper itself
    [reason] = found[0].reasons
    assert (reason.kind, reason.field) == ("similar", "likes") and reason.points >= 1.0
    assert reason.describe().startswith("alike to the papers you liked (")
    assert "speech" in reason.value and "streaming" in reason.value
    assert "no term" in matcher.explain(far, now=NOW)[0].verdict
    # weighed by the store's word counts as taken: kept verdicts hold while they do
    assert not matcher.volatile("taste")
    assert matcher.fingerprint("taste") == likeness(speech(0)).fingerprint("taste")
    assert matcher.fingerprint("taste") != likeness(speech(0), taken="anew").fingerprint("taste")
    assert matcher.fingerprint("taste") != likeness(speech(1)).fingerprint("taste")


def test_likeness_to_the_likes_is_only_for_watchlists_of_ratings_alone():
    close = paper("n1", "Streaming speech recognition for meetings",
                  "A streaming recognizer transcribes meeting speech with a low word error rate.")
    ruled = likeness(speech(0), keywords=keywords("transcribes"))
    [match] = ruled.match(close, now=NOW)
    assert [r.kind for r in match.reasons] == ["term"]
    assert ruled.fingerprint("taste") == likeness(
        speech(0), keywords=keywords("transcribes"), taken="anew").fingerprint("taste")
    # nor for one that does not learn from ratings
    assert likeness(speech(0), feedback_weight=0.0).match(close, now=NOW) == []


def test_what_likeness_and_models_send_together_is_what_scoring_every_pair_gives():
    """match_many looks at a paper for a watchlist only where its likeness, with the most
    its model could add, could reach min_score; scoring every pair must agree."""
    rng = random.Random(5)
    c = corpus()
    models = {"taste": train(c, liked(4), BACKGROUND), "boosted": train(c, liked(4), BACKGROUND),
              "mixed": train(c, {**liked(3), "o0": -1}, BACKGROUND),
              "seeded": train(c, liked(4), BACKGROUND)}
    words = " ".join(t + " " + a for t, a in [*SPEECH, *OPTICS]).split() + FILLER
    lists = [watchlist("taste", min_score=rng.choice([0.5, 1.0, 2.0])),
             watchlist("mixed", min_score=1.5, similarity_weight=2.0),
             watchlist("fresh", recency_boost=2.0, min_score=2.5),  # a boost: always looked at
             # a boost beside a model: the model alone may send what the boost lifts
             watchlist("boosted", similar_to=("x",), recency_boost=3.0, min_score=4.5,
                       min_similarity=0.9),
             watchlist("nomodel", min_score=1.5),
             watchlist("seeded", similar_to=("x",), min_similarity=0.05, min_score=2.0)]
    likes = {p.key: f"{p.title}. {p.abstract}" for p in (speech(0), speech(1), optics(0))}
    index = SimilarityIndex(f"{p.title}. {p.abstract}" for p in
                            [*(speech(i) for i in range(len(SPEECH))), *filler()])
    matcher = Matcher(lists, similarity=index, models=models,
                      seeds={"seeded": [SPEECH[2][0]], "boosted": [OPTICS[1][0]]},
                      liked={"taste": likes, "mixed": likes, "fresh": likes, "nomodel": likes})
    papers = [paper(f"n{i}", " ".join(rng.choices(words, k=8)),
                    " ".join(rng.choices(words, k=rng.randint(5, 40))),
                    published=NOW - timedelta(days=rng.randint(0, 5)))
              for i in range(300)]
    papers += [replace(speech(i), key=f"again{i}", published=NOW - timedelta(hours=1))
               for i in range(len(SPEECH))]
    found = matcher.match_many(papers, now=NOW)
    every: dict[str, list] = {name: [] for name in found}
    for p in papers:
        for verdict in matcher.explain(p, now=NOW):
            if verdict.passed:
                every[verdict.watchlist].append((p.key, verdict.score))
    assert {n: [(m.paper.key, m.score) for m in ms] for n, ms in found.items()} == every
    assert all(len(every[n]) >= 5 for n in every)  # each sends some papers, not all
    assert all(len(every[n]) < len(papers) for n in every)


LEARNS = ("from 3 likes, with a paper to set them against (one disliked, or 20 unrated "
          "ones seen lately), its ranking learns from them")


@pytest.mark.parametrize(("extra", "action", "papers", "said"), [
    ({}, "dislike", 1, "taste will not be sent this paper again."),
    ({}, "dislike", 2, "taste will not be sent these papers again."),
    ({}, "like", 1, "taste will not be sent this paper again. From the next run, taste looks "
                    "for papers alike to those liked for it, while they are 50 or fewer; "
                    f"{LEARNS} too."),
    ({}, "save", 1, "taste will not be sent this paper again. From the next run, taste looks "
                    "for papers alike to those liked for it, while they are 50 or fewer; "
                    f"{LEARNS} too."),
    ({"keywords": keywords("speech")}, "like", 1,
     f"taste will not be sent this paper again. For taste, {LEARNS}."),
    ({"similarity_weight": 0.0}, "like", 2,
     f"taste will not be sent these papers again. For taste, {LEARNS}."),
    ({"feedback_weight": 0.0}, "like", 1,
     "taste will not be sent this paper again; taste does not learn from ratings (its "
     "feedback_weight is 0)."),
    ({"feedback_weight": 0.0}, "dislike", 1, "taste will not be sent this paper again."),
    ({}, None, 1, "This paper is unrated for taste again, as if never rated."),
])
def test_a_reader_is_told_what_the_next_digests_make_of_a_rating(extra, action, papers, said):
    assert next_step(watchlist("taste", **extra), action, papers) == said


def test_feedback_weight_zero_turns_learning_off_but_not_the_veto():
    c = corpus()
    model = train(c, liked(4), BACKGROUND)
    matcher = Matcher([watchlist(keywords=keywords("speech"), feedback_weight=0.0)],
                      models={"asr": model}, ratings={"asr": {"s4": -1}})
    [match] = matcher.match(speech(0), now=NOW)
    assert all(r.kind not in ("liked", "unliked") for r in match.reasons)
    assert matcher.match(speech(4), now=NOW) == []


def test_likes_alone_take_a_little_from_a_keyword_match_and_never_veto_a_title_hit():
    c = corpus()
    model = train(c, liked(4), BACKGROUND)
    matcher = Matcher([watchlist(keywords=keywords("lenses"))], models={"asr": model})
    [explanation] = matcher.explain(optics(0), now=NOW)
    learned = [r for r in explanation.reasons if r.kind in ("liked", "unliked")]
    assert explanation.passed and -UNLIKE_SHARE * 5.0 < learned[0].points < 0.0
    assert learned[0].describe() == "unlike the papers you liked"


def test_ratings_that_round_to_no_points_say_neither_like_nor_unlike():
    # A paper its reader liked can lean a hair against (the model has not seen it): at
    # -0.003 points, "unlike the papers you liked" beside "+0.00" contradicts the reader.
    paper = optics(0)
    faint = Reason("unliked", "", "ratings", -0.003, weight=5.0)
    plain = Reason("unliked", "", "ratings", -0.2, weight=5.0)
    term = Reason("term", "lenses", "title", 3.0)
    assert faint.says_nothing and not plain.says_nothing and not term.says_nothing
    assert faint.describe() == "your ratings lean neither way"
    assert replace(faint, kind="liked", points=0.004).describe() == (
        "your ratings lean neither way")
    assert plain.describe() == "unlike the papers you liked"
    # The digest leaves the empty say out; a say worth points stays.
    match = Match(paper, "asr", 2.997, (term, faint))
    assert describe_reasons(match) == ('"lenses" in title',)
    assert describe_reasons(replace(match, reasons=(term, plain))) == (
        '"lenses" in title', "unlike the papers you liked")


def test_dislikes_let_the_model_count_against_papers_like_them():
    c = corpus()
    model = train(c, {**liked(4), "o0": -1, "o1": -1}, BACKGROUND)
    matcher = Matcher([watchlist(keywords=keywords("optics"))], models={"asr": model})
    alike = paper("n3", "Metasurface optics for thin cameras", "Flat optics with nanopillars.")
    [explanation] = matcher.explain(alike, now=NOW)
    learned = [r for r in explanation.reasons if r.kind == "unliked"]
    assert learned and learned[0].points < 0
    assert learned[0].describe() == f'close to "{OPTICS[0][0]}", which you disliked'


def test_match_many_agrees_with_matching_paper_by_paper():
    c = corpus()
    models = {"asr": train(c, liked(4), BACKGROUND),
              "taste": train(c, {"o0": 1, "o1": 1, "o2": 1}, BACKGROUND)}
    matcher = Matcher([watchlist(keywords=keywords("speech", "lenses")),
                       watchlist("taste")], models=models, ratings={"asr": {"s4": -1}})
    papers = list(c.papers.values())
    batch = matcher.match_many(papers, now=NOW)
    one_by_one: dict[str, list] = {"asr": [], "taste": []}
    for p in papers:
        for m in matcher.match(p, now=NOW):
            one_by_one[m.watchlist].append(m)
    assert batch == one_by_one
    assert batch["asr"] and batch["taste"]


# ---------------------------------------------------------------- retraining

@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "digest.db") as opened:
        old = NOW - timedelta(days=2)
        opened.record_batch("feed", [*(speech(i) for i in range(len(SPEECH))),
                                     *(optics(i) for i in range(len(OPTICS))), *filler()],
                            SourceState(), old)
        yield opened


def rate(store: Store, name: str, key: str, action: str) -> None:
    store.rate(watchlist=name, paper_key=key, action=action, origin="web", now=NOW)


def test_a_model_is_trained_again_only_when_its_ratings_change(store, monkeypatch):
    trainings: list[str] = []
    real_train = pipeline.train

    def counting(corpus, ratings, background=()):
        trainings.append(",".join(sorted(ratings)))
        return real_train(corpus, ratings, background)

    monkeypatch.setattr(pipeline, "train", counting)
    lists = [watchlist(keywords=keywords("speech")), watchlist("optics", feedback_weight=3.0)]
    for key in ("s0", "s1", "s2"):
        rate(store, "asr", key, "like")
    for key in ("o0", "o1"):
        rate(store, "optics", key, "like")  # one like short of a model

    models, ratings = pipeline.learned_models(lists, store, NOW)
    assert list(models) == ["asr"] and len(trainings) == 1
    assert ratings == {"asr": {"s0": 1, "s1": 1, "s2": 1}, "optics": {"o0": 1, "o1": 1}}
    assert store.saved_models()["asr"][0] == store.ratings_fingerprints()["asr"]

    models, _ = pipeline.learned_models(lists, store, NOW)  # nothing changed: loaded
    assert list(models) == ["asr"] and len(trainings) == 1

    rate(store, "optics", "o2", "like")  # optics reaches the minimum; asr is unchanged
    models, _ = pipeline.learned_models(lists, store, NOW)
    assert sorted(models) == ["asr", "optics"] and len(trainings) == 2

    rate(store, "asr", "o0", "dislike")
    models, _ = pipeline.learned_models(lists, store, NOW)
    assert len(trainings) == 3 and models["asr"].trained_on[1] == 1


def test_an_unreadable_saved_model_is_trained_again(store):
    lists = [watchlist()]
    for key in ("s0", "s1", "s2"):
        rate(store, "asr", key, "like")
    fingerprint = store.ratings_fingerprints()["asr"]
    store.save_model("asr", fingerprint, b"left over from an older version", NOW)
    models, _ = pipeline.learned_models(lists, store, NOW)
    assert "asr" in models
    assert WatchlistModel.from_bytes(store.saved_models()["asr"][1]).likes == 3


def test_papers_of_the_last_hours_are_not_counted_as_negatives(store):
    fresh = [paper(f"new{i}", f"Today's paper {i}", "Nobody has seen it yet.")
             for i in range(5)]
    store.record_batch("feed", fresh, SourceState(), NOW - timedelta(minutes=5))
    for key in ("s0", "s1", "s2"):
        rate(store, "asr", key, "like")
    models, _ = pipeline.learned_models([watchlist()], store, NOW)
    likes, dislikes, unrated = models["asr"].trained_on
    assert (likes, dislikes) == (3, 0)
    assert unrated == len(SPEECH) - 3 + len(OPTICS) + len(FILLER)  # not the 5 new ones
