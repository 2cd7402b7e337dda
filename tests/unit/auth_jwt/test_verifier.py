"""Signature and claims, against an injected instant: the classic JWT attacks are refused."""

import base64
import json
from dataclasses import replace

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.jwt_issuer import AUDIENCE, ISSUER, LocalIssuer, SigningKey
from tollway.auth.jwt.errors import (
    DisallowedAlgorithm,
    ExpiredToken,
    InvalidClaim,
    InvalidSignature,
    MissingClaim,
    MissingCustomerClaim,
    TokenNotYetValid,
    UntrustedIssuer,
    WrongAudience,
)
from tollway.auth.jwt.issuer import Issuer
from tollway.auth.jwt.keys import KeySet, VerificationKey
from tollway.auth.jwt.token import parse_token
from tollway.auth.jwt.verifier import check_claims, check_signature, subject_id

NOW = 1_800_000_000.0
RSA = SigningKey.rsa("rsa-1")
EC = SigningKey.ec("ec-1")
ED = SigningKey.ed25519("ed-1")
IDP = LocalIssuer([RSA, EC, ED], now=NOW)
SECRET = b"s" * 32


def key_set(*keys: SigningKey) -> KeySet:
    return KeySet.of(VerificationKey(k.private.public_key(), k.kid) for k in keys)  # type: ignore[arg-type]


ISSUER_CONFIG = Issuer(
    name="idp",
    issuer=ISSUER,
    audiences=frozenset({AUDIENCE, "other-api"}),
    algorithms=frozenset({"RS256", "ES256", "EdDSA"}),
    static_keys=key_set(RSA, EC, ED),
)
KEYS = key_set(RSA, EC, ED)


def verify(token: str, issuer: Issuer = ISSUER_CONFIG, now: float = NOW, keys: KeySet = KEYS) -> object:
    parsed = parse_token(token)
    check_signature(parsed, issuer, keys.candidates(parsed.kid, parsed.algorithm))
    return check_claims(parsed.claims, issuer, now)


@pytest.mark.parametrize("key", [RSA, EC, ED], ids=["RS256", "ES256", "EdDSA"])
def test_a_valid_token_names_its_customer_subject_and_scopes(key: SigningKey) -> None:
    verified = verify(IDP.token("acme", key=key, scope="items:read items:write"))
    assert verified == check_claims(IDP.claims("acme", scope="items:read items:write"), ISSUER_CONFIG, NOW)
    assert verified.customer_id == "acme"  # type: ignore[attr-defined]
    assert verified.subject == "jwt:idp:acme"  # type: ignore[attr-defined]
    assert verified.scopes == {"items:read", "items:write"}  # type: ignore[attr-defined]
    assert verified.expires_at == NOW + 600 + 30  # type: ignore[attr-defined]


def test_alg_none_is_never_accepted() -> None:
    unsigned = jwt.encode(IDP.claims(), None, algorithm="none")
    with pytest.raises(DisallowedAlgorithm, match="alg none"):
        verify(unsigned)


