"""Ratings through whole runs: a real SQLite store, the feed served in-process, digests
written to the outbox as the email channel renders them."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

import digest.pipeline as pipeline
import digest.ranking.likes as likes_module
from digest.config import load_settings
from digest.models import Paper
from digest.pipeline import Seams, build_matcher, run_once
from digest.store import Store

DAY1 = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
ARXIV = "https://rss.arxiv.org/rss/cs.CL"

FILLER = ["galaxy cluster lensing", "coral reef bleaching", "traffic signal timing",
          "glacier melt modelling", "auction mechanism design", "protein folding kinetics",
          "battery cathode ageing", "soil moisture mapping", "wind turbine wakes",
          "epidemic contact tracing", "bridge fatigue cracks", "volcanic ash dispersion",
          "urban heat islands", "fishery stock assessment", "seismic noise imaging",
          "rice paddy methane", "ocean wave forecasting", "river sediment transport",
          "asteroid spin states", "bird migration routes", "forest fire spread",
          "lithium brine extraction"]

DAY1_PAPERS = [
    ("2611.00001", "LoRA adapters for instruction tuning",
     "Low-rank LoRA adapters match full fine-tuning of instruction-following models."),
    ("2611.00002", "Rank allocation for LoRA fine-tuning",
     "LoRA ranks chosen per layer cut trainable parameters of fine-tuning further."),
    ("2611.00003", "Merging LoRA adapters without interference",
     "Merged LoRA adapters keep each task's fine-tuning gains."),
    ("2611.00004", "LoRa radio links for farm sensors",
     "LoRa long-range radio connects soil sensors across a farm network."),
    ("2611.00011", "Streaming speech recognition with chunked attention",
     "A streaming recognizer transcribes speech with low latency and a low word error rate."),
    ("2611.00012", "Speech recognition for accented English",
     "Accent-robust acoustic models lower the word error rate of speech recognition."),
    ("2611.00013", "Contextual biasing of speech recognizers",
     "Rare names in spoken queries are recognized once the speech recognizer is biased."),
    *((f"2611.{100 + i:05d}", f"A study of {topic}", f"We measure {topic} in the field.")
      for i, topic in enumerate(FILLER)),
]
DAY2_PAPERS = [
    ("2611.00021", "LoRA adapters for multilingual fine-tuning",
     "LoRA adapters fine-tune one multilingual model per language cheaply."),
    ("2611.00022", "Speech recognition of children's voices",
     "Children's speech is transcribed by a recognizer trained to lower its word error rate."),
    ("2611.00023", "Tidal energy array layout", "We place turbines in tidal channels."),
]


def rss(items) -> bytes:
    body = "".join(
        f"<item><title>{title}</title><link>https://arxiv.org/abs/{i}</link>"
        f"<description>arXiv:{i}v1 Announce Type: new Abstract: {abstract}</description>"
        f"<guid>oai:arXiv.org:{i}v1</guid><category>cs.CL</category>"
        f'<arxiv:announce_type xmlns:arxiv="http://arxiv.org/schemas/atom">new'
        f"</arxiv:announce_type></item>" for i, title, abstract in items)
    return f"<rss version='2.0'><channel><title>cs.CL</title>{body}</channel></rss>".encode()


class Reader:
    """A store, a feed that changes by day, and the digests as the reader gets them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.db = tmp_path / "digest.db"
        self.config = tmp_path / "digest.toml"
        self.config.write_text(f"""
version = 1
[store]
path = "{self.db}"
[http]
arxiv_interval_seconds = 0
interval_seconds = 0
max_retries = 0
[[sources]]
name = "arxiv"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[watchlists]]
name = "lora"
keywords = ["LoRA"]
max_papers = 3
channels = ["mail"]
[[watchlists]]
name = "taste"
feedback_weight = 5.0
channels = ["mail"]
[channels.mail]
kind = "email"
from = "d@example.org"
to = ["t@example.org"]
""")
        self.feed = b""

    def run(self, now: datetime, papers) -> dict[str, str]:
        """One daily run; the plain-text digest of each watchlist that got one."""
        self.feed = rss(papers)
        outbox = self.tmp_path / f"out-{now:%d}"
        seams = Seams(transport=httpx.MockTransport(lambda r: httpx.Response(200,
                                                                             content=self.feed)),
                      sleep=lambda s: None, now=lambda: now)
        run_once(load_settings(self.config, env={}), outbox=outbox, seams=seams)
        out = {}
        for path in sorted(outbox.glob("*.eml")) if outbox.exists() else []:
            message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            text = message.get_body(("plain",)).get_content()
            name = "lora" if "lora" in path.name else "taste"
            out[name] = text
        return out

    def rate(self, watchlist: str, arxiv_id: str, action: str, now: datetime) -> None:
        with Store.open(self.db) as store:
            store.rate(watchlist=watchlist, paper_key=f"arxiv:{arxiv_id}", action=action,
                       origin="web", now=now)


@pytest.fixture
def reader(tmp_path) -> Reader:
    return Reader(tmp_path)


