"""Field encryption for personal data (Fernet, with key rotation) and keyed hashes.

A cipher takes a comma-separated list of keys: the first encrypts, all decrypt, so a new
key is rolled out by putting it first and ``rotate`` re-encrypts old values.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import String, TypeDecorator


class FieldCipher:
    def __init__(self, keys: str | list[str]):
        if isinstance(keys, str):
            keys = [k.strip() for k in keys.split(",") if k.strip()]
        if not keys:
            raise ValueError("at least one encryption key is needed")
        self._fernet = MultiFernet([Fernet(_as_fernet_key(k)) for k in keys])

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("value cannot be decrypted with the configured keys") from exc

    def rotate(self, token: str) -> str:
        return self._fernet.rotate(token.encode()).decode()


def _as_fernet_key(key: str) -> bytes:
    """Accept a Fernet key as given, or (development and tests) derive one from any other string.

    Production never derives: its settings refuse anything but real Fernet keys
    (``fernet_key_problems`` in shared/settings.py), so a passphrase cannot stand in for a key.
    """
    raw = key.encode()
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32:
            return raw
    except ValueError:
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest())


@lru_cache(maxsize=8)
def cipher_for(keys: str) -> FieldCipher:
    """One cipher per key list and process (building a MultiFernet is not free)."""
    return FieldCipher(keys)


def generate_key() -> str:
    return Fernet.generate_key().decode()


def keyed_hash(value: str, key: str) -> str:
    """Stable HMAC-SHA256 of a normalised value, to match without storing the value."""
    return hmac.new(key.encode(), value.strip().lower().encode(), hashlib.sha256).hexdigest()


class EncryptedText(TypeDecorator):
    """A column stored as Fernet ciphertext; Python code sees plain text."""

    impl = String
    cache_ok = True

    def __init__(self, cipher_factory, length: int = 1024):
        super().__init__(length)
        self._cipher_factory = cipher_factory

    def process_bind_param(self, value, dialect):
        return None if value is None else self._cipher_factory().encrypt(value)

    def process_result_value(self, value, dialect):
        return None if value is None else self._cipher_factory().decrypt(value)
