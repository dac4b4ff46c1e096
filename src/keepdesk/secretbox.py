"""Encrypting secrets at rest (mailbox passwords) with a key derived from the instance secret.

AES-256-GCM; each value gets a fresh nonce. A changed instance secret makes old values
unreadable, which `open_secret` reports as an error instead of returning garbage.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = "v1"


def _key(instance_secret: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"keepdesk secretbox v1"
    ).derive(instance_secret)


def seal(instance_secret: bytes, plaintext: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(_key(instance_secret)).encrypt(nonce, plaintext.encode(), None)
    return f"{_VERSION}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"


class SecretUnreadable(ValueError):
    """The value was sealed with another instance secret, or was damaged."""


def open_secret(instance_secret: bytes, sealed: str) -> str:
    version, _, payload = sealed.partition(":")
    if version != _VERSION:
        raise SecretUnreadable("unknown secret format")
    try:
        raw = base64.urlsafe_b64decode(payload.encode())
        return AESGCM(_key(instance_secret)).decrypt(raw[:12], raw[12:], None).decode()
    except (InvalidTag, ValueError) as exc:
        raise SecretUnreadable(
            "cannot decrypt a stored secret: was the instance secret (secret_key) changed?"
        ) from exc
