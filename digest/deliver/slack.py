"""Slack incoming webhooks: Block Kit messages, paced, Retry-After honoured.

Limits: about one message per second per hook; 50 blocks a message; 3000 characters a
section. Any 2xx means accepted, whatever the body; 404 and 410 mean the hook is gone for
good. Secret: the webhook URL itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx

from digest.config import ChannelSettings, HttpSettings
from digest.deliver.base import ChannelContext, Composed
from digest.errors import DeliveryError
from digest.http import Pacer, make_client, parse_retry_after, retry_wait
from digest.models import Digest
from digest.render import slack_messages

log = logging.getLogger(__name__)

MESSAGE_INTERVAL_SECONDS = 1.0
GONE_STATUSES = frozenset({404, 410})
REJECTED_STATUSES = frozenset({400, 401, 403})


class SlackChannel:
    kind = "slack"
    secrets = ("webhook_url_env",)

    def __init__(
        self,
        settings: ChannelSettings,
        *,
        http: HttpSettings,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        interval: float = MESSAGE_INTERVAL_SECONDS,
    ) -> None:
        self.settings = settings
        self.http = http
        self._transport = transport
        self._sleep = sleep or time.sleep
        self._pacer = Pacer(interval, sleep=self._sleep)
        self._client: httpx.Client | None = None

    @classmethod
    def create(cls, settings: ChannelSettings, context: ChannelContext) -> SlackChannel:
        return cls(settings, http=context.http, transport=context.transport,
                   sleep=context.sleep)

    def compose(self, digest: Digest) -> Composed:
        return Composed(payload={"kind": self.kind, "messages": slack_messages(digest)},
                        digest=digest)

    def send(self, payload: dict[str, Any], *, parts_sent: int = 0,
             on_part_sent: Callable[[int], None] = lambda n: None) -> None:
        if self.settings.webhook_url is None:
            raise DeliveryError(f"environment variable {self.settings.webhook_url_env} is not "
                                "set", channel=self.settings.name)
        if self._client is None:
            self._client = make_client(self.http, transport=self._transport)
        messages = payload["messages"]
        for number in range(parts_sent, len(messages)):
            self._post(messages[number], number + 1, len(messages))
            on_part_sent(number + 1)

    def _post(self, message: dict[str, Any], number: int, total: int) -> None:
        assert self._client is not None and self.settings.webhook_url is not None
        name = self.settings.name
        attempts = self.http.max_retries + 1
        problem = ""
        for attempt in range(1, attempts + 1):
            self._pacer.wait()
            wait: float | None = None
            try:
                with self._client.stream("POST", self.settings.webhook_url.reveal(),
                                         json=message,
                                         timeout=self.settings.timeout_seconds) as response:
                    # The status alone says the message was accepted; a body that cannot be
                    # decoded must not make it count as unsent and be posted again.
                    if response.is_success:
                        return
                    # A server may quote the request URL back, and the URL is the secret.
                    body = _answer_text(response).replace(
                        self.settings.webhook_url.reveal(), f"${self.settings.webhook_url_env}")
            except httpx.TimeoutException:
                problem = f"timed out after {self.settings.timeout_seconds:g} s"
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__} talking to the webhook"
            except httpx.TooManyRedirects:
                problem = (f"too many redirects (more than {self._client.max_redirects}), "
                           "likely a redirect loop")
                break  # the same loop again within the run would not help
            else:
                problem = f"HTTP {response.status_code} {body}".strip()
                if response.status_code in GONE_STATUSES:
                    raise DeliveryError(f"Slack webhook is gone ({problem}); create a new "
                                        f"hook and set ${self.settings.webhook_url_env}",
                                        channel=name, permanent=True)
                if response.status_code in REJECTED_STATUSES:
                    raise DeliveryError(f"Slack rejected message {number}/{total} ({problem})",
                                        channel=name, permanent=True)
                if response.status_code == 429:
                    wait = parse_retry_after(response.headers.get("Retry-After")) or 1.0
            if attempt == attempts:
                break
            wait = retry_wait(self.http, attempt, wait)
            if wait > self.http.max_retry_after_seconds:
                problem += f" (asked to wait {wait:g} s)"
                break
            log.info("channel=%s message=%d/%d retry attempt=%d wait=%.1fs problem=%r", name,
                     number, total, attempt, wait, problem)
            self._sleep(wait)
        raise DeliveryError(f"Slack did not accept message {number}/{total}: {problem}",
                            channel=name)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _answer_text(response: httpx.Response) -> str:
    """The start of an error answer's body as text; "" when the body cannot be read."""
    head = b""
    try:
        for chunk in response.iter_bytes():
            head += chunk
            if len(head) >= 1024:
                break
    except (httpx.DecodingError, httpx.TransportError):
        pass  # the status says enough
    return head.decode("utf-8", errors="replace")[:200].strip()
