"""The demo: bundled sample data, offline, through the real source code paths."""

from __future__ import annotations

import email
import json
import shutil
from email.policy import default as default_policy
from pathlib import Path

from digest.cli import main
from digest.sources import arxiv_rss, hf_daily

ROOT = Path(__file__).resolve().parent.parent


def test_sample_data_is_real_format_and_overlaps():
    rss = arxiv_rss.parse((ROOT / "config/sample-data/arxiv_rss_cs.CL+cs.LG.xml").read_bytes())
    hf = hf_daily.parse((ROOT / "config/sample-data/hf_daily_papers_2026-11-19.json")
                        .read_bytes())
    keys = {p.key for p in rss} | {p.key for p in hf}
    assert len(keys) >= 30
    assert {p.key for p in rss} & {p.key for p in hf}, "some papers must be in both"


def test_demo_writes_the_outbox_and_a_second_run_finds_nothing_new(tmp_path, monkeypatch,
                                                                    capsys):
    shutil.copytree(ROOT / "config", tmp_path / "config")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGEST_SLACK_WEBHOOK", raising=False)
    args = ["run", "--once", "--config", "config/demo.toml", "--outbox", "outbox"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "30 new papers" in out
    # Sinong Wang wrote 6 papers; 4 already went to team-slack with efficient-llms
    assert "people: 6 of 30 recent papers matched, 2 not yet sent to its channels, 1 digest" in out
    assert "people -> team-slack: 2 papers, written" in out
    outbox = tmp_path / "outbox"
    emls = sorted(outbox.glob("*.eml"))
    assert emls and len(emls) == len(sorted(outbox.glob("*.html")))
    assert sorted(outbox.glob("*.json"))
    for path in emls:
        message = email.message_from_bytes(path.read_bytes(), policy=default_policy)
        for header in ("Subject", "From", "To", "Date", "Message-ID"):
            assert message[header], f"{path.name} has no {header}"
        assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain",
                                                                        "text/html"]
    for path in outbox.glob("*.json"):
        for message in json.loads(path.read_text()):
            assert message["blocks"][0]["type"] == "header"
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "0 new papers" in out and "0 digests delivered" in out
    assert "efficient-llms: 8 of 30 recent papers matched, 0 not yet sent" in out
