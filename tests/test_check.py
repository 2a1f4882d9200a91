"""`check` refuses what `run` would fail on, renames never resend, and logs hide whole secrets.

Config problems are read the way `check` and `run` both read them; renames are tried end to
end against a real SMTP server (aiosmtpd) and a real SQLite file.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import SAMPLES

from digest.cli import _RedactSecrets, main
from digest.config import arxiv_archives, arxiv_categories, parse_settings
from digest.errors import ConfigError
from digest.http import is_local
from digest.models import Digest, Match, Paper
from digest.sources.arxiv_rss import parse as parse_rss
from digest.sources.base import SourceState
from digest.store import Store
from digest.store.db import RENAMED_TABLES

NOW = datetime(2026, 11, 19, 7, 0, tzinfo=UTC)

BASE = """
version = 1
[[sources]]
name = "arxiv"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[sources]]
name = "blog"
kind = "feed"
url = "https://example.org/feed.xml"
[[watchlists]]
name = "w"
keywords = ["LoRA"]
categories = ["cs.CL"]
channels = ["mail"]
[channels.mail]
kind = "email"
from = "Paper Digest <digest@example.org>"
to = ["team@example.org"]
"""


def problems_of(text: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, path=Path("x.toml"), env=env or {})
    return caught.value.problems


def edited(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new, 1)


# ------------------------------------------------------------------ arXiv categories


def test_the_taxonomy_holds_every_category_of_a_real_all_archives_listing(real):
    papers = parse_rss(real("arxiv_rss_all-archives_2024-11-28.xml"))
    listed = {c for paper in papers for c in paper.categories}
    assert len(listed) > 100  # the day's listing spans every archive
    assert listed - arxiv_categories() == set()


def test_the_taxonomy_is_one_well_formed_id_a_line():
    ids = arxiv_categories()
    assert all(re.fullmatch(r"[a-z]+(-[a-z]+)?(\.[A-Za-z]+(-[a-z]+)*)?", c) for c in ids), ids
    # Archives without subject classes are ids of their own.
    assert {"hep-ex", "hep-lat", "hep-ph", "hep-th", "gr-qc", "math-ph", "nucl-ex",
            "nucl-th", "quant-ph"} <= ids
    assert {"cs.CL", "astro-ph.GA", "math.AG", "q-bio.NC", "physics.optics",
            "cond-mat.mes-hall", "nlin.CD", "stat.ML", "econ.EM", "eess.SP", "q-fin.ST"} <= ids
    assert {"cs", "math", "physics", "astro-ph", "cond-mat", "q-bio"} <= arxiv_archives()


def test_every_archive_of_the_real_listing_url_is_accepted_as_a_source_category(real):
    text = real("arxiv_rss_all-archives_2024-11-28.xml").decode()
    archives = re.search(r"<link>http://rss\.arxiv\.org/rss/([^<]+)</link>", text)
    assert archives is not None
    names = archives.group(1).split("+")
    settings = parse_settings(edited('categories = ["cs.CL"]\n[[sources]]',
                                     f"categories = {names!r}\n[[sources]]".replace("'", '"')),
                              path=Path("x.toml"), env={})
    assert settings.sources[0].options.categories == tuple(names)


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        pytest.param('categories = ["cs.CL"]\n[[sources]]',
                     'categories = ["cs.CL", "astroph.GA"]\n[[sources]]',
                     "sources[0].categories[1]",
                     "unknown arXiv category 'astroph.GA' (did you mean 'astro-ph.GA'?)",
                     id="source-category"),
        pytest.param('categories = ["cs.CL"]\nchannels',
                     'categories = ["cs.LG", "cs.cl"]\nchannels',
                     "watchlists[0].categories[1]",
                     "unknown arXiv category 'cs.cl' (did you mean 'cs.CL'?)",
                     id="watchlist-category-case"),
        pytest.param('keywords = ["LoRA"]',
                     'keywords = ["LoRA"]\ncategory_boost = { "stat.ml" = 1 }',
                     "watchlists[0].category_boost.stat.ml",
                     "unknown arXiv category 'stat.ml' (did you mean 'stat.ML'?)",
                     id="boost-category"),
        pytest.param('categories = ["cs.CL"]\nchannels', 'categories = ["cs"]\nchannels',
                     "watchlists[0].categories[0]", "'cs' is a whole arXiv archive",
                     id="archive-in-a-watchlist"),
        pytest.param('categories = ["cs.CL"]\nchannels', 'categories = ["alg-geom"]\nchannels',
                     "watchlists[0].categories[0]", "unknown arXiv category 'alg-geom'",
                     id="retired-archive"),
    ],
)
def test_unknown_categories_are_refused_with_a_suggestion(old, new, key, reason):
    problems = problems_of(edited(old, new))
    assert (key, reason) in problems or any(k == key and r.startswith(reason)
                                            for k, r in problems), problems


def test_known_categories_and_whole_archives_for_a_listing_pass():
    text = edited('categories = ["cs.CL"]\n[[sources]]',
                  'categories = ["cs", "hep-th", "astro-ph.GA"]\n[[sources]]')
    text = text.replace('categories = ["cs.CL"]\nchannels',
                        'categories = ["q-bio.NC", "cond-mat.mes-hall"]\n'
                        'category_boost = { "cs.CL" = 1, "quant-ph" = 0.5 }\nchannels')
    settings = parse_settings(text, path=Path("x.toml"), env={})
    assert settings.sources[0].options.categories == ("cs", "hep-th", "astro-ph.GA")
    assert settings.watchlists[0].category_boost == {"cs.CL": 1.0, "quant-ph": 0.5}


# ------------------------------------------------------------------ URLs and ports

BAD_URLS = [
    pytest.param("ftp://example.org/feed.xml",
                 "unsupported URL scheme 'ftp:' (use http://, https://, file: or a local path)",
                 id="ftp"),
    pytest.param("http://[bad/feed", "not a valid URL (Invalid IPv6 URL)", id="malformed"),
    pytest.param("http://example.org:70000/feed", "port 70000 is out of range (must be 1-65535)",
                 id="port-too-high"),
    pytest.param("http://example.org:0/feed", "port 0 is out of range (must be 1-65535)",
                 id="port-zero"),
    pytest.param("http://example.org:http/feed", "not a valid URL (port 'http' is not a number)",
                 id="port-not-a-number"),
    pytest.param("https:///feed.xml", "not a valid URL (no host name)", id="no-host"),
    pytest.param("https://example .org/feed", "not a valid URL (it holds a space or a control "
                 "character)", id="space"),
]


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
def test_source_urls_that_cannot_be_fetched_are_refused(url, reason):
    problems = problems_of(edited('url = "https://example.org/feed.xml"', f'url = "{url}"'))
    assert ("sources[1].url", reason) in problems, problems


@pytest.mark.parametrize("location", [
    "https://example.org/feed.xml", "http://127.0.0.1:8080/rss", "HTTPS://example.org/x",
    "feeds/local.xml", "/srv/feeds/local.xml", "file:feeds/local.xml",
    "file:///srv/feeds/local.xml", "C:\\feeds\\local.xml", "c:/feeds/local.xml",
    "ftp://example.org/x", "gopher://example.org/x", "data:text/xml,<rss/>",
])
def test_a_source_url_passes_exactly_when_it_is_http_or_what_the_fetcher_reads_as_local(
        location):
    text = edited('url = "https://example.org/feed.xml"', f"url = '{location}'")
    fetchable = is_local(location) or urlsplit(location).scheme.lower() in ("http", "https")
    try:
        parse_settings(text, path=Path("x.toml"), env={})
        accepted = True
    except ConfigError as exc:
        assert [k for k, _ in exc.problems] == ["sources[1].url"]
        accepted = False
    assert accepted == fetchable


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        pytest.param('to = ["team@example.org"]',
                     'to = ["team@example.org"]\nsmtp_host = "smtp.example.org:2525"',
                     "channels.mail.smtp_host", "must be the host alone; write its port as "
                     "smtp_port", id="port-in-smtp-host"),
        pytest.param('to = ["team@example.org"]',
                     'to = ["team@example.org"]\nunsubscribe = "https://example.org:99999/u"',
                     "channels.mail.unsubscribe", "port 99999 is out of range (must be 1-65535)",
                     id="port-in-unsubscribe"),
        pytest.param("version = 1", 'version = 1\n[web]\nbase_url = "https://example.org:0/d"',
                     "web.base_url", "port 0 is out of range (must be 1-65535)",
                     id="port-in-base-url"),
        pytest.param("version = 1", 'version = 1\n[web]\nport = 70000',
                     "web.port", "must be 1-65535", id="web-port"),
        pytest.param("version = 1", 'version = 1\n[web]\nbase_url = "http://[bad/d"',
                     "web.base_url", "not a valid URL (Invalid IPv6 URL)", id="malformed-base-url"),
    ],
)
def test_every_setting_that_carries_a_port_is_checked(old, new, key, reason):
    assert (key, reason) in problems_of(edited(old, new))


def test_a_webhook_url_with_a_bad_port_is_refused_without_showing_it():
    text = BASE + '[channels.chat]\nkind = "slack"\nwebhook_url_env = "HOOK"\n'
    settings = parse_settings(text, path=Path("x.toml"),
                              env={"HOOK": "https://hooks.example:70000/T/B/s3cret"})
    problems = settings.missing_secrets()
    assert problems == [("channels.chat", "$HOOK is not a valid webhook URL (https://host/path, "
                                          "port 1-65535)")]
    assert "s3cret" not in repr(problems)


# ------------------------------------------------------------------ email addresses


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        pytest.param('to = ["team@example.org"]', "to = []", "channels.mail.to",
                     'list at least one recipient, like ["ml-team@example.org"]', id="empty-to"),
        pytest.param('to = ["team@example.org"]', 'to = ["team@example.org", "a@x.org, b@x.org"]',
                     "channels.mail.to[1]",
                     "'a@x.org, b@x.org' holds 2 addresses; write one address per entry",
                     id="two-in-one"),
        pytest.param('to = ["team@example.org"]', 'to = ["team"]', "channels.mail.to[0]",
                     "'team' is not an email address like name@example.org", id="no-domain"),
        pytest.param('to = ["team@example.org"]', 'to = ["@example.org"]', "channels.mail.to[0]",
                     "'@example.org' is not an email address like name@example.org",
                     id="no-local-part"),
        pytest.param('to = ["team@example.org"]', 'to = ["team@"]', "channels.mail.to[0]",
                     "'team@' is not an email address like name@example.org", id="at-sign-only"),
        pytest.param('from = "Paper Digest <digest@example.org>"', 'from = "Paper Digest"',
                     "channels.mail.from",
                     "'Paper Digest' is not an email address like name@example.org",
                     id="from-without-address"),
        pytest.param('from = "Paper Digest <digest@example.org>"',
                     'from = "Paper Digest <digest@example.org"', "channels.mail.from",
                     "'Paper Digest <digest@example.org' is not an email address like "
                     "name@example.org", id="from-unclosed"),
        # Inputs on which the email package's parser itself fails with AttributeError.
        pytest.param('from = "Paper Digest <digest@example.org>"',
                     'from = ".Paper Digest <digest@example.org>"', "channels.mail.from",
                     "'.Paper Digest <digest@example.org>' is not an email address like "
                     "name@example.org", id="name-starting-with-a-dot"),
        pytest.param('to = ["team@example.org"]', 'to = ["team:a@example.org;b"]',
                     "channels.mail.to[0]",
                     "'team:a@example.org;b' is not an email address like name@example.org",
                     id="group-left-open"),
        pytest.param('to = ["team@example.org"]', 'to = ["a@[ "]', "channels.mail.to[0]",
                     "'a@[ ' is not an email address like name@example.org",
                     id="domain-literal-left-open"),
    ],
)
def test_email_channels_refuse_empty_or_malformed_addresses(old, new, key, reason):
    assert (key, reason) in problems_of(edited(old, new))


def test_display_names_and_plain_addresses_pass():
    text = edited('to = ["team@example.org"]',
                  'to = ["team@example.org", "Ana Lima <ana@example.org>", "ops@localhost"]')
    channel = parse_settings(text, path=Path("x.toml"), env={}).channels["mail"]
    assert channel.options.sender == "Paper Digest <digest@example.org>"
    assert len(channel.options.to) == 3


# ------------------------------------------------------------------ paths


@pytest.mark.parametrize(("old", "new", "key"), [
    ("version = 1", 'version = 1\n[store]\npath = "~no-such-user-here/digest.db"', "store.path"),
    ('to = ["team@example.org"]',
     'to = ["team@example.org"]\nca_file = "~no-such-user-here/ca.pem"', "channels.mail.ca_file"),
    ('kind = "email"', 'kind = "feed_files"\ndirectory = "~no-such-user-here/feeds"\n'
                       "[channels.other]\nkind = \"email\"", "channels.mail.directory"),
    ('url = "https://example.org/feed.xml"', 'url = "~no-such-user-here/feed.xml"',
     "sources[1].url"),
], ids=["store", "ca_file", "feed_files", "source"])
def test_a_home_folder_of_no_known_user_is_a_problem_not_a_traceback(old, new, key):
    """'~name/...' expands to that user's home; with no such user, Path.expanduser raises."""
    found = problems_of(edited(old, new))
    assert (key, "'~no-such-user-here' names no user's home folder on this machine") in found


