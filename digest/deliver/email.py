"""Email over SMTP: multipart text + HTML; channels on one server share its connection.

Options: the SMTP server, its security, ``from``, ``to``, the subject line, a
List-Unsubscribe target. Limits: the HTML part stays under 100 KB as sent, where Gmail
starts clipping a message (the plain-text part is not shown there and does not count).
Secrets: the SMTP login comes from the environment variables the channel names.
"""

from __future__ import annotations

import binascii
import email
import logging
import random
import smtplib
import socket
import ssl
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

from digest import options as opt
from digest.config import ChannelSettings
from digest.deliver.base import ChannelContext, Composed
from digest.errors import DeliveryError
from digest.models import Digest
from digest.render import Renderer, digest_subject, heartbeat_subject

log = logging.getLogger(__name__)

MAX_HTML_BYTES = 100_000

# address -> (permanent, the server's words), for recipients refused while others accepted
Refused = dict[str, tuple[bool, str]]
# address -> (sent | failed_temporary | failed_permanent | dropped, error)
RecipientOutcome = dict[str, tuple[str, str | None]]


def _addr_key(address: str) -> str:
    return parseaddr(address)[1].lower()


def _header_text(text: str) -> str:
    """Header values never carry line breaks, whatever a feed or watchlist name holds."""
    return " ".join(text.split())


@dataclass(frozen=True)
class EmailOptions(opt.KindOptions):
    KEYS: ClassVar[tuple[str, ...]] = (
        "smtp_host", "smtp_port", "security", "ca_file", "username_env", "password_env",
        "from", "to", "subject", "unsubscribe")
    COSMETIC: ClassVar[tuple[str, ...]] = ("subject",)

    smtp_host: str = "localhost"
    smtp_port: int = 587
    security: str = "starttls"
    ca_file: Path | None = None  # a private CA to trust, for an internal relay
    username_env: str | None = None
    password_env: str | None = None
    sender: str = ""
    to: tuple[str, ...] = ()
    # {papers} is "1 new paper" / "8 new papers"; {date} is "Tue 24 Nov" in the
    # watchlist's timezone; {count} and {iso_date} ("2026-11-24") are there too.
    subject: str = "{watchlist}: {papers}, {date}"
    unsubscribe: str | None = None
    username: opt.Secret | None = None  # resolved from the environment when set
    password: opt.Secret | None = None

    @classmethod
    def read(cls, reader: opt.OptionReader, table: Mapping[str, Any], path: str
             ) -> EmailOptions:
        d = cls()
        username_env, username = reader.secret(table, "username_env", path)
        password_env, password = reader.secret(table, "password_env", path)
        if (username_env is None) != (password_env is None):
            reader.problem(path, "set both username_env and password_env, or neither")
        for key in ("from", "to"):
            if key not in table:
                reader.problem(f"{path}.{key}", "is required for kind email")
        ca_file = reader.value(table, "ca_file", path, str, None, _ca_file)
        return cls(
            smtp_host=reader.value(table, "smtp_host", path, str, d.smtp_host, _smtp_host),
            smtp_port=reader.value(table, "smtp_port", path, int, d.smtp_port,
                                   opt.in_range(1, 65535)),
            security=reader.value(table, "security", path, str, d.security,
                                  opt.one_of(("starttls", "ssl", "none"))),
            ca_file=Path(ca_file).expanduser() if ca_file else None,
            username_env=username_env,
            password_env=password_env,
            sender=reader.value(table, "from", path, str, "", opt.address),
            to=_read_recipients(reader, table, path),
            subject=reader.value(table, "subject", path, str, d.subject, _subject),
            unsubscribe=reader.value(table, "unsubscribe", path, str, None, _unsubscribe),
            username=username,
            password=password,
        )

    def local_problems(self) -> list[tuple[str, str]]:
        if self.ca_file and not self.ca_file.is_file():
            return [("ca_file", f"no such file: {self.ca_file}")]
        return []

    def secrets(self) -> dict[str, opt.Secret | None]:
        needed: dict[str, opt.Secret | None] = {}
        if self.username_env:
            needed[self.username_env] = self.username
        if self.password_env:
            needed[self.password_env] = self.password
        return needed


