"""How far a model counts for and against a paper: the evidence behind its say."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest
from scipy import sparse

from digest.config import Keyword, WatchlistSettings
from digest.models import Paper
from digest.ranking import Closest, Corpus, RatedPaper, WatchlistModel, featurize, train
from digest.ranking.features import N_FEATURES
from digest.ranking.model import ALONE_FLOOR, NEAR_DISLIKED, UNLIKE_EVIDENCE, UNLIKE_SHARE, _alone
from digest.scoring import LEARNED_ALONE, LEARNED_PAST_RULES, Matcher
from digest.terms import parse_term

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)

SPEECH = [
    ("Streaming speech recognition with chunked attention",
     "A streaming recognizer transcribes speech with low latency and a lower word error rate."),
    ("Speech recognition for accented English",
     "Accent-robust acoustic models cut the word error rate of speech recognition systems."),
    ("Self-supervised speech representations for low-resource recognition",
     "Pretrained speech encoders help recognition of spoken languages with little audio."),
    ("Contextual biasing of speech recognizers",
     "Rare names in spoken queries are recognized better when the recognizer is biased."),
    ("Noise-robust speech recognition on factory floors",
     "Speech recognition in loud factories improves with multi-condition acoustic training."),
]
# Near-misses a speech reader dislikes: "transcription" of genes, not of speech.
GENES = [
    ("Transcription factor binding in yeast promoters",
     "Transcription factors bind yeast promoters; we map binding sites genome-wide."),
    ("Transcription bursts in single bacterial cells",
     "Single-cell imaging shows transcription of bacterial genes happens in bursts."),
]
FILLER = ["galaxy cluster lensing", "coral reef bleaching", "traffic signal timing",
          "glacier melt modelling", "auction mechanism design", "protein folding kinetics",
          "battery cathode ageing", "soil moisture mapping", "wind turbine wakes",
          "epidemic contact tracing", "bridge fatigue cracks", "volcanic ash dispersion",
          "urban heat islands", "fishery stock assessment", "seismic noise imaging",
          "rice paddy methane", "ocean wave forecasting", "river sediment transport",
          "asteroid spin states", "bird migration routes", "forest fire spread",
          "lithium brine extraction", "dune migration rates", "tidal energy arrays"]


def paper(key: str, title: str, abstract: str = "") -> Paper:
    return Paper(key=key, title=title, url="", abstract=abstract)


def corpus() -> Corpus:
    return Corpus([*(paper(f"s{i}", *t) for i, t in enumerate(SPEECH)),
                   *(paper(f"g{i}", *t) for i, t in enumerate(GENES)),
                   *(paper(f"f{i}", f"A study of {t}", f"We measure {t} in the field.")
                     for i, t in enumerate(FILLER))])


BACKGROUND = [f"f{i}" for i in range(len(FILLER))]


def likes(n: int) -> dict[str, int]:
    return {f"s{i}": 1 for i in range(n)}


def watchlist(name: str = "asr", *terms: str, **extra) -> WatchlistSettings:
    return WatchlistSettings(name=name, channels=("mail",),
                             keywords=tuple(Keyword(parse_term(t)) for t in terms), **extra)


def learned(explanation) -> float:
    [reason] = [r for r in explanation.reasons if r.kind in ("liked", "unliked")]
    return reason.points


# ---------------------------------------------------------------- unlike the likes

def test_a_model_of_likes_alone_lowers_an_off_topic_keyword_match_a_little():
    model = train(corpus(), likes(5), BACKGROUND)
    matcher = Matcher([watchlist("asr", "lensing")], models={"asr": model})
    [explanation] = matcher.explain(paper("n1", "Galaxy cluster lensing maps"), now=NOW)
    assert -UNLIKE_SHARE * 5.0 < learned(explanation) < 0
    assert explanation.passed  # 2 points for the title hit, less than 1 taken away


def test_unlike_the_likes_never_vetoes_a_title_hit_however_sure_the_model():
    # A model sure that nothing is liked: only the small share of its lean counts.
    sure = WatchlistModel(index=np.zeros(0, dtype=np.int32), weights=np.zeros(0),
                          intercept=-40.0, rated=[], trained_on=(500, 0, 400),
                          profiles=sparse.csr_matrix((0, N_FEATURES), dtype=np.float32))
    matcher = Matcher([watchlist("asr", "lensing")], models={"asr": sure})
    [explanation] = matcher.explain(paper("n1", "Galaxy cluster lensing maps"), now=NOW)
    assert learned(explanation) == pytest.approx(-5.0 * UNLIKE_SHARE * 500 / 510, abs=1e-3)
    assert explanation.passed and explanation.score > 1.0


def test_unlike_the_likes_lowers_an_abstract_hit_to_min_score_and_no_further():
    model = train(corpus(), likes(5), BACKGROUND)
    matcher = Matcher([watchlist("asr", "lensing")], models={"asr": model})
    abstract_only = paper("n1", "Mass maps of galaxy clusters", "Weak lensing traces the mass.")
    title_hit = paper("n2", "Galaxy cluster lensing maps", "Weak lensing traces the mass.")
    [explanation] = matcher.explain(abstract_only, now=NOW)
    # One point for the word in the abstract, exactly min_score: unlike the liked speech
    # papers, it goes to the foot of the list, and is still sent.
    assert explanation.passed and explanation.score == pytest.approx(1.0)
    assert -UNLIKE_SHARE * 5.0 < learned(explanation) <= 0
    found = matcher.match_many([abstract_only, title_hit], now=NOW)["asr"]
    assert [m.paper.key for m in sorted(found, key=lambda m: -m.score)] == ["n2", "n1"]


def test_near_a_disliked_paper_an_abstract_hit_still_drops():
    model = transcription_model()
    matcher = Matcher([watchlist("asr", "transcription")], models={"asr": model})
    genes = paper("n2", "Networks of factors in yeast",
                  "Yeast transcription factors bind promoters in networks.")
    [explanation] = matcher.explain(genes, now=NOW)
    assert not explanation.passed and learned(explanation) <= -NEAR_DISLIKED * 5.0


def test_unlike_the_likes_counts_more_the_more_likes_there_are():
    c = corpus()
    few, more = train(c, likes(3), BACKGROUND), train(c, likes(5), BACKGROUND)
    assert few.unlike_share == pytest.approx(UNLIKE_SHARE * 3 / (3 + UNLIKE_EVIDENCE))
    assert few.unlike_share < more.unlike_share < UNLIKE_SHARE


# ---------------------------------------------------------------- near a dislike

def test_a_paper_nearer_a_disliked_paper_than_any_liked_one_loses_half_the_weight_or_more():
    model = train(corpus(), {**likes(5), "g0": -1, "g1": -1}, BACKGROUND)
    matcher = Matcher([watchlist("asr", "transcription")], models={"asr": model})
    genes = paper("n1", "Transcription factor networks in yeast",
                  "Yeast transcription factors bind promoters in networks.")
    [explanation] = matcher.explain(genes, now=NOW)
    [reason] = [r for r in explanation.reasons if r.kind == "unliked"]
    assert reason.points <= -NEAR_DISLIKED * 5.0
    assert reason.describe().startswith('close to "Transcription factor binding')
    assert not explanation.passed  # 2 + 1 points for the keyword, 2.5 or more taken away


def test_a_paper_nearer_a_liked_paper_keeps_its_points_despite_dislikes():
    model = train(corpus(), {**likes(5), "g0": -1, "g1": -1}, BACKGROUND)
    matcher = Matcher([watchlist("asr", "transcription")], models={"asr": model})
    speech = paper("n2", "Transcription of accented speech",
                   "Speech recognition transcription for accented English speakers.")
    [explanation] = matcher.explain(speech, now=NOW)
    assert explanation.passed and learned(explanation) > 0


# Likes that say "transcription" themselves, and one disliked paper that shares only that.
TRANSCRIBED = [
    ("Long-form transcription of podcasts with chunked decoding",
     "Hour-long podcasts are transcribed by a speech recognizer that decodes in chunks."),
    ("Speech transcription for accented English",
     "Accent-robust acoustic models cut the word error rate of speech transcription."),
    ("Streaming speech recognition with chunked attention",
     "A streaming recognizer transcribes speech with low latency."),
    ("Transcription of spoken meetings with overlapping talkers",
     "Meeting speech with overlapping talkers is transcribed by separating voices first."),
    ("Noise-robust speech recognition on factory floors",
     "Speech recognition in loud factories improves with multi-condition acoustic training."),
]
YEAST = ("Transcription factor binding in yeast", "Transcription factors bind yeast promoters.")


def transcription_model() -> WatchlistModel:
    papers = [*(paper(f"t{i}", *t) for i, t in enumerate(TRANSCRIBED)), paper("y0", *YEAST),
              *(paper(f"f{i}", f"A study of {t}", f"We measure {t} in the field.")
                for i, t in enumerate(FILLER))]
    model = train(Corpus(papers), {**{f"t{i}": 1 for i in range(len(TRANSCRIBED))}, "y0": -1},
                  BACKGROUND)
    assert model is not None
    return model


def test_sharing_with_a_disliked_paper_only_what_the_liked_ones_share_is_not_near_it():
    model = transcription_model()
    matcher = Matcher([watchlist("asr", "transcription")], models={"asr": model})
    radio = paper("n1", "Transcription of air traffic control radio",
                  "Transcription of pilots talking to controllers over radio.")
    rated, profiles = model.rated, model.profiles
    similarity = featurize([radio]).dot(profiles.T).toarray()[0]
    signs = np.array([p.value for p in rated])
    # Nearer the short disliked paper than any liked one, by the one word all of them hold...
    assert similarity[signs < 0].max() > similarity[signs > 0].max()
    [explanation] = matcher.explain(radio, now=NOW)
    # ...which says nothing of the side it is on: no loss for being near the yeast paper.
    assert explanation.passed
    assert all("yeast" not in r.value for r in explanation.reasons)
    genes = paper("n2", "Transcription factor networks in yeast",
                  "Yeast transcription factors bind promoters in networks.")
    [explanation] = matcher.explain(genes, now=NOW)
    assert learned(explanation) <= -NEAR_DISLIKED * 5.0
    assert not explanation.passed


def test_a_lean_against_near_a_dislike_counts_in_full():
    rated = RatedPaper("g0", "Genes", -1)
    model = WatchlistModel(index=np.zeros(0, dtype=np.int32), weights=np.zeros(0),
                           intercept=0.0, rated=[rated], trained_on=(5, 1, 20),
                           profiles=sparse.csr_matrix((1, N_FEATURES), dtype=np.float32))
    near = Closest(rated, 0.4)
    assert model.say(-0.9, near) == pytest.approx(-0.9)
    assert model.say(-0.1, near) == pytest.approx(-NEAR_DISLIKED)
    assert model.say(0.8, near) == pytest.approx(-NEAR_DISLIKED)
    assert model.say(-0.9, None) == pytest.approx(-0.9 * model.unlike_share)
    assert model.say(0.8, None) == pytest.approx(0.8)


# ---------------------------------------------------------------- past the rules

def constant(lean: float, alone: float = ALONE_FLOOR) -> WatchlistModel:
    """A model that leans the same way on every paper, naming its one liked paper."""
    profile = sparse.csr_matrix((np.ones(1, dtype=np.float32), np.zeros(1, dtype=np.int32),
                                 np.array([0, 1])), shape=(1, N_FEATURES))
    return WatchlistModel(index=np.zeros(0, dtype=np.int32), weights=np.zeros(0),
                          intercept=2 * math.atanh(lean), trained_on=(5, 0, 20),
                          rated=[RatedPaper("s0", SPEECH[0][0], 1)], profiles=profile,
                          alone=alone)


def test_a_watchlist_with_rules_needs_a_surer_model_to_send_a_paper_they_miss():
    lean = (LEARNED_ALONE + LEARNED_PAST_RULES) / 2
    model = constant(lean)
    matcher = Matcher([watchlist("taste", feedback_weight=5.0),
                       watchlist("asr", "speech recognition", feedback_weight=5.0)],
                      models={"taste": model, "asr": model})
    unmatched = paper("n1", "Acoustic models for spoken commands")
    verdicts = {e.watchlist: e for e in matcher.explain(unmatched, now=NOW)}
    assert verdicts["taste"].passed
    assert not verdicts["asr"].passed
    assert f"{LEARNED_PAST_RULES:g} x feedback_weight" in verdicts["asr"].verdict
    sure = Matcher([watchlist("asr", "speech recognition", feedback_weight=5.0)],
                   models={"asr": constant((LEARNED_PAST_RULES + 1) / 2)})
    assert [m.watchlist for m in sure.match(unmatched, now=NOW)] == ["asr"]


# ---------------------------------------------------------------- trusted alone

@pytest.mark.parametrize(("leans", "liked", "alone"), [
    # the surest held-out papers are the liked ones, from the floor up
    ([0.95, 0.9, 0.8, 0.6, -0.2, -0.9], [1, 1, 1, 0, 1, 0], ALONE_FLOOR),
    # the surest are unrated papers on the topics of one or two likes: never alone
    ([0.97, 0.93, 0.9, 0.7, 0.55, 0.1, -0.5], [0, 0, 1, 0, 1, 1, 0], 1.0),
    # liked at least as often as not only from 0.7 up
    ([0.9, 0.85, 0.8, 0.7, 0.65, 0.6, -0.5], [1, 1, 0, 0, 0, 0, 1], 0.7),
    # papers that lean alike go together: 0.9 is no threshold when one of them is unrated
    ([0.9, 0.9, 0.9, 0.6], [1, 0, 0, 0], 1.0),
    # nothing held out leaned as far as the floor: nothing says the model may be trusted
    ([0.3, -0.4], [1, 0], 1.0),
], ids=["likes-first", "unrated-first", "from-0.7", "ties", "none-that-sure"])
def test_alone_a_model_counts_from_where_its_held_out_papers_were_mostly_liked(
        leans, liked, alone):
    assert _alone(np.array(leans), np.array(liked)) == pytest.approx(alone)


def test_a_model_whose_surest_papers_were_not_mostly_liked_sends_nothing_past_the_rules():
    unmatched = paper("n1", "Acoustic models for spoken commands")
    sure = 0.95  # far past LEARNED_PAST_RULES
    rules = watchlist("asr", "speech recognition", feedback_weight=5.0)
    taste = watchlist("taste", feedback_weight=5.0)
    trusted = Matcher([rules], models={"asr": constant(sure)})
    assert [m.watchlist for m in trusted.match(unmatched, now=NOW)] == ["asr"]
    untrusted = Matcher([rules, taste], models={"asr": constant(sure, alone=1.0),
                                                "taste": constant(sure, alone=1.0)})
    verdicts = {e.watchlist: e for e in untrusted.explain(unmatched, now=NOW)}
    assert not verdicts["asr"].passed
    assert "under 1 x feedback_weight" in verdicts["asr"].verdict
    # A watchlist of ratings alone has nothing else to send: its model's best guesses go.
    assert verdicts["taste"].passed
    # A paper the rules find still gets the model's points, however far it can be trusted.
    [match] = untrusted.match(paper("n2", "Speech recognition of commands"), now=NOW,
                              names=["asr"])
    assert learned(untrusted.explain(match.paper, now=NOW, names=["asr"])[0]) > 4.0
