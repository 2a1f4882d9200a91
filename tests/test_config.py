"""Config: the example file is valid, and every problem is reported with its key path."""

from pathlib import Path

import pytest

from digest.config import Secret, load_settings, parse_settings
from digest.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

MINIMAL = """
version = 1
[[sources]]
name = "arxiv"
kind = "arxiv_rss"
categories = ["cs.CL"]
[[watchlists]]
name = "w"
keywords = ["LoRA"]
channels = ["mail"]
[channels.mail]
kind = "email"
from = "d@example.org"
to = ["t@example.org"]
"""


def problems_of(text: str, env: dict[str, str] | None = None) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, path=Path("x.toml"), env=env or {})
    return caught.value.problems


def test_example_config_is_valid_and_complete():
    env = {"DIGEST_SMTP_USER": "u", "DIGEST_SMTP_PASSWORD": "p",
           "DIGEST_SLACK_WEBHOOK": "https://hooks.slack.example/T/B/x",
           "DIGEST_DISCORD_WEBHOOK": "https://discord.example/api/webhooks/1/x",
           "DIGEST_TEAMS_WEBHOOK": "https://teams.example/workflows/1?sig=x",
           "DIGEST_WEBHOOK_URL": "https://hooks.example/x",
           "DIGEST_APPRISE_URLS": "ntfy://ntfy.example.org/papers"}
    settings = load_settings(ROOT / "config" / "digest.example.toml", env=env)
    from digest.sources import SOURCES

    assert sorted(s.kind for s in settings.sources) == sorted(SOURCES)
    from digest.deliver import CHANNELS

    assert sorted(c.kind for c in settings.channels.values()) == sorted(CHANNELS)
    assert settings.missing_secrets() == []


def test_demo_config_is_valid():
    settings = load_settings(ROOT / "config" / "demo.toml", env={})
    assert len(settings.watchlists) == 3


