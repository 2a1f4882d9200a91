"""Email channel: the MIME message, the size limit, and SMTP replies mapped to outcomes."""

from __future__ import annotations

import binascii
import email
import re
import smtplib
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.policy import default as default_policy
from email.utils import format_datetime, make_msgid, parseaddr

import pytest
from conftest import html_bytes

from digest.config import ChannelSettings, Secret
from digest.deliver.email import MAX_HTML_BYTES, EmailChannel, EmailOptions, _address_header
from digest.errors import DeliveryError
from digest.models import Digest, Match, Paper, Reason
from digest.render import Renderer

WHEN = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)


def settings(**fields) -> ChannelSettings:
    base = {"name": "team-email", "kind": "email", "smtp_host": "127.0.0.1", "smtp_port": 2525,
            "security": "none", "sender": "Paper Digest <digest@example.org>",
            "to": ("a@example.org", "b@example.org"),
            "unsubscribe": "mailto:admin@example.org?subject=unsubscribe"}
    timeout = {"timeout_seconds": fields.pop("timeout_seconds")} if "timeout_seconds" in fields \
        else {}
    name, kind = fields.pop("name", base.pop("name")), base.pop("kind")
    return ChannelSettings(name=name, kind=kind, options=EmailOptions(**{**base, **fields}),
                           **timeout)


def digest(count: int = 2, title: str = "LoRA paper") -> Digest:
    matches = tuple(
        Match(Paper(key=f"arxiv:2611.{i:05d}", arxiv_id=f"2611.{i:05d}", title=f"{title} {i}",
                    url="https://arxiv.org/abs/x", abstract="LoRA " + "text " * 150,
                    authors=("Ann Author",)),
              "efficient-llms", 2.0, (Reason("term", "LoRA", "title", 2.0),))
        for i in range(count))
    return Digest("efficient-llms", "team-email", matches, WHEN)


class FakeSMTP:
    """Speaks smtplib's interface in-process; replies are scripted per test."""

    instances: list[FakeSMTP] = []

    def __init__(self, host, port, timeout=None, fail_send: Exception | None = None):
        self.host, self.port = host, port
        self.sent: list[tuple[str, list[str], bytes]] = []
        self.fail_send = fail_send
        self.logged_in = None
        self.quit_called = False
        FakeSMTP.instances.append(self)

    def ehlo(self):
        return 250, b"ok"

    def has_extn(self, name):
        return name.lower() in ("starttls", "auth")

    def starttls(self, context=None):
        return 220, b"ready"

    def login(self, user, password):
        self.logged_in = (user, password)

    def sendmail(self, sender, recipients, message):
        if self.fail_send:
            raise self.fail_send
        self.sent.append((sender, recipients, message))
        return {}

    def quit(self):
        self.quit_called = True

    def close(self):
        pass


@pytest.fixture(autouse=True)
def _reset():
    FakeSMTP.instances.clear()


def test_message_is_multipart_with_the_headers_mail_clients_need():
    composed = EmailChannel(settings(), renderer=Renderer()).compose(digest())
    message = email.message_from_string(composed.payload["message"], policy=default_policy)
    assert message["Subject"] == "efficient-llms: 2 new papers, Fri 20 Nov"
    assert message["From"] == "Paper Digest <digest@example.org>"
    assert message["To"] == "a@example.org, b@example.org"
    assert message["Date"] == "Fri, 20 Nov 2026 07:00:00 +0000"
    assert message["Message-ID"].endswith("@example.org>")
    assert message["List-Unsubscribe"] == "<mailto:admin@example.org?subject=unsubscribe>"
    assert message.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert "LoRA paper 0" in message.get_body(("plain",)).get_content()
    assert ">LoRA</mark>" in message.get_body(("html",)).get_content()


