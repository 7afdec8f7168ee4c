"""Mail over a real SMTP server on loopback: plain, STARTTLS, TLS, AUTH; failures told apart."""

from __future__ import annotations

from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import quote

import pytest

from cryptocheckout.kit.mail import (
    FileMailer,
    InvalidRecipient,
    Mail,
    PermanentMailError,
    SmtpMailer,
    TemporaryMailError,
    checked_recipient,
    mailer_for,
)
from tests.support.smtp import PASSWORD, USER, free_port, self_signed_certificate, smtp_server

FROM = "Test Shop <shop@example.com>"
# The plain-text AUTH tests are about our client; aiosmtpd warns about its own set-up.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def _mail(to: str = "buyer@example.com") -> Mail:
    return Mail(to=to, subject="Hello", text="plain body", html="<p>html body</p>")


async def test_plain_smtp_delivers_text_and_html() -> None:
    with smtp_server() as (inbox, port):
        await SmtpMailer.from_url(f"smtp://127.0.0.1:{port}", FROM).send(_mail())
    [received] = inbox.received
    assert received.sender == "shop@example.com"
    assert received.recipients == ["buyer@example.com"]
    message = received.message
    assert message["To"] == "buyer@example.com"
    assert message["From"] == FROM
    text, html = received.bodies()
    assert (text.strip(), html.strip()) == ("plain body", "<p>html body</p>")


async def test_authentication_with_a_password_that_needs_encoding() -> None:
    with smtp_server(auth=True) as (inbox, port):
        url = f"smtp://{USER}:{quote(PASSWORD)}@127.0.0.1:{port}"
        await SmtpMailer.from_url(url, FROM).send(_mail())
    assert len(inbox.received) == 1


async def test_a_wrong_password_is_temporary_so_the_mail_waits_for_a_fix() -> None:
    with smtp_server(auth=True) as (inbox, port):
        mailer = SmtpMailer.from_url(f"smtp://{USER}:wrong@127.0.0.1:{port}", FROM)
        with pytest.raises(TemporaryMailError) as caught:
            await mailer.send(_mail())
    assert inbox.received == []
    assert "wrong" not in str(caught.value)


async def test_starttls_with_authentication(tmp_path: Path) -> None:
    cert = self_signed_certificate(tmp_path)
    with smtp_server(auth=True, starttls=cert) as (inbox, port):
        url = f"smtp://{USER}:{quote(PASSWORD)}@localhost:{port}?starttls=true"
        mailer = SmtpMailer.from_url(url, FROM, tls_context=cert.client_context())
        assert mailer.start_tls and not mailer.use_tls
        await mailer.send(_mail())
    assert len(inbox.received) == 1


async def test_starttls_refuses_an_untrusted_certificate(tmp_path: Path) -> None:
    cert = self_signed_certificate(tmp_path)
    with smtp_server(starttls=cert) as (inbox, port):
        mailer = SmtpMailer.from_url(f"smtp://localhost:{port}?starttls=true", FROM)
        with pytest.raises(TemporaryMailError):
            await mailer.send(_mail())
    assert inbox.received == []


async def test_implicit_tls(tmp_path: Path) -> None:
    cert = self_signed_certificate(tmp_path)
    with smtp_server(implicit_tls=cert) as (inbox, port):
        mailer = SmtpMailer.from_url(
            f"smtps://localhost:{port}", FROM, tls_context=cert.client_context()
        )
        assert mailer.use_tls
        await mailer.send(_mail())
    assert len(inbox.received) == 1


async def test_no_server_is_a_temporary_failure() -> None:
    mailer = SmtpMailer.from_url(f"smtp://127.0.0.1:{free_port()}", FROM)
    with pytest.raises(TemporaryMailError):
        await mailer.send(_mail())


async def test_5xx_is_permanent_and_4xx_temporary() -> None:
    with smtp_server() as (inbox, port):
        inbox.refuse.add("gone@example.com")
        inbox.defer.add("busy@example.com")
        mailer = SmtpMailer.from_url(f"smtp://127.0.0.1:{port}", FROM)
        with pytest.raises(PermanentMailError) as refused:
            await mailer.send(_mail("gone@example.com"))
        with pytest.raises(TemporaryMailError) as deferred:
            await mailer.send(_mail("busy@example.com"))
    assert not isinstance(deferred.value, PermanentMailError)
    assert "550" in str(refused.value) and "451" in str(deferred.value)
    assert inbox.received == []


@pytest.mark.parametrize(
    "address",
    [
        "buyer@example.com\r\nBcc: victim@example.org",
        "buyer@example.com\nBcc: victim@example.org",
        "Eve <eve@example.com>",
        "buyer@example.com, victim@example.org",
        "buyer@example.com>\r\nRCPT TO:<victim@example.org",
        "=?utf-8?q?x?=\r\n@example.com",
        "buyer@example.com\x00",
        "no-at-sign",
    ],
)
async def test_header_injection_never_reaches_smtp(address: str) -> None:
    with smtp_server() as (inbox, port):
        mailer = SmtpMailer.from_url(f"smtp://127.0.0.1:{port}", FROM)
        with pytest.raises(InvalidRecipient) as caught:
            await mailer.send(_mail(address))
    assert inbox.commands == [] and inbox.received == []
    assert isinstance(caught.value, PermanentMailError)
    assert "victim" not in str(caught.value)


def test_a_plain_address_passes_unchanged() -> None:
    assert checked_recipient("o'brien+games@example.com") == "o'brien+games@example.com"


async def test_without_smtp_url_each_message_is_an_eml_file(tmp_path: Path) -> None:
    mailer = mailer_for("", FROM, tmp_path / "mail")
    assert isinstance(mailer, FileMailer)
    await mailer.send(_mail())
    await mailer.send(_mail("other@example.com"))
    files = sorted((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 2
    assert not list((tmp_path / "mail").glob(".*"))  # no partial files left
    recipients = {
        str(message_from_bytes(f.read_bytes(), policy=policy.default)["To"]) for f in files
    }
    assert recipients == {"buyer@example.com", "other@example.com"}


async def test_the_eml_fallback_checks_the_recipient_too(tmp_path: Path) -> None:
    with pytest.raises(InvalidRecipient):
        await FileMailer(tmp_path, FROM).send(_mail("a@example.com\r\nBcc: b@example.com"))
    assert list(tmp_path.iterdir()) == []


def test_smtp_url_forms() -> None:
    assert SmtpMailer.from_url("smtp://relay:2525", FROM).port == 2525
    assert SmtpMailer.from_url("smtps://relay", FROM).port == 465
    starttls = SmtpMailer.from_url("smtp://u:p%40ss@relay?starttls=true", FROM)
    assert (starttls.port, starttls.username, starttls.password) == (587, "u", "p@ss")
    assert "p@ss" not in repr(starttls)
    with pytest.raises(ValueError, match="SMTP_URL"):
        SmtpMailer.from_url("http://relay", FROM)
