"""The store, on a real SQLite file: identity, merging, and delivery facts."""

from datetime import UTC, datetime, timedelta

import pytest

from digest.errors import LockedError
from digest.models import Digest, Match, Paper, Reason
from digest.sources.base import SourceState
from digest.store import Store
from digest.store.db import Candidates, KeptScores
from digest.store.schema import MIGRATIONS
from digest.window import PaperReader

NOW = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


def paper(arxiv_id: str, **fields) -> Paper:
    base = {"key": f"arxiv:{arxiv_id}", "title": f"Paper {arxiv_id}",
            "url": f"https://arxiv.org/abs/{arxiv_id}", "arxiv_id": arxiv_id}
    return Paper(**{**base, **fields})


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "sub" / "digest.db") as opened:
        yield opened


def test_open_creates_the_file_and_schema(tmp_path):
    path = tmp_path / "new" / "digest.db"
    Store.open(path).close()
    assert path.exists()
    with Store.open(path) as again:  # reopening migrates nothing twice
        assert again.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert again.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_same_paper_from_two_sources_is_stored_once_with_both_facts(store):
    rss = paper("2611.04001", version=1, categories=("cs.CL", "cs.LG"), announce_type="new",
                abstract="From arXiv.")
    hf = paper("2611.04001", upvotes=120, abstract="From HF.", title="Paper 2611.04001")
    assert store.record_batch("arxiv", [rss], SourceState(), NOW) == (1, 0)
    assert store.record_batch("hf", [hf], SourceState(), NOW) == (0, 1)
    merged = store.paper("arxiv:2611.04001")
    assert merged.categories == ("cs.CL", "cs.LG")
    assert merged.upvotes == 120
    assert merged.abstract == "From arXiv."  # a later sighting does not overwrite facts
    assert merged.announce_type == "new"
    assert store.sources_of("arxiv:2611.04001") == ["arxiv", "hf"]
    assert store.papers_count() == 1


def test_a_new_version_updates_the_paper_not_a_new_paper(store):
    store.record_batch("arxiv", [paper("2611.1", version=1, abstract="old")], SourceState(), NOW)
    new, known = store.record_batch(
        "arxiv", [paper("2611.1", version=2, abstract="new", announce_type="replace")],
        SourceState(), NOW + timedelta(days=1))
    assert (new, known) == (0, 1)
    stored = store.paper("arxiv:2611.1")
    assert stored.version == 2 and stored.abstract == "new"


def test_a_batch_is_all_or_nothing(store):
    def papers():
        yield paper("2611.00001")
        raise RuntimeError("source died mid-way")

    with pytest.raises(RuntimeError):
        store.record_batch("arxiv", papers(), SourceState(etag='"x"'), NOW)
    assert store.papers_count() == 0
    assert store.source_state("arxiv") == SourceState()


def test_source_state_is_kept_with_its_papers(store):
    store.record_batch("feed", [], SourceState(etag='"v2"', last_modified="Mon"), NOW)
    assert store.source_state("feed") == SourceState(etag='"v2"', last_modified="Mon")
    store.record_source_error("feed", "HTTP 500", NOW)
    row = store.db.execute("SELECT consecutive_failures, last_error FROM source_state").fetchone()
    assert row == (1, "HTTP 500")
    assert store.source_state("feed").etag == '"v2"'


def _digest(store, channel, *keys):
    matches = tuple(Match(paper=store.paper(k), watchlist="w", score=1.0, reasons=())
                    for k in keys)
    digest = Digest(watchlist="w", channel=channel, matches=matches, created_at=NOW)
    return store.create_digest(digest, {"kind": "test"}, NOW)


def test_delivery_is_recorded_only_when_marked_sent(store):
    store.record_batch("arxiv", [paper("2611.1"), paper("2611.2")], SourceState(), NOW)
    since = NOW - timedelta(days=7)
    assert store.candidate_keys("mail", since) == {"arxiv:2611.1", "arxiv:2611.2"}
    digest_id = _digest(store, "mail", "arxiv:2611.1")
    # queued for mail: no longer a candidate there, still one for another channel
    assert store.candidate_keys("mail", since) == {"arxiv:2611.2"}
    assert len(store.candidate_keys("slack", since)) == 2
    assert store.delivered_keys("mail") == set()
    (open_digest,) = store.open_digests()
    assert open_digest.paper_keys == ("arxiv:2611.1",) and open_digest.status == "pending"
    store.mark_sent(digest_id, NOW)
    assert store.delivered_keys("mail") == {"arxiv:2611.1"}
    assert store.open_digests() == []
    assert store.candidate_keys("mail", since) == {"arxiv:2611.2"}


