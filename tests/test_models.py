"""Paper identity: which key a paper gets, whatever the source called it."""

import pytest

from digest.models import fold_text, normalise_doi, paper_key, parse_arxiv_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("2504.17830", ("2504.17830", None), id="bare-new-style"),
        pytest.param("2504.17830v3", ("2504.17830", 3), id="with-version"),
        pytest.param("oai:arXiv.org:2504.17830v1", ("2504.17830", 1), id="rss-guid"),
        pytest.param("http://arxiv.org/abs/2604.26951v1", ("2604.26951", 1), id="api-id"),
        pytest.param("https://arxiv.org/pdf/2604.26951v2.pdf", ("2604.26951", 2), id="pdf"),
        pytest.param("http://arxiv.org/abs/hep-ex/0307015v1", ("hep-ex/0307015", 1),
                     id="old-style"),
        pytest.param("math.GT/0309136", ("math.GT/0309136", None), id="old-style-subject"),
        pytest.param("10.48550/arXiv.2301.00001", ("2301.00001", None), id="arxiv-doi"),
        pytest.param("https://example.org/post/1", None, id="not-arxiv"),
        pytest.param("1234.123", None, id="too-short"),
        pytest.param("0704.0001", ("0704.0001", None), id="first-new-style-four-digits"),
    ],
)
def test_parse_arxiv_id(text, expected):
    assert parse_arxiv_id(text) == expected


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        pytest.param({"arxiv_id": "2504.17830", "doi": "10.1/x"}, "arxiv:2504.17830",
                     id="arxiv-first"),
        pytest.param({"doi": "https://doi.org/10.1101/2023.12.16.571984"},
                     "doi:10.1101/2023.12.16.571984", id="doi-url"),
        pytest.param({"doi": "doi:10.48550/arXiv.2301.00001"}, "arxiv:2301.00001",
                     id="arxiv-doi-is-arxiv"),
        pytest.param({"guid": "tag:x,2026:1", "link": "https://x/1"}, "guid:tag:x,2026:1",
                     id="guid-before-link"),
        pytest.param({"link": "https://x/1"}, "url:https://x/1", id="link"),
    ],
)
def test_paper_key_prefers_the_strongest_identity(fields, key):
    assert paper_key(**fields) == key


def test_content_hash_ignores_case_accents_and_spacing():
    a = paper_key(title="Émergent  Abilities", authors=("José García",))
    b = paper_key(title="emergent abilities", authors=("jose garcia",))
    assert a == b and a.startswith("sha1:")
    assert a != paper_key(title="Emergent Abilities", authors=("Someone Else",))


def test_normalise_doi_rejects_non_dois():
    assert normalise_doi("not a doi") is None
    assert normalise_doi("DOI: 10.1063/1.4944470") == "10.1063/1.4944470"


def test_fold_text():
    assert fold_text("  Ångström\tMÜLLER ") == "angstrom muller"

