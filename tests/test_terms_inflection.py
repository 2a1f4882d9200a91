"""Terms read as the reader means them: British and American spellings, irregular plurals,
hyphenated and suspended compounds, whole-word highlights, and warnings for boolean words
written as phrase text."""

from __future__ import annotations

import re
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
    TermError,
    acronym_of,
    fold_word,
    inflections,
    keyword_warnings,
    parse_query,
    parse_term,
    query_warnings,
    spellings,
    spells,
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
        pytest.param("person", "People and machines", True, id="person-people"),
        pytest.param("people", "one person", True, id="people-person"),
        pytest.param("medium", "social media", True, id="medium-media"),
        pytest.param("corpus", "multilingual corpora", True, id="corpus-corpora"),
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


@pytest.mark.parametrize(
    ("term", "text", "expected"),
    [
        # a closed-up term finds the hyphenated compound, as the hyphenated term finds the
        # closed-up one
        pytest.param("pretraining", "Pre-training at scale", True, id="closed-term"),
        pytest.param("finetuning", "parameter-efficient fine-tuning", True, id="closed-in-run"),
        pytest.param("pretrained language model", "a pre-trained language model", True,
                     id="closed-word-in-a-phrase"),
        pytest.param("nonlinear", "non-linear dynamics", True, id="closed-prefix-word"),
        pytest.param("GPT4", "we test GPT-4", True, id="closed-digits"),
        pytest.param("pretrain*", "pre-training", True, id="closed-prefix-term"),
        pytest.param("pretrained", "three-stage pre-trained-model pipeline", True,
                     id="closed-within-a-longer-compound"),
        # a suspended hyphen is completed by the compound after it
        pytest.param("4-bit", "4- and 8-bit weights", True, id="suspended"),
        pytest.param("4-bit weights", "4- and 8-bit weights", True, id="suspended-phrase"),
        pytest.param("pre-training", "pre- and post-training", True, id="suspended-prefix"),
        pytest.param("pretraining data", "pre- or post-training data", True,
                     id="suspended-closed-phrase"),
        pytest.param("second-order", "first-, second- and third-order methods", True,
                     id="suspended-list"),
        pytest.param("2-bit", "from 2- to 4-bit", True, id="suspended-range"),
        # what stays as it was
        pytest.param("8-bit", "4- and 8-bit weights", True, id="completing-compound"),
        pytest.param("4-bit", "4 and 8-bit weights", False, id="no-hanging-hyphen"),
        pytest.param("pretraining", "pre training", False, id="spaced-words-stay-apart"),
        pytest.param("bit", "4- and 8-bit", True, id="word-of-the-compound"),
        pytest.param("lowrank", "low, rank", False, id="not-across-punctuation"),
    ],
)
def test_hyphenated_and_suspended_compounds(term, text, expected):
    assert matches(term, text) is expected


@pytest.mark.parametrize("term", ["pretraining", "4-bit", "bit", "fine-tuning", "finetun*",
                                  "pretrained language model"])
def test_a_compound_read_two_ways_counts_once_and_agrees_with_the_terms_own_pattern(term):
    text = ("Fine-tuning 4- and 8-bit pre-trained language models after pre-training: "
            "finetuning, fine tuning and 4-bit, 2-, 3- or 4-bit")
    watchlist = WatchlistSettings(name="w", channels=("c",),
                                  keywords=(Keyword(parse_term(term)),))
    hits = Matcher([watchlist]).hits(Paper(key="k", title=text, url="u")).by_atom
    spans = [span for fields in hits.values() for spans in fields.values() for span in spans]
    assert len(spans) == len(set(spans)) == len(parse_term(term).spans(NormalText(text))) > 0