def test_temporary_failures_stay_open_and_permanent_ones_close(store):
    store.record_batch("arxiv", [paper("2611.1"), paper("2611.2")], SourceState(), NOW)
    temporary = _digest(store, "mail", "arxiv:2611.1")
    permanent = _digest(store, "slack", "arxiv:2611.2")
    store.mark_failed(temporary, "421 try later", permanent=False, now=NOW)
    store.mark_failed(permanent, "hook gone", permanent=True, now=NOW)
    (still_open,) = store.open_digests()
    assert still_open.id == temporary and still_open.attempts == 1
    assert store.delivered_keys("slack") == set()


def test_parts_sent_survive_for_resuming(store):
    store.record_batch("arxiv", [paper("2611.1")], SourceState(), NOW)
    digest_id = _digest(store, "slack", "arxiv:2611.1")
    store.mark_part_sent(digest_id, 2, NOW)
    assert store.open_digests(["slack"])[0].parts_sent == 2
    assert store.open_digests(["mail"]) == []


def test_lookback_bounds_the_candidates(store):
    store.record_batch("arxiv", [paper("2611.1")], SourceState(), NOW - timedelta(days=30))
    store.record_batch("arxiv", [paper("2611.2")], SourceState(), NOW)
    assert store.candidate_keys("mail", NOW - timedelta(days=7)) == {"arxiv:2611.2"}
    assert [p.key for p in store.recent(NOW - timedelta(days=7))] == ["arxiv:2611.2"]


def test_run_lock_is_exclusive(tmp_path):
    with Store.open(tmp_path / "d.db") as first, Store.open(tmp_path / "d.db") as second:
        with first.run_lock():
            with pytest.raises(LockedError, match="another paper-digest run"):
                with second.run_lock():
                    pass
        with second.run_lock():  # released when the first run ends
            pass


def test_candidates_for_all_channels_equal_the_per_channel_query(store):
    """The set-based selection a run uses says exactly what the per-channel query says."""
    store.record_batch("arxiv", [paper(f"2611.{i}") for i in range(12)], SourceState(), NOW)
    store.record_batch("arxiv", [paper("2501.1")], SourceState(), NOW - timedelta(days=30))
    store.record_references([paper("2611.99")], NOW)  # a seed: never news
    keys = [f"arxiv:2611.{i}" for i in range(12)]
    sent = _digest(store, "mail", keys[0], keys[1])
    store.mark_sent(sent, NOW)
    _digest(store, "mail", keys[2])  # queued
    failed = _digest(store, "slack", keys[3])
    store.mark_failed(failed, "hook gone", permanent=True, now=NOW)
    dropped = _digest(store, "slack", keys[4])
    store.drop([dropped], skip=False, now=NOW)  # due again
    skipped = _digest(store, "mail", keys[5])
    store.drop([skipped], skip=True, now=NOW)  # settled: never sent there
    partly = _digest(store, "teams", keys[6], keys[7])
    store.mark_part_sent(partly, 1, NOW)
    since = NOW - timedelta(days=7)
    candidates = store.candidates(since)
    for channel in ("mail", "slack", "teams", "never-used"):
        assert candidates.for_channel(channel) == store.candidate_keys(channel, since)
        assert {k for k in keys + ["arxiv:2611.99", "arxiv:2501.1"]
                if candidates.open(channel, k)} == store.candidate_keys(channel, since)
    assert candidates.for_channel("mail") == set(keys) - {keys[0], keys[1], keys[2], keys[5]}
    # What a run queues is no longer open for that channel, as the query would then say.
    _digest(store, "mail", keys[8])
    candidates.queued("mail", [keys[8]])
    assert candidates.for_channel("mail") == store.candidate_keys("mail", since)


