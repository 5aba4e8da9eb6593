"""What reaches a route: nothing read before the signature verifies, bounded bodies checked
against their digest as they stream, JSON parsed once without duplicate keys, a signed
Idempotency-Key given once, and settlement files streamed from disk under a known digest.

Several tests drive the ASGI app directly, so that they can see how much of a body the app
pulled from its receive channel and how much memory a download took.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import secrets
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from starlette.testclient import TestClient
from starlette.types import Message

from clearing.app.factory import create_app
from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.web.signatures import (
    load_public_key,
    response_signature_base,
    sign_request,
    verify_response,
    verify_signature_base,
)
from settlement.models import SettlementBatch, SettlementFile
from tests.api.api_support import (
    BASE,
    Party,
    World,
    assert_problem,
    bootstrap_operator,
    onboard,
    signed,
)

ACCRUAL = b'{"program":"BANK","external_id":"alice","points":1}'


# --------------------------------------------------------------------------- a raw ASGI client


@dataclass
class Body:
    """A request body fed to the app chunk by chunk, counting what the app pulled."""

    chunks: list[bytes]
    pulled: int = 0
    stall_after: int | None = None
    """Block (as a slow client would) once this many chunks were handed over."""

    async def receive(self) -> Message:
        if self.stall_after is not None and self.pulled >= self.stall_after:
            await anyio.sleep_forever()
        if self.pulled >= len(self.chunks):
            await anyio.sleep_forever()  # the body is over: only a disconnect could come
        chunk = self.chunks[self.pulled]
        self.pulled += 1
        return {"type": "http.request", "body": chunk, "more_body": self.pulled < len(self.chunks)}


@dataclass
class Answer:
    """What the app sent back; the body is hashed as it comes, and kept only when asked."""

    keep: bool = True
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    content: bytearray = field(default_factory=bytearray)
    size: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)
    done: bool = False

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = [
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in message["headers"]
            ]
        elif message["type"] == "http.response.body":
            chunk = message.get("body", b"")
            self.size += len(chunk)
            self.sha256.update(chunk)
            if self.keep:
                self.content += chunk
            self.done = not message.get("more_body", False)

    def header(self, name: str) -> str:
        (value,) = [v for k, v in self.headers if k.lower() == name]
        return value

    def problem(self) -> dict[str, Any]:
        assert self.header("content-type") == "application/problem+json"
        assert self.header("signature")
        body: dict[str, Any] = json.loads(bytes(self.content))
        return body


async def call(
    app: FastAPI, method: str, path: str, headers: list[tuple[str, str]], body: Body, answer: Answer
) -> Answer:
    """One request through the whole ASGI app (middleware included)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    await app(scope, body.receive, answer.send)
    return answer


def signed_headers(
    party: Party, method: str, path: str, body: bytes, headers: dict[str, str]
) -> list[tuple[str, str]]:
    """The headers of a request signed by ``party`` over ``body``."""
    added = sign_request(
        party.key,
        party.keyid,
        method,
        BASE + path,
        headers,
        body,
        created=int(time.time()),
        nonce=secrets.token_urlsafe(16),
    )
    return [*headers.items(), *added.items()]


def post_headers(party: Party, path: str, body: bytes) -> list[tuple[str, str]]:
    """A signed JSON POST's headers, without Content-Length (as a chunked upload sends)."""
    headers = {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}
    return [*signed_headers(party, "POST", path, body, headers), ("Transfer-Encoding", "chunked")]


def balance(http: TestClient, world: World) -> int:
    member = signed(http, world.bank, "GET", "/v1/programs/BANK/members/alice").json()
    return int(member["balance"])


# --------------------------------------------------------------------------- gates before the body


def test_declared_oversize_body_is_413_before_a_byte_is_read(world: World) -> None:
    body = Body([b"x" * 65536] * 40)
    headers = [("Content-Type", "application/json"), ("Content-Length", str(40 * 65536))]
    answer = anyio.run(call, world.app, "POST", "/v1/accruals", headers, body, Answer())
    assert answer.status == 413
    problem = answer.problem()
    assert (problem["code"], problem["limit"]) == ("body_too_large", 1 << 20)
    assert body.pulled == 0


