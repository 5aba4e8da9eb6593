"""Signed manifest of a party's settlement folder: canonical JSON plus a raw Ed25519 signature."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.sig"


def canonical_json(value: Any) -> bytes:
    """Canonical bytes: sorted keys, no spaces, ASCII only, one trailing newline."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return text.encode("ascii") + b"\n"


def manifest_bytes(
    batch: str,
    party: str,
    key_id: str,
    hashes: Mapping[str, str],
    omitted: Mapping[str, str] | None = None,
) -> bytes:
    """The manifest listing every file name with its SHA-256, in name order, and every file
    left out of the folder (name -> reason code), in name order.

    `omitted` appears only when something was left out: a complete folder's manifest keeps
    the bytes it always had."""
    body: dict[str, Any] = {
        "batch": batch,
        "party": party,
        "key_id": key_id,
        "files": [{"name": name, "sha256": hashes[name]} for name in sorted(hashes)],
    }
    if omitted:
        body["omitted"] = [{"name": name, "reason": omitted[name]} for name in sorted(omitted)]
    return canonical_json(body)


def sign_manifest(data: bytes, signing_key: Ed25519PrivateKey) -> bytes:
    """The raw 64-byte Ed25519 signature of the manifest bytes."""
    return signing_key.sign(data)