def test_payloads_are_kept_compressed_and_read_back_whole(store):
    store.record_batch("arxiv", [paper("2611.1")], SourceState(), NOW)
    html = "<tr><td class='paper'>LoRA · ▲ 3</td></tr>\n" * 2000
    payload = {"kind": "email", "message": html, "html": html, "to": ["a@example.org"]}
    digest = Digest("w", "mail", (Match(paper("2611.1"), "w", 1.0, ()),), NOW)
    digest_id = store.create_digest(digest, payload, NOW)
    stored = store.db.execute("SELECT payload FROM digests WHERE id = ?",
                              [digest_id]).fetchone()[0]
    assert isinstance(stored, bytes) and len(stored) * 20 < len(html) * 2
    (open_digest,) = store.open_digests()
    assert open_digest.payload == payload
    # A digest recorded before payloads were compressed reads as it was written.
    store.db.execute("UPDATE digests SET payload = ? WHERE id = ?",
                     ['{"kind": "email", "message": "plain"}', digest_id])
    (open_digest,) = store.open_digests()
    assert open_digest.payload == {"kind": "email", "message": "plain"}


# ------------------------------------------------------------------ recording in chunks


def table(store, name: str) -> list[tuple]:
    return sorted(store.db.execute(f"SELECT * FROM {name}").fetchall(), key=repr)


def sightings_of_a_day(day: int) -> list[Paper]:
    """Papers as sources list them: some listed twice, some newer versions, fields that
    one sighting has and another lacks, a few keys that were pruned."""
    papers = []
    for n in range(40):
        number = (n * 7 + day) % 23
        papers.append(paper(
            f"2611.{number:05d}", version=1 + (n + day) % 3,
            abstract="" if n % 4 == 0 else f"abstract {n % 3}",
            authors=() if n % 5 == 0 else ("A. One", f"B. {n % 2}"),
            categories=(("cs.CL", "cs.LG") if n % 2 else ("cs.LG", "stat.ML")),
            announce_type=("new", "cross", "replace")[n % 3],
            upvotes=None if n % 3 else n, code_url=None if n % 4 else f"https://c/{n}",
            published=datetime(2026, 11, 1 + n % 20, tzinfo=UTC) if n % 6 else None))
    return papers


@pytest.mark.parametrize("chunk", [1, 3, 500])
def test_a_listing_recorded_in_chunks_is_stored_as_in_one_batch(tmp_path, chunk):
    """record_listing (a transaction per chunk, merged a chunk at a time) leaves the same
    papers, sightings and counts as record_batch; only the source state waits."""
    with Store.open(tmp_path / "whole.db") as whole, \
            Store.open(tmp_path / "chunks.db") as chunks:
        for target in (whole, chunks):
            target.record_batch("arxiv", [paper("2611.00005"), paper("2611.00900")],
                                SourceState(), NOW - timedelta(days=90))
            target.prune(NOW - timedelta(days=10), keep_days=30, keep_payload_days=30)
        for day in range(3):
            now = NOW + timedelta(days=day)
            counts = whole.record_batch("arxiv", sightings_of_a_day(day), SourceState(), now)
            assert chunks.record_listing("arxiv", iter(sightings_of_a_day(day)), now,
                                         chunk=chunk) == counts
            chunks.record_success("arxiv", SourceState(), now)
        assert table(chunks, "papers") == table(whole, "papers")
        assert table(chunks, "sightings") == table(whole, "sightings")
        assert table(chunks, "source_state") == table(whole, "source_state")


def test_record_listing_leaves_the_source_state_to_record_success(store):
    assert store.record_listing("arxiv", [paper("2611.1"), paper("2611.2"), paper("2611.1")],
                                NOW, chunk=1) == (2, 0)
    assert store.source_state("arxiv") == SourceState() and store.last_success("arxiv") is None
    store.record_success("arxiv", SourceState(etag='"e"'), NOW)
    assert store.source_state("arxiv").etag == '"e"' and store.last_success("arxiv") == NOW


def test_references_merged_at_once_equal_references_merged_one_by_one(tmp_path):
    papers = sightings_of_a_day(1) + sightings_of_a_day(2)
    with Store.open(tmp_path / "once.db") as once, Store.open(tmp_path / "each.db") as each:
        assert once.record_references(papers, NOW) == sum(
            each.record_references([p], NOW) for p in papers)
        assert table(once, "papers") == table(each, "papers")