@pytest.mark.parametrize(
    ("term", "text", "places"),
    [
        pytest.param("state*", "State-of-the-art results", 1, id="prefix-in-word-and-compound"),
        pytest.param("fine-tuning", "fine-tuning, then fine-tuning", 2, id="both-readings"),
        pytest.param("finetun*", "multi-stage fine-tuning", 1, id="closed-prefix"),
        pytest.param("multihead*", "multi-head-attention layers", 1, id="three-parts"),
    ],
)
def test_each_place_counts_once_however_many_ways_it_reads(term, text, places):
    watchlist = WatchlistSettings(name="w", channels=("c",),
                                  keywords=(Keyword(parse_term(term)),))
    (match,) = Matcher([watchlist]).match(Paper(key="k", title=text, url="u"), now=NOW)
    assert [reason.count for reason in match.reasons] == [places]


def test_a_suspended_hyphen_counts_at_the_hanging_word_and_is_highlighted_there():
    text = "Training in 4- and 8-bit formats"
    assert [text[a:b] for a, b in highlight_spans(text, ["4-bit"])] == ["4"]
    assert [text[a:b] for a, b in highlight_spans(text, ["pretraining", "8-bit"])] == [
        "8-bit"]
    title = "Pre-Training at Scale"
    assert [title[a:b] for a, b in highlight_spans(title, ["pretraining"])] == ["Pre-Training"]


@pytest.mark.parametrize(
    ("written", "acronym"),
    [("ASR", "asr"), ("LoRA", "lora"), ("GNNs", "gnn"), ("GPT4", "gpt4"), ("LoRaWAN", "lorawan"),
     ("lora", ""), ("Sinong", ""), ("A", ""), ("C++", "")],
)
def test_what_is_written_as_an_acronym(written, acronym):
    assert acronym_of(written) == acronym


def test_a_phrase_spells_an_acronym_by_its_initials_ending_with_the_last_letter():
    assert spells("asr", ("speech", "recognition"))
    assert spells("lora", ("low", "rank", "adaptation"))
    assert spells("rlhf", ("human", "feedback"))
    assert spells("gnn", ("graph", "neural", "network"))
    assert not spells("rlhf", ("reward", "hacking"))  # does not end with the last letter
    assert not spells("asr", ("word", "error", "rate"))
    assert not spells("asr", ("recognition",))  # one word is no long form


@pytest.mark.parametrize(
    ("text", "defined"),
    [
        ("We estimate age-standardised rates (ASR) of cancer", {"asr": "age standardized rates"}),
        ("low-rank adaptation (LoRA) of models", {"lora": "low rank adaptation"}),
        ("with graph neural networks (GNNs).", {"gnn": "graph neural networks"}),
        ("a study of automatic speech recognition (ASR)", {"asr": "automatic speech recognition"}),
        ("results (ASR) are", {}),  # nothing before the brackets spells it
        ("the ASR (speech) model", {}),
        ("we report (Table 1)", {}),
    ],
)
def test_acronyms_a_text_defines(text, defined):
    normal = NormalText(text)
    found = {short: " ".join(normal.words[first:last + 1])
             for short, places in normal.definitions().items() for first, last in places}
    assert found == defined


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
        pytest.param("LoRA, adapters", ["a comma does not separate terms", "write OR"],
                     id="comma"),
        pytest.param("LoRA && adapters", ["'&&'", "write AND"], id="double-ampersand"),
        pytest.param("LoRA | adapters", ["'|'", "write OR"], id="pipe"),
        pytest.param("+LoRA +adapters", ["'+LoRA'", "'+adapters'", "write AND"], id="plus"),
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
    # A keyword is one term: an operator in it, in any case, is text; the advice is to
    # list the terms apart (a query's AND has no place there).
    for written, word in (("LoRA AND adapters", "'AND'"), ("NOT survey", "'NOT'"),
                          ("lora and adapters", "'and'"), ("LoRA, adapters", "comma")):
        [warning] = keyword_warnings(written)
        assert word in warning and "list each term as its own entry" in warning
        assert "write AND to combine" not in warning
    assert keyword_warnings("+LoRA") == ["'+LoRA' is read with its '+', which no text "
                                         "spells that way; write LoRA"]
    # In exclude, -word is the word to keep out, as meant; an operator is still text.
    assert keyword_warnings("-benchmark", exclude=True) == []
    assert "'or'" in " ".join(keyword_warnings("survey or review", exclude=True))
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
    assert out.rstrip().endswith("1 channel)")


