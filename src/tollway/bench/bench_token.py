"""Row F's credential: a throwaway issuer (a fresh EC P-256 key per run, never written but as its public
half), the issuers file trusting it, and one token for the bench customer that every request reuses, so
the row measures the cached-token path."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

BENCH_ISSUER: Final = "https://bench-idp.tollway.invalid/"
BENCH_AUDIENCE: Final = "https://bench-api.tollway.invalid"
BENCH_ISSUER_NAME: Final = "bench-idp"
TOKEN_LIFETIME_S: Final = 86_400


def bench_issuer(work_dir: Path, customer: str) -> tuple[Path, str]:
    """Write an issuers file trusting a fresh key into ``work_dir``; return it and a token for ``customer``."""
    private = ec.generate_private_key(ec.SECP256R1())
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    lines = [
        "apiVersion: tollway.dev/v1",
        "kind: TokenIssuers",
        "issuers:",
        f"  {BENCH_ISSUER_NAME}:",
        f"    issuer: {json.dumps(BENCH_ISSUER)}",
        f"    audiences: [{json.dumps(BENCH_AUDIENCE)}]",
        "    algorithms: [ES256]",
        "    keys:",
        "      - kid: bench-1",
        "        pem: |",
        *(f"          {line}" for line in pem.strip().splitlines()),
    ]
    path = work_dir / "bench-issuers.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    now = int(time.time())
    claims = {"iss": BENCH_ISSUER, "aud": BENCH_AUDIENCE, "sub": customer, "iat": now, "exp": now + TOKEN_LIFETIME_S}
    token = jwt.encode(claims, private, algorithm="ES256", headers={"kid": "bench-1"})
    return path, token
