"""Email over SMTP: multipart text + HTML, one connection per run.

Limits: the whole message stays under 100 KB, where Gmail starts clipping.
Secrets: the SMTP login comes from the environment variables the channel names.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from collections.abc import Callable
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

from digest.config import ChannelSettings
from digest.deliver.base import ChannelContext, Composed
from digest.errors import DeliveryError
from digest.models import Digest
from digest.render import Renderer

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 100_000


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
        return _header_text(self.settings.subject.format(
            watchlist=digest.watchlist, count=len(digest.matches),
            date=digest.created_at.strftime("%Y-%m-%d")))

    def compose(self, digest: Digest) -> Composed:
        while True:
            subject = self.subject(digest)
            text, html = self.renderer.email(digest, subject=subject)
            message = self._message(digest, subject, text, html)
            raw = message.as_string()
            size = len(raw.encode())
            count = len(digest.matches)
            if size <= MAX_MESSAGE_BYTES or count <= 1:
                break
            # Shrink in proportion to the excess, then one by one; the papers left out
            # stay candidates for the next digest.
            keep = max(1, min(count - 1, int(count * MAX_MESSAGE_BYTES / size)))
            log.info("email of %d papers is %d bytes, over %d; keeping the top %d", count,
                     size, MAX_MESSAGE_BYTES, keep)
            digest = Digest(watchlist=digest.watchlist, channel=digest.channel,
                            matches=digest.matches[:keep], created_at=digest.created_at,
                            notes=digest.notes)
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
             on_part_sent: Callable[[int], None] = lambda n: None) -> None:
        if parts_sent >= 1:
            return
        s = self.settings
        if self._smtp is None:
            self._smtp = self._connect()
        try:
            refused = self._smtp.sendmail(
                Address(addr_spec=parseaddr(payload["from"])[1]).addr_spec,
                payload["to"], payload["message"].encode("ascii", "surrogateescape"))
        except (smtplib.SMTPException, OSError) as exc:
            self._drop_connection()
            raise DeliveryError(f"SMTP server {s.smtp_host}:{s.smtp_port} did not accept the "
                                f"digest: {_describe(exc)}", channel=s.name,
                                permanent=_is_permanent(exc)) from exc
        if refused:
            log.warning("channel=%s some recipients refused: %s", s.name, sorted(refused))
        on_part_sent(1)

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