def test_unsigned_body_is_refused_unread_while_keys_are_served(world: World) -> None:
    # A client uploading slowly: one chunk, then nothing. The refusal must not wait for it,
    # and the unauthenticated keys endpoint must answer meanwhile.
    upload = Body([b'{"program": "BANK", "points": ' + b"1" * 65536], stall_after=0)
    headers = [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")]
    refused, keys = Answer(), Answer()

    async def both() -> None:
        with anyio.fail_after(20):  # a hang is the failure this guards against, not a speed
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(call, world.app, "POST", "/v1/accruals", headers, upload, refused)
                tasks.start_soon(call, world.app, "GET", "/v1/platform/keys", [], Body([b""]), keys)

    anyio.run(both)
    assert refused.status == 401
    assert refused.problem()["code"] == "signature_missing"
    assert upload.pulled == 0
    assert keys.status == 200
    assert json.loads(bytes(keys.content))["keys"][0]["kty"] == "OKP"


def test_malformed_json_without_signature_is_401_not_422(world: World, http: TestClient) -> None:
    response = http.post(
        "/v1/accruals", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_problem(response, 401, "signature_missing")


# --------------------------------------------------------------------------- bodies, bounded


@pytest.fixture
def small_caps(settings: Settings) -> Iterator[World]:
    """A world whose bodies may be 16 KiB, bulk files 1 MiB."""
    app = create_app(
        dataclasses.replace(settings, max_body_bytes=16 << 10, max_bulk_body_bytes=1 << 20)
    )
    operator = bootstrap_operator(app)
    world = World(app, operator, operator, operator, operator, operator)
    with world.client(operator) as op:
        world.bank = onboard(op, "issuer", "Bank")
    with world.client(world.bank) as bank:
        bank.request(
            "POST", "/v1/programs", {"code": "BANK", "name": "Bank points", "point_value": "0.01"}
        )
        for n in range(200):
            bank.request("POST", "/v1/programs/BANK/members", {"external_id": f"m{n}"})
        bank.request("POST", "/v1/programs/BANK/members", {"external_id": "alice"})
    yield world
    app.state.engine.dispose()


def _bulk(lines: int, points: int = 1) -> bytes:
    items = [
        {"program": "BANK", "external_id": f"m{n % 200}", "points": points, "reference": "r" * 90}
        for n in range(lines)
    ]
    return json.dumps({"items": items}).encode()


def test_chunked_body_over_the_cap_is_413_without_draining_it(small_caps: World) -> None:
    payload = json.dumps(
        {"program": "BANK", "external_id": "alice", "points": 1, "pad": "x" * 200_000}
    )
    raw = payload.encode()
    chunks = [raw[i : i + 4096] for i in range(0, len(raw), 4096)]
    body = Body(chunks)
    headers = post_headers(small_caps.bank, "/v1/accruals", raw)
    answer = anyio.run(call, small_caps.app, "POST", "/v1/accruals", headers, body, Answer())
    assert answer.status == 413
    assert answer.problem()["code"] == "body_too_large"
    # 16 KiB is four 4 KiB chunks: the fifth tips it over, the other forty-odd are never read.
    assert body.pulled == 5 < len(chunks)


def test_content_length_that_lies_is_refused(world: World) -> None:
    headers = {"Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}
    signed_lines = signed_headers(world.bank, "POST", "/v1/accruals", ACCRUAL, headers)
    lines = [*signed_lines, ("Content-Length", "10")]
    answer = anyio.run(call, world.app, "POST", "/v1/accruals", lines, Body([ACCRUAL]), Answer())
    assert answer.status == 400
    assert answer.problem()["code"] == "content_length_mismatch"


def test_bulk_route_has_the_larger_cap_and_parses_off_the_loop(small_caps: World) -> None:
    http = TestClient(small_caps.app, base_url=BASE)
    # Over 64 KiB: parsed and validated in a worker thread, then handed to the route.
    bulk = _bulk(1000)
    assert 16 << 10 < 64 << 10 < len(bulk) < 1 << 20
    posted = signed(http, small_caps.bank, "POST", "/v1/accrual-batches", bulk)
    assert posted.status_code == 201, posted.text
    assert (posted.json()["count"], posted.json()["points"]) == (1000, 1000)
    # The same size on an ordinary route is over its cap.
    padded = json.dumps(
        {"program": "BANK", "external_id": "alice", "points": 1, "x": "y" * len(bulk)}
    )
    refused = signed(http, small_caps.bank, "POST", "/v1/accruals", padded.encode())
    assert_problem(refused, 413, "body_too_large")
    # A large file with a bad line is still answered by FastAPI's validation, in its words.
    bad = json.loads(bulk)
    bad["items"][999]["points"] = -1
    invalid = signed(http, small_caps.bank, "POST", "/v1/accrual-batches", json.dumps(bad).encode())
    problem = assert_problem(invalid, 422, "invalid_input")
    assert problem["errors"] == [
        {
            "loc": ["body", "items", 999, "points"],
            "msg": "Input should be greater than 0",
            "type": "greater_than",
        }
    ]
    # And one beyond even the bulk cap.
    huge = signed(http, small_caps.bank, "POST", "/v1/accrual-batches", _bulk(9000))
    assert_problem(huge, 413, "body_too_large")


def test_streamed_body_that_differs_from_its_digest_is_refused_and_burns_the_nonce(
    world: World, http: TestClient
) -> None:
    headers = post_headers(world.bank, "/v1/accruals", ACCRUAL)
    tampered = Body([ACCRUAL[:20], ACCRUAL[20:].replace(b":1}", b":9}")])
    answer = anyio.run(call, world.app, "POST", "/v1/accruals", headers, tampered, Answer())
    assert answer.status == 401
    assert answer.problem()["code"] == "digest_mismatch"
    again = anyio.run(call, world.app, "POST", "/v1/accruals", headers, Body([ACCRUAL]), Answer())
    assert again.problem()["code"] == "nonce_replayed"
    assert balance(http, world) == 0


def test_signed_chunked_upload_is_accepted(world: World, http: TestClient) -> None:
    headers = post_headers(world.bank, "/v1/accruals", ACCRUAL)
    body = Body([ACCRUAL[:7], ACCRUAL[7:30], ACCRUAL[30:]])
    answer = anyio.run(call, world.app, "POST", "/v1/accruals", headers, body, Answer())
    assert answer.status == 201, bytes(answer.content)
    assert balance(http, world) == 1


def test_malformed_signed_json_is_422_in_fastapis_words(world: World, http: TestClient) -> None:
    broken = signed(http, world.bank, "POST", "/v1/accruals", b'{"program": "BANK",')
    problem = assert_problem(broken, 422, "invalid_input")
    assert problem["errors"] == [
        {"loc": ["body", 19], "msg": "JSON decode error", "type": "json_invalid"}
    ]


# --------------------------------------------------------------------------- JSON and headers


def test_duplicate_json_keys_are_refused(world: World, http: TestClient) -> None:
    twice = b'{"program":"BANK","external_id":"alice","points":1,"points":1000}'
    assert_problem(
        signed(http, world.bank, "POST", "/v1/accruals", twice), 422, "duplicate_json_key"
    )
    nested = b'{"items":[{"program":"BANK","external_id":"alice","points":1,"program":"BANK"}]}'
    problem = assert_problem(
        signed(http, world.bank, "POST", "/v1/accrual-batches", nested), 422, "duplicate_json_key"
    )
    assert problem["key"] == "program"
    assert balance(http, world) == 0
    # After authentication, never before: an unsigned one is a 401.
    unsigned = http.post(
        "/v1/accruals", content=twice, headers={"Content-Type": "application/json"}
    )
    assert_problem(unsigned, 401, "signature_missing")


def test_idempotency_key_outside_the_signature_is_refused(world: World, http: TestClient) -> None:
    headers = {"Content-Type": "application/json"}
    added = sign_request(
        world.bank.key,
        world.bank.keyid,
        "POST",
        BASE + "/v1/accruals",
        headers,
        ACCRUAL,
        created=int(time.time()),
        nonce=secrets.token_urlsafe(16),
    )
    assert "idempotency-key" not in added["Signature-Input"]
    # Added after signing: whoever holds the request could re-key it and have it applied twice.
    response = http.post(
        "/v1/accruals",
        headers={**headers, **added, "Idempotency-Key": "rekeyed"},
        content=ACCRUAL,
    )
    assert_problem(response, 401, "idempotency_key_unsigned")
    assert balance(http, world) == 0


def test_idempotency_key_given_twice_is_refused(world: World, http: TestClient) -> None:
    headers = {"Content-Type": "application/json", "Idempotency-Key": "a, b"}
    # Two header lines are one field "a, b" to the signature (RFC 9421 section 2.1).
    lines = signed_headers(world.bank, "POST", "/v1/accruals", ACCRUAL, headers)
    split = [(k, v) for k, v in lines if k != "Idempotency-Key"]
    two_lines = [*split, ("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    response = http.post("/v1/accruals", headers=two_lines, content=ACCRUAL)
    assert_problem(response, 400, "idempotency_key_repeated")
    joined = signed(http, world.bank, "POST", "/v1/accruals", ACCRUAL, idempotency_key="a, b")
    assert_problem(joined, 400, "idempotency_key_repeated")
    assert balance(http, world) == 0


def test_sdk_signs_the_idempotency_key(world: World) -> None:
    with world.client(world.bank) as bank:
        out = bank.accrue("BANK", "alice", 5, idempotency_key="sdk-1")
        again = bank.accrue("BANK", "alice", 5, idempotency_key="sdk-1")
    assert out == again
    assert out["points"] == 5


# --------------------------------------------------------------------------- downloads


def publish(app: FastAPI, party: Party, name: str, content: Path | bytes) -> str:
    """Record a published batch holding one file of ``party``; the file's SHA-256."""
    settings: Settings = app.state.settings
    folder = Path("CNY") / "2026-11-24" / party.org_id
    (settings.settlement_dir / folder).mkdir(parents=True, exist_ok=True)
    target = settings.settlement_dir / folder / name
    if isinstance(content, bytes):
        target.write_bytes(content)
    else:
        content.rename(target)
    hasher = hashlib.sha256()
    with target.open("rb") as file:
        while block := file.read(1 << 20):
            hasher.update(block)
    now = datetime(2026, 11, 24, 16, 30, tzinfo=UTC)
    with transaction(app.state.engine) as session:
        session.add(
            SettlementBatch(
                id="SB-CNY-20261124",
                currency="CNY",
                business_date=date(2026, 11, 24),
                zone="Asia/Shanghai",
                cutoff="00:00",
                window_start=datetime(2026, 11, 23, 16, tzinfo=UTC),
                window_end=datetime(2026, 11, 24, 16, tzinfo=UTC),
                sequence=1,
                state="published",
                created_at=now,
                updated_at=now,
                published_at=now,
                directory=str(folder.parent),
            )
        )
        session.flush()
        session.add(
            SettlementFile(
                batch_id="SB-CNY-20261124",
                org_id=uuid.UUID(party.org_id),
                name=name,
                sha256=hasher.hexdigest(),
                size=target.stat().st_size,
                path=str(folder / name),
            )
        )
    return hasher.hexdigest()


def test_download_is_signed_from_the_manifest_digest_with_safe_headers(
    world: World, http: TestClient
) -> None:
    content = b"party;amount\n" * 10_000
    publish(world.app, world.bank, "statement.csv", content)
    response = signed(
        http, world.bank, "GET", "/v1/settlement/batches/2026-11-24/files/statement.csv"
    )
    assert response.status_code == 200, response.text
    assert response.content == content
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-length"] == str(len(content))
    jwk = http.get("/v1/platform/keys").json()["keys"][0]
    verified = verify_response(
        response.status_code,
        response.headers.multi_items(),
        response.content,
        {jwk["kid"]: load_public_key(json.dumps(jwk))}.get,
        now=int(time.time()),
    )
    assert "content-digest" in verified.components
    # Every API answer says nosniff too, errors included.
    assert http.get("/v1/programs").headers["x-content-type-options"] == "nosniff"


def test_file_changed_on_disk_is_cut_short_not_delivered_under_a_false_digest(
    world: World,
) -> None:
    publish(world.app, world.bank, "statement.csv", b"a" * 200_000)
    target = next(world.app.state.settings.settlement_dir.rglob("statement.csv"))
    target.write_bytes(b"b" * 200_000)
    path = "/v1/settlement/batches/2026-11-24/files/statement.csv"
    headers = signed_headers(world.bank, "GET", path, b"", {})
    answer = Answer()
    with pytest.raises(RuntimeError, match="differs from its manifest"):
        anyio.run(call, world.app, "GET", path, headers, Body([b""]), answer)
    assert answer.status == 200
    assert not answer.done
    assert answer.size < 200_000


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_large_download_streams_with_flat_memory(world: World, tmp_path: Path) -> None:
    size, bound = 256 << 20, 32 << 20
    big = tmp_path / "big.xml"
    with big.open("wb") as file:
        block = os.urandom(1 << 20)
        for n in range(size >> 20):
            file.write(block[n:] + block[:n])
    sha256 = publish(world.app, world.bank, "camt053.xml", big)
    path = "/v1/settlement/batches/2026-11-24/files/camt053.xml"
    headers = signed_headers(world.bank, "GET", path, b"", {})
    answer = Answer(keep=False)
    tracemalloc.start()
    try:
        anyio.run(call, world.app, "GET", path, headers, Body([b""]), answer)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer.status == 200
    assert (answer.size, answer.done) == (size, True)
    assert answer.sha256.hexdigest() == sha256
    assert peak < bound, f"peak {peak >> 20} MiB"
    digest = answer.header("content-digest")
    assert digest == "sha-256=:" + base64.b64encode(bytes.fromhex(sha256)).decode() + ":"
    # The signature was made before the body existed, over the digest the manifest gave.
    headers_in = dict(answer.headers)
    base = response_signature_base(200, headers_in, label="sig1")
    jwk = world.app.state.platform_key.jwks()["keys"][0]
    signature = headers_in["signature"].split("=:", 1)[1].rstrip(":")
    verify_signature_base(load_public_key(json.dumps(jwk)), base, base64.b64decode(signature))