def test_minimal_config_gets_defaults():
    settings = parse_settings(MINIMAL, path=Path("x.toml"), env={})
    assert settings.store.path == Path("data/digest.db")
    assert settings.sources[0].options.announce_types == ("new", "cross")
    assert settings.http.arxiv_interval_seconds == 3.0
    assert settings.watchlists[0].max_papers == 25
    assert settings.channels["mail"].options.smtp_port == 587


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        pytest.param(('keywords = ["LoRA"]', 'keywords = ["LoRA", "  "]'),
                     "watchlists[0].keywords[1]", "empty phrase", id="empty-phrase"),
        pytest.param(('to = ["t@example.org"]', 'to = ["t@example.org"]\nsmtp_port = 70000'),
                     "channels.mail.smtp_port", "must be 1-65535", id="port-range"),
        pytest.param(('kind = "arxiv_rss"', 'kind = "arxiv-rss"'), "sources[0].kind",
                     "must be one of", id="unknown-source-kind"),
        pytest.param(('name = "w"', 'name = "w"\nkeyword = ["x"]'), "watchlists[0].keyword",
                     "unknown key (did you mean 'keywords'?)", id="typo-key"),
        pytest.param(('channels = ["mail"]', 'channels = ["mial"]'),
                     "watchlists[0].channels[0]", "no channel named 'mial'", id="bad-channel"),
        pytest.param(('categories = ["cs.CL"]', 'categories = ["computer science"]'),
                     "sources[0].categories[0]", "not an arXiv category", id="bad-category"),
        pytest.param(('name = "w"', 'name = "w"\nschedule = "every day"'),
                     "watchlists[0].schedule", "invalid cron expression", id="bad-cron"),
        pytest.param(('name = "w"', 'name = "w"\ntimezone = "Mars/Base"'),
                     "watchlists[0].timezone", "unknown IANA timezone", id="bad-timezone"),
        pytest.param(("version = 1", "version = 2"), "version", "must be 1", id="version"),
        pytest.param(('name = "w"', 'name = "w"\nmin_score = "high"'), "watchlists[0].min_score",
                     "must be a number, got a string", id="wrong-type"),
        pytest.param(('to = ["t@example.org"]', 'to = ["t@example.org"]\nsecurity = "tls"'),
                     "channels.mail.security", "must be one of starttls, ssl, none",
                     id="security"),
        pytest.param(('keywords = ["LoRA"]', 'keywords = [{ term = "LoRA", weight = 0 }]'),
                     "watchlists[0].keywords[0].weight", "must not be 0", id="zero-weight"),
        pytest.param(('name = "w"', 'name = "w"\nquery = "(LoRA OR adapters"'),
                     "watchlists[0].query", "unbalanced group: missing ')'", id="unbalanced"),
        pytest.param(('keywords = ["LoRA"]', 'keywords = ["venue:NeurIPS"]'),
                     "watchlists[0].keywords[0]", "unknown field 'venue'", id="unknown-field"),
        pytest.param(('keywords = ["LoRA"]', 'keywords = ["/llama-(2/"]'),
                     "watchlists[0].keywords[0]", "invalid regex", id="bad-regex"),
        pytest.param(('name = "w"', 'name = "w"\nquery = \'LoRA AND /(\\w+\\s?)+model/\''),
                     "watchlists[0].query", "repeats a group that itself repeats",
                     id="nested-repeat"),
        pytest.param(('keywords = ["LoRA"]', 'keywords = ["LoRA"]\nexclude = ["q*"]'),
                     "watchlists[0].exclude[0]", "at least 3 letters", id="short-prefix"),
        pytest.param(('keywords = ["LoRA"]', 'keywords = ["LoRA"]\nauthors = ["Wang"]'),
                     "watchlists[0].authors[0]", "write the full name", id="one-word-author"),
        pytest.param(('keywords = ["LoRA"]',
                      'keywords = ["LoRA"]\ncategory_boost = { "Computer Science" = 1 }'),
                     "watchlists[0].category_boost.Computer Science", "not an arXiv category",
                     id="bad-boost-category"),
        # TOML has nan and inf, and every range check passes nan: pacing off, a crash
        # writing the scores of a whole run, a keyword that matches nothing.
        pytest.param(('name = "w"', 'name = "w"\nupvotes_boost = nan'),
                     "watchlists[0].upvotes_boost", "must be a finite number, got nan",
                     id="nan-boost"),
        pytest.param(('keywords = ["LoRA"]', 'keywords = [{ term = "LoRA", weight = nan }]'),
                     "watchlists[0].keywords[0].weight", "must be a finite number, got nan",
                     id="nan-weight"),
        pytest.param(('keywords = ["LoRA"]',
                      'keywords = ["LoRA"]\ncategory_boost = { "cs.CL" = inf }'),
                     "watchlists[0].category_boost.cs.CL", "must be a finite number, got inf",
                     id="inf-category-boost"),
        pytest.param(("version = 1", "version = 1\n[http]\narxiv_interval_seconds = nan"),
                     "http.arxiv_interval_seconds", "must be a finite number, got nan",
                     id="nan-pacing"),
        pytest.param(('to = ["t@example.org"]', 'to = ["t@example.org"]\ntimeout_seconds = -inf'),
                     "channels.mail.timeout_seconds", "must be a finite number, got -inf",
                     id="inf-timeout"),
    ],
)
def test_each_problem_names_its_key_path(change, key, reason):
    old, new = change
    assert old in MINIMAL
    problems = problems_of(MINIMAL.replace(old, new, 1))
    assert any(k == key and reason in r for k, r in problems), problems


def test_all_problems_are_reported_at_once():
    text = MINIMAL.replace('keywords = ["LoRA"]', 'keywords = [""]').replace(
        'to = ["t@example.org"]', 'to = ["t@example.org"]\nsmtp_port = 0')
    keys = {k for k, _ in problems_of(text)}
    assert {"watchlists[0].keywords[0]", "channels.mail.smtp_port"} <= keys


def test_invalid_toml_is_a_config_error():
    assert "not valid TOML" in problems_of("version = = 1")[0][1]


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "nope.toml")


def test_secrets_come_from_the_environment_and_never_show():
    text = MINIMAL + 'username_env = "SMTP_USER"\npassword_env = "SMTP_PASS"\n'
    settings = parse_settings(text, path=Path("x.toml"),
                              env={"SMTP_USER": "me", "SMTP_PASS": "hunter2"})
    channel = settings.channels["mail"]
    assert isinstance(channel.options.password, Secret)
    assert channel.options.password.reveal() == "hunter2"
    assert "hunter2" not in repr(channel) and "hunter2" not in str(settings)


def test_missing_secret_is_listed_with_its_variable():
    text = MINIMAL + 'username_env = "SMTP_USER"\npassword_env = "SMTP_PASS"\n'
    settings = parse_settings(text, path=Path("x.toml"), env={"SMTP_USER": "me"})
    assert settings.missing_secrets() == [
        ("channels.mail", "environment variable SMTP_PASS is not set")]
