"""Scoring: word boundaries, phrase variants, exact authors, boolean queries, boosts,
similarity, reasons and ranking, through the one compiled matcher."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from digest.config import AuthorRule, Keyword, WatchlistSettings
from digest.models import Paper
from digest.scoring import Matcher, highlight_spans, normalise_name, rank
from digest.similarity import Profiles, SimilarityIndex, compare
from digest.terms import NormalText, TermError, parse_query, parse_term

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


def make_paper(title="", abstract="", authors=(), categories=(), key="arxiv:1", upvotes=None,
               primary=None, published=None):
    return Paper(key=key, title=title, url="u", abstract=abstract, authors=tuple(authors),
                 categories=tuple(categories), upvotes=upvotes, primary_category=primary,
                 published=published)


def watchlist(**fields) -> WatchlistSettings:
    base = {"name": "w", "channels": ("c",)}
    if "keywords" in fields:
        fields["keywords"] = tuple(
            k if isinstance(k, Keyword) else
            Keyword(parse_term(k[0]), k[1]) if isinstance(k, tuple) else Keyword(parse_term(k))
            for k in fields["keywords"])
    if "exclude" in fields:
        fields["exclude"] = tuple(parse_term(t) for t in fields["exclude"])
    if "authors" in fields:
        fields["authors"] = tuple(a if isinstance(a, AuthorRule) else AuthorRule(a)
                                  for a in fields["authors"])
    if "query" in fields:
        fields["query_text"] = fields["query"]
        fields["query"] = parse_query(fields["query"])
    for key in ("categories", "similar_to"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return WatchlistSettings(**{**base, **fields})


def explain(paper, w, **matcher_args):
    (explanation,) = Matcher([w], **matcher_args).explain(paper, now=NOW)
    return explanation


def score(paper, w, **matcher_args):
    explanation = explain(paper, w, **matcher_args)
    return explanation if explanation.passed else None


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
        pytest.param("key-value cache", "the keyvalue cache", True, id="joined"),
        pytest.param("key-value cache", "key cache value", False, id="phrase-order"),
        pytest.param("model", "models", True, id="s-plural"),
        pytest.param("models", "a model", True, id="singular-of-written-plural"),
        pytest.param("policy", "policies", True, id="y-ies"),
        pytest.param("bias", "biases", True, id="es-plural"),
        pytest.param("transformer", "transformers-based", True, id="before-hyphen"),
        pytest.param("RL", "RLHF", False, id="no-prefix-without-star"),
        pytest.param("quantiz*", "quantization-aware training", True, id="wildcard"),
        pytest.param("quantiz*", "dequantization", False, id="wildcard-left-boundary"),
        pytest.param("/llama-?[23]/", "we fine-tune Llama-2 and LLaMA3", True, id="regex"),
        pytest.param("C++", "written in C++ for speed", True, id="symbols"),
        pytest.param("C++", "written in C for speed", False, id="symbols-need-symbols"),
        pytest.param("key value cache", "key, value cache", False, id="no-phrase-across-comma"),
        pytest.param("LoRA", "LoRA's rank", True, id="apostrophe-ends-a-word"),
        pytest.param("LoRA", "(LoRA)", True, id="brackets"),
        pytest.param("GPT-4", "we test GPT 4 and GPT-4o", True, id="digits"),
    ],
)
def test_term_matching(term, text, matches):
    result = score(make_paper(title=text), watchlist(keywords=[term]))
    assert (result is not None) is matches


@pytest.mark.parametrize("term", ["key-value cache", "quantiz*", "/llama-?[23]/", "LoRA"])
def test_automaton_and_regex_agree(term):
    """The matcher's automaton and the term's own regex mean the same."""
    texts = ["key value caches and keyvalue cache", "quantization of LoRA", "Llama-2 llama3",
             "exploration", "LoRAs everywhere", "KV cache", "key, value cache", "(LoRA's)",
             "de-quantization and re-quantized", "LoRA_adapter"]
    parsed = parse_term(term)
    w = watchlist(keywords=[term])
    for text in texts:
        auto = Matcher([w]).hits(make_paper(title=text)).by_atom
        regex = len(parsed.spans(NormalText(text)))
        assert sum(len(spans) for fields in auto.values() for spans in fields.values()) == regex, (
            term, text)


@pytest.mark.parametrize(
    ("rule", "author", "matches"),
    [
        pytest.param(AuthorRule("Sinong Wang"), "Sinong Wang", True, id="same"),
        pytest.param(AuthorRule("Sinong Wang"), "Sinong Zhan", False, id="different-surname"),
        pytest.param(AuthorRule("Sinong Wang"), "Sinong Wangari", False, id="no-substring"),
        pytest.param(AuthorRule("Jose Garcia"), "José García", True, id="accents"),
        pytest.param(AuthorRule("sinong wang"), "SINONG WANG", True, id="case"),
        pytest.param(AuthorRule("Jean-Luc Picard"), "Jean Luc Picard", True, id="hyphen"),
        pytest.param(AuthorRule("S. Wang"), "Sinong Wang", False, id="initials-not-implied"),
        pytest.param(AuthorRule("S. Wang", initials=True), "Sinong Wang", True,
                     id="initials-when-asked"),
        pytest.param(AuthorRule("Sinong Wang", initials=True), "S. Wang", True,
                     id="initials-either-way"),
        pytest.param(AuthorRule("S. Wang", initials=True), "Sinong Zhan", False,
                     id="initials-need-the-surname"),
        pytest.param(AuthorRule("S. Wang", initials=True), "T. Wang", False,
                     id="initials-must-agree"),
    ],
)
def test_author_matching(rule, author, matches):
    result = score(make_paper(title="t", authors=[author]), watchlist(authors=[rule]))
    assert (result is not None) is matches


def test_normalise_name():
    assert normalise_name("  José  García-López ") == "jose garcia lopez"


def test_reasons_say_which_term_in_which_field():
    paper = make_paper(title="LoRA for speech", abstract="We use LoRA. LoRA again.",
                       authors=["Sinong Wang"], categories=["cs.CL"])
    match = score(paper, watchlist(keywords=["LoRA"], authors=["Sinong Wang"],
                                   categories=["cs.CL"]))
    assert [r.describe() for r in match.reasons] == [
        "category cs.CL", '"LoRA" in title', '"LoRA" in abstract', "author Sinong Wang"]
    assert match.reasons[2].count == 2


def test_title_weighs_more_than_abstract_and_repeats_saturate():
    w = watchlist(keywords=["LoRA"])
    in_title = score(make_paper(title="LoRA"), w).score
    in_abstract = score(make_paper(abstract="LoRA"), w).score
    many = score(make_paper(abstract="LoRA " * 50), w).score
    assert in_title == 2 * in_abstract
    assert in_abstract < many <= 1.5 * in_abstract


def test_field_restriction():
    w = watchlist(keywords=["title:LoRA"])
    assert score(make_paper(abstract="LoRA"), w) is None
    assert score(make_paper(title="LoRA"), w) is not None


@pytest.mark.parametrize(
    ("keywords", "abstract", "matches"),
    [
        pytest.param(["ASR", "speech recognition"],
                     "We estimate age-standardised rates (ASR) of cancer incidence.", False,
                     id="defined-as-something-else"),
        pytest.param(["ASR", "speech recognition"],
                     "Automatic speech recognition (ASR) in meetings; ASR errors drop.", True,
                     id="defined-as-the-watchlist-means-it"),
        pytest.param(["ASR", "speech recognition"], "ASR for meetings.", True,
                     id="not-defined"),
        pytest.param(["ASR", "transcription"],
                     "We estimate age-standardised rates (ASR) of cancer incidence.", True,
                     id="no-term-says-what-it-stands-for"),
        pytest.param(["LoRA", "low-rank adaptation"],
                     "Long range (LoRa) radios for farms; LoRa links.", False,
                     id="mixed-case-acronym"),
        pytest.param(["GNN", "graph neural network"],
                     "Graph neural networks (GNNs) for molecules.", True, id="plural-definition"),
        pytest.param(["GNN", "graph neural network"],
                     "Gated neural networks (GNNs) for traffic. GNNs help.", False,
                     id="plural-definition-of-something-else"),
        # The long form in other forms of its words means what the watchlist means.
        pytest.param(["LoRA", "low-rank adaptation"],
                     "We fine-tune with low-rank adapters (LoRA) on one GPU.", True,
                     id="adapters-for-adaptation"),
        pytest.param(["ASR", "speech recognition"],
                     "Automatic speech recognisers (ASR) for lectures.", True,
                     id="recognisers-for-recognition"),
        pytest.param(["RAG", "retrieval augmented generation"],
                     "Retrieval-augmented generators (RAG) cite sources.", True,
                     id="generators-for-generation"),
        pytest.param(["ASR", "automatic speech recognition"],
                     "Adaptive sparse routing (ASR) for mixtures of experts.", False,
                     id="same-initials-other-words"),
    ],
)
def test_an_acronym_the_paper_defines_as_something_else_does_not_match(keywords, abstract,
                                                                       matches):
    assert (score(make_paper(abstract=abstract), watchlist(keywords=keywords))
            is not None) is matches


def test_an_acronym_defined_otherwise_says_so_and_counts_for_no_query():
    paper = make_paper(abstract="We estimate age-standardised rates (ASR) of cancer.")
    refused = explain(paper, watchlist(keywords=["ASR", "speech recognition"]))
    assert refused.verdict == ('no term, author, category or seed matched; "ASR" stands for '
                               '"age-standardised rates" here')
    gate = watchlist(keywords=["cancer", "speech recognition"], query="ASR")
    assert explain(paper, gate).verdict == "query not satisfied: ASR"
    meant = make_paper(abstract="Cancer notes by automatic speech recognition (ASR).")
    assert score(meant, gate) is not None


def test_exclusion_vetoes_and_says_so():
    w = watchlist(keywords=["LoRA"], exclude=["survey"])
    vetoed = explain(make_paper(title="A Survey of LoRA"), w)
    assert not vetoed.passed and vetoed.verdict == 'vetoed by exclusion "survey" in title'
    assert score(make_paper(title="LoRA"), w) is not None


def test_negative_weights_only_lower():
    w = watchlist(keywords=["LoRA", ("benchmark", -1.0)], min_score=0.5)
    lowered = explain(make_paper(title="LoRA benchmark"), w)
    assert lowered.score == 0.0 and lowered.verdict == "score 0 below min_score 0.5"
    assert score(make_paper(title="LoRA", abstract="a benchmark"), w).score == 1.0
    # a negative term alone is never a reason to send a paper
    assert score(make_paper(title="benchmark"), watchlist(keywords=[("benchmark", -1.0)],
                                                          min_score=0.0)) is None


@pytest.mark.parametrize(
    ("query", "title", "matches"),
    [
        ('(LoRA OR "low-rank adaptation") AND speech', "LoRA for speech", True),
        ('(LoRA OR "low-rank adaptation") AND speech', "Low-rank adaptation of speech", True),
        ('(LoRA OR "low-rank adaptation") AND speech', "LoRA for vision", False),
        ("LoRA AND NOT survey", "A survey of LoRA", False),
        ("LoRA NOT survey", "LoRA in practice", True),
        ("title:quantiz* AND abstract:LLM", "Quantization", False),
    ],
)
def test_boolean_queries(query, title, matches):
    assert (score(make_paper(title=title), watchlist(query=query)) is not None) is matches


def test_query_terms_score_like_keywords():
    match = score(make_paper(title="LoRA for speech"), watchlist(query="LoRA AND speech"))
    assert match.score == 4.0


def test_category_filter_and_category_only_watchlists():
    filtered = watchlist(keywords=["LoRA"], categories=["cs.CL"])
    assert score(make_paper(title="LoRA", categories=["cs.CV"]), filtered) is None
    assert score(make_paper(title="LoRA", categories=["cs.LG", "cs.CL"]), filtered) is not None
    only = watchlist(categories=["cs.CL"])
    assert score(make_paper(title="x", categories=["cs.CL"]), only).score == 1.0
    assert score(make_paper(title="x", categories=["cs.CL"]), filtered) is None


def test_primary_only_filter():
    w = watchlist(keywords=["LoRA"], categories=["cs.CL"], primary_only=True)
    assert score(make_paper(title="LoRA", categories=["cs.LG", "cs.CL"], primary="cs.LG"),
                 w) is None
    assert score(make_paper(title="LoRA", categories=["cs.CL"], primary="cs.CL"), w)


def test_category_boost_is_full_for_primary_and_half_for_cross_lists():
    w = watchlist(keywords=["LoRA"], category_boost={"cs.CL": 1.0})
    primary = score(make_paper(title="LoRA", categories=["cs.CL"], primary="cs.CL"), w)
    cross = score(make_paper(title="LoRA", categories=["cs.LG", "cs.CL"], primary="cs.LG"), w)
    neither = score(make_paper(title="LoRA", categories=["cs.CV"], primary="cs.CV"), w)
    assert (primary.score, cross.score, neither.score) == (3.0, 2.5, 2.0)
    # a boost alone never sends a paper
    assert score(make_paper(title="x", categories=["cs.CL"], primary="cs.CL"), w) is None


def test_upvotes_and_recency_boosts():
    w = watchlist(keywords=["LoRA"], upvotes_boost=1.0, recency_boost=2.0,
                  recency_half_life_days=2.0)
    paper = make_paper(title="LoRA", upvotes=99, published=NOW - timedelta(days=2))
    match = score(paper, w)
    boosts = {r.field: r.points for r in match.reasons if r.kind == "boost"}
    assert boosts == {"upvotes": 2.0, "recency": 1.0}
    assert match.score == 5.0


def test_min_score_says_by_how_much():
    w = watchlist(keywords=["LoRA"], min_score=2.0)
    below = explain(make_paper(abstract="LoRA"), w)
    assert below.verdict == "score 1 below min_score 2"
    assert score(make_paper(title="LoRA"), w) is not None


def test_similarity_to_seed_papers_with_shared_terms():
    corpus = [
        "Low-rank adapters for efficient fine-tuning of language models",
        "Graph neural networks predict molecular properties",
        "Speech recognition with self-supervised encoders",
        "Protein structure from sequence with deep learning",
        "Adapter rank allocation for parameter-efficient fine-tuning",
    ]
    index = SimilarityIndex(corpus)
    w = watchlist(similar_to=["Parameter-efficient fine-tuning with low-rank adapters"],
                  similarity_weight=5.0, min_similarity=0.2)
    seeds = {"w": ["Parameter-efficient fine-tuning with low-rank adapters"]}
    near = score(make_paper(title="Rank-adaptive adapters for parameter-efficient fine-tuning"),
                 w, similarity=index, seeds=seeds)
    far = score(make_paper(title="Graph networks for molecules"), w, similarity=index,
                seeds=seeds)
    assert near is not None and far is None
    (reason,) = [r for r in near.reasons if r.kind == "similar"]
    assert "adapter" in reason.value and "fine" in reason.value
    assert reason.describe().startswith("like the seed papers (")


def test_similarity_combines_with_keywords_in_one_score():
    index = SimilarityIndex(["adapters for tuning", "molecules and graphs", "speech"])
    w = watchlist(keywords=["LoRA"], similar_to=["adapters for tuning"], min_similarity=0.0)
    match = score(make_paper(title="LoRA adapters for tuning"), w, similarity=index,
                  seeds={"w": ["adapters for tuning"]})
    kinds = {r.kind for r in match.reasons}
    assert kinds == {"term", "similar"} and match.score > 2.0


def test_likeness_for_many_profiles_at_once_is_compare_to_the_last_bit():
    rng = random.Random(11)
    words = [f"t{i}" for i in range(80)]

    def vector(size: int) -> dict[str, float]:
        # weights from a few values, so that equal products (ties) happen
        return {w: rng.choice([0.05, 0.1, 0.2, rng.random()])
                for w in rng.sample(words, size)}

    profiles = {f"p{i}": vector(rng.randint(1, 60)) for i in range(30)}
    floors = {name: rng.choice([0.0, 0.1, 0.3, 2.0]) for name in profiles}
    many = Profiles()
    for name, profile in profiles.items():
        many.add(name, profile, floors[name])
    for _ in range(200):
        paper = vector(rng.randint(0, 40))
        expected = {name: compare(profile, paper) for name, profile in profiles.items()}
        expected = {n: v for n, v in expected.items() if v[0] >= floors[n]}
        assert many.alike(paper) == expected


def test_likeness_found_for_all_watchlists_at_once_is_what_comparing_each_gives():
    """The papers a seeded or ratings-only watchlist is asked about come from one product
    over all of them; every watchlist scored for every paper must agree with it."""
    rng = random.Random(7)
    words = [f"word{i}" for i in range(60)]

    def text() -> str:
        return " ".join(rng.choices(words[: rng.randint(8, 60)], k=rng.randint(5, 30)))

    corpus = [text() for _ in range(200)]
    index = SimilarityIndex(corpus)
    lists, seeds, liked = [], {}, {}
    for i in range(40):
        floor = rng.choice([0.0, 0.05, 0.1, 0.2, 0.3, 0.5])
        weight = rng.choice([0.0, 2.0, 5.0])
        if i % 2:  # seeds, with a keyword for some
            extra = {"keywords": ["word3"]} if i % 3 == 0 else {}
            lists.append(watchlist(name=f"s{i}", similar_to=["x"], min_similarity=floor,
                                   similarity_weight=weight, **extra))
            seeds[f"s{i}"] = [text() for _ in range(rng.randint(1, 4))]
        else:  # ratings alone, with likes
            lists.append(watchlist(name=f"r{i}", min_similarity=floor, similarity_weight=weight))
            liked[f"r{i}"] = {f"k{j}": text() for j in range(rng.randint(1, 6))}
    # a floor of 0 lets every paper through, even one sharing no word with the seeds
    lists.append(watchlist(name="zero", similar_to=["x"], min_similarity=0.0, min_score=0.0))
    seeds["zero"] = ["word1 word2"]
    matcher = Matcher(lists, similarity=index, seeds=seeds, liked=liked)
    papers = [make_paper(title=text(), abstract=text(), key=f"p{i}") for i in range(300)]
    papers.append(make_paper(title=seeds["s1"][0], key="seed-text"))  # as alike as can be
    papers += [make_paper(title="nothing shared", key="apart"), make_paper(key="empty")]
    found = matcher.match_many(papers, now=NOW)
    every = {name: [] for name in found}
    for paper in papers:
        for verdict in matcher.explain(paper, now=NOW):
            if verdict.passed:
                every[verdict.watchlist].append((paper.key, verdict.score))
    assert {n: [(m.paper.key, m.score) for m in ms] for n, ms in found.items()} == every
    assert sum(map(len, every.values())) > 100  # the floors and weights let many through
    assert {"apart", "empty"} <= {key for key, _ in every["zero"]}


def test_one_matcher_serves_many_watchlists_and_touches_only_the_relevant():
    lists = [watchlist(name=f"w{i}", keywords=[f"topic{i}"]) for i in range(50)]
    matcher = Matcher(lists)
    paper = make_paper(title="topic7 and topic42")
    assert matcher.touched(paper, matcher.hits(paper)) == {"w7", "w42"}
    assert [m.watchlist for m in matcher.match(paper, now=NOW)] == ["w42", "w7"]


def test_ranking_is_deterministic_with_stated_tie_breaks():
    w = watchlist(keywords=["LoRA"], max_papers=3)
    papers = [make_paper(abstract="LoRA", key="arxiv:3"),
              make_paper(abstract="LoRA", key="arxiv:2", upvotes=5),
              make_paper(title="LoRA", key="arxiv:9"),
              make_paper(abstract="LoRA", key="arxiv:1")]
    chosen = rank(Matcher([w]).match_many(papers, now=NOW)["w"])[: w.max_papers]
    assert [m.paper.key for m in chosen] == ["arxiv:9", "arxiv:2", "arxiv:1"]
    assert rank(reversed(chosen)) == chosen


def test_highlight_spans_merge_overlaps_and_cover_whole_words():
    text = "The key-value cache of LoRA models, quantized"
    spans = highlight_spans(text, ("key-value cache", "value cache", "LoRA", "quantiz*"))
    assert [text[a:b] for a, b in spans] == ["key-value cache", "LoRA", "quantized"]


def test_a_query_term_also_written_as_a_keyword_still_counts_for_the_query():
    w = watchlist(keywords=["KV cache"], query='"KV cache" OR "prefix caching"')
    match = score(make_paper(title="Sharing the KV Cache Across Layers"), w)
    assert match is not None and match.score == 2.0  # counted once, as the keyword


def test_the_short_path_for_keyword_only_watchlists_agrees_with_the_long_one():
    w = watchlist(keywords=["LoRA", ("benchmark", -0.5), "title:adapter*", "KV cache"],
                  min_score=1.5)
    papers = [make_paper(title="LoRA adapters", abstract="LoRA LoRA benchmark KV caches"),
              make_paper(title="benchmark", abstract="adapters"),
              make_paper(abstract="LoRA")]
    short, long = Matcher([w]), Matcher([w])
    long.watchlists["w"].plain = False
    assert short.watchlists["w"].plain
    for paper in papers:
        assert short.explain(paper, now=NOW) == long.explain(paper, now=NOW)


# ------------------------------------------------------------- gate, spans, shared reasons


def test_the_query_is_a_gate_and_adds_nothing_to_the_score():
    """A query meant as a filter ("about LLMs") no longer lets every LLM paper through."""
    w = watchlist(keywords=["jailbreak"], query='LLM OR "language model"')
    assert score(make_paper(title="Scaling LLM pretraining"), w) is None
    both = score(make_paper(title="Jailbreak attacks on LLM agents"), w)
    assert both is not None and both.score == 2.0
    assert [r.value for r in both.reasons] == ["jailbreak"]
    assert "query not satisfied" in explain(make_paper(title="Jailbreak a phone"), w).verdict


def test_a_watchlist_that_is_a_query_alone_scores_what_the_query_matched():
    w = watchlist(query="LoRA AND (speech OR audio)")
    match = score(make_paper(title="LoRA for speech", abstract="audio"), w)
    assert match is not None and match.score == 5.0
    assert score(make_paper(title="LoRA for vision"), w) is None


def test_a_stretch_of_text_counts_once_however_many_terms_cover_it():
    w = watchlist(keywords=["cache", "/kv[- ]?cache/", ("KV cache", 2)])
    paper = make_paper(title="Compressing the KV Cache",
                       abstract="A KV-cache policy for the KV cache; the cache stays small.")
    result = explain(paper, w)
    # The longest, then heaviest term takes each "KV cache"; "cache" keeps its own mention.
    assert [(r.value, r.field, r.count) for r in result.reasons] == [
        ("cache", "abstract", 1), ("KV cache", "title", 1), ("KV cache", "abstract", 2)]
    assert result.score == 1.0 + 4.0 + 2 * 1.25


def test_overlapping_terms_give_a_sane_score_and_a_short_reason_line():
    """The paper that scored 24 with fifteen parts (nine terms on its reason line) when
    every overlapping term counted the same words again."""
    from digest.models import Match
    from digest.render import describe_reasons

    w = watchlist(keywords=["KV cache", "/kv[- ]?cache/", "cache", "key-value cache", "KV",
                            "caching", "long-context"], query="LLM OR inference")
    paper = make_paper(title="Caching the KV Cache: Long-Context LLM Inference",
                       abstract="We compress the KV cache (key-value cache) of long-context "
                                "models; our KV-cache eviction keeps the cache small during "
                                "inference.")
    result = explain(paper, w)
    line = describe_reasons(Match(paper, "w", result.score, result.reasons))
    assert result.score == 10.25
    assert line == ('"KV cache" in title and abstract', '"cache" in abstract',
                    '"key-value cache" in abstract', '"caching" in title',
                    '"long-context" in title and abstract')


def test_repeated_mentions_saturate():
    w = watchlist(keywords=["LoRA"])
    points = [score(make_paper(abstract=" ".join(["LoRA"] * n)), w).score for n in (1, 2, 3, 9)]
    assert points == [1.0, 1.25, 1.5, 1.5]


def test_reasons_of_watchlists_sharing_a_channel_are_merged_without_repeats():
    from digest.scoring import with_shared_reasons

    paper = make_paper(title="LoRA adapters", authors=["Sinong Wang"])
    terms = Matcher([watchlist(name="efficient", keywords=["LoRA"]),
                     watchlist(name="people", authors=["Sinong Wang"], keywords=["LoRA"])])
    found = terms.match_many([paper], now=NOW)
    (merged,) = with_shared_reasons(found["efficient"], [found["people"]])
    assert [r.describe() for r in merged.reasons] == ['"LoRA" in title', "author Sinong Wang"]
    assert merged.score == found["efficient"][0].score  # the digest's own score


def test_a_digest_shows_the_reasons_of_every_watchlist_of_its_channel(tmp_path):
    """The author reason no longer vanishes when the keyword watchlist sends the paper."""
    import email
    from email.policy import default as default_policy

    from conftest import SAMPLES, write_config

    from digest.config import load_settings
    from digest.pipeline import run_once

    settings = load_settings(write_config(tmp_path, f"""
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL", "cs.LG"]
url = "{SAMPLES / 'arxiv_rss_cs.CL+cs.LG.xml'}"
[[watchlists]]
name = "efficient"
keywords = ["LoRA"]
channels = ["mail"]
[[watchlists]]
name = "people"
authors = ["Sinong Wang"]
channels = ["mail"]
[channels.mail]
kind = "email"
from = "digest@example.org"
to = ["reader@example.org"]
"""), env={})
    assert run_once(settings, outbox=tmp_path / "outbox").ok
    (eml,) = (tmp_path / "outbox").glob("*-efficient-mail.eml")
    text = email.message_from_bytes(eml.read_bytes(), policy=default_policy).get_body(
        ("plain",)).get_content()
    block = text[text.index("LoRA-Flow"):]
    why = next(line for line in block.splitlines() if "Why:" in line)
    assert '"LoRA" in' in why and "author Sinong Wang" in why


@pytest.mark.parametrize("term", [
    r"/(\w+\s?)+transformer/", r"/(a|b+)*c/", r"/((a+))*/", r"/(\w{1,40} ){1,40}x/",
    r"/(?=(a+)+)b/",
    r"/(\w+\s?){1,16}transformer/",  # a bounded outer repeat backtracks as much
    r"/(?>(\w+\s?)+transformer)/", r"/(?:(a+)+b)++/",  # what an atomic group holds
])
def test_a_regex_with_a_repeat_inside_a_repeat_is_refused(term):
    """Python's regex engine cannot be interrupted, and (\\w+\\s?)+transformer takes seconds
    on an 8-word text without "transformer", eight times longer for each word more: such a
    term would stall a run on the first abstract. It is refused when the config is read,
    with the way out."""
    with pytest.raises(TermError, match=r"possessive, as in \(\\w\+\+\\s\?\)\+"):
        parse_term(term)


@pytest.mark.parametrize("term", [r"/kv[- ]?cache/", r"/(large )+language model/",
                                  r"/(\w++\s?)+transformer/", r"/(?>\w+\s?)+transformer/",
                                  r"/llama-?[23]/", r"/llm(s)?/", r"/(?:\w++\s?)++x/"])
def test_regexes_without_such_nesting_pass(term):
    assert parse_term(term).kind == "regex"


def test_a_regex_nested_hundreds_deep_is_refused_not_a_traceback():
    with pytest.raises(TermError, match="nests its groups too deeply"):
        parse_term("/" + "(a|" * 300 + "b" + ")" * 300 + "/")


def test_the_possessive_way_out_runs_in_no_time():
    """What the refusal suggests matches the same texts without backtracking: an abstract
    of 2,000 words that lacks the word is read at once."""
    text = NormalText(" ".join(["word"] * 2000))
    term = parse_term(r"/(\w++\s?)+transformer/")
    assert not term.spans(text)
    assert term.spans(NormalText("a sparse transformer")) != []


def test_highlighting_made_ready_ahead_compiles_nothing_later():
    from digest.scoring import highlight_spans, prepare_highlights
    from digest.terms import _compiled

    # Terms no other test uses, so that nothing compiled them before.
    terms = ("okapi-crossing analyses", "quokkaiz*", "/wombat[- ]?cache/", "Qx++")
    prepare_highlights(terms)
    built = _compiled.cache_info().misses
    text = "Crossing analyses for okapis, quokkaised wombat-cache kernels in Qx++."
    spans = highlight_spans(text, terms)
    assert _compiled.cache_info().misses == built
    assert [text[a:b] for a, b in spans] == ["quokkaised", "wombat-cache", "Qx++"]


def test_a_verdict_never_contradicts_the_parts_it_lists():
    """`explain` prints the verdict above the parts: a paper let through by its category
    but matched by nothing else is not told "no category matched"; a paper a source
    lists without categories is told so in words."""
    w = watchlist(keywords=["diffusion"], categories=("cs.CV",))
    passed_by_category = explain(make_paper(title="Sparse attention", categories=["cs.CV"]), w)
    assert passed_by_category.verdict == ("no term, author or seed matched (its category "
                                          "only lets it through)")
    assert [r.kind for r in passed_by_category.reasons] == ["category"]
    unlisted = explain(make_paper(title="Diffusion models"), w)  # e.g. from Hugging Face
    assert unlisted.verdict == "no categories known, and only cs.CV may pass"
    elsewhere = explain(make_paper(title="Diffusion models", categories=["cs.CL"]), w)
    assert elsewhere.verdict == "categories cs.CL not in cs.CV"