def test_an_empty_ca_file_means_none():
    text = edited('to = ["team@example.org"]', 'to = ["team@example.org"]\nca_file = ""')
    channel = parse_settings(text, path=Path("x.toml"), env={}).channels["mail"]
    assert channel.options.ca_file is None


def test_an_empty_store_path_is_a_problem():
    found = problems_of(edited("version = 1", 'version = 1\n[store]\npath = ""'))
    assert ("store.path", "must be a path, like ~/paper-digest/digest.db") in found


# ------------------------------------------------------------------ check: all at once


def with_store(tmp_path: Path, text: str) -> Path:
    """The config text with its store in tmp_path."""
    path = tmp_path / "digest.toml"
    body = text.replace("version = 1\n", "", 1)
    path.write_text(f'version = 1\n[store]\npath = "{tmp_path / "digest.db"}"\n{body}',
                    encoding="utf-8")
    return path


def test_check_reports_file_problems_and_run_problems_together(tmp_path, capsys):
    missing = tmp_path / "missing.xml"
    text = (edited('url = "https://example.org/feed.xml"', f'url = "{missing}"')
            .replace('categories = ["cs.CL"]\nchannels', 'categories = ["cs.cl"]\nchannels')
            .replace('to = ["team@example.org"]',
                     'to = []\nusername_env = "NO_SUCH_USER"\npassword_env = "NO_SUCH_PASS"'))
    assert main(["check", "--config", str(with_store(tmp_path, text))]) == 2
    err = capsys.readouterr().err
    for line in ("watchlists[0].categories[0]: unknown arXiv category 'cs.cl' "
                 "(did you mean 'cs.CL'?)",
                 'channels.mail.to: list at least one recipient, like ["ml-team@example.org"]',
                 "channels.mail: environment variable NO_SUCH_USER is not set",
                 "channels.mail: environment variable NO_SUCH_PASS is not set",
                 f"sources[1].url: no such file: {missing}"):
        assert line in err, err
    assert "5 problems" in err
    assert not (tmp_path / "digest.db").exists()


