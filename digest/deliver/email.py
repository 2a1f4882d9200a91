"""Email over SMTP: multipart text + HTML, one connection per run.

Limits: the HTML part stays under 100 KB as sent, where Gmail starts clipping a message
(the plain-text part is not shown there and does not count).
Secrets: the SMTP login comes from the environment variables the channel names.
"""

from __future__ import annotations

import email
import logging
import smtplib
import socket
import ssl
from collections.abc import Callable
from dataclasses import replace
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

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


class EmailChannel:
    kind = "email"
    secrets = ("username_env", "password_env")

    def __init__(
        self,
        settings: ChannelSettings,
        *,
        renderer: Renderer,
        smtp_factory: Callable[..., smtplib.SMTP] | None = None,
    ) -> None:
        self.settings = settings
        self.renderer = renderer
        self._smtp_factory = smtp_factory
        self._smtp: smtplib.SMTP | None = None

    @classmethod
    def create(cls, settings: ChannelSettings, context: ChannelContext) -> EmailChannel:
        return cls(settings, renderer=context.renderer, smtp_factory=context.smtp_factory)

    # ---------------------------------------------------------------- compose

    def subject(self, digest: Digest) -> str:
        if digest.heartbeat is not None:
            return _header_text(heartbeat_subject(digest))
        return _header_text(digest_subject(self.settings.subject, digest))

    def compose(self, digest: Digest) -> Composed:
        if digest.matched is None:  # what the email leaves out is counted against this
            digest = replace(digest, matched=len(digest.matches))
        while True:
            subject = self.subject(digest)
            text, html = self.renderer.email(digest, subject=subject)
            message = self._message(digest, subject, text, html)
            raw = message.as_string()
            size = html_bytes(message)
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
            "from": self.settings.sender,
            "to": list(self.settings.to),
            "message": raw,
            "html": html,
        }
        return Composed(payload=payload, digest=digest)

    def _message(self, digest: Digest, subject: str, text: str, html: str) -> EmailMessage:
        message = EmailMessage(policy=SMTP_POLICY)
        _, sender = parseaddr(self.settings.sender)
        domain = sender.rpartition("@")[2] or "paper-digest.invalid"
        message["Subject"] = subject
        message["From"] = self.settings.sender
        message["To"] = ", ".join(self.settings.to)
        message["Date"] = format_datetime(digest.created_at)
        message["Message-ID"] = make_msgid("paper-digest", domain=domain)
        message["List-Id"] = _header_text(f"{digest.watchlist} <{digest.watchlist}.paper-digest>")
        if self.settings.unsubscribe:
            target = self.settings.unsubscribe
            message["List-Unsubscribe"] = f"<{target}>"
            if target.startswith("https://"):
                message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return message

    # ---------------------------------------------------------------- send

    def _tls(self) -> ssl.SSLContext:
        """Certificates are always verified; ca_file adds a private CA to trust."""
        ca_file = self.settings.ca_file
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        factory = self._smtp_factory
        try:
            if factory is not None:
                smtp = factory(s.smtp_host, s.smtp_port, timeout=s.timeout_seconds)
            elif s.security == "ssl":
                smtp = smtplib.SMTP_SSL(s.smtp_host, s.smtp_port, timeout=s.timeout_seconds,
                                        context=self._tls())
            else:
                smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.timeout_seconds)
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(
                f"cannot connect to SMTP server {s.smtp_host}:{s.smtp_port}: {_describe(exc)}",
                channel=s.name, permanent=_is_permanent(exc)) from exc
        try:
            self._greet(smtp)
        except BaseException:
            smtp.close()
            raise
        return smtp

    def _greet(self, smtp: smtplib.SMTP) -> None:
        """EHLO, STARTTLS and login, each failure told in the channel's own terms."""
        s = self.settings
        where = f"{s.smtp_host}:{s.smtp_port}"
        try:
            smtp.ehlo()
            if s.security == "starttls":
                if not smtp.has_extn("starttls"):
                    raise DeliveryError(f"SMTP server {where} does not offer STARTTLS; set "
                                        'security = "ssl" or "none"', channel=s.name)
                smtp.starttls(context=self._tls())
                smtp.ehlo()
            if s.username and s.password:
                if not smtp.has_extn("auth"):
                    plain = " without TLS" if s.security == "none" else ""
                    raise DeliveryError(f"SMTP server {where} does not offer a login{plain}",
                                        channel=s.name)
                smtp.login(s.username.reveal(), s.password.reveal())
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"SMTP login to {where} refused ({exc.smtp_code}); check "
                f"${s.username_env} and ${s.password_env}", channel=s.name) from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP server {where} failed the greeting: {_describe(exc)}",
                                channel=s.name, permanent=_is_permanent(exc)) from exc

    def send(self, payload: dict[str, Any], *, parts_sent: int = 0,
             on_part_sent: Callable[[int], None] = lambda n: None) -> Refused:
        """Send a recorded digest to the channel's recipients as configured now.

        A digest composed before the user corrected ``to`` or ``from`` goes to the
        corrected addresses, with its content and Message-ID unchanged. Returns the
        recipients the server refused while accepting the others.
        """
        if parts_sent >= 1:
            return {}
        refused = self._transmit(payload, list(self.settings.to))
        on_part_sent(1)
        return refused

    def send_to(self, payload: dict[str, Any], recipients: list[str]) -> RecipientOutcome:
        """Send an accepted digest again to the recipients that refused it before.

        A recipient no longer in ``to`` is dropped rather than written to.
        """
        current = {_addr_key(a): a for a in self.settings.to}
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
        s = self.settings
        raw: str = payload["message"]
        if payload.get("from") == s.sender and payload.get("to") == list(s.to):
            return raw.encode("ascii", "surrogateescape")
        message = email.message_from_string(raw, policy=SMTP_POLICY)
        del message["From"]
        del message["To"]
        message["From"] = s.sender
        message["To"] = ", ".join(s.to)
        log.info("channel=%s digest readdressed to the current settings", s.name)
        return message.as_bytes()

    def _transmit(self, payload: dict[str, Any], recipients: list[str]) -> Refused:
        s = self.settings
        if not recipients:
            raise DeliveryError("the channel has no recipients ('to' is empty)", channel=s.name,
                                permanent=True)
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            refused = self._smtp.sendmail(
                Address(addr_spec=parseaddr(s.sender)[1]).addr_spec,
                recipients, self._addressed(payload))
        except (smtplib.SMTPException, OSError) as exc:
            self._drop_connection()
            raise DeliveryError(f"SMTP server {s.smtp_host}:{s.smtp_port} did not accept the "
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

    def _drop_connection(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.close()
            except OSError:
                pass
            self._smtp = None

    def close(self) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                pass
            self._drop_connection()


def html_bytes(message: EmailMessage) -> int:
    """The size of the HTML part as it travels (quoted-printable, CRLF line ends), which is
    what Gmail measures."""
    part = message.get_body(("html",))
    if part is None:
        return 0
    body = str(part.get_payload()).replace("\r\n", "\n")
    return len(body.encode()) + body.count("\n")


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
