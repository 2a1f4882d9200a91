"""Watchlist matching: word boundaries, phrase variants, exact authors, reasons, ranking."""

import pytest

from digest.config import Term, WatchlistSettings
from digest.models import Paper
from digest.scoring import (
    compile_watchlist,
    highlight_spans,
    normalise_name,
    rank,
    score,
    select,
    term_pattern,
)


def make_paper(title="", abstract="", authors=(), categories=(), key="arxiv:1", upvotes=None):
    return Paper(key=key, title=title, url="u", abstract=abstract, authors=tuple(authors),
                 categories=tuple(categories), upvotes=upvotes)


def watchlist(**fields) -> object:
    base = {"name": "w", "channels": ("c",)}
    if "keywords" in fields:
        fields["keywords"] = tuple(k if isinstance(k, Term) else Term(k)
                                   for k in fields["keywords"])
    for key in ("exclude", "authors", "categories"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return compile_watchlist(WatchlistSettings(**{**base, **fields}))


@pytest.mark.parametrize(
    ("term", "text", "matches"),
    [
        pytest.param("LoRA", "Dynamic LoRA adapters", True, id="plain"),
        pytest.param("LoRA", "curiosity-driven exploration", False, id="lora-not-in-exploration"),
        pytest.param("LoRA", "we train LoRAs", True, id="simple-plural"),
        pytest.param("lora", "LORA", True, id="case-insensitive"),
        pytest.param("merging", "emerging abilities", False, id="merging-not-in-emerging"),
        pytest.param("merging", "token merging works", True, id="merging"),
        pytest.param("key-value cache", "the key value cache", True, id="hyphen-to-space"),
        pytest.param("key value cache", "the key-value cache", True, id="space-to-hyphen"),
        pytest.param("key-value cache", "key-value caches", True, id="phrase-plural"),
        pytest.param("key-value cache", "key cache value", False, id="phrase-order"),
        pytest.param("model", "models", True, id="s-plural"),
        pytest.param("models", "a model", True, id="singular-of-written-plural"),
        pytest.param("policy", "policies", True, id="y-ies"),
        pytest.param("transformer", "transformers-based", True, id="before-hyphen"),
        pytest.param("RL", "RLHF", False, id="no-prefix"),
        pytest.param("C++", "written in C++ for speed", True, id="symbols"),
    ],
)
def test_term_pattern(term, text, matches):
    assert bool(term_pattern(term).search(text)) is matches


@pytest.mark.parametrize(
    ("wanted", "author", "matches"),
    [
        pytest.param("Sinong Wang", "Sinong Wang", True, id="same"),
        pytest.param("Sinong Wang", "Sinong Zhan", False, id="different-surname"),
        pytest.param("Sinong Wang", "Sinong Wangari", False, id="no-substring"),
        pytest.param("Jose Garcia", "José García", True, id="accents"),
        pytest.param("sinong wang", "SINONG WANG", True, id="case"),
        pytest.param("Jean-Luc Picard", "Jean Luc Picard", True, id="hyphen"),
        pytest.param("S. Wang", "Sinong Wang", False, id="initials-not-implied"),
    ],
)
def test_author_matching_is_by_whole_normalised_name(wanted, author, matches):
    result = score(make_paper(title="t", authors=[author]), watchlist(authors=[wanted]))
    assert (result is not None) is matches


def test_normalise_name():
    assert normalise_name("  José  García-López ") == "jose garcia lopez"


def test_reasons_say_which_term_in_which_field():
    paper = make_paper(title="LoRA for speech", abstract="We use LoRA. LoRA again. Also KV.",
                       authors=["Sinong Wang"], categories=["cs.CL"])
    match = score(paper, watchlist(keywords=["LoRA"], authors=["Sinong Wang"],
                                   categories=["cs.CL"]))
    described = [r.describe() for r in match.reasons]
    assert described == ["category cs.CL", '"LoRA" in title', '"LoRA" in abstract',
                         "author Sinong Wang"]
    abstract_reason = match.reasons[2]
    assert abstract_reason.count == 2


def test_title_weighs_more_than_abstract_and_repeats_saturate():
    w = watchlist(keywords=["LoRA"])
    in_title = score(make_paper(title="LoRA"), w).score
    in_abstract = score(make_paper(abstract="LoRA"), w).score
    many = score(make_paper(abstract="LoRA " * 50), w).score
    assert in_title == 2 * in_abstract
    assert in_abstract < many <= 1.5 * in_abstract


def test_weights_scale_points():
    heavy = watchlist(keywords=[Term("quantization", 3.0)])
    assert score(make_paper(abstract="quantization"), heavy).score == 3.0


def test_exclusion_vetoes():
    w = watchlist(keywords=["LoRA"], exclude=["survey"])
    assert score(make_paper(title="A Survey of LoRA"), w) is None
    assert score(make_paper(title="LoRA"), w) is not None


def test_category_filter_and_category_only_watchlists():
    filtered = watchlist(keywords=["LoRA"], categories=["cs.CL"])
    assert score(make_paper(title="LoRA", categories=["cs.CV"]), filtered) is None
    assert score(make_paper(title="LoRA", categories=["cs.LG", "cs.CL"]), filtered) is not None
    only = watchlist(categories=["cs.CL"])
    assert score(make_paper(title="x", categories=["cs.CL"]), only).score == 1.0
    # in the category but no keyword: a keyword watchlist does not send it
    assert score(make_paper(title="x", categories=["cs.CL"]), filtered) is None


def test_min_score():
    w = watchlist(keywords=["LoRA"], min_score=2.0)
    assert score(make_paper(abstract="LoRA"), w) is None
    assert score(make_paper(title="LoRA"), w) is not None


def test_ranking_is_deterministic_with_stated_tie_breaks():
    w = watchlist(keywords=["LoRA"], max_papers=3)
    papers = [make_paper(abstract="LoRA", key="arxiv:3"),
              make_paper(abstract="LoRA", key="arxiv:2", upvotes=5),
              make_paper(title="LoRA", key="arxiv:9"),
              make_paper(abstract="LoRA", key="arxiv:1")]
    chosen = select(papers, w)
    assert [m.paper.key for m in chosen] == ["arxiv:9", "arxiv:2", "arxiv:1"]
    assert rank(reversed(chosen)) == chosen


def test_highlight_spans_merge_overlaps():
    text = "The key-value cache of LoRA models"
    spans = highlight_spans(text, ("key-value cache", "value cache", "LoRA"))
    assert [text[a:b] for a, b in spans] == ["key-value cache", "LoRA"]
