"""Terms read as the reader means them: British and American spellings, irregular plurals,
whole-word highlights, and warnings for boolean words written as phrase text."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import write_config

from digest.cli import main
from digest.config import Keyword, WatchlistSettings
from digest.models import Paper
from digest.scoring import Matcher, highlight_spans
from digest.terms import (
    NormalText,
    fold_word,
    inflections,
    keyword_warnings,
    parse_term,
    query_warnings,
    spellings,
)

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


def matches(term: str, text: str) -> bool:
    watchlist = WatchlistSettings(name="w", channels=("c",),
                                  keywords=(Keyword(parse_term(term)),))
    paper = Paper(key="arxiv:1", title=text, url="u")
    return bool(Matcher([watchlist]).match(paper, now=NOW))


@pytest.mark.parametrize(
    ("term", "text", "expected"),
    [
        # the cases readers reported
        pytest.param("matrix", "Sparse matrices for attention", True, id="matrix-matrices"),
        pytest.param("analysis", "Two analyses of scaling laws", True, id="analysis-analyses"),
        pytest.param("quantization", "Quantisation of LLMs", True, id="quantization-british"),
        pytest.param("quantiz*", "Quantised Transformers", True, id="prefix-british"),
        pytest.param("optimizing", "Optimising Optimisers", True, id="optimizing-british"),
        # the other direction, and more of each kind
        pytest.param("quantisation", "post-training quantization", True, id="british-term"),
        pytest.param("quantis*", "quantized weights", True, id="british-prefix"),
        pytest.param("matrices", "a low-rank matrix", True, id="plural-term-singular-text"),
        pytest.param("criterion", "three criteria", True, id="criterion-criteria"),
        pytest.param("vertex", "graph vertices", True, id="vertex-vertices"),
        pytest.param("index", "inverted indices and indexes", True, id="index-indices"),
        pytest.param("hypothesis", "competing hypotheses", True, id="hypothesis-hypotheses"),
        pytest.param("modeling", "language modelling", True, id="modelling-table"),
        pytest.param("behavior", "emergent behaviours", True, id="behaviour-table"),
        pytest.param("color", "colour constancy", True, id="colour-table"),
        pytest.param("tokenization", "byte-level tokenisation", True, id="ise-rule"),
        pytest.param("analyze", "we analyse", True, id="yse-table"),
        # what must still not match
        pytest.param("bias", "Bia et al.", False, id="bias-is-not-a-plural"),
        pytest.param("analysis", "anal fin", False, id="analysis-not-truncated"),
        pytest.param("merging", "emerging abilities", False, id="merging-not-emerging"),
        pytest.param("quantiz*", "dequantised", False, id="prefix-left-boundary"),
        pytest.param("rise", "rize", False, id="short-words-keep-their-spelling"),
    ],
)
def test_spelling_and_plural_variants(term, text, expected):
    assert matches(term, text) is expected


def test_fold_is_one_form_for_both_spellings_and_is_stable():
    for british, american in [("quantisation", "quantization"), ("optimising", "optimizing"),
                              ("colour", "color"), ("modelling", "modeling"),
                              ("tokenised", "tokenized"), ("catalysed", "catalyzed")]:
        assert fold_word(british) == fold_word(american) == american
        assert fold_word(fold_word(british)) == american
        assert british in spellings(american)
    assert fold_word("model") == "model"


def test_inflections_come_from_the_library_not_from_the_last_letter():
    assert {"matrix", "matrices"} <= inflections("matrix")
    assert {"analysis", "analyses"} <= inflections("analyses")
    assert "bia" not in inflections("bias")
    assert inflections("models") == {"model", "models"}


@pytest.mark.parametrize("term", ["quantiz*", "analysis", "optimizing", "matrix", "KV cache",
                                  "/kv[- ]?cache/"])
def test_the_automaton_and_the_terms_own_pattern_agree_on_british_text(term):
    text = ("Optimising the quantised KV-cache: matrices, analyses and a quantisation "
            "analysis; re-quantising the matrix (optimizing)")
    watchlist = WatchlistSettings(name="w", channels=("c",),
                                  keywords=(Keyword(parse_term(term)),))
    hits = Matcher([watchlist]).hits(Paper(key="k", title=text, url="u")).by_atom
    found = sum(len(spans) for fields in hits.values() for spans in fields.values())
    assert found == len(parse_term(term).spans(NormalText(text))) > 0


def test_highlights_cover_whole_words_in_either_spelling():
    text = "Agents Optimising Quantised matrices: an analysis of agentic re-ranking"
    spans = highlight_spans(text, ("agent*", "optimizing", "quantiz*", "matrix", "/rank/"))
    assert [text[a:b] for a, b in spans] == ["Agents", "Optimising", "Quantised", "matrices",
                                             "agentic", "ranking"]


@pytest.mark.parametrize(
    ("query", "warned"),
    [
        pytest.param("LLM and safety", ["'and'"], id="lowercase-and"),
        pytest.param("jailbreak or red teaming", ["'or'"], id="lowercase-or"),
        pytest.param("safety not alignment", ["'not'"], id="lowercase-not"),
        pytest.param("LLM -survey", ["'-survey'", "NOT survey"], id="minus-word"),
        pytest.param('"trial and error" AND LLM', [], id="quoted-phrase-is-meant"),
        pytest.param("(LLM OR agents) AND NOT survey", [], id="uppercase-is-fine"),
        pytest.param("fine-tuning AND low-rank", [], id="hyphens-inside-words"),
    ],
)
def test_query_warnings(query, warned):
    warnings = " | ".join(query_warnings(query))
    assert bool(warnings) is bool(warned)
    for part in warned:
        assert part in warnings


def test_keyword_warnings():
    assert "exclude" in " ".join(keyword_warnings("-survey"))
    assert "'and'" in " ".join(keyword_warnings("title:LoRA and adapters"))
    assert keyword_warnings('"trial and error"') == []
    assert keyword_warnings("/a and b/") == []


def test_check_warns_about_boolean_words_and_minus_words_but_passes(tmp_path: Path, capsys):
    config = write_config(tmp_path, """
[[sources]]
name = "arxiv"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[watchlists]]
name = "safety"
keywords = ["jailbreak", "-survey"]
query = "LLM and safety"
channels = ["mail"]
[channels.mail]
kind = "email"
from = "digest@example.org"
to = ["reader@example.org"]
""")
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "warning: watchlists[0].query: 'and' in \"LLM and safety\"" in out
    assert "warning: watchlists[0].keywords[1]: '-survey'" in out
    assert out.rstrip().endswith("channels)")


def test_forms_kept_in_the_store_spare_the_next_run_inflect(tmp_path):
    """The first process asks inflect and keeps the forms; the next reads them back and
    never imports inflect (over a second of every run's start)."""
    code = """
import sys
from digest.store import Store
from digest.terms import forms_version, new_forms, parse_term, remember_forms
with Store.open(sys.argv[1]) as store:
    remember_forms(store.word_forms(forms_version()))
    variants = parse_term("sparse matrix").variants() | parse_term("analyses").variants()
    store.keep_word_forms(new_forms(), forms_version())
print("|".join(sorted(variants)))
print("inflect" in sys.modules)
"""
    runs = [subprocess.run([sys.executable, "-c", code, str(tmp_path / "digest.db")],
                           capture_output=True, text=True, check=True).stdout.splitlines()
            for _ in range(2)]
    assert runs[0][0] == runs[1][0]
    assert {"sparse matrix", "sparse matrices", "analysis"} <= set(
        runs[0][0].split("|"))
    assert (runs[0][1], runs[1][1]) == ("True", "False")
