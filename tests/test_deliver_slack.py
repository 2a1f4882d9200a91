"""Slack channel: pacing, Retry-After on 429, gone hooks, resuming multi-part digests."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from digest.config import ChannelSettings, HttpSettings, Secret
from digest.deliver.slack import SlackChannel, SlackOptions
from digest.errors import DeliveryError
from digest.models import Digest, Match, Paper, Reason

HOOK = "https://hooks.slack.example/services/T000/B000/sekrit-token"
WHEN = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


def channel_with(handler, sleeps: list[float] | None = None, **http) -> SlackChannel:
    sleeps = sleeps if sleeps is not None else []
    settings = ChannelSettings(name="team-slack", kind="slack", options=SlackOptions(
        webhook_url_env="HOOK", webhook_url=Secret(HOOK, "HOOK")))
    return SlackChannel(settings, http=HttpSettings(**{"retry_backoff_seconds": 1.0, **http}),
                        transport=httpx.MockTransport(handler), sleep=sleeps.append)


def digest(count: int) -> Digest:
    matches = tuple(Match(Paper(key=f"arxiv:{i}", title=f"Paper {i}", url="https://a/b"), "w",
                          1.0, (Reason("term", "x", "title", 1.0),)) for i in range(count))
    return Digest("w", "team-slack", matches, WHEN)


def test_posts_each_message_paced_one_per_second():
    bodies, sleeps = [], []

    def handler(request):
        assert str(request.url) == HOOK
        bodies.append(json.loads(request.content))
        return httpx.Response(200, text="ok")

    channel = channel_with(handler, sleeps)
    payload = channel.compose(digest(60)).payload
    parts: list[int] = []
    channel.send(payload, on_part_sent=parts.append)
    assert len(bodies) == 3 and parts == [1, 2, 3]
    assert bodies == payload["messages"]
    assert len(sleeps) == 2 and all(0 < s <= 1.0 for s in sleeps)


def test_429_waits_for_retry_after_then_succeeds():
    answers = iter([httpx.Response(429, headers={"Retry-After": "4"}, text="rate_limited"),
                    httpx.Response(200, text="ok")])
    sleeps: list[float] = []
    channel = channel_with(lambda r: next(answers), sleeps)
    channel.send(channel.compose(digest(1)).payload)
    assert 4.0 in sleeps


@pytest.mark.parametrize("status", [404, 410])
def test_a_gone_hook_is_permanent_and_not_retried(status):
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(status, text="no_service")

    channel = channel_with(handler)
    with pytest.raises(DeliveryError, match="gone") as caught:
        channel.send(channel.compose(digest(1)).payload)
    assert caught.value.permanent and len(calls) == 1
    assert "sekrit" not in str(caught.value)


@pytest.mark.parametrize("status", [400, 403])
def test_a_rejected_payload_is_permanent(status):
    channel = channel_with(lambda r: httpx.Response(status, text="invalid_payload"))
    with pytest.raises(DeliveryError, match="Slack rejected message 1/1") as caught:
        channel.send(channel.compose(digest(1)).payload)
    assert caught.value.permanent


def test_server_errors_are_retried_then_temporary():
    calls = []

    def handler(request):
        calls.append(1)
        return httpx.Response(500, text="oops")

    channel = channel_with(handler, max_retries=2)
    with pytest.raises(DeliveryError, match="HTTP 500") as caught:
        channel.send(channel.compose(digest(1)).payload)
    assert not caught.value.permanent and len(calls) == 3


def test_timeouts_are_temporary_and_keep_the_url_secret():
    calls = []

    def handler(request):
        calls.append(request)
        raise httpx.ReadTimeout("slow", request=request)

    channel = channel_with(handler, max_retries=2)
    with pytest.raises(DeliveryError, match="did not answer message 1/1 within") as caught:
        channel.send(channel.compose(digest(1)).payload)
    assert not caught.value.permanent and "sekrit" not in str(caught.value)
    # The hook may have taken it: no copy is posted in the same run (the next run resends).
    assert len(calls) == 1


def test_a_connection_that_times_out_is_tried_again_at_once():
    calls = []

    def handler(request):
        calls.append(request)
        if len(calls) == 1:
            raise httpx.ConnectTimeout("no route", request=request)
        return httpx.Response(200, text="ok")

    channel = channel_with(handler, max_retries=2)
    channel.send(channel.compose(digest(1)).payload)  # nothing was sent the first time
    assert len(calls) == 2


def test_resuming_skips_the_parts_already_accepted():
    bodies = []

    def handler(request):
        bodies.append(json.loads(request.content))
        return httpx.Response(200, text="ok")

    channel = channel_with(handler)
    payload = channel.compose(digest(60)).payload
    channel.send(payload, parts_sent=2)
    assert bodies == payload["messages"][2:]


def test_a_missing_webhook_secret_is_reported():
    settings = ChannelSettings(name="s", kind="slack",
                               options=SlackOptions(webhook_url_env="HOOK"))
    channel = SlackChannel(settings, http=HttpSettings())
    with pytest.raises(DeliveryError, match="HOOK is not set"):
        channel.send(channel.compose(digest(1)).payload)


@pytest.mark.parametrize("status", [404, 400, 500])
def test_an_error_answer_that_quotes_the_hook_never_shows_it(status):
    def handler(request):
        return httpx.Response(status, text=f"no hook at {request.url} (see docs)")

    channel = channel_with(handler, max_retries=0)
    with pytest.raises(DeliveryError) as caught:
        channel.send(channel.compose(digest(1)).payload)
    assert "sekrit" not in str(caught.value) and "$HOOK" in str(caught.value)
