"""Signing algorithms and verification keys: which key may verify which algorithm. Pure.

The algorithm-confusion defences live here. An asymmetric algorithm is only ever verified with a public
key of its own family and curve (RS*/PS*: RSA ≥ 2048 bits; ES256/384/512: P-256/384/521; EdDSA: Ed25519
or Ed448); an HMAC algorithm only with the issuer's configured shared secret, never with a public key
(so "HS256 signed with the issuer's RSA public key" has no key to verify against). ``none`` is not an
algorithm here at all. Symmetric (``oct``) and private JWKs are never loaded from a key set.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import (
    Algorithm,
    ECAlgorithm,
    HMACAlgorithm,
    OKPAlgorithm,
    RSAAlgorithm,
    RSAPSSAlgorithm,
)

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey

MIN_RSA_BITS: Final = 2048
MIN_HMAC_SECRET_BYTES: Final = 32  # RFC 7518 §3.2: a key at least as long as the hash (HS256)

_HMAC: Final[dict[str, Algorithm]] = {
    "HS256": HMACAlgorithm(HMACAlgorithm.SHA256),
    "HS384": HMACAlgorithm(HMACAlgorithm.SHA384),
    "HS512": HMACAlgorithm(HMACAlgorithm.SHA512),
}
_ASYMMETRIC: Final[dict[str, Algorithm]] = {
    "RS256": RSAAlgorithm(RSAAlgorithm.SHA256),
    "RS384": RSAAlgorithm(RSAAlgorithm.SHA384),
    "RS512": RSAAlgorithm(RSAAlgorithm.SHA512),
    "PS256": RSAPSSAlgorithm(RSAPSSAlgorithm.SHA256),
    "PS384": RSAPSSAlgorithm(RSAPSSAlgorithm.SHA384),
    "PS512": RSAPSSAlgorithm(RSAPSSAlgorithm.SHA512),
    "ES256": ECAlgorithm(ECAlgorithm.SHA256),
    "ES384": ECAlgorithm(ECAlgorithm.SHA384),
    "ES512": ECAlgorithm(ECAlgorithm.SHA512),
    "EdDSA": OKPAlgorithm(),
}
HMAC_ALGORITHMS: Final = frozenset(_HMAC)
ASYMMETRIC_ALGORITHMS: Final = frozenset(_ASYMMETRIC)
SUPPORTED_ALGORITHMS: Final = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS
_EC_CURVES: Final = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


def key_fits(algorithm: str, key: PublicKey) -> bool:
    """Whether ``key`` is of the family (and curve) ``algorithm`` is defined for."""
    if algorithm.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    if algorithm in _EC_CURVES:
        return isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == _EC_CURVES[algorithm]
    if algorithm == "EdDSA":
        return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)
    return False


def key_family(key: PublicKey) -> str:
    """A short name of the key's type for messages: ``RSA``, ``EC P-256``, ``Ed25519`` …"""
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}-bit"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "Ed448"


def verify_asymmetric(algorithm: str, key: PublicKey, signing_input: bytes, signature: bytes) -> bool:
    """The signature check. The caller has checked ``key_fits(algorithm, key)``."""
    return bool(_ASYMMETRIC[algorithm].verify(signing_input, key, signature))


def verify_hmac(algorithm: str, secret: bytes, signing_input: bytes, signature: bytes) -> bool:
    """HMAC with the configured shared secret (constant-time comparison)."""
    return bool(_HMAC[algorithm].verify(signing_input, secret, signature))


class UnusableKey(ValueError):
    """A configured or published key that cannot be used; the message says why (never key material)."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key. ``algorithm`` is the JWK's ``alg`` when it names one: then only that algorithm."""

    key: PublicKey
    kid: str | None = None
    algorithm: str | None = None

    def verifies(self, algorithm: str) -> bool:
        return (self.algorithm is None or self.algorithm == algorithm) and key_fits(algorithm, self.key)


