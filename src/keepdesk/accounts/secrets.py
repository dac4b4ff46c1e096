"""Passwords (argon2id) and random tokens (stored as sha256, shown to their owner once)."""

from __future__ import annotations

import functools
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id with the library's current RFC 9106 parameters

MIN_PASSWORD_LENGTH = 10


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@functools.cache
def _dummy_hash() -> str:
    # Verified against when the account does not exist, so both answers take the same time.
    # Made on first use, not at import: one hash costs ~0.4 s, which every CLI start would pay.
    return _hasher.hash("keepdesk-no-such-account")


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return (
            _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def new_token(prefix: str) -> str:
    """A random token; the prefix (`kd_`, `kds_`) tells a leaked string's kind at a glance."""
    return prefix + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough; no salt needed to stop guessing.
    return hashlib.sha256(token.encode()).hexdigest()