def test_ratings_teach_the_next_digests(reader):
    day1 = reader.run(DAY1, DAY1_PAPERS)
    assert set(day1) == {"lora"}  # the ratings-only list has nothing to go on yet
    assert "LoRa radio links" not in day1["lora"]  # max_papers 3: ranked below the others
    assert "close to" not in day1["lora"]

    later = DAY1 + timedelta(hours=3)
    for arxiv_id in ("2611.00001", "2611.00002", "2611.00003"):
        reader.rate("lora", arxiv_id, "like", later)
    reader.rate("lora", "2611.00004", "dislike", later)  # seen in the archive: radio, not LoRA
    for arxiv_id in ("2611.00011", "2611.00012", "2611.00013"):
        reader.rate("taste", arxiv_id, "save", later)

    day2 = reader.run(DAY2, DAY2_PAPERS)
    # the new LoRA paper comes with what it resembles among the liked ones
    assert "LoRA adapters for multilingual fine-tuning" in day2["lora"]
    assert ", which you liked" in day2["lora"]
    # the disliked paper was still a candidate for lora, and is not sent
    assert "LoRa radio links" not in day2["lora"]
    # the ratings-only list sends what is close to its saved papers, and nothing else
    assert "Speech recognition of children's voices" in day2["taste"]
    assert "Tidal energy" not in day2["taste"] and "LoRA" not in day2["taste"]
    assert ", which you liked" in day2["taste"]


def test_one_like_is_heard_by_the_next_digest_of_a_ratings_only_watchlist(reader):
    reader.run(DAY1, DAY1_PAPERS)
    reader.rate("taste", "2611.00011", "like", DAY1 + timedelta(hours=3))
    day2 = reader.run(DAY2, DAY2_PAPERS)
    assert "Speech recognition of children's voices" in day2["taste"]
    assert "Tidal energy" not in day2["taste"] and "LoRA" not in day2["taste"]
    assert "alike to the papers you liked (" in day2["taste"]
    with Store.open(reader.db) as store:
        assert "taste" not in store.saved_models()  # one like: no model yet


def test_past_so_many_likes_the_model_alone_speaks(reader, monkeypatch):
    reader.run(DAY1, DAY1_PAPERS)
    later = DAY1 + timedelta(hours=3)
    for arxiv_id in ("2611.00011", "2611.00012"):
        reader.rate("taste", arxiv_id, "like", later)
    settings = load_settings(reader.config, env={})
    monkeypatch.setattr(likes_module, "LIKED_SEEDS", 2)
    with Store.open(reader.db) as store:
        texts = pipeline.liked_texts(settings.watchlists, store.ratings(), store)
        assert list(texts) == ["taste"]  # lora has rules of its own
        assert sorted(texts["taste"]) == ["arxiv:2611.00011", "arxiv:2611.00012"]
        assert texts["taste"]["arxiv:2611.00012"].startswith("Speech recognition for accented")
    reader.rate("taste", "2611.00013", "like", later)
    with Store.open(reader.db) as store:
        assert pipeline.liked_texts(settings.watchlists, store.ratings(), store) == {}


def test_a_paper_liked_from_the_more_page_is_not_sent_to_the_watchlist_later(tmp_path):
    """A paper a digest left out stays a candidate for the next one; liked meanwhile (from
    the page of what the digest left out), its reader has it: it is not sent again."""
    readers = {}
    for name in ("rated", "unrated"):
        (tmp_path / name).mkdir()
        readers[name] = Reader(tmp_path / name)
        readers[name].run(DAY1, DAY1_PAPERS)
    with Store.open(readers["rated"].db) as store:
        sent = {key for (key,) in store.db.execute("SELECT paper_key FROM deliveries")}
    left_out = [i for i, title, _ in DAY1_PAPERS if "LoRA" in title or "LoRa" in title
                if f"arxiv:{i}" not in sent]
    assert len(left_out) == 1  # four LoRA papers, max_papers 3
    title = next(t for i, t, _ in DAY1_PAPERS if i == left_out[0])
    readers["rated"].rate("lora", left_out[0], "like", DAY1 + timedelta(hours=3))
    unrated = readers["unrated"].run(DAY2, DAY2_PAPERS)
    rated = readers["rated"].run(DAY2, DAY2_PAPERS)
    assert title in unrated["lora"]
    assert title not in rated["lora"] and "LoRA adapters for multilingual" in rated["lora"]


def test_explain_shows_the_learned_part_and_the_veto(reader):
    reader.run(DAY1, DAY1_PAPERS)
    later = DAY1 + timedelta(hours=3)
    for arxiv_id in ("2611.00011", "2611.00012", "2611.00013"):
        reader.rate("taste", arxiv_id, "like", later)
    reader.rate("lora", "2611.00004", "dislike", later)
    settings = load_settings(reader.config, env={})
    with Store.open(reader.db) as store:
        matcher = build_matcher(settings.watchlists, store, now=lambda: DAY2)
        radio = store.paper("arxiv:2611.00004")
        close = store.paper("arxiv:2611.00012")
        assert radio is not None and close is not None
        verdicts = {e.watchlist: e for e in matcher.explain(radio, now=DAY2)}
        assert "disliked" in verdicts["lora"].verdict and not verdicts["lora"].passed
        # A paper its reader liked is not sent again, nor named as like itself.
        liked = {e.watchlist: e for e in matcher.explain(close, now=DAY2)}["taste"]
        assert not liked.passed and "liked by a reader" in liked.verdict
        assert all(r.value != close.title for r in liked.reasons)
        _, title, abstract = DAY2_PAPERS[1]
        new = Paper(key="arxiv:2611.00022", title=title, abstract=abstract, url="",
                    arxiv_id="2611.00022", categories=("cs.CL",))
        taste = {e.watchlist: e for e in matcher.explain(new, now=DAY2)}["taste"]
        [learned] = [r for r in taste.reasons if r.kind == "liked"]
        assert taste.passed and learned.points > 0
        assert learned.value in {t for i, t, _ in DAY1_PAPERS if i in ("2611.00011",
                                                                          "2611.00012",
                                                                          "2611.00013")}
        assert store.saved_models()["taste"][0] == store.ratings_fingerprints()["taste"]