def _read_recipients(reader: opt.OptionReader, table: Mapping[str, Any], path: str
                     ) -> tuple[str, ...]:
    to = reader.strings(table, "to", path, check=opt.address, empty="empty address")
    # An empty list would record digests that no one can receive, and block the channel.
    if isinstance(table.get("to"), list) and not table["to"]:
        reader.problem(f"{path}.to", "list at least one recipient, like "
                                     '["ml-team@example.org"]')
    return to


def _ca_file(value: str) -> str | None:
    return opt.local_path(value) if value else None  # empty: no private CA, as unset


def _smtp_host(value: str) -> str | None:
    if not value.strip() or opt.URL_JUNK.search(value):
        return "must be a host name or address, like smtp.example.org"
    if value.count(":") == 1:  # more than one is an IPv6 address
        return "must be the host alone; write its port as smtp_port"
    return None


def _subject(value: str) -> str | None:
    try:
        value.format(watchlist="w", count=1, papers="1 new paper", date="d", iso_date="i")
    except (KeyError, IndexError, ValueError) as exc:
        return (f"unknown placeholder {exc}; use {{watchlist}}, {{papers}}, {{count}}, "
                "{date} or {iso_date}")
    return None


def _unsubscribe(value: str) -> str | None:
    """List-Unsubscribe holds a URL: mailto:, or an http(s) address readers can open."""
    if value.lower().startswith("mailto:"):
        return None if opt.address(value[7:].split("?", 1)[0]) is None else (
            "the mailto: address is not an email address like list-admin@example.org")
    if not value.lower().startswith(("http://", "https://")):
        return "must be a mailto: or https:// URL, like mailto:list-admin@example.org"
    return opt.url_problem(value, local=False)


SmtpKey = tuple[Any, ...]


class SmtpConnections:
    """The SMTP sessions of one run, shared by every channel that reaches the same server
    with the same security and login: a thousand channels on one relay open one session."""

    def __init__(self) -> None:
        self._open: dict[SmtpKey, smtplib.SMTP] = {}
        self._users: dict[SmtpKey, int] = {}

    def join(self, key: SmtpKey) -> None:
        self._users[key] = self._users.get(key, 0) + 1

    def get(self, key: SmtpKey, connect: Callable[[], smtplib.SMTP]) -> tuple[smtplib.SMTP, bool]:
        """The open session for ``key`` and False, or a new one and True."""
        if key in self._open:
            return self._open[key], False
        self._open[key] = connect()
        return self._open[key], True

    def discard(self, key: SmtpKey) -> None:
        """Forget a session that failed; the next message opens a new one."""
        smtp = self._open.pop(key, None)
        if smtp is not None:
            try:
                smtp.close()
            except OSError:
                pass

    def leave(self, key: SmtpKey) -> None:
        """One channel is done; the last one to leave says QUIT."""
        self._users[key] = self._users.get(key, 1) - 1
        if self._users[key] > 0:
            return
        smtp = self._open.get(key)
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
        self.discard(key)


