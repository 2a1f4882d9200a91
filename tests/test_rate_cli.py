"""`paper-digest rate`: one rating per named paper, recorded as the command line's.

A real SQLite store, and a real HTTP server on 127.0.0.1 playing the arXiv API for papers
the store does not hold yet.
"""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import ROOT, Route
from test_import import API_PATH, NOW, atom, events, make_env, ratings, stored_paper

from digest.cli import main
from digest.ratings_import import reference_from_argument
from digest.sources.arxiv_api import BASE_URL, lookup_url
from digest.sources.base import SourceState
from digest.store import Store


@pytest.fixture
def env(tmp_path, http_server):
    return make_env(tmp_path, http_server)


def rate(config, *args: str) -> int:
    return main(["rate", "-c", str(config), "-w", "efficient-llms", *args])


@pytest.mark.parametrize("name", [
    pytest.param("2611.04001", id="arXiv id"),
    pytest.param("2611.04001v3", id="arXiv id with a version"),
    pytest.param("https://arxiv.org/abs/2611.04001v1", id="arXiv URL"),
    pytest.param("https://doi.org/10.18653/v1/2024.acl-long.695", id="the paper's journal DOI"),
    pytest.param("LoRA-Flow Dynamic", id="title words"),
    pytest.param("arxiv:2611.04001", id="store key"),
])
def test_each_way_of_naming_a_paper_records_one_rating(env, capsys, name):
    config, tmp_path, server = env
    assert rate(config, "like", name) == 0
    out = capsys.readouterr().out
    assert out == ("efficient-llms: like recorded for arxiv:2611.04001  LoRA-Flow: Dynamic "
                   "Low-Rank Adapters for Multilingual Instruction Tuning\n"
                   "efficient-llms will not be sent this paper again. "
                   "For efficient-llms, from 3 likes, with a paper to set them against (one "
                   "disliked, or 20 unrated ones seen lately), its ranking learns from "
                   "them.\n")
    assert ratings(tmp_path) == [("efficient-llms", "arxiv:2611.04001", "like", "cli")]
    assert server.hits(API_PATH) == []  # stored papers need no lookup


def test_the_same_rating_again_is_already_recorded_and_a_new_one_replaces_it(env, capsys):
    config, tmp_path, _ = env
    assert rate(config, "like", "2611.04001", "2305.14314") == 0
    capsys.readouterr()
    assert rate(config, "like", "2611.04001") == 0
    again = capsys.readouterr().out
    assert again.startswith(
        "efficient-llms: like already recorded for arxiv:2611.04001  LoRA-Flow")
    assert "its ranking learns" not in again  # nothing new to say
    assert events(tmp_path) == 2

    assert rate(config, "dislike", "2611.04001") == 0
    assert rate(config, "save", "2305.14314") == 0
    out = capsys.readouterr().out
    assert "efficient-llms: dislike recorded for arxiv:2611.04001 (was like)" in out
    assert "efficient-llms: save recorded for arxiv:2305.14314 (was like)" in out
    assert "efficient-llms will not be sent this paper again." in out
    assert ratings(tmp_path) == [("efficient-llms", "arxiv:2305.14314", "save", "cli"),
                                 ("efficient-llms", "arxiv:2611.04001", "dislike", "cli")]


def test_a_paper_not_stored_is_fetched_from_arxiv_and_kept_out_of_the_news(env, capsys):
    config, tmp_path, server = env
    server.route(API_PATH, Route(body=atom([("2106.09685", "LoRA: Low-Rank Adaptation of "
                                                          "Large Language Models")])))
    assert rate(config, "like", "https://arxiv.org/abs/2106.09685v2", "2305.14314") == 0
    captured = capsys.readouterr()
    assert "looking up 1 arXiv id missing from the store" in captured.err
    assert "like recorded for arxiv:2106.09685  LoRA: Low-Rank Adaptation" in captured.out
    [request] = server.hits(API_PATH)
    assert parse_qs(urlsplit(request.path).query)["id_list"] == ["2106.09685"]
    assert ("efficient-llms", "arxiv:2106.09685", "like", "cli") in ratings(tmp_path)
    with Store.open(tmp_path / "digest.db") as store:
        assert "arxiv:2106.09685" not in {p.key for p in store.recent(NOW - timedelta(days=7))}