def test_check_and_run_both_refuse_a_malformed_url_without_a_traceback(tmp_path, capsys):
    config = with_store(tmp_path, edited('url = "https://example.org/feed.xml"',
                                         'url = "http://[bad/feed"'))
    for command in (["check"], ["run", "--once"]):
        assert main([*command, "--config", str(config)]) == 2
        err = capsys.readouterr().err
        assert "sources[1].url: not a valid URL (Invalid IPv6 URL)" in err
        assert "Traceback" not in err
    assert not (tmp_path / "digest.db").exists()


# ------------------------------------------------------------------ log redaction


def redacted(secrets: list[str], message: str, *args: object) -> str:
    record = logging.LogRecord("digest.test", logging.INFO, __file__, 1, message, args, None)
    assert _RedactSecrets(secrets).filter(record)
    return record.getMessage()


@pytest.mark.parametrize(
    ("secret", "message", "expected"),
    [
        pytest.param("so", "fetching source arxiv-cs", "fetching source arxiv-cs",
                     id="short-secret-inside-a-word"),
        pytest.param("so", "SMTP login as so refused", "SMTP login as *** refused",
                     id="short-secret-standing-alone"),
        pytest.param("so", "user=so; also=so", "user=***; also=***", id="between-punctuation"),
        pytest.param("https://hooks.example/T1/B1/tok3n",
                     "POST https://hooks.example/T1/B1/tok3n failed: 404",
                     "POST *** failed: 404", id="webhook-in-a-longer-message"),
        pytest.param("https://hooks.example/T1/B1/tok3n",
                     "url=<https://hooks.example/T1/B1/tok3n>", "url=<***>", id="webhook-quoted"),
        pytest.param("!hunter2", "password was!hunter2", "password was***",
                     id="an-edge-that-is-no-letter-needs-no-boundary"),
    ],
)
def test_logs_mask_whole_secrets_and_never_fragments_of_words(secret, message, expected):
    assert redacted([secret], message) == expected


