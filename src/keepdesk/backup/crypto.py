"""Encrypting backup archives, so they can sit on storage you do not trust.

Either a passphrase (scrypt) or an X25519 public key (the private key stays offline; only it
can decrypt) gives a 256-bit file key. The archive is then sealed in 1 MiB chunks with
AES-256-GCM (the STREAM construction: a counter nonce and a last-chunk flag), so a truncated,
reordered or altered archive fails to decrypt instead of restoring something else.

    header: b"KDBACKUP1" | mode (1 byte: 1 passphrase, 2 public key) | mode data | nonce prefix
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from keepdesk.errors import KeepdeskError

MAGIC = b"KDBACKUP1"
CHUNK = 1024 * 1024
_PASSPHRASE, _PUBLIC_KEY = 1, 2
PUBLIC_PREFIX, PRIVATE_PREFIX = "kdpub1:", "kdkey1:"


class BackupKeyError(KeepdeskError):
    """Wrong passphrase or key, or a damaged encrypted archive."""

    code = "backup_key"


def generate_keypair() -> tuple[str, str]:
    """(public, private) as text: give the public key to `keepdesk backup --public-key`."""
    private = X25519PrivateKey.generate()
    raw_private = private.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    raw_public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return (
        PUBLIC_PREFIX + base64.urlsafe_b64encode(raw_public).decode(),
        PRIVATE_PREFIX + base64.urlsafe_b64encode(raw_private).decode(),
    )


def _decode_key(text: str, prefix: str) -> bytes:
    text = text.strip()
    if not text.startswith(prefix):
        raise BackupKeyError(f"not a keepdesk backup key (it should start with {prefix})")
    try:
        raw = base64.urlsafe_b64decode(text[len(prefix) :].encode())
    except ValueError:
        raise BackupKeyError("the key is damaged") from None
    if len(raw) != 32:
        raise BackupKeyError("the key is damaged")
    return raw


def _scrypt(passphrase: str, salt: bytes) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(passphrase.encode())


def _hkdf(shared: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def write_header(out: BinaryIO, *, passphrase: str | None, public_key: str | None) -> bytes:
    """Write the header; returns the file key."""
    out.write(MAGIC)
    if passphrase is not None:
        salt = os.urandom(16)
        out.write(bytes([_PASSPHRASE]) + salt)
        return _scrypt(passphrase, salt)
    assert public_key is not None
    recipient = X25519PublicKey.from_public_bytes(_decode_key(public_key, PUBLIC_PREFIX))
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    out.write(bytes([_PUBLIC_KEY]) + ephemeral_public)
    return _hkdf(ephemeral.exchange(recipient), b"keepdesk backup x25519" + ephemeral_public)


def read_header(src: BinaryIO, *, passphrase: str | None, private_key: str | None) -> bytes:
    if src.read(len(MAGIC)) != MAGIC:
        raise BackupKeyError("not an encrypted keepdesk backup")
    mode = src.read(1)
    if mode == bytes([_PASSPHRASE]):
        if passphrase is None:
            raise BackupKeyError(
                "this backup is encrypted with a passphrase: give it with --passphrase-stdin"
            )
        return _scrypt(passphrase, src.read(16))
    if mode == bytes([_PUBLIC_KEY]):
        if private_key is None:
            raise BackupKeyError("this backup is encrypted for a key: give --private-key-file")
        ephemeral_public = src.read(32)
        private = X25519PrivateKey.from_private_bytes(_decode_key(private_key, PRIVATE_PREFIX))
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        return _hkdf(shared, b"keepdesk backup x25519" + ephemeral_public)
    raise BackupKeyError("unknown encryption mode")


def is_encrypted(path_head: bytes) -> bool:
    return path_head.startswith(MAGIC)


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


def encrypt_stream(key: bytes, src: BinaryIO, out: BinaryIO) -> None:
    aead = AESGCM(key)
    prefix = os.urandom(7)
    out.write(prefix)
    counter = 0
    chunk = src.read(CHUNK)
    while True:
        following = src.read(CHUNK)
        last = not following
        out.write(aead.encrypt(_nonce(prefix, counter, last), chunk, None))
        if last:
            return
        chunk, counter = following, counter + 1


def decrypt_stream(key: bytes, src: BinaryIO) -> Iterator[bytes]:
    aead = AESGCM(key)
    prefix = src.read(7)
    counter = 0
    sealed = src.read(CHUNK + 16)
    while True:
        following = src.read(CHUNK + 16)
        last = not following
        try:
            yield aead.decrypt(_nonce(prefix, counter, last), sealed, None)
        except InvalidTag:
            raise BackupKeyError(
                "cannot decrypt the backup: wrong passphrase or key, or the file is damaged"
            ) from None
        if last:
            return
        sealed, counter = following, counter + 1