def test_hs256_signed_with_the_issuers_public_key_is_refused() -> None:
    # The classic confusion: the attacker signs HS256 with the RSA public key (public, so known to them).
    pem = RSA.public_pem().encode()
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode()).rstrip(b"=")
    claims = base64.urlsafe_b64encode(json.dumps(IDP.claims("admin")).encode()).rstrip(b"=")
    import hashlib
    import hmac

    signing_input = header + b"." + claims
    signature = base64.urlsafe_b64encode(hmac.new(pem, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    token = (signing_input + b"." + signature).decode()
    with pytest.raises(DisallowedAlgorithm):  # HS256 is not in this issuer's list
        verify(token)
    # Even for an issuer that does accept HS256, only its shared secret verifies: never the public key.
    hybrid = replace(ISSUER_CONFIG, algorithms=frozenset({"RS256", "HS256"}), hmac_secret=SECRET)
    with pytest.raises(InvalidSignature):
        verify(token, hybrid)
    good = jwt.encode(IDP.claims("acme"), SECRET, algorithm="HS256")
    assert verify(good, hybrid).customer_id == "acme"  # type: ignore[attr-defined]


def test_a_key_is_used_only_for_its_own_algorithm_family() -> None:
    # An ES256 token whose kid names the RSA key: no candidate key, the signature does not verify.
    token = IDP.token(key=EC, headers={"kid": "rsa-1"})
    with pytest.raises(InvalidSignature):
        verify(token)


def test_a_signature_by_another_key_is_refused() -> None:
    impostor = SigningKey.rsa("rsa-1")  # same kid, different key
    with pytest.raises(InvalidSignature):
        verify(IDP.token(key=impostor))


def test_header_key_hints_are_ignored() -> None:
    attacker = SigningKey.rsa("evil")
    headers = {"kid": "rsa-1", "jku": "https://evil.example/jwks.json", "jwk": attacker.public_jwk()}
    with pytest.raises(InvalidSignature):
        verify(IDP.token(key=attacker, headers=headers))


def test_expired_and_not_yet_valid_tokens_with_leeway() -> None:
    token = IDP.token(lifetime_s=60)
    exp = NOW + 60
    assert verify(token, now=exp + 29.9)
    with pytest.raises(ExpiredToken):
        verify(token, now=exp + 30)
    future = IDP.token(nbf=int(NOW) + 100)
    with pytest.raises(TokenNotYetValid, match="nbf"):
        verify(future)
    assert verify(future, now=NOW + 70)  # within the 30 s leeway
    with pytest.raises(TokenNotYetValid, match="iat"):
        verify(IDP.token(iat=int(NOW) + 3600))


def test_issuer_and_audience_must_match() -> None:
    with pytest.raises(UntrustedIssuer):
        verify(IDP.token(iss="https://evil.example/"))
    with pytest.raises(WrongAudience):
        verify(IDP.token(aud="https://elsewhere.example"))
    with pytest.raises(WrongAudience, match="no audience"):
        verify(IDP.token(aud=None))
    assert verify(IDP.token(aud=["x", "other-api"]))
    with pytest.raises(InvalidClaim, match="'aud'"):
        verify(IDP.token(aud=[1, 2]))


def test_exp_is_required_and_must_be_a_number() -> None:
    with pytest.raises(MissingClaim, match="'exp'"):
        verify(IDP.token(claims={k: v for k, v in IDP.claims().items() if k != "exp"}))
    with pytest.raises(InvalidClaim, match="'exp'"):
        verify(IDP.token(exp="tomorrow"))
    with pytest.raises(InvalidClaim, match="'exp'"):
        verify(IDP.token(exp=True))


def test_the_customer_claim_is_configurable_and_required() -> None:
    with pytest.raises(MissingCustomerClaim, match="'sub'"):
        verify(IDP.token(sub=None))
    by_client = replace(ISSUER_CONFIG, customer_claim="client_id", customer_prefix="idp-")
    verified = verify(IDP.token("user-7", client_id="acme"), by_client)
    assert verified.customer_id == "idp-acme"  # type: ignore[attr-defined]
    assert verified.subject == "jwt:idp:user-7"  # type: ignore[attr-defined]
    with pytest.raises(MissingCustomerClaim, match="'client_id'"):
        verify(IDP.token("user-7"), by_client)
    with pytest.raises(InvalidClaim):
        verify(IDP.token("acme corp; drop"))  # not an identifier: never reaches a header or a Redis key


def test_subjects_outside_the_identifier_alphabet_are_digested() -> None:
    by_azp = replace(ISSUER_CONFIG, customer_claim="azp")
    verified = verify(IDP.token("auth0|5f7c", azp="acme"), by_azp)
    assert verified.subject.startswith("jwt:idp:h.")  # type: ignore[attr-defined]
    assert subject_id("idp", "auth0|5f7c") == verified.subject  # type: ignore[attr-defined]
    assert subject_id("idp", "client@clients") == "jwt:idp:client@clients"


def test_scopes_from_a_string_or_a_list_claim() -> None:
    assert verify(IDP.token(scp=["a", "b"])).scopes == {"a", "b"}  # type: ignore[attr-defined]
    assert verify(IDP.token()).scopes == frozenset()  # type: ignore[attr-defined]
    with pytest.raises(InvalidClaim, match="'scope'"):
        verify(IDP.token(scope=42))


@settings(max_examples=200, deadline=None)
@given(lifetime=st.integers(min_value=1, max_value=10**6), offset=st.floats(min_value=-100, max_value=2 * 10**6))
def test_a_token_is_valid_exactly_until_exp_plus_leeway(lifetime: int, offset: float) -> None:
    claims = IDP.claims(lifetime_s=lifetime, iat=None)
    now = NOW + offset
    if now < NOW + lifetime + ISSUER_CONFIG.leeway_s:
        assert check_claims(claims, ISSUER_CONFIG, now).customer_id == "acme"
    else:
        with pytest.raises(ExpiredToken):
            check_claims(claims, ISSUER_CONFIG, now)
