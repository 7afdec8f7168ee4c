"""Licence keys at rest: AES-256-GCM from `cryptography`, a key ring, and a keyed hash.

`KEYS_ENCRYPTION_KEY` holds one or more comma-separated keys, each 32 random bytes in URL-safe
base64. The first key encrypts; every key decrypts, so a key is retired by putting a new one in
front, running `cryptocheckout rotate-keys`, then dropping the old one.

Why AES-GCM rather than Fernet: both are authenticated, but GCM takes associated data, which
binds each ciphertext to its row (a ciphertext copied onto another row does not decrypt), and its
output is shorter. The 32 configured bytes are never used directly: HKDF derives a separate key
for encryption, for the duplicate-detection hash and for signing delivery links, so one purpose
can never be turned against another.

The ciphertext names the key that made it (`v1:<key id>:<nonce|ciphertext|tag>`), where the key
id is a short fingerprint derived from the key, so decryption picks the right key at once and
rotation can find the rows that are not under the first key yet.

Duplicate detection: each row stores an HMAC-SHA256 of its key, made with the hash key of the
same ring key that encrypted it. An import looks the new key's hashes up under every key of the
ring, and rotation rewrites ciphertext and hash together. So duplicates are found before, during
and after a rotation, with no second secret to configure and nothing tied to one key forever
(a hash key derived from one fixed key could never retire that key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cryptocheckout.config import ConfigurationError, Settings

SETTING = "KEYS_ENCRYPTION_KEY"
FORMAT_VERSION = "v1"
NONCE_BYTES = 12
KEY_BYTES = 32


class KeyRingError(ValueError):
    """The key setting is missing or malformed. The message names the setting, never a key."""


class DecryptionError(Exception):
    """A ciphertext that no key of the ring can open (unknown key id, altered or moved)."""


def generate_key() -> str:
    """A fresh key in the setting's format: 32 random bytes, URL-safe base64."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def _derive(master: bytes, purpose: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=f"cryptocheckout/{purpose}".encode(),
    ).derive(master)


@dataclass(frozen=True)
class RingKey:
    key_id: str
    aead: AESGCM
    hash_key: bytes
    signing_key: bytes

    def __repr__(self) -> str:  # never show key material, even in a traceback
        return f"RingKey(key_id={self.key_id!r})"

    @classmethod
    def from_master(cls, master: bytes) -> RingKey:
        return cls(
            key_id=_derive(master, "key-id")[:8].hex(),
            aead=AESGCM(_derive(master, "licence-key-aead")),
            hash_key=_derive(master, "licence-key-hash"),
            signing_key=_derive(master, "delivery-link"),
        )


@dataclass(frozen=True)
class Sealed:
    """A licence key as stored: the ciphertext, the id of its key and its keyed hash."""

    ciphertext: str
    key_id: str
    key_hash: str


class KeyRing:
    """The configured keys, first one current. Build it with `KeyRing.parse(setting)`."""

    def __init__(self, keys: list[RingKey]) -> None:
        if not keys:
            raise KeyRingError(f"{SETTING} is empty: set at least one key")
        self._keys = keys
        self._by_id = {key.key_id: key for key in keys}
        if len(self._by_id) != len(keys):
            raise KeyRingError(f"{SETTING} lists the same key twice")

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={[key.key_id for key in self._keys]!r})"

    @classmethod
    def parse(cls, setting: str, *, name: str = SETTING) -> KeyRing:
        """Reads the comma-separated setting. Errors name the variable and the position only."""
        parts = [part.strip() for part in setting.split(",")]
        if not setting.strip():
            raise KeyRingError(
                f"{name} is not set: generate a key with "
                '`python3 -c "import base64,os; print(base64.urlsafe_b64encode(os.urandom(32))'
                '.decode())"`'
            )
        keys = []
        for position, part in enumerate(parts, start=1):
            try:
                raw = base64.urlsafe_b64decode(part.encode("ascii"))
            except (binascii.Error, UnicodeEncodeError, ValueError):
                raw = b""
            if len(raw) != KEY_BYTES:
                raise KeyRingError(
                    f"{name}: key {position} of {len(parts)} is not 32 bytes in URL-safe base64"
                )
            keys.append(RingKey.from_master(raw))
        return cls(keys)

    @property
    def current(self) -> RingKey:
        return self._keys[0]

    @property
    def key_ids(self) -> list[str]:
        return [key.key_id for key in self._keys]

    def hash(self, product_id: bytes, secret: str, key: RingKey | None = None) -> str:
        """The keyed hash of a licence key within its product (hex), under `key` or the first."""
        key = key or self.current
        return hmac.new(
            key.hash_key, product_id + b"\0" + secret.encode(), hashlib.sha256
        ).hexdigest()

    def hashes(self, product_id: bytes, secret: str) -> list[str]:
        """The key's hash under every key of the ring: what an import looks up."""
        return [self.hash(product_id, secret, key) for key in self._keys]

    def seal(self, secret: str, *, product_id: bytes, row_id: bytes) -> Sealed:
        """Encrypts under the first key, bound to the row (associated data)."""
        key = self.current
        nonce = os.urandom(NONCE_BYTES)
        body = key.aead.encrypt(nonce, secret.encode(), row_id)
        text = base64.urlsafe_b64encode(nonce + body).decode("ascii").rstrip("=")
        return Sealed(
            ciphertext=f"{FORMAT_VERSION}:{key.key_id}:{text}",
            key_id=key.key_id,
            key_hash=self.hash(product_id, secret, key),
        )

    def open(self, ciphertext: str, *, row_id: bytes) -> str:
        """Decrypts with whichever key the ciphertext names."""
        try:
            version, key_id, text = ciphertext.split(":", 2)
        except ValueError:
            raise DecryptionError("not a licence-key ciphertext") from None
        key = self._by_id.get(key_id)
        if version != FORMAT_VERSION or key is None:
            raise DecryptionError(f"ciphertext made by key {key_id!r}, which is not in {SETTING}")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            plain = key.aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], row_id)
        except (InvalidTag, binascii.Error, ValueError):
            raise DecryptionError("ciphertext altered or moved to another row") from None
        return plain.decode()

    def signing_keys(self) -> list[bytes]:
        """Keys for signed links, oldest first (itsdangerous signs with the last one)."""
        return [key.signing_key for key in reversed(self._keys)]


def keyring_of(settings: Settings) -> KeyRing:
    """The licence-key ring of `KEYS_ENCRYPTION_KEY`; a missing or malformed key stops
    start-up with a message that names the variable (never the key)."""
    try:
        return KeyRing.parse(settings.keys_encryption_key.get_secret_value())
    except KeyRingError as exc:
        raise ConfigurationError(str(exc)) from None
