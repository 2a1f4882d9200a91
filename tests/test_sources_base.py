"""What every source shares: dates, text clean-up, safe XML."""

import pytest

from digest.errors import ParseError
from digest.sources.base import clean_text, parse_timestamp, parse_xml, strip_html


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2026-11-19T01:12:00.000Z", "2026-11-19T01:12:00+00:00"),
        ("2026-04-29T17:59:01Z", "2026-04-29T17:59:01+00:00"),
        ("Mon, 28 Apr 2025 00:00:00 -0400", "2025-04-28T00:00:00-04:00"),
        ("2026-11-19", "2026-11-19T00:00:00+00:00"),
    ],
)
def test_parse_timestamp_reads_feed_dates(text, iso):
    assert parse_timestamp(text).isoformat() == iso


@pytest.mark.parametrize("text", ["", None, "yesterday", "2026-13-45"])
def test_parse_timestamp_returns_none_for_nonsense(text):
    assert parse_timestamp(text) is None


def test_text_helpers():
    assert clean_text("  a\n\tb  ") == "a b"
    assert strip_html("<p>We <b>release</b> &amp; test.</p>") == "We release & test."


def test_external_entities_are_refused_before_any_file_is_read():
    with pytest.raises(ParseError, match="refused"):
        parse_xml(b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                  b"<r>&x;</r>", what="test")