class EmailChannel:
    kind = "email"
    Options: ClassVar[type[opt.KindOptions]] = EmailOptions
    # A digest is one message and needs nothing of the run while it travels, so the run
    # composes the next one meanwhile (the outcome is still recorded before the next send).
    sends_in_background: ClassVar[bool] = True
    # Composing needs only the digest and the channel's settings: a run with many digests
    # has worker processes compose them (digest/composer.py).
    composes_apart: ClassVar[bool] = True

    def __init__(
        self,
        settings: ChannelSettings,
        *,
        renderer: Renderer,
        smtp_factory: Callable[..., smtplib.SMTP] | None = None,
        connections: SmtpConnections | None = None,
    ) -> None:
        self.settings = settings
        self.options: EmailOptions = opt.options_of(settings, EmailOptions)
        self.renderer = renderer
        self._smtp_factory = smtp_factory
        self._connections = connections if connections is not None else SmtpConnections()
        o = self.options
        self._key: SmtpKey = (id(smtp_factory), o.smtp_host.lower(), o.smtp_port, o.security,
                              o.ca_file, o.username, o.password)
        self._joined = False
        self._addresses: str | None = None  # the From and To lines, once made
        self._domain = ""

    @classmethod
    def create(cls, settings: ChannelSettings, context: ChannelContext) -> EmailChannel:
        shared = context.shared.setdefault("smtp", SmtpConnections())
        return cls(settings, renderer=context.renderer, smtp_factory=context.smtp_factory,
                   connections=shared)

    # ---------------------------------------------------------------- compose

    def subject(self, digest: Digest) -> str:
        if digest.heartbeat is not None:
            return _header_text(heartbeat_subject(digest))
        return _header_text(digest_subject(self.options.subject, digest))

    def compose(self, digest: Digest) -> Composed:
        if digest.matched is None:  # what the email leaves out is counted against this
            digest = replace(digest, matched=len(digest.matches))
        while True:
            subject = self.subject(digest)
            text, html = self.renderer.email(digest, subject=subject)
            message = self._message(digest, subject, text, html)
            raw = message.as_string()
            size = message.html_bytes()
            count = len(digest.matches)
            if size <= MAX_HTML_BYTES or count <= 1:
                break
            # Shrink in proportion to the excess, then one by one; the papers left out
            # stay candidates for the next digest, and the email says how many they are.
            keep = max(1, min(count - 1, int(count * MAX_HTML_BYTES / size)))
            log.info("email of %d papers has %d bytes of HTML, over %d; keeping the top %d",
                     count, size, MAX_HTML_BYTES, keep)
            digest = replace(digest, matches=digest.matches[:keep])
        payload = {
            "kind": self.kind,
            "subject": subject,
            "from": self.options.sender,
            "to": list(self.options.to),
            "message": raw,
        }
        return Composed(payload=payload, digest=digest)

    @staticmethod
    def outbox_files(payload: dict[str, Any]) -> dict[str, bytes]:
        """The message as the server would receive it, and its HTML part to open."""
        raw = payload["message"]
        # The HTML part read back from the message: the payload keeps the message alone,
        # since a second copy of the HTML was a third of what the store grew by.
        part = email.message_from_string(raw, policy=SMTP_POLICY).get_body(("html",))
        html = part.get_content() if isinstance(part, EmailMessage) else ""
        return {".eml": raw.encode("utf-8", "surrogateescape"),
                ".html": html.replace("\r\n", "\n").encode("utf-8")}

    def _message(self, digest: Digest, subject: str, text: str, html: str) -> Message:
        o = self.options
        if self._addresses is None:  # the same for every digest of the channel
            self._addresses = _address_header("From", o.sender) + _address_header(
                "To", ", ".join(o.to))
            domain = parseaddr(o.sender)[1].rpartition("@")[2] or "paper-digest.invalid"
            self._domain = domain
        head = [_header("Subject", subject), self._addresses,
                _header("Date", format_datetime(digest.created_at)),
                _header("Message-ID", make_msgid(domain=self._domain)),
                _header("List-Id", _header_text(
                    f"{digest.watchlist} <{digest.watchlist}.paper-digest>"))]
        if o.unsubscribe:
            head.append(_header("List-Unsubscribe", f"<{o.unsubscribe}>"))
            if o.unsubscribe.startswith("https://"):
                head.append(_header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
        head.append("Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n")
        return Message(head="".join(head), plain=_quoted(text), html=_quoted(html))

    # ---------------------------------------------------------------- send

    def _tls(self) -> ssl.SSLContext:
        """Certificates are always verified; ca_file adds a private CA to trust."""
        ca_file = self.options.ca_file
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def _connect(self) -> smtplib.SMTP:
        s, o = self.settings, self.options
        factory = self._smtp_factory
        try:
            if factory is not None:
                smtp = factory(o.smtp_host, o.smtp_port, timeout=s.timeout_seconds)
            elif o.security == "ssl":
                smtp = smtplib.SMTP_SSL(o.smtp_host, o.smtp_port, timeout=s.timeout_seconds,
                                        context=self._tls())
            else:
                smtp = smtplib.SMTP(o.smtp_host, o.smtp_port, timeout=s.timeout_seconds)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                f"cannot connect to SMTP server {o.smtp_host}:{o.smtp_port}: {_describe(exc)}",
                channel=s.name, permanent=_is_permanent(exc)) from exc
        try:
            self._greet(smtp)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _greet(self, smtp: smtplib.SMTP) -> None:
        """EHLO, STARTTLS and login, each failure told in the channel's own terms."""
        s, o = self.settings, self.options
        where = f"{o.smtp_host}:{o.smtp_port}"
        try:
            smtp.ehlo()
            if o.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(f"SMTP server {where} does not offer STARTTLS; set "
                                        'security = "ssl" or "none"', channel=s.name)
                smtp.starttls(context=self._tls())
                smtp.ehlo()
            if o.username and o.password:
                if not smtp.has_extn("auth"):
                    plain = " without TLS" if o.security == "none" else ""
                    raise DeliveryError(f"SMTP server {where} does not offer a login{plain}",
                                        channel=s.name)
                smtp.login(o.username.reveal(), o.password.reveal())
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"SMTP login to {where} refused ({exc.smtp_code}); check "
                f"${o.username_env} and ${o.password_env}", channel=s.name) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP server {where} failed the greeting: {_describe(exc)}",
                                channel=s.name, permanent=_is_permanent(exc)) from exc

    def send(self, payload: dict[str, Any], *, parts_sent: int = 0,
             on_part_sent: Callable[[int], None] = lambda n: None) -> Refused:
        """Send a recorded digest to the channel's recipients as configured now.

        A digest composed before the user corrected ``to`` or ``from`` goes to the
        corrected addresses, with its content and Message-ID unchanged. Returns the
        recipients the server refused while accepting the others.

        The message is the digest's only part, so it is not reported through
        ``on_part_sent``: the digest is recorded as sent as soon as this returns, and a
        second write of the same fact just before cost a transaction per digest.
        """
        if parts_sent >= 1:  # recorded by an earlier version, which reported the part
            return {}
        return self._transmit(payload, list(self.options.to))

    def send_to(self, payload: dict[str, Any], recipients: list[str]) -> RecipientOutcome:
        """Send an accepted digest again to the recipients that refused it before.

        A recipient no longer in ``to`` is dropped rather than written to.
        """
        current = {_addr_key(a): a for a in self.options.to}
        outcome: RecipientOutcome = {r: ("dropped", "no longer in the channel's 'to'")
                                     for r in recipients if _addr_key(r) not in current}
        wanted = [current[_addr_key(r)] for r in recipients if _addr_key(r) in current]
        if not wanted:
            return outcome
        try:
            refused = self._transmit(payload, wanted)
        except DeliveryError as exc:
            status = "failed_permanent" if exc.permanent else "failed_temporary"
            outcome.update({r: (status, str(exc)) for r in wanted})
            return outcome
        for recipient in wanted:
            if recipient in refused:
                permanent, reason = refused[recipient]
                outcome[recipient] = ("failed_permanent" if permanent else "failed_temporary",
                                      reason)
            else:
                outcome[recipient] = ("sent", None)
        return outcome

    def _addressed(self, payload: dict[str, Any]) -> bytes:
        """The recorded message, with From and To as the channel is configured now."""
        s, o = self.settings, self.options
        raw: str = payload["message"]
        if payload.get("from") == o.sender and payload.get("to") == list(o.to):
            return raw.encode("ascii", "surrogateescape")
        message = email.message_from_string(raw, policy=SMTP_POLICY)
        del message["From"]
        del message["To"]
        message["From"] = o.sender
        message["To"] = ", ".join(o.to)
        log.info("channel=%s digest readdressed to the current settings", s.name)
        return message.as_bytes()

    def _transmit(self, payload: dict[str, Any], recipients: list[str]) -> Refused:
        s, o = self.settings, self.options
        if not recipients:
            raise DeliveryError("the channel has no recipients ('to' is empty)", channel=s.name,
                                permanent=True)
        if not self._joined:
            self._connections.join(self._key)
            self._joined = True
        sender = _envelope_sender(o.sender)
        message = self._addressed(payload)
        smtp, fresh = self._connections.get(self._key, self._connect)
        try:
            try:
                refused = smtp.sendmail(sender, recipients, message)
            except (smtplib.SMTPServerDisconnected, ConnectionError):
                if fresh:
                    raise
                # A session opened for an earlier message may have been closed by the
                # server (idle time, a message limit): one new session, one more try.
                self._connections.discard(self._key)
                smtp, fresh = self._connections.get(self._key, self._connect)
                refused = smtp.sendmail(sender, recipients, message)
        except (smtplib.SMTPException, OSError) as exc:
            self._connections.discard(self._key)
            raise DeliveryError(f"SMTP server {o.smtp_host}:{o.smtp_port} did not accept the "
                                f"digest: {_describe(exc)}", channel=s.name,
                                permanent=_is_permanent(exc)) from exc
        out: Refused = {}
        for recipient, (code, text) in refused.items():
            words = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
            out[recipient] = (500 <= code < 600, f"{code} {words}")
        if out:
            log.warning("channel=%s recipients refused: %s", s.name,
                        "; ".join(f"{r} ({why})" for r, (_, why) in sorted(out.items())))
        return out

    def close(self) -> None:
        if self._joined:
            self._joined = False
            self._connections.leave(self._key)


