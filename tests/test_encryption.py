"""The key ring: authenticated encryption, key ids, keyed hashes, and errors that leak nothing."""

from __future__ import annotations

import uuid

import pytest

from cryptocheckout.config import ConfigurationError, Mode, Settings
from cryptocheckout.kit.encryption import (
    DecryptionError,
    KeyRing,
    KeyRingError,
    generate_key,
    keyring_of,
)

PRODUCT = uuid.uuid4().bytes
ROW = uuid.uuid4().bytes


def test_seal_and_open_round_trip_without_the_plain_key_in_the_ciphertext() -> None:
    ring = KeyRing.parse(generate_key())
    sealed = ring.seal("ABCD-EFGH-1234", product_id=PRODUCT, row_id=ROW)
    assert "ABCD" not in sealed.ciphertext and "1234" not in sealed.ciphertext
    assert sealed.ciphertext.startswith(f"v1:{ring.current.key_id}:")
    assert sealed.key_id == ring.current.key_id
    assert ring.open(sealed.ciphertext, row_id=ROW) == "ABCD-EFGH-1234"
    # Random nonces: the same key encrypts differently each time, its hash does not change.
    again = ring.seal("ABCD-EFGH-1234", product_id=PRODUCT, row_id=ROW)
    assert again.ciphertext != sealed.ciphertext and again.key_hash == sealed.key_hash


def test_a_ciphertext_moved_to_another_row_or_altered_does_not_open() -> None:
    ring = KeyRing.parse(generate_key())
    sealed = ring.seal("KEY-1", product_id=PRODUCT, row_id=ROW)
    with pytest.raises(DecryptionError):
        ring.open(sealed.ciphertext, row_id=uuid.uuid4().bytes)
    flipped = sealed.ciphertext[:-2] + ("A" if sealed.ciphertext[-2] != "A" else "B") + "A"
    with pytest.raises(DecryptionError):
        ring.open(flipped, row_id=ROW)


def test_first_key_encrypts_every_key_decrypts_and_the_ciphertext_names_its_key() -> None:
    old, new = generate_key(), generate_key()
    before = KeyRing.parse(old)
    sealed = before.seal("KEY-1", product_id=PRODUCT, row_id=ROW)
    during = KeyRing.parse(f"{new}, {old}")
    assert during.open(sealed.ciphertext, row_id=ROW) == "KEY-1"
    resealed = during.seal("KEY-1", product_id=PRODUCT, row_id=ROW)
    assert resealed.key_id == during.current.key_id != before.current.key_id
    after = KeyRing.parse(new)
    assert after.open(resealed.ciphertext, row_id=ROW) == "KEY-1"
    with pytest.raises(DecryptionError, match=before.current.key_id):
        after.open(sealed.ciphertext, row_id=ROW)
    # An import during the rotation looks for the key under both keys' hashes.
    assert sealed.key_hash in during.hashes(PRODUCT, "KEY-1")
    assert resealed.key_hash in during.hashes(PRODUCT, "KEY-1")


def test_hashes_depend_on_the_product_and_the_key() -> None:
    ring = KeyRing.parse(generate_key())
    other = KeyRing.parse(generate_key())
    assert ring.hash(PRODUCT, "K") != ring.hash(uuid.uuid4().bytes, "K")
    assert ring.hash(PRODUCT, "K") != other.hash(PRODUCT, "K")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("", "KEYS_ENCRYPTION_KEY is not set"),
        ("not-base64!!", "KEYS_ENCRYPTION_KEY: key 1 of 1 is not 32 bytes"),
        ("c2hvcnQ=", "KEYS_ENCRYPTION_KEY: key 1 of 1 is not 32 bytes"),
        ("{good},", "KEYS_ENCRYPTION_KEY: key 2 of 2 is not 32 bytes"),
        ("{good},{good}", "KEYS_ENCRYPTION_KEY lists the same key twice"),
    ],
)
def test_malformed_settings_name_the_variable_and_never_print_a_key(
    setting: str, message: str
) -> None:
    good = generate_key()
    setting = setting.replace("{good}", good)
    with pytest.raises(KeyRingError) as caught:
        KeyRing.parse(setting)
    assert message in str(caught.value)
    assert good not in str(caught.value)
    if setting:
        assert setting not in str(caught.value)


def test_settings_turn_a_bad_key_into_a_start_up_error() -> None:
    secret = "x" * 40
    settings = Settings(_env_file=None, mode=Mode.TEST, keys_encryption_key=secret)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="KEYS_ENCRYPTION_KEY") as caught:
        keyring_of(settings)
    assert secret not in str(caught.value)


def test_nothing_secret_in_reprs() -> None:
    key = generate_key()
    ring = KeyRing.parse(key)
    assert key not in repr(ring) and key not in repr(ring.current)
    assert repr(ring.current.aead) not in repr(ring.current)