def test_both_parts_travel_as_quoted_printable_and_read_back_exactly():
    """The bodies, encoded by the C codec, decode to what the renderer wrote: accents,
    symbols, long lines, "=" and trailing spaces included, and no line runs past 76."""
    text = digest(count=3, title="Café = résumé · ▲ 42  ")
    composed = EmailChannel(settings(), renderer=Renderer()).compose(text)
    raw = composed.payload["message"]
    message = email.message_from_string(raw, policy=default_policy)
    assert message["MIME-Version"] == "1.0"
    plain, html = Renderer().email(composed.digest, subject=message["Subject"])
    for part, written in ((message.get_body(("plain",)), plain),
                          (message.get_body(("html",)), html)):
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
        assert part.get_content_charset() == "utf-8"
        read = part.get_content().replace("\r\n", "\n")  # the message travels with CRLF
        assert read == (written if written.endswith("\n") else written + "\n")
    body = raw.replace("\r\n", "\n").split("\n\n", 1)[1]
    assert max(len(line) for line in body.splitlines()) <= 76
    assert "Café = résumé" in message.get_body(("plain",)).get_content()


def _by_the_email_package(channel: EmailChannel, digest: Digest, subject: str, text: str,
                          html: str) -> str:
    """The message as the email package's own objects and generator make it."""
    o = channel.options
    message = EmailMessage(policy=SMTP_POLICY)
    domain = parseaddr(o.sender)[1].rpartition("@")[2] or "paper-digest.invalid"
    message["Subject"] = subject
    message["From"] = o.sender
    message["To"] = ", ".join(o.to)
    message["Date"] = format_datetime(digest.created_at)
    message["Message-ID"] = make_msgid(domain=domain)
    message["List-Id"] = " ".join(f"{digest.watchlist} <{digest.watchlist}.paper-digest>".split())
    if o.unsubscribe:
        message["List-Unsubscribe"] = f"<{o.unsubscribe}>"
        if o.unsubscribe.startswith("https://"):
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message["Auto-Submitted"] = "auto-generated"
    message["MIME-Version"] = "1.0"
    message.make_alternative()
    for body, subtype in ((text, "plain"), (html, "html")):
        body = body if body.endswith("\n") else body + "\n"
        part = EmailMessage(policy=SMTP_POLICY)
        part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
        part["Content-Transfer-Encoding"] = "quoted-printable"
        part.set_payload(binascii.b2a_qp(body.encode(), istext=True).decode("ascii"))
        message.attach(part)
    return message.as_string()


@pytest.mark.parametrize("fields", [
    {},
    {"sender": "Équipe Veille <veille@exemple.fr>", "subject": "Veille « {watchlist} » : {papers}",
     "unsubscribe": "https://digest.example.org/unsubscribe?list=1"},
    {"to": tuple(f"reader-{n}@a-rather-long-department-name.example.org" for n in range(6)),
     "subject": "{watchlist} " + "long subject words " * 8},
    {"sender": '"Doe, Jane (Lab)" <jane@example.org>', "unsubscribe": ""},
    {"subject": "=?utf-8?q?digest?= {watchlist}: {count}"},
], ids=["plain", "non-ascii", "long", "quoted-name", "encoded-word"])
def test_the_message_is_the_one_the_email_package_would_make(fields):
    """Composed by hand for speed, the message is byte for byte what the email package's
    objects and generator give, but for the random Message-ID and boundary."""
    channel = EmailChannel(settings(**fields), renderer=Renderer())
    made = digest(count=3, title="Café = résumé · ▲ 42  ")
    raw = channel.compose(made).payload["message"]
    subject = channel.subject(made)
    text, html = Renderer().email(replace(made, matched=3), subject=subject)
    expected = _by_the_email_package(channel, made, subject, text, html)

    def fixed(message: str) -> str:
        message = re.sub(r"<[0-9.]+@", "<ID@", message)
        return re.sub(r"={15}\d+==", "BOUNDARY", message)

    assert fixed(raw) == fixed(expected)
    read = email.message_from_string(raw, policy=default_policy)["Subject"]
    assert read == email.message_from_string(expected, policy=default_policy)["Subject"]
    assert read == subject or "=?" in subject  # an encoded word is read as the package reads it


