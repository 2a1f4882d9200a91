"""Sources with headers of their own, and headers whose values are secrets."""

from pathlib import Path

import pytest
from conftest import Route

from digest.config import parse_settings
from digest.errors import ConfigError
from digest.http import Fetcher
from digest.sources import build_source
from digest.sources.base import SourceState

FEED = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>
<item><title>A paper on LoRA</title><link>https://lab.example/p/1</link></item>
</channel></rss>"""


def config(url: str, extra: str) -> str:
    return f"""
version = 1
[[sources]]
name = "lab"
kind = "feed"
url = "{url}"
{extra}
[[watchlists]]
name = "w"
keywords = ["LoRA"]
channels = ["mail"]
[channels.mail]
kind = "email"
from = "d@example.org"
to = ["t@example.org"]
"""


def test_a_source_sends_its_headers_and_secret_headers(http_server):
    url = http_server.route("/feed", Route(body=FEED))
    text = config(url, 'headers = { "Accept-Language" = "en" }\n'
                       'secret_headers = { "Authorization" = "LAB_TOKEN" }')
    settings = parse_settings(text, path=Path("x.toml"), env={"LAB_TOKEN": "Bearer s3cret"})
    assert settings.missing_secrets() == []
    assert "s3cret" not in repr(settings)
    with Fetcher(settings.http) as fetcher:
        batch = build_source(settings.sources[0]).fetch(fetcher, SourceState())
    assert [p.title for p in batch.papers] == ["A paper on LoRA"]
    [hit] = http_server.hits("/feed")
    assert hit.headers["Accept-Language"] == "en"
    assert hit.headers["Authorization"] == "Bearer s3cret"


def test_an_unset_secret_header_is_reported_by_name_only():
    text = config("https://lab.example/feed", 'secret_headers = { "X-Api-Key" = "LAB_KEY" }')
    settings = parse_settings(text, path=Path("x.toml"), env={})
    assert settings.missing_secrets() == [("sources[0]",
                                           "environment variable LAB_KEY is not set")]


@pytest.mark.parametrize("extra, where, reason", [
    ('headers = { "Bad Header" = "x" }', "sources[0].headers.Bad Header",
     "is not an HTTP header name"),
    ('headers = { "X-Ok" = "a\\nb" }', "sources[0].headers.X-Ok", "must not hold a line break"),
    ('headers = { "Host" = "evil.example" }', "sources[0].headers.Host",
     "is set by the HTTP client; it cannot be configured"),
    ('headers = { "X-Num" = 3 }', "sources[0].headers.X-Num", "must be a string"),
    ('secret_headers = { "Authorization" = "not a name" }',
     "sources[0].secret_headers.Authorization", "must be an environment variable name"),
    ('headers = "x"', "sources[0].headers", "must be a table, got a string"),
], ids=["name", "line-break", "host", "type", "env-name", "not-a-table"])
def test_bad_headers_are_named_by_their_key_path(extra, where, reason):
    with pytest.raises(ConfigError) as caught:
        parse_settings(config("https://lab.example/feed", extra), path=Path("x.toml"), env={})
    assert (where, reason) in caught.value.problems
