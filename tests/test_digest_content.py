"""What a digest links and says besides the abstract: read from Hugging Face, kept by the
store across sources and schema versions; and rating tokens short enough to carry.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlite_utils

from digest.feedback import LinkSigner, RatingLink
from digest.models import Paper
from digest.sources import hf_daily
from digest.sources.base import SourceState
from digest.store import Store
from digest.store.schema import MIGRATIONS

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
KEY = "k" * 40
EXTRAS = ("hf_url", "code_url", "code_stars", "project_url", "summary", "summary_source")
SCHEMA_BEFORE_EXTRAS = 5  # migration 6 adds the columns


def hf_entry(**paper: object) -> dict[str, object]:
    return {"paper": {"id": "2611.04001", "title": "LoRA-Flow",
                      "submittedOnDailyAt": "2026-11-19T01:12:00.000Z", **paper}}


# ----------------------------------------------------------------- Hugging Face


@pytest.mark.real_fixtures
def test_real_answer_carries_code_project_pages_and_summaries(real):
    papers = hf_daily.parse(real("hf_daily_papers_2026-06-12_30items.json"))
    assert sum(1 for p in papers if p.code_url) == 16
    assert sum(1 for p in papers if p.project_url) == 13
    assert sum(1 for p in papers if p.summary) == 30
    msa = next(p for p in papers if p.arxiv_id == "2606.13392")
    assert (msa.code_url, msa.code_stars) == ("https://github.com/MiniMax-AI/MSA", 251)
    assert msa.hf_url == "https://huggingface.co/papers/2606.13392"
    assert msa.summary_source == "Hugging Face AI"
    assert msa.summary is not None and msa.summary.startswith("MiniMax Sparse Attention")
    without = next(p for p in papers if p.arxiv_id == "2606.00467")
    assert (without.code_url, without.code_stars, without.project_url) == (None, None, None)


@pytest.mark.parametrize(("fields", "expected"), [
    pytest.param({"githubRepo": "javascript:alert(1)", "githubStars": 5}, (None, None, None),
                 id="a script URL is no repository, and its stars go with it"),
    pytest.param({"githubRepo": "https://github.com/a/b", "githubStars": "many"},
                 ("https://github.com/a/b", None, None), id="stars that are no count"),
    pytest.param({"githubRepo": "https://github.com/a/b", "githubStars": True},
                 ("https://github.com/a/b", None, None), id="a boolean is no count"),
    pytest.param({"projectPage": "/relative/page", "githubRepo": 42}, (None, None, None),
                 id="relative page, repository of the wrong type"),
    pytest.param({"projectPage": " https://example.org/p ", "githubStars": 7},
                 (None, None, "https://example.org/p"), id="stars without a repository"),
])
def test_odd_link_fields_are_dropped_not_fatal(fields, expected):
    (paper,) = hf_daily.parse(json.dumps([hf_entry(**fields)]).encode())
    assert (paper.code_url, paper.code_stars, paper.project_url) == expected


def test_an_empty_summary_is_no_summary():
    (paper,) = hf_daily.parse(json.dumps([hf_entry(ai_summary="  ")]).encode())
    assert paper.summary is None and paper.summary_source is None


# ----------------------------------------------------------------- store


def extras(paper: Paper | None) -> tuple[object, ...]:
    assert paper is not None
    return tuple(getattr(paper, name) for name in EXTRAS)


def test_extras_from_one_source_survive_another_sighting(tmp_path):
    from_hf = Paper(key="arxiv:2611.04001", arxiv_id="2611.04001", title="LoRA-Flow",
                    url="https://huggingface.co/papers/2611.04001", source="hf",
                    hf_url="https://huggingface.co/papers/2611.04001",
                    code_url="https://github.com/a/b", code_stars=10,
                    project_url="https://a.example.org", summary="Short.",
                    summary_source="Hugging Face AI")
    from_arxiv = Paper(key="arxiv:2611.04001", arxiv_id="2611.04001", version=2,
                       title="LoRA-Flow v2", url="https://arxiv.org/abs/2611.04001",
                       comment="Accepted at ICLR 2027", source="arxiv")
    with Store.open(tmp_path / "d.db") as store:
        store.record_batch("hf", [from_hf], SourceState(), NOW)
        store.record_batch("arxiv", [from_arxiv], SourceState(), NOW)
        kept = store.paper("arxiv:2611.04001")
        assert extras(kept) == extras(from_hf)
        assert kept is not None and kept.comment == "Accepted at ICLR 2027"
        # the next day's answer: more stars, a new summary by someone else
        later = Paper(key=from_hf.key, arxiv_id="2611.04001", title="LoRA-Flow", url="",
                      code_stars=25, summary="Shorter.", summary_source="Elsewhere")
        store.record_batch("hf", [later], SourceState(), NOW + timedelta(days=1))
        assert extras(store.paper(from_hf.key)) == (
            from_hf.hf_url, from_hf.code_url, 25, from_hf.project_url, "Shorter.", "Elsewhere")


def test_a_store_of_the_previous_schema_gains_the_columns(tmp_path: Path):
    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    for number, script in enumerate(MIGRATIONS[:SCHEMA_BEFORE_EXTRAS], start=1):
        for statement in script.split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")
    db.execute("INSERT INTO papers (key, title, first_seen, updated_at) VALUES "
               "('arxiv:2611.00001', 'Old paper', '2026-11-01', '2026-11-01')")
    db.conn.commit()
    db.close()
    with Store.open(path) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert extras(store.paper("arxiv:2611.00001")) == (None,) * len(EXTRAS)


# ----------------------------------------------------------------- rating tokens


@pytest.mark.parametrize("link", [
    RatingLink("efficient-llms", "arxiv:2611.04001", "like"),
    RatingLink("efficient-llms", "arxiv:2611.04001", "save", "reader@example.org"),
    RatingLink("ünïcode watchlist", "url:https://blog.example.org/a?b=c", "dislike"),
    RatingLink("w", "arxiv:hep-th/9901001", "dislike"),
], ids=["arxiv paper", "with recipient", "feed paper", "old-style id"])
def test_a_token_names_its_link_and_is_short(link):
    signer = LinkSigner(KEY)
    token = signer.token(link)
    assert signer.verify(token) == link
    assert all(c.isalnum() or c in "-_." for c in token)  # nothing a URL must escape
    if link.paper_key == "arxiv:2611.04001" and not link.recipient:
        assert len(token) <= 60  # the first form took 105 characters


def test_tokens_of_the_first_form_still_verify():
    # What digests sent before carry: itsdangerous over a JSON list.
    from itsdangerous import URLSafeSerializer

    old = URLSafeSerializer(KEY, salt="paper-digest rating v1").dumps(
        ["efficient-llms", "arxiv:2611.04001", "dislike", ""])
    assert LinkSigner(KEY).verify(str(old)) == RatingLink("efficient-llms", "arxiv:2611.04001",
                                                          "dislike")
    assert LinkSigner("another key " * 4).verify(str(old)) is None


@pytest.mark.parametrize("tamper", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
    lambda t: ("M" if t[0] != "M" else "N") + t[1:],
    lambda t: t.replace(".", ""),
    lambda t: t + "=",
    lambda t: t.split(".")[0] + "." + LinkSigner("other" * 8).token(
        RatingLink("efficient-llms", "arxiv:2611.04001", "like")).split(".")[1],
], ids=["signature", "payload", "no separator", "padding", "another key's signature"])
def test_an_altered_token_verifies_as_nothing(tamper):
    token = LinkSigner(KEY).token(RatingLink("efficient-llms", "arxiv:2611.04001", "like"))
    assert LinkSigner(KEY).verify(tamper(token)) is None