@pytest.mark.parametrize("value", [
    "team@example.org",
    "Paper Digest <digest@example.org>",
    "Jane Doe <j@example.org>, ops@localhost",
    # around the 78-column line: "From: " and 72 characters fit, 73 do not; "To: " and 74
    *("Paper Digest <" + "d" * (size - len("Paper Digest <@example.org>")) + "@example.org>"
      for size in (72, 73, 74, 75)),
    '"Doe, Jane (Lab)" <jane@example.org>',
    "jane@example.org (Jane Doe)",
    "o'neil+digest@example.org",
    '"Jane \\"JD\\" Doe" <jane@example.org>',  # a backslash the quoted name needs
    '"Ana \\Lima" <ana@example.org>',  # one it does not: the package drops it
    "Équipe Veille <veille@exemple.fr>",
    ", ".join(f"reader-{n}@a-rather-long-department-name.example.org" for n in range(3)),
])
def test_address_lines_are_the_email_package_s(value):
    """From and To are written as the email package writes them, whether or not the value
    takes the short path."""
    for name in ("From", "To"):
        expected = SMTP_POLICY.fold(name, SMTP_POLICY.header_factory(name, value))
        assert _address_header(name, value) == expected


def test_a_lone_carriage_return_ends_a_line_and_never_travels_bare():
    """SMTP allows no bare CR; text holding one (an error message in a note) still makes a
    message whose every line ends in CRLF, and reads back with the CR as a line break."""
    made = replace(digest(), notes=("the source failed:\rread timed out",))
    raw = EmailChannel(settings(), renderer=Renderer()).compose(made).payload["message"]
    assert "\r" not in raw.replace("\r\n", "")
    plain = email.message_from_string(raw, policy=default_policy).get_body(("plain",))
    assert "the source failed:\nread timed out" in plain.get_content().replace("\r\n", "\n")


def test_feed_text_never_breaks_a_header():
    channel = EmailChannel(settings(subject="{watchlist}\r\nBcc: evil@example.org"),
                           renderer=Renderer())
    raw = channel.compose(digest()).payload["message"]
    headers = raw.split("\n\n", 1)[0]
    assert "\nBcc:" not in headers


def test_message_stays_under_the_clipping_limit():
    composed = EmailChannel(settings(), renderer=Renderer()).compose(digest(count=400))
    message = email.message_from_string(composed.payload["message"], policy=default_policy)
    assert html_bytes(message) <= MAX_HTML_BYTES
    assert 10 < len(composed.digest.matches) < 400  # the rest waits for the next digest


def test_one_connection_serves_every_digest_of_a_run():
    channel = EmailChannel(settings(username_env="U", password_env="P",
                                    username=Secret("me", "U"), password=Secret("pw", "P")),
                           renderer=Renderer(), smtp_factory=FakeSMTP)
    parts: list[int] = []
    for _ in range(3):
        channel.send(channel.compose(digest()).payload, on_part_sent=parts.append)
    channel.close()
    (smtp,) = FakeSMTP.instances
    # One message per digest: no part to record apart from the digest being sent.
    assert len(smtp.sent) == 3 and parts == []
    assert smtp.sent[0][0] == "digest@example.org"
    assert smtp.sent[0][1] == ["a@example.org", "b@example.org"]
    assert smtp.logged_in == ("me", "pw") and smtp.quit_called


