"""The issuers file: strict, every problem at once with file:line:column, secrets never in messages."""

from pathlib import Path

import pytest

from tests.support.jwt_issuer import SigningKey, issuers_yaml
from tollway.auth.jwt.errors import IssuerConfigError
from tollway.auth.jwt.issuers import load_issuers, load_issuers_text

FIXTURES = Path(__file__).parents[2] / "fixtures" / "jwt"
SECRET_ENV = {"TOLLWAY_TEST_INTERNAL_STS_SECRET": "an-internal-sts-secret-of-32-bytes!"}


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(IssuerConfigError) as caught:
        load_issuers_text(text, "issuers.yaml", environ or {})
    return [str(issue) for issue in caught.value.issues]


def test_the_example_file_loads() -> None:
    corp, partner, internal = load_issuers(FIXTURES / "issuers.yaml", SECRET_ENV)
    assert (corp.name, corp.customer_claim, corp.jwks is not None) == ("corp-idp", "client_id", True)
    assert corp.algorithms == {"RS256", "ES256"}
    assert partner.static_keys is not None
    assert partner.static_keys.kids == ("partner-2026",)
    assert (partner.customer_prefix, partner.scope_claims) == ("partner:", ("scp",))
    assert internal.hmac_secret == SECRET_ENV["TOLLWAY_TEST_INTERNAL_STS_SECRET"].encode()
    assert "secret" not in repr(internal)


def test_every_problem_is_reported_at_once_with_its_line() -> None:
    with pytest.raises(IssuerConfigError) as caught:
        load_issuers(FIXTURES / "issuers-invalid.yaml", {})
    found = {(issue.line, issue.message.split(": ", 1)[0]) for issue in caught.value.issues}
    assert found == {
        (7, "issuers.corp-idp.audiences"),
        (8, "issuers.corp-idp.algorithms[1]"),
        (10, "issuers.corp-idp.jwks.url"),
        (11, "issuers.corp-idp.leeway"),
        (12, "issuers.Bad_Name"),
        (15, "issuers.Bad_Name.algorithms[0]"),
        (17, "issuers.Bad_Name.keys[0]"),
        (22, "issuers.secretive.hmac_secret_env"),
    }
    text = str(caught.value)
    assert "did you mean 'leeway_s'" in text
    assert "did you mean RS256" in text
    assert "alg none (unsigned tokens) is never accepted" in text
    assert text.startswith("invalid issuers file (8 problem(s)):")


def test_hmac_needs_a_secret_and_never_a_public_key() -> None:
    pem = SigningKey.rsa("k").public_pem()
    found = problems(issuers_yaml(pem=pem, algorithms="[RS256, HS256]"))
    assert any("HS256 needs a shared secret" in p and "never verified with a public key" in p for p in found)
    too_short = issuers_yaml(algorithms="[HS256]", extra="hmac_secret_env: SHORT")
    found = problems(too_short, {"SHORT": "tiny-secret-value"})
    assert found == [
        "issuers.yaml:8:22: issuers.test-idp.hmac_secret_env: the shared secret must be at least 32 bytes "
        "(RFC 7518 §3.2)"
    ]
    assert "tiny-secret-value" not in "".join(found)
    unused = issuers_yaml(pem=pem, algorithms="[RS256]", extra="hmac_secret_env: SHORT")
    assert any("no HS256/HS384/HS512 algorithm is listed" in p for p in problems(unused, {"SHORT": "x" * 40}))


def test_secret_from_a_file_relative_to_the_issuers_file(tmp_path: Path) -> None:
    (tmp_path / "sts.secret").write_text("f" * 40 + "\n")
    path = tmp_path / "issuers.yaml"
    path.write_text(issuers_yaml(algorithms="[HS256]", extra="hmac_secret_file: sts.secret"))
    (issuer,) = load_issuers(path, {})
    assert issuer.hmac_secret == b"f" * 40
    (tmp_path / "sts.secret").unlink()
    with pytest.raises(IssuerConfigError, match="cannot read the secret file"):
        load_issuers(path, {})


def test_keys_must_fit_the_algorithms_and_be_public_and_strong() -> None:
    ec_pem = SigningKey.ec("k").public_pem()
    assert any(
        "a EC secp256r1 key, but no listed algorithm uses one" in p
        for p in problems(issuers_yaml(pem=ec_pem, algorithms="[RS256]"))
    )
    weak = SigningKey.rsa("w", bits=1024).public_pem()
    assert any("at least 2048 are required" in p for p in problems(issuers_yaml(pem=weak, algorithms="[RS256]")))
    assert any("needs public keys" in p for p in problems(issuers_yaml(algorithms="[RS256]")))


def test_jwks_urls_are_https_or_loopback() -> None:
    assert load_issuers_text(issuers_yaml(jwks_url="http://127.0.0.1:8080/jwks"), "f", {})
    assert load_issuers_text(issuers_yaml(jwks_url="https://idp.example/jwks"), "f", {})
    assert any("over https" in p for p in problems(issuers_yaml(jwks_url="http://idp.example/jwks")))
    assert any("expected an https:// URL" in p for p in problems(issuers_yaml(jwks_url="file:///etc/keys")))
    ttl = issuers_yaml(jwks_url="https://idp.example/jwks", jwks_extra="min_ttl_s: 600\nmax_ttl_s: 60")
    assert any("min_ttl_s must not exceed max_ttl_s" in p for p in problems(ttl))


def test_two_issuers_may_not_share_an_iss() -> None:
    text = issuers_yaml(jwks_url="https://a.example/jwks") + "\n".join(
        [
            "  second:",
            '    issuer: "https://idp.test.example/"',
            "    audiences: [x]",
            "    algorithms: [RS256]",
            "    jwks: {url: https://b.example/jwks}",
        ]
    )
    assert any("issuer test-idp already has this iss" in p for p in problems(text))


def test_yaml_errors_and_configmaps() -> None:
    assert problems("issuers: [unclosed")[0].startswith("issuers.yaml:1:")
    assert problems("") == ["issuers.yaml:1:1: the issuers file is empty"]
    body = issuers_yaml(jwks_url="https://idp.example/jwks")
    configmap = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: issuers}\ndata:\n  issuers.yaml: |\n" + "".join(
        f"    {line}\n" for line in body.splitlines()
    )
    (issuer,) = load_issuers_text(configmap, "cm.yaml", {})
    assert issuer.name == "test-idp"
    broken = configmap.replace("audiences:", "audience:")
    assert any(p.startswith("issuers.yaml:11:9:") and "did you mean 'audiences'" in p for p in problems(broken))