def test_check_warns_about_exclude_entries_and_a_query_that_finds_nothing(tmp_path: Path,
                                                                          capsys):
    config = write_config(tmp_path, """
[[sources]]
name = "arxiv"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[watchlists]]
name = "no-surveys"
query = "NOT survey"
exclude = ["survey or review", "-benchmark"]
channels = ["mail"]
[channels.mail]
kind = "email"
from = "digest@example.org"
to = ["reader@example.org"]
""")
    assert main(["check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "warning: watchlists[0].exclude[0]: 'or' in \"survey or review\"" in out
    assert "exclude[1]" not in out
    assert ("warning: watchlists[0].query: holds only NOT terms: it keeps papers out but "
            "finds none") in out


@pytest.mark.parametrize(("query", "problem"), [
    ("title:(LoRA OR adapters)", "'title:' names a field but no term"),
    ("()", "empty group '()'"),
    ("LoRA AND ()", "empty group '()'"),
])
def test_query_forms_that_cannot_mean_what_they_say_are_refused(query, problem):
    with pytest.raises(TermError, match=re.escape(problem)):
        parse_query(query)


def test_forms_kept_in_the_store_spare_the_next_run_inflect(tmp_path):
    """The first process asks inflect and keeps the forms; the next reads them back and
    never imports inflect."""
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


def test_inflect_imported_without_instrumentation_forms_as_the_checked_library_does():
    """inflect is imported with typeguard's decorator as a pass-through (its re-compiling
    was over a second of every start); the forms are the ones the type-checked library
    gives, and typeguard is left as it was for any other user."""
    words = ["matrix", "analyses", "bias", "models", "criteria", "index", "mouse",
             "children", "radius", "corpus", "series", "species", "datum", "LoRA"]
    ours = f"""
import sys, typeguard
before = typeguard.typechecked
from digest.terms import _import_inflect, _inflect
inflect = _import_inflect()
print(typeguard.typechecked is before)
print("typeguard" in inflect.engine.plural_noun.__code__.co_names)
for word in {words!r}:
    print(word, sorted(_inflect(word)))
"""
    checked = f"""
import inflect
from digest import terms
terms._import_inflect = lambda: inflect  # the library as it imports itself
print(True)
print("typeguard" in inflect.engine.plural_noun.__code__.co_names)
for word in {words!r}:
    print(word, sorted(terms._inflect(word)))
"""
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.splitlines() for code in (ours, checked)]
    assert runs[0][0] == "True"  # typeguard's decorator is put back
    assert runs[0][1] == "False" and runs[1][1] == "True"  # instrumented only when checked
    assert runs[0][2:] == runs[1][2:]
    assert len(runs[0][2:]) == len(words)


def test_threads_forming_words_at_once_get_inflect_whole_and_leave_typeguard_as_it_was():
    """``serve`` can score in its scheduler and its web app at once: the first words of
    both ask for inflect together. Each gets the module whole, and the decorator put
    back is typeguard's own."""
    code = """
import sys, threading, typeguard
before = typeguard.typechecked
from digest import terms
barrier, results, errors = threading.Barrier(6), [], []
def form(word):
    barrier.wait()
    try:
        results.append(sorted(terms._inflect(word)))
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=form, args=(w,)) for w in
           ["matrix", "analysis", "index", "mouse", "criterion", "radius"]]
for t in threads: t.start()
for t in threads: t.join()
print(typeguard.typechecked is before, len(results), errors)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "True 6 []"