def test_kept_matches_of_papers_scored_again_are_replaced_and_new_papers_add_theirs(store):
    """Keeping a run's scores: a paper scored again loses the match it no longer earns
    (and keeps the one it does, rescored); papers scored for the first time only add."""
    since = NOW - timedelta(days=7)
    papers = [paper(f"2611.{n}") for n in range(1, 5)]
    store.record_batch("arxiv", papers, SourceState(), NOW)

    def match(p: Paper, name: str, score: float) -> Match:
        return Match(p, name, score, (Reason("term", "LoRA", "title", score),))

    def kept(name: str) -> dict[str, float]:
        return {key: score for _, key, score, _ in store.kept_matches(since, [name])}

    first = frozenset(p.key for p in papers[:3])
    store.keep_scores({
        "a": KeptScores("f", False, [match(papers[0], "a", 1.0), match(papers[1], "a", 2.0)],
                        first),
        "b": KeptScores("f", False, [match(papers[2], "b", 3.0)], first),
        "c": KeptScores("f", False, [match(papers[0], "c", 1.0)], first)},
        through=1, since=since, now=NOW)
    # The next run scores paper 1 (changed: it no longer matches a), paper 2 (changed:
    # a scores it higher) and paper 4 (new, matched by b).
    again = frozenset({papers[0].key, papers[1].key, papers[3].key})
    # Watchlist c changed: scored over the whole window (a group of its own), it now
    # matches paper 3 only.
    whole = frozenset(p.key for p in papers)
    store.keep_scores({
        "a": KeptScores("f", False, [match(papers[1], "a", 5.0)], again),
        "b": KeptScores("f", False, [match(papers[3], "b", 4.0)], again),
        "c": KeptScores("g", True, [match(papers[2], "c", 2.0)], whole)},
        through=2, since=since, now=NOW)
    assert kept("a") == {papers[1].key: 5.0}
    assert kept("b") == {papers[2].key: 3.0, papers[3].key: 4.0}
    assert kept("c") == {papers[2].key: 2.0}


def test_candidates_hold_what_each_channel_had_in_any_order():
    """What a channel had is kept as sorted paper numbers: whatever order the rows and the
    queued papers come in, repeated or not, each is had once and the rest stay open."""
    listed = [f"arxiv:2611.{i}" for i in range(20)]
    had = [("mail", listed[9]), ("mail", listed[2]), ("slack", listed[9]),
           ("mail", listed[9]), ("mail", "arxiv:2501.1")]  # the last: listed by no source
    candidates = Candidates(listed, had)
    assert candidates.for_channel("mail") == set(listed) - {listed[2], listed[9]}
    assert candidates.for_channel("slack") == set(listed) - {listed[9]}
    assert candidates.for_channel("new") == set(listed)
    assert not candidates.open("mail", "arxiv:2501.1")  # never open: not listed
    candidates.queued("mail", [listed[19], listed[0], listed[5], listed[5], listed[2]])
    candidates.queued("new", [listed[3]])
    assert candidates.for_channel("mail") == set(listed) - {listed[i] for i in (0, 2, 5, 9, 19)}
    assert candidates.for_channel("new") == set(listed) - {listed[3]}
    assert [candidates.open("mail", key) for key in listed] == [
        i not in (0, 2, 5, 9, 19) for i in range(20)]


def test_the_paper_reader_keeps_the_papers_used_last(store, monkeypatch):
    """Digests read their matches' whole papers through one reader: a paper read for one
    digest is not read again for the next, and only the most recently used are kept."""
    store.record_batch("arxiv", [paper(f"2611.{i}", title=f"Title {i}") for i in range(6)],
                       SourceState(), NOW)
    asked: list[set[str]] = []
    real = store.papers
    monkeypatch.setattr(store, "papers", lambda keys: asked.append(set(keys)) or real(keys))
    reader = PaperReader(store, keep=3)

    def stand_ins(*numbers: int) -> list[Match]:
        return [Match(paper=Paper(key=f"arxiv:2611.{n}", title="", url=""), watchlist="w",
                      score=1.0, reasons=()) for n in numbers]

    assert [m.paper.title for m in reader(stand_ins(0, 1))] == ["Title 0", "Title 1"]
    assert [m.paper.title for m in reader(stand_ins(1, 2))] == ["Title 1", "Title 2"]
    reader(stand_ins(0))  # used again: now the latest, and 1 the oldest
    reader(stand_ins(3))  # four papers: the oldest used, 1, is let go
    assert list(reader.papers) == ["arxiv:2611.2", "arxiv:2611.0", "arxiv:2611.3"]
    reader(stand_ins(1, 0, 9))  # 9: not stored, its stand-in stays
    assert asked == [{"arxiv:2611.0", "arxiv:2611.1"}, {"arxiv:2611.2"}, {"arxiv:2611.3"},
                     {"arxiv:2611.1", "arxiv:2611.9"}]
    assert [m.paper.title for m in reader(stand_ins(0, 9))] == ["Title 0", ""]