def test_the_longer_secret_wins_where_two_overlap():
    assert redacted(["so", "so-long-password"], "login so / so-long-password") == \
        "login *** / ***"


# ------------------------------------------------------------------ renames: the store


def paper(key: str) -> Paper:
    return Paper(key=key, title=f"Paper {key}", url=f"https://arxiv.org/abs/{key}")


def digest_for(store: Store, channel: str, watchlist: str, keys: list[str]) -> int:
    papers = [paper(k) for k in keys]
    store.record_batch("s", papers, SourceState(), NOW)
    matches = tuple(Match(paper=p, watchlist=watchlist, score=1.0, reasons=()) for p in papers)
    digest_id = store.create_digest(Digest(watchlist=watchlist, channel=channel,
                                           matches=matches, created_at=NOW), {}, NOW)
    store.mark_sent(digest_id, NOW)
    return digest_id


def rows(store: Store, sql: str) -> list[tuple[object, ...]]:
    return [tuple(r) for r in store.db.execute(sql).fetchall()]


def test_rename_moves_a_channels_deliveries_and_keeps_one_where_both_names_have_one(tmp_path):
    with Store.open(tmp_path / "digest.db") as store:
        digest_for(store, "mail", "w", ["p1", "p2"])
        digest_for(store, "team-mail", "w", ["p2", "p3"])
        moved = store.rename("channel", "mail", "team-mail", NOW)
        assert moved >= 2
        assert rows(store, "SELECT channel, paper_key FROM deliveries ORDER BY paper_key") == [
            ("team-mail", "p1"), ("team-mail", "p2"), ("team-mail", "p3")]
        assert rows(store, "SELECT DISTINCT channel FROM digests") == [("team-mail",)]
        assert store.candidate_keys("team-mail", NOW.replace(year=2025)) == set()
        assert store.rename("channel", "mail", "team-mail", NOW) == 0