def public_key_from_pem(pem: str | bytes) -> PublicKey:
    """A PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo). Raises :class:`UnusableKey`."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise UnusableKey("not a PEM public key (-----BEGIN PUBLIC KEY-----)") from exc
    return _usable(key)


def public_key_from_jwk(jwk: Mapping[str, Any]) -> VerificationKey:
    """A public JWK (RFC 7517) of type RSA, EC or OKP. Raises :class:`UnusableKey` for anything else,
    including symmetric (``oct``) and private keys."""
    kty = jwk.get("kty")
    if "d" in jwk:
        raise UnusableKey("a private key: publish and configure only public keys")
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise UnusableKey(f"use {use!r}: only signing keys (use: sig) verify tokens")
    loaders: dict[str, Any] = {"RSA": RSAAlgorithm, "EC": ECAlgorithm, "OKP": OKPAlgorithm}
    if kty == "oct":
        raise UnusableKey("a symmetric (oct) key: HMAC secrets are configured with hmac_secret_env/_file")
    if kty not in loaders:
        raise UnusableKey(f"unsupported key type {kty!r} (expected RSA, EC or OKP)")
    algorithm = jwk.get("alg")
    if algorithm is not None and algorithm not in ASYMMETRIC_ALGORITHMS:
        raise UnusableKey(f"unsupported alg {algorithm!r}")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise UnusableKey("kid must be a string")
    try:
        loaded = loaders[kty].from_jwk(json.dumps(dict(jwk)))
    except Exception as exc:  # PyJWT raises InvalidKeyError, ValueError, KeyError … for bad members
        raise UnusableKey(f"not a valid {kty} JWK") from exc
    key = _usable(loaded)
    if algorithm is not None and not key_fits(algorithm, key):
        raise UnusableKey(f"alg {algorithm} does not fit a {key_family(key)} key")
    return VerificationKey(key, kid, algorithm)


def _usable(key: object) -> PublicKey:
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise UnusableKey(f"an RSA key of {key.key_size} bits: at least {MIN_RSA_BITS} are required")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in _EC_CURVES.values():
            raise UnusableKey(f"unsupported curve {key.curve.name} (expected P-256, P-384 or P-521)")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return key
    raise UnusableKey("not a public RSA, EC or Ed25519/Ed448 key")


@dataclass(frozen=True, slots=True)
class KeySet:
    """An issuer's public keys, by ``kid``; keys without a ``kid`` are tried for every token."""

    keys: tuple[VerificationKey, ...] = ()
    skipped: tuple[str, ...] = ()  # why each unusable published key was left out (for the log)
    _by_kid: dict[str, tuple[VerificationKey, ...]] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, keys: Iterable[VerificationKey], skipped: Iterable[str] = ()) -> KeySet:
        listed = tuple(keys)
        by_kid: dict[str, list[VerificationKey]] = {}
        for key in listed:
            if key.kid is not None:
                by_kid.setdefault(key.kid, []).append(key)
        return cls(listed, tuple(skipped), {kid: tuple(found) for kid, found in by_kid.items()})

    def candidates(self, kid: str | None, algorithm: str) -> tuple[VerificationKey, ...]:
        """The keys that may verify a token with this header, of the algorithm's family: those with its
        ``kid``, and those configured or published without a kid (they stand for any)."""
        named = self._by_kid.get(kid, ()) if kid is not None else ()
        return tuple(k for k in (*named, *self._anonymous()) if k.verifies(algorithm))

    def knows(self, kid: str | None) -> bool:
        return (kid is not None and kid in self._by_kid) or bool(self._anonymous())

    def _anonymous(self) -> tuple[VerificationKey, ...]:
        return tuple(k for k in self.keys if k.kid is None)

    @property
    def kids(self) -> tuple[str, ...]:
        return tuple(self._by_kid)

    def __len__(self) -> int:
        return len(self.keys)


def parse_jwks(document: bytes) -> KeySet:
    """A JWK Set document (``{"keys": [...]}``) → its usable public keys; unusable ones are listed in
    ``skipped``. Raises :class:`UnusableKey` when the document itself is not a key set."""
    try:
        parsed = json.loads(document)
    except (ValueError, UnicodeDecodeError) as exc:
        raise UnusableKey("the JWKS is not JSON") from exc
    if not isinstance(parsed, dict) or not isinstance(parsed.get("keys"), list):
        raise UnusableKey('the JWKS is not a JSON object with a "keys" list')
    keys: list[VerificationKey] = []
    skipped: list[str] = []
    for index, jwk in enumerate(parsed["keys"]):
        if not isinstance(jwk, dict):
            skipped.append(f"keys[{index}]: not an object")
            continue
        try:
            keys.append(public_key_from_jwk(jwk))
        except UnusableKey as exc:
            kid = jwk.get("kid")
            skipped.append(f"keys[{index}]{f' (kid {kid!r})' if isinstance(kid, str) else ''}: {exc}")
    return KeySet.of(keys, skipped)
