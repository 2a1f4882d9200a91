"""The store's own failures: read-only files, a full disk, a damaged file, and the way back.

The read-only cases run paper-digest as an unprivileged user (setpriv) on files that
user cannot write; the full disk is a small tmpfs in a private mount namespace (unshare).
Each is skipped with its reason where the machine cannot provide it.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import SAMPLES, SmtpInbox, free_port

from digest.cli import main
from digest.errors import StoreError
from digest.models import Digest, Match, Paper
from digest.sources.base import SourceState
from digest.store import Store
from digest.store.db import read_journal

pytestmark = pytest.mark.integration

RSS = SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml"
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
NOW = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)


def config_text(store: Path, feed: Path, smtp_port: int) -> str:
    return f"""version = 1
[store]
path = "{store}"
[http]
arxiv_interval_seconds = 0
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL"]
url = "{feed}"
[[watchlists]]
name = "efficient-llms"
keywords = ["LoRA", "quantization", "paper"]
max_papers = 500
channels = ["mail"]
[channels.mail]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
security = "none"
from = "digest@example.org"
to = ["team@example.org"]
"""


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder another user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="paper-digest-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def smtp() -> Iterator[tuple[SmtpInbox, int]]:
    from aiosmtpd.controller import Controller

    inbox = SmtpInbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def paper_digest(*args: str, prefix: list[str] | None = None, cwd: Path) -> tuple[int, str]:
    command = [*(prefix or []), sys.executable, "-m", "digest", *args]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def need_unprivileged_user(cwd: Path) -> None:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run paper-digest as an unprivileged user")
    probe = subprocess.run([*NOBODY, sys.executable, "-c", "import digest"], cwd=cwd,
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"the unprivileged user cannot run this Python: {probe.stderr[-200:]}")


def make_store(directory: Path) -> Path:
    path = directory / "digest.db"
    Store.open(path).close()
    return path


def test_a_read_only_store_file_stops_the_run_with_words_that_say_what_to_do(
        shared_dir, smtp):
    inbox, port = smtp
    need_unprivileged_user(shared_dir)
    store = make_store(shared_dir)
    store.chmod(0o644)  # root's file; the service user may only read it
    config = shared_dir / "digest.toml"
    config.write_text(config_text(store, RSS, port))
    code, out = paper_digest("run", "--once", "--config", str(config), prefix=NOBODY,
                             cwd=shared_dir)
    assert code == 1, out
    assert "Traceback" not in out
    assert "cannot record papers from arxiv-cs" in out
    assert "cannot write (attempt to write a readonly database)" in out
    assert "writable by this user" in out
    assert inbox.messages == []

    code, out = paper_digest("status", "--config", str(config), prefix=NOBODY, cwd=shared_dir)
    assert code == 1 and "STORE PROBLEM" in out and "is not writable by this user" in out


def test_a_left_over_read_only_shm_file_is_named(shared_dir, smtp):
    inbox, port = smtp
    need_unprivileged_user(shared_dir)
    store = make_store(shared_dir)
    os.chown(store, 65534, 65534)
    shm = store.with_name(store.name + "-shm")
    shm.write_bytes(bytes(32768))  # left behind by a run as root
    shm.chmod(0o644)
    config = shared_dir / "digest.toml"
    config.write_text(config_text(store, RSS, port))
    code, out = paper_digest("run", "--once", "--config", str(config), prefix=NOBODY,
                             cwd=shared_dir)
    assert code == 1 and "Traceback" not in out
    assert "digest.db-shm" in out and "writable by this user" in out
    assert inbox.messages == []
    code, out = paper_digest("status", "--config", str(config), prefix=NOBODY, cwd=shared_dir)
    assert code == 1 and f"{shm} is not writable by this user" in out


def big_feed(path: Path, count: int) -> Path:
    abstract = "We study low-rank adaptation of large language models at scale. " * 15
    items = "".join(
        f"<item><title>Paper {i} on LoRA</title><link>https://arxiv.org/abs/2611.{i:05d}</link>"
        f"<description>arXiv:2611.{i:05d}v1 Announce Type: new Abstract: {abstract}"
        f"</description><guid isPermaLink=\"false\">oai:arXiv.org:2611.{i:05d}v1</guid>"
        f"<category>cs.CL</category><arxiv:announce_type>new</arxiv:announce_type>"
        f"<dc:creator>Ann Author, Bob Writer</dc:creator></item>" for i in range(1, count + 1))
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
        'xmlns:arxiv="http://arxiv.org/schemas/atom" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<channel><title>cs.CL updates on arXiv.org</title><link>https://rss.arxiv.org/rss/cs.CL"
        f"</link><description>x</description>{items}</channel></rss>", encoding="utf-8")
    return path


def test_a_full_disk_stops_the_run_with_words_that_say_what_to_do(shared_dir, smtp):
    inbox, port = smtp
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare to mount a small private filesystem")
    mount = shared_dir / "small"
    mount.mkdir()
    feed = big_feed(shared_dir / "feed.xml", 3000)
    config = shared_dir / "digest.toml"
    config.write_text(config_text(mount / "digest.db", feed, port))
    script = (f"mount -t tmpfs -o size=400k tmpfs {mount} || exit 99; "
              f"exec {sys.executable} -m digest run --once --config {config}")
    code, out = paper_digest(cwd=shared_dir, prefix=["unshare", "-rm", "sh", "-c", script])
    if code == 99:
        pytest.skip(f"cannot mount a tmpfs in a private namespace here: {out[-200:]}")
    assert code == 1, out
    assert "Traceback" not in out
    assert "the disk is full" in out and "free some space and run again" in out
    assert inbox.messages == []


# -------------------------------------------------------------- every write, one error


def small_store(tmp_path: Path) -> Store:
    store = Store.open(tmp_path / "digest.db")
    paper = Paper(key="arxiv:2611.00001", title="A paper", url="", arxiv_id="2611.00001")
    store.record_batch("feed", [paper], SourceState(), NOW)
    digest = Digest(watchlist="w", channel="mail", created_at=NOW,
                    matches=(Match(paper=paper, watchlist="w", score=1.0, reasons=()),))
    store.create_digest(digest, {"kind": "email"}, NOW)
    store.mark_failed(1, "550 no such user", permanent=True, now=NOW)  # so requeue has work
    return store


WRITES: dict[str, Callable[[Store], object]] = {
    "record papers": lambda s: s.record_batch(
        "feed", [Paper(key="arxiv:2611.00002", title="B", url="")], SourceState(), NOW),
    "record a source's error": lambda s: s.record_source_error("feed", "HTTP 500", NOW),
    "compose a digest": lambda s: s.create_digest(
        Digest(watchlist="w", channel="mail", created_at=NOW, matches=()), {}, NOW),
    "mark a part sent": lambda s: s.mark_part_sent(1, 1, NOW),
    "mark sent": lambda s: s.mark_sent(1, NOW),
    "mark failed": lambda s: s.mark_failed(1, "550", permanent=True, now=NOW),
    "requeue": lambda s: s.requeue("mail", NOW),
    "drop": lambda s: s.drop([1], skip=True, now=NOW),
    "rate": lambda s: s.rate(watchlist="w", paper_key="arxiv:2611.00001", action="like",
                             origin="cli", now=NOW),
    "save a model": lambda s: s.save_model("w", "f", b"m", NOW),
}


@pytest.mark.parametrize("write", list(WRITES.values()), ids=list(WRITES))
def test_every_store_write_fails_with_the_store_error(tmp_path, write):
    store = small_store(tmp_path)
    store.db.execute("PRAGMA query_only = ON")  # what SQLite says for a read-only file
    with pytest.raises(StoreError, match=r"cannot .*: .*digest\.db: cannot write"):
        write(store)
    store.close()


def test_the_journal_is_readable_at_once_and_on_disk_by_the_time_the_store_closes(
        tmp_path, monkeypatch):
    synced: list[int] = []  # the journal's size at each fsync
    journal = tmp_path / "digest.db.journal"
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(journal.stat().st_size)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    store = small_store(tmp_path)
    paper = Paper(key="arxiv:2611.00003", title="C", url="", arxiv_id="2611.00003")
    store.record_batch("feed", [paper], SourceState(), NOW)
    for number in range(1, 41):
        digest = Digest(watchlist="w", channel="mail", created_at=NOW,
                        matches=(Match(paper=paper, watchlist="w", score=1.0, reasons=()),))
        digest_id = store.create_digest(digest, {"kind": "email"}, NOW)
        store.mark_sent(digest_id, NOW)
        # Each fact is in the system's hands as it is written: a crash keeps it.
        entries = read_journal(journal)
        assert len(entries) == number and entries[-1]["digest"] == digest_id
    # Not one fsync a digest (a slow disk would pay it 40 times) ...
    assert 1 <= len(synced) < 10
    store.close()
    # ... but every line is on the disk once the store is closed.
    assert synced[-1] == journal.stat().st_size


# -------------------------------------------------------------- damage, backup, restore


def corrupt(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.seek(4096)
        handle.write(b"\xde\xad\xbe\xef" * 4096)


def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_restored_backup_does_not_resend_what_went_out_since(tmp_path, capsys, smtp):
    inbox, port = smtp
    store = tmp_path / "digest.db"
    feed = tmp_path / "feed.xml"
    feed.write_bytes(RSS.read_bytes())
    config = tmp_path / "digest.toml"
    config.write_text(config_text(store, feed, port))
    assert run_cli(capsys, "run", "--once", "--config", str(config))[0] == 0
    code, out = run_cli(capsys, "backup", "--config", str(config))
    assert code == 0 and "backed up" in out
    (backup,) = (tmp_path / "backups").iterdir()

    big_feed(feed, 30)  # the next day's papers: delivered after the backup was taken
    assert run_cli(capsys, "run", "--once", "--config", str(config))[0] == 0
    assert len(inbox.messages) == 2

    corrupt(store)
    code, out = run_cli(capsys, "status", "--config", str(config))
    assert code == 1 and "restore" in out
    code, out = run_cli(capsys, "run", "--once", "--config", str(config))
    assert code == 1 and "Traceback" not in out and "restore" in out

    code, out = run_cli(capsys, "restore", "--config", str(config), str(backup))
    assert code == 0, out
    assert "30 papers delivered or skipped since the backup" in out
    assert list(tmp_path.glob("digest.db.replaced-*"))  # the damaged file is kept aside

    code, out = run_cli(capsys, "run", "--once", "--config", str(config))
    assert code == 0, out
    assert len(inbox.messages) == 2  # the day after the backup is not sent again
    assert run_cli(capsys, "status", "--config", str(config))[0] == 0
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_restore_refuses_a_damaged_backup(tmp_path, capsys):
    config = tmp_path / "digest.toml"
    config.write_text(config_text(tmp_path / "digest.db", RSS, free_port()))
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database at all" * 100)
    code, out = run_cli(capsys, "restore", "--config", str(config), str(bad))
    assert code == 1 and "is not a usable backup" in out
    assert not (tmp_path / "digest.db").exists()


def test_a_digest_pending_at_backup_time_and_sent_since_is_not_sent_again(tmp_path, capsys,
                                                                          smtp):
    inbox, port = smtp
    store = tmp_path / "digest.db"
    config = tmp_path / "digest.toml"
    config.write_text(config_text(store, RSS, free_port()))  # nothing listens: it waits
    assert run_cli(capsys, "run", "--once", "--config", str(config))[0] == 1
    assert run_cli(capsys, "backup", "--config", str(config), "--to",
                   str(tmp_path / "b.db"))[0] == 0
    config.write_text(config_text(store, RSS, port))
    assert run_cli(capsys, "run", "--once", "--config", str(config))[0] == 0
    assert len(inbox.messages) == 1

    code, out = run_cli(capsys, "restore", "--config", str(config), str(tmp_path / "b.db"))
    assert code == 0, out
    code, out = run_cli(capsys, "run", "--once", "--config", str(config))
    assert code == 0 and "recorded earlier" not in out, out
    assert len(inbox.messages) == 1
    with Store.open(store) as restored:
        assert restored.open_digests() == []
