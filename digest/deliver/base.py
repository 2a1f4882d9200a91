"""What every channel shares."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

import httpx

from digest import options as opt
from digest.config import ChannelSettings, HttpSettings, Secret
from digest.errors import DeliveryError
from digest.http import GaveUp, Pacer, TryAgain, make_client, parse_retry_after, with_retries
from digest.models import Digest
from digest.render import Renderer


@dataclass(frozen=True)
class ChannelContext:
    """What a run hands every channel it builds; each kind takes what it needs."""

    http: HttpSettings
    renderer: Renderer
    transport: httpx.BaseTransport | None = None  # HTTP seam (webhooks)
    smtp_factory: Callable[..., Any] | None = None  # SMTP seam
    sleep: Callable[[float], None] | None = None  # clock seam for pacing and Retry-After
    web_base_url: str | None = None  # [web] base_url: where the web app is reached
    # What the channels of one run share, by kind (the email kind's SMTP sessions).
    shared: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class Composed:
    """A payload ready to record and send, and the digest it carries.

    The digest may hold fewer papers than were matched when the channel's size limit
    left no room; the rest stay undelivered and wait for the next digest.
    """

    payload: dict[str, Any]
    digest: Digest
    # The payload as the store keeps it (``pack_payload``), where a worker packed it
    # already; None: the store packs it.
    packed: bytes | None = None


def settings_fingerprint(settings: ChannelSettings) -> str:
    """A short digest of where and how a channel delivers, secrets included (hashed).

    A digest that failed for good under one fingerprint is tried again once the user has
    changed the channel (a new address, host or webhook), without a manual requeue.
    """
    options = settings.options
    parts = [f"kind={settings.kind!r}"]
    for item in dataclasses.fields(options):
        if item.name in options.COSMETIC:
            continue
        value = getattr(options, item.name)
        if isinstance(value, Secret):
            value = hashlib.sha256(value.reveal().encode()).hexdigest()
        parts.append(f"{item.name}={value!r}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------ webhooks


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def webhook_url_problems(value: str, *, https_only: bool) -> list[str]:
    """Why a hook URL cannot be posted to, never quoting it ($ stands for its variable).

    With ``https_only``, plain http is allowed to this machine alone: the URL is the
    hook's password, and http shows it to every network on the way.
    """
    if opt.url_problem(value, local=False):
        return ["$ is not a valid webhook URL (https://host/path, port 1-65535)"]
    parts = urlsplit(value)
    if https_only and parts.scheme.lower() != "https" and not is_loopback(parts.hostname or ""):
        return ["$ must be an https:// URL (plain http only to this machine)"]
    return []


@dataclass(frozen=True)
class WebhookUrlOptions(opt.KindOptions):
    """A channel whose only secret is its hook's URL, named by ``webhook_url_env``."""

    KEYS: ClassVar[tuple[str, ...]] = ("webhook_url_env",)
    HTTPS_ONLY: ClassVar[bool] = True

    webhook_url_env: str = ""
    webhook_url: Secret | None = None  # resolved from the environment when set

    @classmethod
    def read(cls, reader: opt.OptionReader, table: Mapping[str, Any], path: str) -> Any:
        env, url = reader.secret(table, "webhook_url_env", path, required=True)
        return cls(webhook_url_env=env or "", webhook_url=url,
                   **cls.read_own(reader, table, path))

    @classmethod
    def read_own(cls, reader: opt.OptionReader, table: Mapping[str, Any], path: str
                 ) -> dict[str, Any]:
        """The kind's keys beyond the URL, for a subclass that has some."""
        return {}

    def url_problems(self, url: str) -> list[str]:
        return webhook_url_problems(url, https_only=self.HTTPS_ONLY)

    def secrets(self) -> dict[str, Secret | None]:
        return {self.webhook_url_env: self.webhook_url}

    def secret_problems(self) -> list[str]:
        url = self.webhook_url.reveal() if self.webhook_url else ""
        return [problem.replace("$", f"${self.webhook_url_env}", 1)
                for problem in self.url_problems(url)]

GONE_STATUSES = frozenset({404, 410})  # the hook was deleted: only a new URL helps
REJECTED_STATUSES = frozenset({400, 401, 403, 413, 422})  # the same message fails again
MOVED_STATUSES = frozenset({301, 308})


