"""Outgoing mail: SMTP through `aiosmtplib`, or `.eml` files when no server is configured.

`SMTP_URL` is `smtp://[user:password@]host:port` (plain; `?starttls=true` upgrades with
STARTTLS) or `smtps://...` (TLS from the first byte). Without it, every message is written to
`MAIL_DIR` as an `.eml` file, which the demo prints.

Failures come in two kinds, so the job queue can act on them: `TemporaryMailError` (the
server is down or busy, answers 4xx, or refuses our own login or sender: worth retrying while
someone fixes it) and `PermanentMailError` (the server refuses this recipient or this message
with 5xx: retrying cannot help). The recipient is checked once more just before sending, so
a value that would add a header or a recipient never reaches the SMTP conversation.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import uuid
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
from email_validator import EmailNotValidError, validate_email

from cryptocheckout.kit.clock import utcnow

SMTP_TIMEOUT_SECONDS = 30.0
# Nothing that can end a header line or separate addresses may reach SMTP.
_FORBIDDEN_IN_ADDRESS = frozenset('\r\n\0,;<>"()[]\\ \t')


class MailError(Exception):
    """Sending failed; the message never names the recipient."""


class TemporaryMailError(MailError):
    """The server could not take the message now: send it again later."""


class PermanentMailError(MailError):
    """The server refused this message for good (5xx), or it can never be sent."""


class InvalidRecipient(PermanentMailError):
    """The recipient address is not a plain, valid e-mail address."""


def checked_recipient(address: str) -> str:
    """The address, normalised, if it is one plain valid address; else `InvalidRecipient`."""
    if not address or any(char in _FORBIDDEN_IN_ADDRESS for char in address):
        raise InvalidRecipient("the recipient address contains characters an address cannot")
    if any(ord(char) < 32 or ord(char) == 127 for char in address):
        raise InvalidRecipient("the recipient address contains control characters")
    try:
        valid = validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        raise InvalidRecipient("the recipient address is not a valid e-mail address") from None
    return valid.normalized


@dataclass(frozen=True)
class Mail:
    """One message to one recipient, in plain text with an HTML alternative."""

    to: str
    subject: str
    text: str
    html: str


def build_message(mail: Mail, mail_from: str) -> EmailMessage:
    """The MIME message. The recipient is checked here, before any header is written."""
    recipient = checked_recipient(mail.to)
    name, sender = parseaddr(mail_from)
    message = EmailMessage()
    local, _, domain = sender.partition("@")
    message["From"] = Address(display_name=name, username=local, domain=domain)
    message["To"] = recipient
    # A subject is ours (a template's), but a newline in it would still start a header.
    message["Subject"] = " ".join(mail.subject.split())
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = make_msgid(domain=domain or "localhost")
    message.set_content(mail.text)
    message.add_alternative(mail.html, subtype="html")
    return message


class Mailer(Protocol):
    async def send(self, mail: Mail) -> None: ...


@dataclass(frozen=True)
class SmtpMailer:
    hostname: str
    port: int
    mail_from: str
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    start_tls: bool = False
    tls_context: ssl.SSLContext | None = None
    timeout: float = SMTP_TIMEOUT_SECONDS

    def __repr__(self) -> str:  # never show the password
        return f"SmtpMailer(hostname={self.hostname!r}, port={self.port})"

    @classmethod
    def from_url(
        cls, url: str, mail_from: str, *, tls_context: ssl.SSLContext | None = None
    ) -> SmtpMailer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("SMTP_URL must look like smtp://[user:password@]host:port or smtps://")
        query = parse_qs(parts.query)
        start_tls = query.get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
        use_tls = parts.scheme == "smtps"
        default_port = 465 if use_tls else (587 if start_tls else 25)
        return cls(
            hostname=parts.hostname,
            port=parts.port or default_port,
            mail_from=mail_from,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            start_tls=start_tls and not use_tls,
            tls_context=tls_context,
        )

    async def send(self, mail: Mail) -> None:
        message = build_message(mail, self.mail_from)
        recipient = str(message["To"])
        try:
            await aiosmtplib.send(
                message,
                sender=parseaddr(self.mail_from)[1],
                recipients=[recipient],
                hostname=self.hostname,
                port=self.port,
                username=self.username,
                password=self.password,
                use_tls=self.use_tls,
                start_tls=self.start_tls,
                tls_context=self.tls_context,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [refused.code for refused in exc.recipients]
            raise _by_code(min(codes), "the server refused the recipient") from None
        except (aiosmtplib.SMTPAuthenticationError, aiosmtplib.SMTPSenderRefused) as exc:
            # Our own login or sender address is wrong: every message would fail the same way
            # until an operator fixes the settings, so keep the mail and retry.
            raise TemporaryMailError(
                f"SMTP {exc.code}: the server refused our login or sender"
            ) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise _by_code(exc.code, f"the server answered: {_first_line(exc.message)}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            # Connection refused or lost, timeouts, TLS not offered: the server, not the mail.
            raise TemporaryMailError(f"SMTP unavailable: {type(exc).__name__}") from None


def _by_code(code: int, reason: str) -> MailError:
    if 500 <= code < 600:
        return PermanentMailError(f"SMTP {code}: {reason}")
    return TemporaryMailError(f"SMTP {code}: {reason}")


def _first_line(text: str) -> str:
    # Servers often echo the address they refused; keep only the first line, cut short.
    return text.splitlines()[0][:120] if text else ""


@dataclass(frozen=True)
class FileMailer:
    """Writes each message as an `.eml` file under `directory` (no SMTP server configured)."""

    directory: Path
    mail_from: str

    async def send(self, mail: Mail) -> None:
        message = build_message(mail, self.mail_from)
        await asyncio.to_thread(self._write, bytes(message))

    def _write(self, data: bytes) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.eml"
        partial = self.directory / f".{name}.part"
        partial.write_bytes(data)
        # Complete files only: a reader never sees half a message.
        target = self.directory / name
        os.replace(partial, target)
        return target


def mailer_for(
    smtp_url: str, mail_from: str, mail_dir: Path, *, tls_context: ssl.SSLContext | None = None
) -> Mailer:
    if smtp_url:
        return SmtpMailer.from_url(smtp_url, mail_from, tls_context=tls_context)
    return FileMailer(mail_dir, mail_from)
