"""The platform's own Ed25519 key: signs every API response and, later, settlement files."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from clearing.web.signatures import public_jwk

__all__ = ["PlatformKey", "jwk_thumbprint", "load_or_create"]


def jwk_thumbprint(key: Ed25519PublicKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url) of an Ed25519 public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    # RFC 7638 section 3.2: required members only, lexicographic order, no whitespace.
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class PlatformKey:
    """The platform's signing key with its derived key id."""

    private_key: Ed25519PrivateKey
    keyid: str

    def __repr__(self) -> str:
        # Keep the private key out of logs and tracebacks that print locals.
        return f"PlatformKey(keyid={self.keyid!r})"

    @property
    def public_key(self) -> Ed25519PublicKey:
        """The public half, which partners use to verify our signatures."""
        return self.private_key.public_key()

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JSON Web Key Set published at ``GET /v1/platform/keys``."""
        return {"keys": [public_jwk(self.public_key, self.keyid)]}


def load_or_create(path: Path) -> PlatformKey:
    """Load the PEM key at ``path``, generating it (mode 0600) if the file does not exist."""
    if not path.exists():
        _create(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return PlatformKey(key, jwk_thumbprint(key.public_key()))


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: two processes starting at once must not each write a different key; mode 0600 from
    # the start rather than chmod afterwards, so the key is never readable by others.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
