"""`paper-digest import`: likes from BibTeX, Zotero's CSL JSON and id lists.

Files are written by the tests, a real HTTP server on 127.0.0.1 plays the arXiv API, and
the store is a real SQLite file.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import pytest
from conftest import ROOT, Route, write_config

from digest.cli import _parser, main
from digest.errors import ParseError
from digest.models import Paper
from digest.ratings_import import arxiv_id_in, parse_references
from digest.sources.base import SourceState
from digest.store import Store

API_PATH = "/api/query"
NOW = datetime.now(UTC)


def atom(papers: list[tuple[str, str]], *, doi: dict[str, str] | None = None) -> bytes:
    """An arXiv API answer to an id_list query, shaped like the real captures."""
    entries = []
    for arxiv_id, title in papers:
        extra = (f"    <arxiv:doi>{escape(doi[arxiv_id])}</arxiv:doi>\n"
                 if doi and arxiv_id in doi else "")
        entries.append(f"""  <entry>
    <id>http://arxiv.org/abs/{arxiv_id}v2</id>
    <title>{escape(title)}</title>
    <updated>2023-05-23T17:50:33Z</updated>
    <link href="https://arxiv.org/abs/{arxiv_id}v2" rel="alternate" type="text/html"/>
    <link href="https://arxiv.org/pdf/{arxiv_id}v2" rel="related" type="application/pdf"
          title="pdf"/>
    <summary>We present {escape(title)}, an approach to efficient fine-tuning that reduces
memory use while preserving task performance across benchmarks.</summary>
    <category term="cs.LG" scheme="http://arxiv.org/schemas/atom"/>
    <category term="cs.CL" scheme="http://arxiv.org/schemas/atom"/>
    <published>2023-05-23T17:50:33Z</published>
    <arxiv:comment>Preprint</arxiv:comment>
    <arxiv:primary_category term="cs.LG"/>
    <author>
      <name>Ada Lovelace</name>
    </author>
    <author>
      <name>Alan Turing</name>
    </author>
{extra}  </entry>""")
    ids = ",".join(arxiv_id for arxiv_id, _ in papers)
    return f"""<?xml version='1.0' encoding='UTF-8'?>
<feed xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/"
      xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns="http://www.w3.org/2005/Atom">
  <id>https://arxiv.org/api/tcPsLJ2n1HyXz2VrfkQmgWHhS1Y</id>
  <title>arXiv Query: search_query=&amp;id_list={ids}&amp;start=0&amp;max_results={
      len(papers)}</title>
  <updated>2026-04-30T17:33:16Z</updated>
  <link href="https://arxiv.org/api/query?search_query=&amp;start=0&amp;max_results={
      len(papers)}&amp;id_list={ids}" type="application/atom+xml"/>
  <opensearch:itemsPerPage>{len(papers)}</opensearch:itemsPerPage>
  <opensearch:totalResults>{len(papers)}</opensearch:totalResults>
  <opensearch:startIndex>0</opensearch:startIndex>
{chr(10).join(entries)}
</feed>
""".encode()


def stored_paper(arxiv_id: str, title: str, doi: str | None = None) -> Paper:
    return Paper(key=f"arxiv:{arxiv_id}", arxiv_id=arxiv_id, version=1, title=title,
                 url=f"https://arxiv.org/abs/{arxiv_id}", abstract="An abstract.",
                 authors=("Mei Lin",), categories=("cs.CL",), doi=doi, announce_type="new")


STORED = [
    stored_paper("2611.04001", "LoRA-Flow: Dynamic Low-Rank Adapters for Multilingual "
                 "Instruction Tuning", doi="10.18653/v1/2024.acl-long.695"),
    stored_paper("2305.14314", "QLoRA: Efficient Finetuning of Quantized LLMs"),
]


def id_list_query(recorded) -> list[str]:
    query = parse_qs(urlsplit(recorded.path).query)
    assert "search_query" not in query
    return query["id_list"][0].split(",")


@pytest.fixture
def env(tmp_path, http_server):
    return make_env(tmp_path, http_server)


def make_env(tmp_path: Path, http_server) -> tuple[Path, Path, object]:
    """A config whose first arxiv_api source is the local server, and a store holding two
    papers (one with a journal DOI)."""
    api_url = http_server.url + API_PATH
    config = write_config(tmp_path, f"""
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
retry_backoff_seconds = 0
max_retries = 0
timeout_seconds = 5
[[sources]]
name = "arxiv-query"
kind = "arxiv_api"
query = "cat:cs.CL"
url = "{api_url}"
[[watchlists]]
name = "efficient-llms"
keywords = ["LoRA"]
channels = ["mail"]
[[watchlists]]
name = "people"
authors = ["Mei Lin"]
channels = ["mail"]
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
from = "a@example.org"
to = ["b@example.org"]
""")
    with Store.open(tmp_path / "digest.db") as store:
        store.record_batch("arxiv-cs", STORED, SourceState(), NOW)
    return config, tmp_path, http_server


def ratings(tmp_path: Path) -> list[tuple[str, str, str, str]]:
    with Store.open(tmp_path / "digest.db") as store:
        return [tuple(row) for row in store.db.execute(
            "SELECT watchlist, paper_key, action, origin FROM ratings ORDER BY paper_key")]


def events(tmp_path: Path) -> int:
    with Store.open(tmp_path / "digest.db") as store:
        return int(store.db.execute("SELECT count(*) FROM rating_events").fetchone()[0])


BIBTEX = r"""% Exported from a reference manager, edited by hand
@article{hu2021lora,
  title         = {{LoRA}: Low-Rank Adaptation of Large Language Models},
  author        = {Hu, Edward J. and Shen, Yelong and Wallis, Phillip and Allen-Zhu, Zeyuan},
  journal       = {arXiv preprint arXiv:2106.09685},
  year          = {2021}
}

