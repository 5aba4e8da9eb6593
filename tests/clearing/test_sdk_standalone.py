"""The partner SDK imports and signs without any of the server's dependencies installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SERVER_ONLY = ("sqlalchemy", "pandas", "fastapi", "starlette", "psycopg", "alembic", "apscheduler")


def test_the_sdk_signs_a_request_without_the_server_packages() -> None:
    script = textwrap.dedent(
        f"""
        import importlib.abc, sys

        class Absent(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {SERVER_ONLY!r}:
                    raise ImportError(f"{{name}} is not installed on a partner's machine")
                return None

        sys.meta_path.insert(0, Absent())
        import httpx
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from clearing.sdk import PartnerClient

        seen = []

        def handler(request):
            seen.append(request)
            return httpx.Response(599)

        platform = Ed25519PrivateKey.generate().public_key()
        client = PartnerClient(
            "http://partner.test", "kid", Ed25519PrivateKey.generate(), {{"p": platform}},
            transport=httpx.MockTransport(handler), retries=0,
        )
        try:
            client.request("POST", "/v1/members", {{"external_id": "m1"}})
        except Exception:
            pass
        headers = seen[0].headers
        assert headers["signature-input"].startswith("sig1=("), headers
        assert headers["content-digest"].startswith("sha-256=:"), headers
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in {SERVER_ONLY!r})
        assert loaded == [], loaded
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
