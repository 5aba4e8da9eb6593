"""A partner SDK: signed requests, verified responses, idempotency keys, safe retries.

from clearing.sdk.client import PartnerClient, load_private_key
client = PartnerClient("https://clearing.example", keyid, load_private_key("bank.pem"))
client.accrue("BANKA", "cust-42", 100)
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote as urlquote

import anyio.from_thread
import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from clearing.web.signatures import SignatureError, load_public_key, sign_request, verify_response

__all__ = ["ApiError", "PartnerClient", "SignatureError", "load_private_key"]

RETRY_STATUSES = frozenset({502, 503, 504})


class ApiError(Exception):
    """The platform answered with a problem+json document."""

    def __init__(self, status: int, code: str, problem: Mapping[str, Any]) -> None:
        super().__init__(f"{status} {code}: {problem.get('detail', '')}")
        self.status = status
        self.code = code
        self.problem = dict(problem)


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from an unencrypted PKCS#8 PEM file."""
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


class _SyncOverAsync(httpx.BaseTransport):
    """Drives an async transport (``httpx.ASGITransport``) from this synchronous client."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self._transport = transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> httpx.Response:
            content = request.read()
            forwarded = httpx.Request(
                request.method, request.url, headers=request.headers, content=content
            )
            response = await self._transport.handle_async_request(forwarded)
            body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        with anyio.from_thread.start_blocking_portal() as portal:
            return portal.call(send)


def _json_default(value: object) -> str:
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


class PartnerClient:
    """A signed-API client acting as one organisation (the owner of ``keyid``)."""

    def __init__(
        self,
        base_url: str,
        keyid: str,
        private_key: Ed25519PrivateKey,
        platform_public_keys: Mapping[str, str | bytes | Ed25519PublicKey] | None = None,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
        *,
        retries: int = 3,
        backoff: float = 0.2,
        timeout: float = 10.0,
    ) -> None:
        if isinstance(transport, httpx.AsyncBaseTransport):
            transport = _SyncOverAsync(transport)
        self._http = httpx.Client(base_url=base_url, transport=transport, timeout=timeout)
        self.keyid = keyid
        self._key = private_key
        self._platform_keys: dict[str, Ed25519PublicKey] | None = None
        if platform_public_keys is not None:
            self._platform_keys = {
                kid: k if isinstance(k, Ed25519PublicKey) else load_public_key(k)
                for kid, k in platform_public_keys.items()
            }
        self.retries = retries
        self.backoff = backoff

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> PartnerClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------ transport

    def platform_keys(self) -> dict[str, Ed25519PublicKey]:
        """The platform's response keys: given at construction, or fetched once from the JWKS."""
        if self._platform_keys is None:
            response = self._http.get("/v1/platform/keys")
            response.raise_for_status()
            fetched = {
                jwk["kid"]: load_public_key(json.dumps(jwk))
                for jwk in response.json()["keys"]
                if isinstance(jwk, dict) and "kid" in jwk
            }
            # Trust on first use, but the JWKS response must itself verify under what it lists.
            self._verify(response, fetched)
            self._platform_keys = fetched
        return self._platform_keys

    def _verify(self, response: httpx.Response, keys: Mapping[str, Ed25519PublicKey]) -> None:
        verify_response(
            response.status_code,
            response.headers.multi_items(),
            response.content,
            keys.get,
            now=int(time.time()),
        )

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """Send a signed request and return the verified JSON answer; raise ApiError on a problem."""
        keys = self.platform_keys()
        method = method.upper()
        content = b""
        headers: dict[str, str] = {"Accept": "application/json"}
        if body is not None:
            content = json.dumps(body, separators=(",", ":"), default=_json_default).encode()
            headers["Content-Type"] = "application/json"
        if method == "POST":
            # One key per logical call, reused by every retry of it: the platform applies it once.
            # sign_request covers it, as the platform requires: nobody in between can re-key it.
            headers["Idempotency-Key"] = idempotency_key or str(uuid.uuid4())
        # Built once: the URL it resolves is the one we sign; each attempt only re-signs it.
        prepared = self._http.build_request(
            method, path, params=params, headers=headers, content=content
        )
        url = str(prepared.url)
        attempt = 0
        while True:
            # Each attempt is a new signature with a fresh nonce, so retries are not replays.
            signed = sign_request(
                self._key,
                self.keyid,
                method,
                url,
                headers,
                content,
                created=int(time.time()),
                nonce=secrets.token_urlsafe(16),
            )
            prepared.headers.update(signed)
            try:
                response = self._http.send(prepared)
            except httpx.TransportError:
                if attempt >= self.retries:
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    break
            time.sleep(self.backoff * 2**attempt)
            attempt += 1
        self._verify(response, keys)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text}
            if not isinstance(problem, dict):
                problem = {"detail": str(problem)}
            raise ApiError(response.status_code, str(problem.get("code", "")), problem)
        return response.json() if response.content else None

    # ------------------------------------------------------------------------------ helpers

    def programs(self, after: str | None = None, limit: int = 50) -> dict[str, Any]:
        """A page of programs: ``{"items": [...], "next": cursor | None}``."""
        params: dict[str, Any] = {"limit": limit}
        if after:
            params["after"] = after
        return dict(self.request("GET", "/v1/programs", params=params))

    def all_programs(self) -> Iterable[dict[str, Any]]:
        """Every program, following the cursor."""
        after: str | None = None
        while True:
            page = self.programs(after)
            yield from page["items"]
            after = page["next"]
            if after is None:
                return

    def accrue(
        self,
        program: str,
        external_id: str,
        points: int,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Credit points to a member (issuer-funded, or merchant-funded when a merchant calls)."""
        body: dict[str, Any] = {"program": program, "external_id": external_id, "points": points}
        if reference is not None:
            body["reference"] = reference
        return dict(self.request("POST", "/v1/accruals", body, idempotency_key=idempotency_key))

    def authorise(
        self,
        program: str,
        external_id: str,
        order_total: int,
        points_amount: int,
        reference: str | None = None,
        idempotency_key: str | None = None,
        payment_token: str | None = None,
    ) -> dict[str, Any]:
        """Authorise a checkout paying ``points_amount`` (minor units) of the order with points,
        with the member's payment token (unless the issuer trusts us without one)."""
        body: dict[str, Any] = {
            "program": program,
            "external_id": external_id,
            "order_total": order_total,
            "points_amount": points_amount,
        }
        if reference is not None:
            body["reference"] = reference
        if payment_token is not None:
            body["payment_token"] = payment_token
        return dict(self.request("POST", "/v1/checkouts", body, idempotency_key=idempotency_key))

    def capture(
        self, checkout_id: str, amount: int | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Capture an authorised checkout, in full or for ``amount`` minor units."""
        body = {} if amount is None else {"amount": amount}
        path = f"/v1/checkouts/{checkout_id}/capture"
        return dict(self.request("POST", path, body, idempotency_key=idempotency_key))

    def void(self, checkout_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Release an authorised checkout's hold."""
        path = f"/v1/checkouts/{checkout_id}/void"
        return dict(self.request("POST", path, idempotency_key=idempotency_key))

    def refund(
        self, checkout_id: str, amount: int, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Refund ``amount`` minor units of a captured checkout."""
        path = f"/v1/checkouts/{checkout_id}/refunds"
        return dict(self.request("POST", path, {"amount": amount}, idempotency_key=idempotency_key))

    def checkout(self, checkout_id: str) -> dict[str, Any]:
        """One of our checkouts."""
        return dict(self.request("GET", f"/v1/checkouts/{checkout_id}"))

    def quote(
        self,
        source_program: str,
        source_external_id: str,
        target_program: str,
        target_external_id: str,
        points: int,
    ) -> dict[str, Any]:
        """Price a conversion of a member's points into a linked member's program."""
        body = {
            "source_program": source_program,
            "source_external_id": source_external_id,
            "target_program": target_program,
            "target_external_id": target_external_id,
            "points": points,
        }
        return dict(self.request("POST", "/v1/conversion-quotes", body))

    def convert(self, quote_id: str, idempotency_key: str | None = None) -> dict[str, Any]:
        """Execute a conversion quote."""
        body = {"quote_id": quote_id}
        return dict(self.request("POST", "/v1/conversions", body, idempotency_key=idempotency_key))

    def payment_token(
        self,
        program: str,
        external_id: str,
        ttl_seconds: int | None = None,
        max_amount: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Mint a one-time payment token for one of our members (``["token"]`` is the code)."""
        body: dict[str, Any] = {}
        if ttl_seconds is not None:
            body["ttl_seconds"] = ttl_seconds
        if max_amount is not None:
            body["max_amount"] = max_amount
        path = f"{self._member_path(program, external_id)}/payment-tokens"
        return dict(self.request("POST", path, body, idempotency_key=idempotency_key))

    def link_token(
        self,
        program: str,
        external_id: str,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Mint a one-time link token for one of our members, for another issuer to link with."""
        body: dict[str, Any] = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        path = f"{self._member_path(program, external_id)}/link-tokens"
        return dict(self.request("POST", path, body, idempotency_key=idempotency_key))

    def link(
        self,
        source_program: str,
        source_external_id: str,
        target_program: str,
        target_external_id: str,
        link_token: str,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Link one of our members to a source member, with the source issuer's link token."""
        body = {
            "source_program": source_program,
            "source_external_id": source_external_id,
            "target_program": target_program,
            "target_external_id": target_external_id,
            "link_token": link_token,
        }
        return dict(self.request("POST", "/v1/member-links", body, idempotency_key=idempotency_key))

    @staticmethod
    def _member_path(program: str, external_id: str) -> str:
        return f"/v1/programs/{urlquote(program, safe='')}/members/{urlquote(external_id, safe='')}"

    def member(self, program: str, external_id: str) -> dict[str, Any]:
        """Balance, held and available points of one of our members."""
        return dict(self.request("GET", self._member_path(program, external_id)))