@misc{dettmers2023qlora,
  title         = {{QLoRA}: Efficient Finetuning of Quantized {LLMs}},
  author        = {Dettmers, Tim and Pagnoni, Artidoro and Holtzman, Ari and Zettlemoyer, Luke},
  year          = {2023},
  eprint        = {2305.14314},
  archivePrefix = {arXiv},
  primaryClass  = {cs.LG}
}

@misc{touvron2023llama,
  title     = {Llama 2: Open Foundation and Fine-Tuned Chat Models},
  author    = {Touvron, Hugo and Martin, Louis and others},
  year      = {2023},
  doi       = {10.48550/arXiv.2307.09288},
  publisher = {arXiv},
  month     = jul
}

@inproceedings{dao2022flashattention,
  title     = {FlashAttention: Fast and Memory-Efficient Exact Attention with {IO}-Awareness},
  author    = {Dao, Tri and Fu, Daniel Y. and Ermon, Stefano and R{\'e}, Christopher},
  booktitle = {Advances in Neural Information Processing Systems},
  url       = {https://arxiv.org/abs/2205.14135v2},
  year      = {2022}
}

@inproceedings{lin2024loraflow,
  title     = {{LoRA}-Flow: Dynamic {LoRA} Fusion for Large Language Models},
  author    = {Lin, Mei and Wang, Sinong},
  booktitle = {Proceedings of ACL 2024},
  doi       = {10.18653/v1/2024.acl-long.695},
  pages     = {12871--12882}
}

@article{vaswani2017attention,
  title   = {Attention Is All You Need},
  author  = {Vaswani, Ashish and Shazeer, Noam},
  journal = {Advances in Neural Information Processing Systems},
  volume  = {30},
  year    = {2017}
}

@book{goodfellow2016deep,
  title     = {Deep Learning},
  author    = {Goodfellow, Ian and Bengio, Yoshua and Courville, Aaron},
  publisher = {MIT Press},
  doi       = {10.5555/3086952},
  year      = {2016}
}

@misc{hal2020,
  title         = {A Preprint Kept Elsewhere},
  eprint        = {hal-02501234},
  archivePrefix = {HAL}
}
"""

FETCHED = [("2106.09685", "LoRA: Low-Rank Adaptation of Large Language Models"),
           ("2307.09288", "Llama 2: Open Foundation and Fine-Tuned Chat Models"),
           ("2205.14135", "FlashAttention: Fast and Memory-Efficient Exact Attention")]


def test_bibtex_likes_arxiv_entries_and_reports_every_skipped_one(env, capsys):
    config, tmp_path, server = env
    server.route(API_PATH, Route(body=atom(FETCHED), headers={
        "Content-Type": "application/atom+xml"}))
    library = tmp_path / "library.bib"
    library.write_text(BIBTEX, encoding="utf-8")

    assert main(["import", "-c", str(config), "-w", "efficient-llms", str(library)]) == 0
    out = capsys.readouterr().out
    assert f"{library}: 8 entries (BibTeX)" in out
    assert f'skipped {library}, line 43: "Attention Is All You Need" (no arXiv id or DOI)' in out
    assert (f'skipped {library}, line 51: "Deep Learning" (no arXiv id, and no stored paper has '
            "DOI 10.5555/3086952)") in out
    assert f'skipped {library}, line 59: "A Preprint Kept Elsewhere"' in out
    assert out.rstrip().endswith("efficient-llms: 5 liked, 0 already there, 3 skipped")

    # one id_list request for the three the store lacked; QLoRA and LoRA-Flow were stored
    [request] = server.hits(API_PATH)
    assert id_list_query(request) == ["2106.09685", "2307.09288", "2205.14135"]
    assert ratings(tmp_path) == [
        ("efficient-llms", f"arxiv:{arxiv_id}", "like", "import")
        for arxiv_id in sorted(["2106.09685", "2307.09288", "2205.14135", "2305.14314",
                                "2611.04001"])]
    with Store.open(tmp_path / "digest.db") as store:
        fetched = store.paper("arxiv:2106.09685")
        assert fetched is not None and fetched.title.startswith("LoRA: Low-Rank")
        # kept as references: never part of the lookback window, never sent as news
        recent = {p.key for p in store.recent(NOW - timedelta(days=7))}
        assert recent == {p.key for p in STORED}


def test_importing_the_same_library_again_records_nothing(env, capsys):
    config, tmp_path, server = env
    server.route(API_PATH, Route(body=atom(FETCHED)))
    library = tmp_path / "library.bib"
    library.write_text(BIBTEX, encoding="utf-8")
    assert main(["import", "-c", str(config), "-w", "efficient-llms", str(library)]) == 0
    capsys.readouterr()
    before, stored = events(tmp_path), ratings(tmp_path)

    assert main(["import", "-c", str(config), "-w", "efficient-llms", str(library)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("efficient-llms: 0 liked, 5 already there, 3 skipped")
    assert events(tmp_path) == before and ratings(tmp_path) == stored
    assert len(server.hits(API_PATH)) == 1  # everything is stored now: no second lookup


def test_a_saved_paper_counts_as_liked_and_a_disliked_one_is_turned(env, capsys):
    config, tmp_path, server = env
    with Store.open(tmp_path / "digest.db") as store:
        store.rate(watchlist="efficient-llms", paper_key="arxiv:2305.14314", action="save",
                   origin="web", now=NOW)
        store.rate(watchlist="efficient-llms", paper_key="arxiv:2611.04001", action="dislike",
                   origin="web", now=NOW)
    ids = tmp_path / "ids.txt"
    ids.write_text("2305.14314\n2611.04001\n", encoding="utf-8")
    assert main(["import", "-c", str(config), "-w", "efficient-llms", str(ids)]) == 0
    out = capsys.readouterr().out
    assert "now liked, was disliked: arxiv:2611.04001" in out
    assert out.rstrip().endswith("1 liked, 1 already there, 0 skipped")
    assert ratings(tmp_path) == [("efficient-llms", "arxiv:2305.14314", "save", "web"),
                                 ("efficient-llms", "arxiv:2611.04001", "like", "import")]
    assert server.hits(API_PATH) == []


CSL_JSON = [
    {"id": "http://zotero.org/users/1/items/QLORA", "type": "article",
     "title": "QLoRA: Efficient Finetuning of Quantized LLMs", "publisher": "arXiv",
     "number": "arXiv:2305.14314", "DOI": "10.48550/arXiv.2305.14314",
     "URL": "http://arxiv.org/abs/2305.14314", "note": "arXiv:2305.14314 [cs]",
     "author": [{"family": "Dettmers", "given": "Tim"}],
     "issued": {"date-parts": [["2023", 5, 23]]}},
    {"id": "http://zotero.org/users/1/items/MAMBA", "type": "article",
     "title": "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
     "publisher": "arXiv", "number": "arXiv:2312.00752"},
    {"id": "http://zotero.org/users/1/items/BERT", "type": "paper-conference",
     "title": "BERT: Pre-training of Deep Bidirectional Transformers",
     "container-title": "Proceedings of NAACL", "note": "arXiv:1810.04805 [cs]"},
    {"id": "http://zotero.org/users/1/items/OLD", "type": "article",
     "title": "An Old-Style Identifier", "URL": "https://arxiv.org/abs/hep-th/9901001v1"},
    {"id": "http://zotero.org/users/1/items/PRML", "type": "book",
     "title": "Pattern Recognition and Machine Learning", "publisher": "Springer",
     "DOI": "10.1007/978-0-387-45528-0"},
]


def test_zotero_csl_json_export(env, capsys):
    config, tmp_path, server = env
    served = [("2312.00752", "Mamba: Linear-Time Sequence Modeling"),
              ("1810.04805", "BERT: Pre-training of Deep Bidirectional Transformers"),
              ("hep-th/9901001", "An Old-Style Identifier")]
    server.route(API_PATH, Route(body=atom(served)))
    export = tmp_path / "My Library.json"
    export.write_text(json.dumps(CSL_JSON, indent=2), encoding="utf-8")

    assert main(["import", "-c", str(config), "-w", "people", str(export)]) == 0
    out = capsys.readouterr().out
    assert f"{export}: 5 entries (CSL JSON)" in out
    assert (f'skipped {export}, item 5: "Pattern Recognition and Machine Learning" (no arXiv '
            "id, and no stored paper has DOI 10.1007/978-0-387-45528-0)") in out
    assert out.rstrip().endswith("people: 4 liked, 0 already there, 1 skipped")
    assert id_list_query(server.hits(API_PATH)[0]) == ["2312.00752", "1810.04805",
                                                        "hep-th/9901001"]
    assert {key for _, key, _, _ in ratings(tmp_path)} == {
        "arxiv:2305.14314", "arxiv:2312.00752", "arxiv:1810.04805", "arxiv:hep-th/9901001"}


def test_a_long_id_list_is_looked_up_in_batches_with_progress(env, capsys):
    config, tmp_path, server = env
    wanted = [f"2401.{n:05d}" for n in range(1, 132)]
    unknown = "2401.00077"  # arXiv answers without it
    served = [(arxiv_id, f"Paper {arxiv_id}") for arxiv_id in wanted if arxiv_id != unknown]
    server.route(API_PATH, Route(body=atom(served[:99])), Route(body=atom(served[99:])))
    lines = ["# reading group, autumn", ""]
    for n, arxiv_id in enumerate(wanted):
        lines.append({0: arxiv_id, 1: f"https://arxiv.org/abs/{arxiv_id}v3  # with a note",
                      2: f"arXiv:{arxiv_id}", 3: f"https://arxiv.org/pdf/{arxiv_id}v1.pdf",
                      4: f"10.48550/arXiv.{arxiv_id}"}[n % 5])
    ids = tmp_path / "reading-group.txt"
    ids.write_text("\n".join(lines) + "\n", encoding="utf-8")

    assert main(["import", "-c", str(config), "-w", "efficient-llms", str(ids)]) == 0
    captured = capsys.readouterr()
    assert "looking up 131 arXiv ids missing from the store" in captured.err
    assert "looking up arXiv ids 1-100 of 131" in captured.err
    assert "looking up arXiv ids 101-131 of 131" in captured.err
    requests = server.hits(API_PATH)
    assert [id_list_query(r) for r in requests] == [wanted[:100], wanted[100:]]
    assert [parse_qs(urlsplit(r.path).query)["max_results"] for r in requests] == [["100"],
                                                                                  ["31"]]
    line = 2 + wanted.index(unknown) + 1
    assert f"skipped {ids}, line {line}: " in captured.out
    assert f"(arXiv has no paper {unknown})" in captured.out
    assert captured.out.rstrip().endswith("130 liked, 0 already there, 1 skipped")
    assert len(ratings(tmp_path)) == 130


@pytest.mark.parametrize(("name", "content", "kind"), [
    pytest.param("refs.txt", BIBTEX, "bibtex", id="BibTeX named .txt"),
    pytest.param("refs.bib", "2106.09685\nhttps://arxiv.org/abs/2305.14314\n", "id-list",
                 id="an id list named .bib"),
    pytest.param("export", json.dumps(CSL_JSON), "csl-json", id="CSL JSON without extension"),
    pytest.param("bom.bib", "\ufeff@misc{a, eprint = {2106.09685}}", "bibtex",
                 id="BibTeX with a byte-order mark"),
])
def test_the_format_is_told_by_the_content(name, content, kind):
    found, references = parse_references(content.encode("utf-8"), name=name)
    assert found == kind
    assert references and all(r.arxiv_id or r.doi or r.title for r in references)


MALFORMED_BIBTEX = """@article{good,
  title  = {A Good Entry},
  eprint = {2106.09685}
}

@article{broken,
  title  = {An Unclosed {Brace,
  eprint = {2305.14314}

@misc{after, title = {After}, eprint = {2307.09288}}
"""


@pytest.mark.parametrize(("name", "content", "message"), [
    pytest.param("refs.bib", MALFORMED_BIBTEX.encode(),
                 "refs.bib, line 6: malformed BibTeX entry '@article{broken,'",
                 id="BibTeX with an unclosed brace"),
    pytest.param("zotero.json", b'[\n  {"title": "A"},\n  {"title": "B",}\n]\n',
                 "zotero.json, line 3 column 17: malformed JSON",
                 id="CSL JSON with a trailing comma"),
    pytest.param("zotero.json", b'{"items": []}', "expected a CSL JSON list of items",
                 id="JSON that is not CSL JSON"),
    pytest.param("ids.txt", b"2106.09685\nsee the QLoRA paper\n",
                 "ids.txt, line 2: expected an arXiv id, an arXiv URL or a DOI",
                 id="a line that names no paper"),
    pytest.param("refs.bib", b"@misc{a, title = {Caf\xe9}}\n", "refs.bib, line 1: not UTF-8",
                 id="not UTF-8"),
])
def test_a_malformed_file_names_the_file_and_line_and_nothing_is_recorded(
        env, capsys, name, content, message):
    config, tmp_path, server = env
    good = tmp_path / "good.txt"
    good.write_text("2305.14314\n", encoding="utf-8")
    bad = tmp_path / name
    bad.write_bytes(content)

    assert main(["import", "-c", str(config), "-w", "efficient-llms", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert message.replace(name, str(bad), 1) in err
    assert ratings(tmp_path) == [] and server.hits(API_PATH) == []
    assert "Traceback" not in err


def test_an_arxiv_api_failure_is_named_and_nothing_is_recorded(env, capsys):
    config, tmp_path, server = env
    server.route(API_PATH, Route(status=503, body=b"busy"))
    ids = tmp_path / "ids.txt"
    ids.write_text("2305.14314\n2106.09685\n", encoding="utf-8")
    assert main(["import", "-c", str(config), "-w", "efficient-llms", str(ids)]) == 1
    err = capsys.readouterr().err
    assert f"cannot look up 1 arXiv id at {server.url}{API_PATH}: HTTP 503" in err
    assert ratings(tmp_path) == []  # not even the stored paper: the import is all or nothing


def test_parsing_raises_the_projects_parse_error():
    with pytest.raises(ParseError, match=r"refs.bib, line 6: .*broken"):
        parse_references(MALFORMED_BIBTEX.encode(), name="refs.bib")


def test_an_unknown_watchlist_is_exit_2_with_the_known_names(env, capsys):
    config, tmp_path, _ = env
    ids = tmp_path / "ids.txt"
    ids.write_text("2305.14314\n", encoding="utf-8")
    assert main(["import", "-c", str(config), "-w", "efficient-llm", str(ids)]) == 2
    err = capsys.readouterr().err
    assert "no watchlist named 'efficient-llm' (known: efficient-llms, people)" in err
    assert ratings(tmp_path) == []


@pytest.mark.parametrize(("text", "arxiv_id"), [
    ("2106.09685", "2106.09685"),
    ("2106.09685v3", "2106.09685"),
    ("arXiv:2106.09685", "2106.09685"),
    ("arXiv preprint arXiv:2106.09685", "2106.09685"),
    ("arXiv:2305.14314 [cs]", "2305.14314"),
    ("https://arxiv.org/abs/2205.14135v2", "2205.14135"),
    ("https://arxiv.org/pdf/2205.14135v1.pdf", "2205.14135"),
    ("http://arxiv.org/abs/2205.14135?context=cs", "2205.14135"),
    ("10.48550/arXiv.2307.09288", "2307.09288"),
    ("https://doi.org/10.48550/arXiv.2307.09288", "2307.09288"),
    ("hep-th/9901001v1", "hep-th/9901001"),
    ("10.1000/1234.56789", None),  # a DOI whose digits look like an id is still a DOI
    ("Advances in Neural Information Processing Systems 30", None),
    ("", None),
])
def test_arxiv_ids_are_found_wherever_exports_put_them(text, arxiv_id):
    assert arxiv_id_in(text) == arxiv_id


def test_help_has_an_example_and_the_readme_shows_the_command(capsys):
    with pytest.raises(SystemExit):
        main(["import", "--help"])
    out = capsys.readouterr().out
    assert "example:\n  paper-digest import --config" in out
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "paper-digest import" in readme and "import" in _parser().format_help()
