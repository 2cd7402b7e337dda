import pytest

from tollway.auth.digest import KeyDigester

PEPPER = b"p" * 32


def test_digest_is_hmac_sha256_hex() -> None:
    import hashlib
    import hmac

    digester = KeyDigester(PEPPER)
    assert digester.digest("tw_live_x") == hmac.new(PEPPER, b"tw_live_x", hashlib.sha256).hexdigest()


def test_pepper_changes_the_digest() -> None:
    assert KeyDigester(PEPPER).digest("k") != KeyDigester(b"q" * 32).digest("k")


def test_short_pepper_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        KeyDigester(b"short")


def test_repr_hides_the_pepper() -> None:
    assert "ppp" not in repr(KeyDigester(PEPPER))