@pytest.mark.parametrize(
    ("error", "permanent", "text"),
    [
        pytest.param(smtplib.SMTPDataError(451, b"try again later"), False, "451 try again",
                     id="451-temporary"),
        pytest.param(smtplib.SMTPDataError(550, b"mailbox unavailable"), True, "550 mailbox",
                     id="550-permanent"),
        pytest.param(smtplib.SMTPRecipientsRefused({"a@example.org": (550, b"no such user")}),
                     True, "all recipients refused", id="recipients-refused"),
        pytest.param(smtplib.SMTPServerDisconnected("gone"), False, "closed the connection",
                     id="disconnected"),
        pytest.param(TimeoutError(), False, "timed out", id="timeout"),
    ],
)
def test_smtp_failures_are_classified(error, permanent, text):
    def factory(host, port, timeout=None):
        return FakeSMTP(host, port, timeout, fail_send=error)

    channel = EmailChannel(settings(), renderer=Renderer(), smtp_factory=factory)
    with pytest.raises(DeliveryError, match=text) as caught:
        channel.send(channel.compose(digest()).payload)
    assert caught.value.permanent is permanent


def test_an_already_accepted_message_is_not_sent_again():
    channel = EmailChannel(settings(), renderer=Renderer(), smtp_factory=FakeSMTP)
    channel.send(channel.compose(digest()).payload, parts_sent=1)
    assert FakeSMTP.instances == []


# ----------------------------------------------------------------- a real SMTP server


@pytest.mark.integration
def test_real_smtp_server_receives_the_digest(smtp_server):
    inbox, port = smtp_server
    channel = EmailChannel(settings(smtp_port=port), renderer=Renderer())
    channel.send(channel.compose(digest()).payload)
    channel.send(channel.compose(digest(title="Second")).payload)
    channel.close()
    assert len(inbox.messages) == 2
    sender, recipients, content = inbox.messages[0]
    assert sender == "digest@example.org"
    assert recipients == ["a@example.org", "b@example.org"]
    message = email.message_from_bytes(content, policy=default_policy)
    assert "LoRA paper 1" in message.get_body(("plain",)).get_content()


@pytest.mark.integration
def test_connection_refused_is_a_temporary_failure():
    from conftest import free_port

    channel = EmailChannel(settings(smtp_port=free_port(), timeout_seconds=2),
                           renderer=Renderer())
    with pytest.raises(DeliveryError, match="connection refused") as caught:
        channel.send(channel.compose(digest()).payload)
    assert not caught.value.permanent


# ----------------------------------------------------------------- TLS, for real


@pytest.fixture(scope="module")
def tls_ca(tmp_path_factory):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    return ca, cert, folder / "ca.pem"


def _tls_server(cert, *, implicit: bool):
    import ssl as ssl_module

    from aiosmtpd.controller import Controller
    from conftest import SmtpInbox, free_port

    context = ssl_module.SSLContext(ssl_module.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    inbox, port = SmtpInbox(), free_port()
    if implicit:
        controller = Controller(inbox, hostname="127.0.0.1", port=port, ssl_context=context)
    else:
        controller = Controller(inbox, hostname="127.0.0.1", port=port, tls_context=context,
                                require_starttls=True)
    controller.start()
    return controller, inbox, port


@pytest.mark.integration
@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_tls_to_a_real_server_with_verified_certificates(tls_ca, security):
    _, cert, ca_file = tls_ca
    controller, inbox, port = _tls_server(cert, implicit=security == "ssl")
    try:
        channel = EmailChannel(settings(smtp_port=port, security=security, ca_file=ca_file,
                                        smtp_host="127.0.0.1"), renderer=Renderer())
        channel.send(channel.compose(digest()).payload)
        channel.close()
    finally:
        controller.stop()
    assert len(inbox.messages) == 1


@pytest.mark.integration
def test_an_untrusted_certificate_is_refused(tls_ca):
    _, cert, _ = tls_ca
    controller, inbox, port = _tls_server(cert, implicit=False)
    try:
        channel = EmailChannel(settings(smtp_port=port, security="starttls"),
                               renderer=Renderer())
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED|certificate"):
            channel.send(channel.compose(digest()).payload)
    finally:
        controller.stop()
    assert inbox.messages == []