class WebhookPoster:
    """Posts messages to one secret webhook URL, for every webhook-based channel.

    Paced per hook, retried through ``digest.http.with_retries``, redirects never followed,
    and the URL (the secret) replaced by its variable's name in anything shown.
    """

    def __init__(
        self,
        *,
        channel: str,
        service: str,
        url: Secret | None,
        url_env: str | None,
        http: HttpSettings,
        timeout: float,
        interval: float,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        asked_wait: Callable[[httpx.Response, str], float | None] | None = None,
    ) -> None:
        self.channel = channel
        self.service = service
        self.url = url
        self.url_env = url_env
        self.http = http
        self.timeout = timeout
        self._transport = transport
        self._sleep = sleep or time.sleep
        self._pacer = Pacer(interval, sleep=self._sleep)
        self._asked_wait = asked_wait or (lambda response, body: None)
        self._client: httpx.Client | None = None

    def _mask(self, text: str) -> str:
        """The URL as written and as the client sends it (a default ":443" dropped) both
        become ``$VARIABLE``: an answer may quote either."""
        if self.url is None or not self.url.reveal():
            return text
        written = self.url.reveal()
        try:
            sent = str(httpx.URL(written))
        except httpx.InvalidURL:
            sent = written
        for form in sorted({written, sent}, key=len, reverse=True):
            text = text.replace(form, f"${self.url_env}")
        return text

    def post(self, body: bytes, *, number: int, total: int,
             headers: Mapping[str, str] | None = None) -> None:
        """Send one message; return once the hook accepted it, else raise DeliveryError."""
        if self.url is None:
            raise DeliveryError(f"environment variable {self.url_env} is not set",
                                channel=self.channel)
        if self._client is None:
            self._client = make_client(self.http, transport=self._transport,
                                       follow_redirects=False)
        client, url = self._client, self.url.reveal()
        sent_headers = {"Content-Type": "application/json", **(headers or {})}

        def attempt(tried: int) -> None:
            try:
                with client.stream("POST", url, content=body, headers=sent_headers,
                                   timeout=self.timeout) as response:
                    # The status alone says the message was accepted; a body that cannot be
                    # decoded must not make it count as unsent and be posted again.
                    if response.is_success:
                        return
                    answer = self._mask(_answer_text(response))
                    status = response.status_code
            except (httpx.ConnectTimeout, httpx.PoolTimeout) as exc:  # nothing was sent
                raise TryAgain(f"timed out after {self.timeout:g} s") from exc
            except httpx.TimeoutException as exc:
                # The message went, or part of it: the hook may have taken it and be slow to
                # answer. Posting it again now would be a copy a try; the next run sends it
                # again once, as it does for any message left unconfirmed.
                raise DeliveryError(
                    f"{self.service} did not answer message {number}/{total} within "
                    f"{self.timeout:g} s; it may have arrived, and is sent again next run",
                    channel=self.channel) from exc
            except httpx.TransportError as exc:
                raise TryAgain(f"{type(exc).__name__} talking to the webhook") from exc
            problem = f"HTTP {status} {answer}".strip()
            env = f"${self.url_env}"
            if status in GONE_STATUSES:
                raise DeliveryError(f"{self.service} webhook is gone ({problem}); create a new "
                                    f"hook and set {env}", channel=self.channel, permanent=True)
            if status in REJECTED_STATUSES:
                raise DeliveryError(f"{self.service} rejected message {number}/{total} "
                                    f"({problem})", channel=self.channel, permanent=True)
            if response.is_redirect:
                # Following would turn the POST into a GET and lose the message.
                raise DeliveryError(
                    f"{self.service} webhook answered HTTP {status} with a redirect; set {env} "
                    "to the address it redirects to", channel=self.channel,
                    permanent=status in MOVED_STATUSES)
            if status == 429 or status >= 500:
                wait = self._asked_wait(response, answer)
                if wait is None:
                    wait = parse_retry_after(response.headers.get("Retry-After"))
                if status == 429 and wait is None:
                    wait = 1.0
                raise TryAgain(problem, wait=wait, status=status)
            raise DeliveryError(f"{self.service} did not accept message {number}/{total}: "
                                f"{problem}", channel=self.channel, permanent=True)

        try:
            with_retries(attempt, settings=self.http, sleep=self._sleep, pacer=self._pacer,
                         what=f"channel={self.channel} message={number}/{total}")
        except GaveUp as exc:
            raise DeliveryError(f"{self.service} did not accept message {number}/{total}: "
                                f"{exc.problem}", channel=self.channel) from None

    def post_each(self, bodies: list[bytes], *, parts_sent: int,
                  on_part_sent: Callable[[int], None],
                  headers: Mapping[str, str] | None = None) -> None:
        """Send a digest's messages in order, resuming after the ``parts_sent`` accepted."""
        for number in range(parts_sent, len(bodies)):
            self.post(bodies[number], number=number + 1, total=len(bodies), headers=headers)
            on_part_sent(number + 1)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class HookChannel:
    """What every channel posting to one webhook URL shares: its options read from its
    table, a poster paced for its service, and how it is made and closed. A kind names its
    ``SERVICE`` and pacing (``INTERVAL``), and may say where its URL comes from
    (``hook_url``) and what else its poster needs (``poster_options``)."""

    kind: str
    Options: ClassVar[type[opt.KindOptions]]
    SERVICE: ClassVar[str]
    INTERVAL: ClassVar[float] = 1.0

    def __init__(
        self,
        settings: ChannelSettings,
        *,
        http: HttpSettings,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        interval: float | None = None,
    ) -> None:
        self.settings = settings
        self.options: Any = opt.options_of(settings, self.Options)
        url, url_env = self.hook_url()
        self._poster = WebhookPoster(
            channel=settings.name, service=self.SERVICE, url=url, url_env=url_env, http=http,
            timeout=settings.timeout_seconds,
            interval=self.INTERVAL if interval is None else interval, transport=transport,
            sleep=sleep, **self.poster_options())

    def hook_url(self) -> tuple[Secret | None, str | None]:
        return self.options.webhook_url, self.options.webhook_url_env

    def poster_options(self) -> dict[str, Any]:
        return {}

    @classmethod
    def create(cls, settings: ChannelSettings, context: ChannelContext) -> Self:
        return cls(settings, http=context.http, transport=context.transport,
                   sleep=context.sleep)

    def close(self) -> None:
        self._poster.close()


def numbered_files(bodies: list[bytes]) -> dict[str, bytes]:
    """Request bodies as outbox files: ".json" for one, ".1.json", ".2.json", ... for more."""
    if len(bodies) == 1:
        return {".json": bodies[0]}
    return {f".{number}.json": body for number, body in enumerate(bodies, start=1)}


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
