"""A trusted token issuer as the verifier uses it (built from the issuers file by ``issuers.load_issuers``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from tollway.auth.jwt.keys import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, KeySet

DEFAULT_SCOPE_CLAIMS: Final = ("scope", "scp")


@dataclass(frozen=True, slots=True)
class JwksPolicy:
    """Where an issuer publishes its keys and how long to trust a fetched set.

    A fetched set is kept for its ``Cache-Control: max-age`` clamped to [``min_ttl_s``, ``max_ttl_s``]
    (``default_ttl_s`` without one); a token naming an unknown ``kid`` triggers a refetch at most once per
    ``refetch_interval_s``; one fetch may take ``timeout_s``. While the endpoint is unreachable the last
    good set stays in use."""

    url: str
    min_ttl_s: float = 60.0
    max_ttl_s: float = 3600.0
    default_ttl_s: float = 300.0
    refetch_interval_s: float = 5.0
    timeout_s: float = 5.0

    def ttl(self, max_age: float | None) -> float:
        wanted = self.default_ttl_s if max_age is None else max_age
        return min(max(wanted, self.min_ttl_s), self.max_ttl_s)


@dataclass(frozen=True, slots=True)
class Issuer:
    """``name`` labels the issuer in logs and in the key-id slot (``jwt:<name>:<subject>``); ``issuer`` is
    the exact ``iss`` its tokens carry. Exactly the algorithms in ``algorithms`` are accepted: asymmetric
    ones with ``static_keys`` or the keys at ``jwks``, HMAC ones only with ``hmac_secret``."""

    name: str
    issuer: str
    audiences: frozenset[str]
    algorithms: frozenset[str]
    leeway_s: int = 30
    customer_claim: str = "sub"
    customer_prefix: str = ""
    scope_claims: tuple[str, ...] = DEFAULT_SCOPE_CLAIMS
    static_keys: KeySet | None = None
    jwks: JwksPolicy | None = None
    hmac_secret: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if "none" in {a.lower() for a in self.algorithms}:
            raise ValueError("alg none is never accepted")
        hmac = self.algorithms & HMAC_ALGORITHMS
        if hmac and self.hmac_secret is None:
            raise ValueError(f"{self.name}: {', '.join(sorted(hmac))} needs a shared secret")
        if self.algorithms & ASYMMETRIC_ALGORITHMS and self.static_keys is None and self.jwks is None:
            raise ValueError(f"{self.name}: asymmetric algorithms need static keys or a JWKS URL")
        if not self.audiences:
            raise ValueError(f"{self.name}: at least one audience is required")