def test_rename_moves_a_watchlists_digests_ratings_and_model(tmp_path):
    with Store.open(tmp_path / "digest.db") as store:
        digest_for(store, "mail", "llm", ["p1", "p2"])
        store.rate(watchlist="llm", paper_key="p1", action="like", origin="web", now=NOW)
        store.rate(watchlist="llm", paper_key="p2", action="like", origin="web", now=NOW)
        store.rate(watchlist="efficient-llms", paper_key="p2", action="dislike", origin="web",
                   now=NOW)
        store.save_model("llm", "f", b"model", NOW)
        assert store.rename("watchlist", "llm", "efficient-llms", NOW) > 0
        assert store.ratings() == {"efficient-llms": {"p1": 1, "p2": -1}}
        assert rows(store, "SELECT DISTINCT watchlist FROM rating_events") == [
            ("efficient-llms",)]
        assert set(store.saved_models()) == {"efficient-llms"}
        assert rows(store, "SELECT DISTINCT watchlist FROM digests") == [("efficient-llms",)]


def test_every_table_filed_by_channel_or_watchlist_name_is_renamed(tmp_path):
    with Store.open(tmp_path / "digest.db") as store:
        for kind, tables in RENAMED_TABLES.items():
            holding = {name for name in store.db.table_names()
                       if kind in {c.name for c in store.db.table(name).columns}}
            assert holding == set(tables), kind