def test_candidates_read_from_the_windows_papers_not_every_delivery(store):
    """A year of 1,000 channels is millions of deliveries: what each channel had is looked
    up from the window's papers (by index), never by reading every delivery, queued paper
    or settled paper the store holds."""
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    try:
        store.candidates(NOW - timedelta(days=7))
    finally:
        store.db.conn.set_trace_callback(None)
    [had] = [s for s in statements if "deliveries" in s and s.lstrip().startswith("SELECT")]
    plan = [row[3] for row in store.db.execute("EXPLAIN QUERY PLAN " + had)]
    assert not [step for step in plan if step.startswith("SCAN")], plan
    assert plan.count("SEARCH p USING INDEX papers_first_seen (first_seen>?)") == 3, plan
    assert any("deliveries_by_paper" in step for step in plan), plan
    assert any("settled_by_paper" in step for step in plan), plan


def test_every_foreign_key_has_an_index_to_look_it_up(store):
    """Deleting a digest or a paper (pruning) has SQLite look up the rows that refer to it,
    once per row deleted; without an index led by the referring column, each look-up reads
    the whole table: on a year of 1,000 channels, a quarter of a second a digest."""
    db = store.db.conn
    tables = [row[0] for row in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    missing = []
    for table in tables:
        leading = {db.execute(f"PRAGMA index_info('{index[1]}')").fetchone()[2]
                   for index in db.execute(f"PRAGMA index_list('{table}')")}
        primary = [row for row in db.execute(f"PRAGMA table_info('{table}')") if row[5] == 1]
        leading |= {row[1] for row in primary}
        missing += [f"{table}.{key[3]}" for key in db.execute(
            f"PRAGMA foreign_key_list('{table}')") if key[3] not in leading]
    assert missing == []


def test_a_channels_latest_digest_is_found_by_index(store):
    """Asked for each heartbeat watchlist with nothing to send: a year of digests is
    hundreds of thousands of rows, each holding its payload."""
    statements: list[str] = []
    store.db.conn.set_trace_callback(statements.append)
    try:
        assert store.latest_digest_at("mail", "w") is None
    finally:
        store.db.conn.set_trace_callback(None)
    [asked] = [s for s in statements if "max(created_at)" in s]
    plan = [row[3] for row in store.db.execute("EXPLAIN QUERY PLAN " + asked)]
    assert plan == ["SEARCH digests USING COVERING INDEX digests_latest "
                    "(channel=? AND watchlist=? AND dropped_at=?)"], plan


def test_title_words_are_found_whole_and_in_any_order(tmp_path):
    """What `explain` and `rate` look a paper up by: each word whole, in any order; "%"
    and "_" are characters, not wildcards; no word finds nothing."""
    titles = {
        "2611.00001": "LoRA Adapters for Speech",
        "2611.00002": "Curiosity-Driven Exploration in Sparse-Reward Manipulation",
        "2611.00003": "Why Language Models Need Attention Sinks",
        "2611.00004": "A 50% Smaller KV Cache",
        "2611.00005": "World Models for Autonomous Driving",
    }
    papers = [Paper(key=f"arxiv:{i}", title=t, url="", arxiv_id=i) for i, t in titles.items()]
    with Store.open(tmp_path / "d.db") as store:
        store.record_batch("s", papers, SourceState(), NOW)
        found = {text: [p.title for p in store.find(text)] for text in (
            "LoRA", "sinks attention", "RL", "50%", "%", "_", "", "  ", "exploration",
            "world models autonomous")}
    assert found["LoRA"] == ["LoRA Adapters for Speech"]  # not "expLORAtion"
    assert found["sinks attention"] == ["Why Language Models Need Attention Sinks"]
    assert found["RL"] == []  # not "woRLd"
    assert found["50%"] == ["A 50% Smaller KV Cache"]
    assert found["%"] == ["A 50% Smaller KV Cache"]  # the character, not every title
    assert found["_"] == found[""] == found["  "] == []
    assert found["exploration"] == [titles["2611.00002"]]
    assert found["world models autonomous"] == [titles["2611.00005"]]