@pytest.mark.parametrize(("names", "message"), [
    pytest.param(["graph neural"], "graph neural: no stored paper matches",
                 id="words no title has"),
    pytest.param(["10.1145/0000000.0000000"],
                 "no arXiv id, and no stored paper has DOI 10.1145/0000000.0000000",
                 id="an unknown DOI"),
    pytest.param(["2611.04001", "2199.99999"], "2199.99999: arXiv has no paper 2199.99999",
                 id="an id arXiv does not know"),
])
def test_an_unclear_name_records_nothing_and_says_why(env, capsys, names, message):
    config, tmp_path, server = env
    server.route(API_PATH, Route(body=atom([])))
    assert rate(config, "like", *names) == 1
    err = capsys.readouterr().err
    assert message in err and "nothing recorded" in err
    assert ratings(tmp_path) == []


def test_title_words_two_papers_share_record_nothing_and_list_both(env, capsys):
    config, tmp_path, server = env
    with Store.open(tmp_path / "digest.db") as store:
        store.record_batch("arxiv-cs", [stored_paper("2611.05555", "Adapters for LoRA Merging")],
                           SourceState(), NOW)
    assert rate(config, "like", "LoRA") == 1
    err = capsys.readouterr().err
    assert "LoRA: 2 stored papers match" in err and "nothing recorded" in err
    # the candidates are listed, so the next try can be exact; "QLoRA" is another word
    assert "  arxiv:2611.04001  LoRA-Flow" in err and "  arxiv:2611.05555  Adapters" in err
    assert "QLoRA" not in err
    assert ratings(tmp_path) == []


def test_an_unknown_watchlist_is_exit_2_with_the_known_names(env, capsys):
    config, tmp_path, _ = env
    assert main(["rate", "-c", str(config), "-w", "nope", "like", "2611.04001"]) == 2
    assert "no watchlist named 'nope' (known: efficient-llms, people)" in capsys.readouterr().err
    assert ratings(tmp_path) == []


def test_an_unknown_action_is_refused_by_the_parser(env, capsys):
    config, _, _ = env
    with pytest.raises(SystemExit) as exited:
        rate(config, "love", "2611.04001")
    assert exited.value.code == 2
    assert "invalid choice: 'love'" in capsys.readouterr().err


@pytest.mark.parametrize(("sources", "url"), [
    pytest.param([], BASE_URL, id="no arxiv_api source"),
    pytest.param([SimpleNamespace(kind="arxiv_rss", url="http://feed"),
                  SimpleNamespace(kind="arxiv_api", url="http://127.0.0.1:9/api/query"),
                  SimpleNamespace(kind="arxiv_api", url="http://second/api")],
                 "http://127.0.0.1:9/api/query", id="the first arxiv_api source's URL"),
    pytest.param([SimpleNamespace(kind="arxiv_api", url=None)], BASE_URL,
                 id="an arxiv_api source on arXiv's own URL"),
    pytest.param([SimpleNamespace(kind="arxiv_api", url="config/sample-data/api.xml")],
                 BASE_URL, id="a local file cannot answer id_list"),
])
def test_lookups_go_to_the_first_arxiv_api_source(sources, url):
    assert lookup_url(sources, local=False) == url


@pytest.mark.parametrize(("text", "arxiv_id", "doi", "words"), [
    ("2611.04001v2", "2611.04001", None, ""),
    ("doi:10.1145/3589334.3645412", None, "10.1145/3589334.3645412", ""),
    ("10.48550/arXiv.2611.04001", "2611.04001", None, ""),
    ("low-rank adapters", None, None, "low-rank adapters"),
])
def test_arguments_name_papers_by_id_doi_or_words(text, arxiv_id, doi, words):
    reference = reference_from_argument(text)
    assert (reference.arxiv_id, reference.doi, reference.words) == (arxiv_id, doi, words)


def test_help_has_an_example_and_the_readme_shows_the_command(capsys):
    with pytest.raises(SystemExit):
        main(["rate", "--help"])
    out = capsys.readouterr().out
    assert "example:\n  paper-digest rate --config" in out and "{like,dislike,save}" in out
    assert "paper-digest rate" in (ROOT / "README.md").read_text(encoding="utf-8")