def test_rename_refuses_an_unknown_kind(tmp_path):
    with Store.open(tmp_path / "digest.db") as store, pytest.raises(ValueError):
        store.rename("source", "a", "b", NOW)


# ------------------------------------------------------------------ renames: end to end


def mail_config(tmp_path: Path, port: int, channel: str, *, previous: str = "",
                watchlist: str = "w", watchlist_previous: str = "") -> Path:
    path = tmp_path / "digest.toml"
    path.write_text(f"""version = 1
[store]
path = "{tmp_path / "digest.db"}"
[[sources]]
name = "arxiv-cs"
kind = "arxiv_rss"
categories = ["cs.CL", "cs.LG"]
url = "{SAMPLES / "arxiv_rss_cs.CL+cs.LG.xml"}"
[[watchlists]]
name = "{watchlist}"
keywords = ["LoRA"]
channels = ["{channel}"]
{watchlist_previous}
[channels.{channel}]
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
security = "none"
from = "Paper Digest <digest@example.org>"
to = ["team@example.org"]
timeout_seconds = 5
{previous}
""", encoding="utf-8")
    return path


@pytest.mark.integration
def test_a_renamed_channel_with_previous_names_sends_nothing_again(tmp_path, smtp_server,
                                                                   capsys):
    inbox, port = smtp_server
    assert main(["run", "--once", "--config", str(mail_config(tmp_path, port, "mail"))]) == 0
    assert len(inbox.messages) == 1
    capsys.readouterr()

    renamed = mail_config(tmp_path, port, "team-mail")
    assert main(["check", "--config", str(renamed)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^warning: the store holds \d+ papers delivered to channel 'mail', which "
                     r"is not configured; if you renamed it, add previous_names = \[\"mail\"\] "
                     r"to the renamed channel, or the next run sends those papers again$",
                     out, flags=re.MULTILINE), out

    renamed = mail_config(tmp_path, port, "team-mail", previous='previous_names = ["mail"]')
    assert main(["check", "--config", str(renamed)]) == 0
    assert "warning" not in capsys.readouterr().out
    assert main(["run", "--once", "--config", str(renamed)]) == 0
    captured = capsys.readouterr()
    assert len(inbox.messages) == 1  # nothing sent again
    assert "renamed channel mail to team-mail in the store" in captured.err
    assert "0 digests delivered" in captured.out


@pytest.mark.integration
def test_a_renamed_watchlist_keeps_its_ratings(tmp_path, smtp_server, capsys):
    inbox, port = smtp_server
    assert main(["run", "--once", "--config", str(mail_config(tmp_path, port, "mail"))]) == 0
    with Store.open(tmp_path / "digest.db") as store:
        store.rate(watchlist="w", paper_key="arxiv:2611.04001", action="like", origin="web",
                   now=NOW)
    capsys.readouterr()

    forgetful = mail_config(tmp_path, port, "mail", watchlist="lora")
    assert main(["check", "--config", str(forgetful)]) == 0
    assert ("warning: the store holds 1 rated papers of watchlist 'w', which is not configured"
            in capsys.readouterr().out)

    renamed = mail_config(tmp_path, port, "mail", watchlist="lora",
                          watchlist_previous='previous_names = ["w"]')
    assert main(["run", "--once", "--config", str(renamed)]) == 0
    with Store.open(tmp_path / "digest.db") as store:
        assert store.ratings() == {"lora": {"arxiv:2611.04001": 1}}
    assert len(inbox.messages) == 1


def test_check_on_a_config_without_a_store_creates_none(tmp_path, capsys):
    config = mail_config(tmp_path, 2525, "team-mail", previous='previous_names = ["mail"]')
    assert main(["check", "--config", str(config)]) == 0
    assert "warning" not in capsys.readouterr().out
    assert not (tmp_path / "digest.db").exists()


@pytest.mark.parametrize(
    ("previous", "key", "reason"),
    [
        pytest.param('previous_names = ["mail"]', "channels.mail.previous_names[0]",
                     "'mail' is the name of a configured channel; list only names no longer "
                     "in use", id="own-name"),
        pytest.param('previous_names = ["old mail"]', "channels.mail.previous_names[0]",
                     "must be letters, digits", id="not-a-name"),
    ],
)
def test_previous_names_must_be_free_names(previous, key, reason):
    problems = problems_of(BASE + previous + "\n")
    assert any(k == key and r.startswith(reason) for k, r in problems), problems


def test_a_previous_name_is_claimed_once():
    text = (BASE.replace('channels = ["mail"]', 'channels = ["mail", "chat"]')
            + 'previous_names = ["old"]\n[channels.chat]\nkind = "slack"\n'
              'webhook_url_env = "HOOK"\nprevious_names = ["old"]\n')
    assert ("channels.chat.previous_names[0]", "'old' is a previous name of channel 'mail' "
            "already") in problems_of(text)


def test_a_watchlist_may_not_take_a_current_watchlists_name():
    text = BASE + ('[[watchlists]]\nname = "v"\nkeywords = ["x"]\nchannels = ["mail"]\n'
                   'previous_names = ["w"]\n')
    assert ("watchlists[1].previous_names[0]", "'w' is the name of a configured watchlist; list "
            "only names no longer in use") in problems_of(text)


# ------------------------------------------------------------------ the web key


@pytest.mark.parametrize(("key", "expected"), [
    pytest.param(None, "environment variable DIGEST_WEB_SECRET is not set", id="unset"),
    pytest.param("short", "is 5 characters; use at least 32", id="too-short"),
    pytest.param("k" * 40, None, id="long-enough"),
])
def test_check_verifies_the_key_that_signs_rating_links(tmp_path, capsys, monkeypatch, key,
                                                        expected):
    path = tmp_path / "digest.toml"
    path.write_text(BASE.replace("version = 1\n", f'version = 1\n[store]\npath = '
                                 f'"{tmp_path / "d.db"}"\n[web]\nbase_url = '
                                 '"https://papers.example.org/digest"\n'))
    monkeypatch.delenv("DIGEST_WEB_SECRET", raising=False)
    if key is not None:
        monkeypatch.setenv("DIGEST_WEB_SECRET", key)
    code = main(["check", "--config", str(path)])
    captured = capsys.readouterr()
    if expected is None:
        assert code == 0, captured.err
    else:
        assert code == 2 and "web.secret_env: " in captured.err and expected in captured.err