@dataclass(frozen=True)
class Message:
    """A digest email as it travels: its header lines, and both parts in quoted-printable.

    Made by hand rather than by the email package, whose header objects and generator
    were most of what composing cost; ``_header`` hands the package any value it must
    encode or fold, and a test holds the result equal to the package's own."""

    head: str  # header lines, each ending in CRLF, without the Content-Type
    plain: str  # quoted-printable, CRLF line ends, ending in one
    html: str

    def as_string(self) -> str:
        # A quoted-printable body never holds "==" (a literal "=" travels as "=3D"), so no
        # line of either part can be mistaken for this boundary.
        boundary = f"{'=' * 15}{random.randrange(sys.maxsize):019d}=="
        part = '--{}\r\nContent-Type: text/{}; charset="utf-8"\r\n' \
               "Content-Transfer-Encoding: quoted-printable\r\n\r\n{}\r\n"
        return "".join((
            self.head, f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n',
            part.format(boundary, "plain", self.plain), part.format(boundary, "html", self.html),
            f"--{boundary}--\r\n"))

    def html_bytes(self) -> int:
        """The size of the HTML part as it travels (quoted-printable, CRLF line ends),
        which is what Gmail measures."""
        return len(self.html)


def _quoted(body: str) -> str:
    """A UTF-8 text body in quoted-printable, by binascii's C codec (the email package's
    own encoder is pure Python), with CRLF line ends and a final line break. A lone CR
    ends a line too, as it would in the package's generator: SMTP allows no bare CR."""
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    if not body.endswith("\n"):
        body += "\n"
    return binascii.b2a_qp(body.encode("utf-8"), istext=True).decode("ascii").replace(
        "\n", "\r\n")


