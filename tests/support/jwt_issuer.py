"""A local OAuth issuer for tests: signing keys made with ``cryptography``, tokens minted with PyJWT, and a
JWKS HTTP server on a free loopback port that counts its hits and can be taken down and brought back.

Nothing here is used outside the tests; the keys are fresh per run and never written anywhere but the
test's temporary directory.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tollway.harness.ports import LOOPBACK

ISSUER = "https://idp.test.example/"
AUDIENCE = "https://api.test.example"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


@dataclass
class SigningKey:
    kid: str
    algorithm: str
    private: PrivateKey

    @classmethod
    def rsa(cls, kid: str, bits: int = 2048, algorithm: str = "RS256") -> SigningKey:
        return cls(kid, algorithm, rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def ed25519(cls, kid: str) -> SigningKey:
        return cls(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())

    def public_jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk: dict[str, Any] = RSAAlgorithm.to_jwk(public, as_dict=True)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            jwk = ECAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )


@dataclass
class LocalIssuer:
    """Mints tokens for ``issuer``; ``keys[0]`` signs unless told otherwise."""

    keys: list[SigningKey]
    issuer: str = ISSUER
    audience: str = AUDIENCE
    now: float | None = None  # fixed "now" for iat/exp (None: the real time)

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk() for key in self.keys]}

    def claims(self, customer: str = "acme", lifetime_s: int = 600, **extra: Any) -> dict[str, Any]:
        now = int(self.now if self.now is not None else time.time())
        base: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": customer,
            "iat": now,
            "exp": now + lifetime_s,
        }
        base.update(extra)
        return {name: value for name, value in base.items() if value is not None}

    def token(
        self,
        customer: str = "acme",
        *,
        key: SigningKey | None = None,
        headers: Mapping[str, Any] | None = None,
        claims: Mapping[str, Any] | None = None,
        **extra: Any,
    ) -> str:
        signer = key or self.keys[0]
        payload = dict(claims) if claims is not None else self.claims(customer, **extra)
        return jwt.encode(
            payload, signer.private, algorithm=signer.algorithm, headers={"kid": signer.kid, **(headers or {})}
        )


def issuers_yaml(
    name: str = "test-idp",
    *,
    issuer: str = ISSUER,
    audience: str = AUDIENCE,
    jwks_url: str | None = None,
    pem: str | None = None,
    algorithms: str = "[RS256, ES256, EdDSA]",
    extra: str = "",
    jwks_extra: str = "",
) -> str:
    """An issuers file for one issuer: with a JWKS URL, or a static PEM key."""
    lines = [
        "apiVersion: tollway.dev/v1",
        "kind: TokenIssuers",
        "issuers:",
        f"  {name}:",
        f"    issuer: {json.dumps(issuer)}",
        f"    audiences: [{json.dumps(audience)}]",
        f"    algorithms: {algorithms}",
    ]
    if jwks_url is not None:
        lines += ["    jwks:", f"      url: {json.dumps(jwks_url)}"]
        lines += [f"      {line}" for line in jwks_extra.splitlines() if line.strip()]
    if pem is not None:
        lines += ["    keys:", "      - pem: |"]
        lines += [f"          {line}" for line in pem.strip().splitlines()]
    lines += [f"    {line}" for line in extra.splitlines() if line.strip()]
    return "\n".join(lines) + "\n"


@dataclass
class JwksServer:
    """Serves ``document`` at ``/jwks.json`` (any path, really) on a free loopback port, in a thread.

    ``hits`` counts requests; ``down`` makes it answer 503; ``stop()``/``start()`` close and reopen the
    port (connection refused in between); ``cache_control`` is sent with each answer."""

    document: dict[str, Any]
    cache_control: str = "max-age=300"
    down: bool = False
    hits: int = 0
    port: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/jwks.json"

    def start(self) -> JwksServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with owner._lock:
                    owner.hits += 1
                    down, document, cache_control = owner.down, owner.document, owner.cache_control
                if down:
                    self.send_response(503)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                body = json.dumps(document).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("cache-control", cache_control)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="jwks-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def publish(self, document: dict[str, Any]) -> None:
        with self._lock:
            self.document = document

    def hit_count(self) -> int:
        with self._lock:
            return self.hits

    def __enter__(self) -> JwksServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_issuers(directory: Path, text: str, name: str = "issuers.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path