def _header(name: str, value: str) -> str:
    """One header line, ending in CRLF. A short ASCII value is written as it is; any other
    is encoded and folded by the email package (RFC 2047 words, lines within 78)."""
    if value and value.isascii() and value.isprintable() and len(name) + len(value) <= 76 \
            and "=?" not in value:  # what reads as an encoded word is the package's to judge
        return f"{name}: {value}\r\n"
    return SMTP_POLICY.fold(name, SMTP_POLICY.header_factory(name, value))


@lru_cache(maxsize=1 << 12)
def _address_header(name: str, value: str) -> str:
    """A From or To line. The email package writes a short ASCII list of addresses as it
    is, as _header does, but for a backslash, which it drops where a quoted name does not
    need it; that and any other value go to the package, which may quote or encode."""
    return _header(name, value) if "\\" not in value else SMTP_POLICY.fold(
        name, SMTP_POLICY.header_factory(name, value))


@lru_cache(maxsize=1 << 10)
def _envelope_sender(sender: str) -> str:
    """The bare address of ``from``, for the SMTP envelope."""
    return Address(addr_spec=parseaddr(sender)[1]).addr_spec


def _is_permanent(exc: BaseException) -> bool:
    """5xx replies will not change by trying again; everything else might."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        return bool(codes) and all(500 <= code < 600 for code in codes)
    code = getattr(exc, "smtp_code", None)
    return isinstance(code, int) and 500 <= code < 600


def _describe(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        parts = [f"{addr}: {code} {msg.decode(errors='replace') if isinstance(msg, bytes) else msg}"
                 for addr, (code, msg) in exc.recipients.items()]
        return "all recipients refused (" + "; ".join(parts) + ")"
    if isinstance(exc, smtplib.SMTPResponseException):
        error = exc.smtp_error
        text = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
        return f"{exc.smtp_code} {text}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        # smtplib reports a reply that never came as a disconnection
        if "timed out" in str(exc):
            return "timed out waiting for the server's reply"
        return "the server closed the connection"
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}"
