"""The seller's settings (``TOLLWAY_SELLER_*``, ``billing.seller``): defaults, address forms, and any
value either accepted (and then valid by the parties' rules) or refused with one message naming every
bad setting — never another exception."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.billing.seller import Seller, SellerNotConfigured, load_seller
from tollway.parties import Party, check_address, check_country, check_email


@contextmanager
def seller_env(values: Mapping[str, str]) -> Iterator[None]:
    kept = {k: v for k, v in os.environ.items() if not k.upper().startswith("TOLLWAY_SELLER_")}
    with mock.patch.dict(os.environ, {**kept, **values}, clear=True):
        yield


def test_the_name_alone_is_enough_and_the_defaults() -> None:
    with seller_env({"TOLLWAY_SELLER_NAME": "Tollway Ltd"}):
        assert load_seller() == Seller(Party("Tollway Ltd"), timezone="UTC", payment_terms_days=30, series="INV")


def test_every_setting() -> None:
    env = {
        "TOLLWAY_SELLER_NAME": "Tollway GmbH",
        "TOLLWAY_SELLER_ADDRESS": '["Hauptstraße 1", "10115 Berlin"]',
        "TOLLWAY_SELLER_COUNTRY": "DE",
        "TOLLWAY_SELLER_TAX_ID": "DE123456789",
        "TOLLWAY_SELLER_EMAIL": "billing@tollway.example",
        "TOLLWAY_SELLER_TIMEZONE": "Europe/Berlin",
        "TOLLWAY_SELLER_PAYMENT_TERMS_DAYS": "14",
        "TOLLWAY_SELLER_NUMBER_PREFIX": "TW",
    }
    with seller_env(env):
        seller = load_seller()
    party = Party("Tollway GmbH", ("Hauptstraße 1", "10115 Berlin"), "DE", "DE123456789", "billing@tollway.example")
    assert seller == Seller(party, "Europe/Berlin", 14, "TW")
    # one line per line of the value works too (a ConfigMap's block scalar); empty settings are unset
    with seller_env({"TOLLWAY_SELLER_NAME": "X", "TOLLWAY_SELLER_ADDRESS": "a\n b \n\n", "TOLLWAY_SELLER_TAX_ID": ""}):
        assert load_seller().party == Party("X", ("a", "b"))


def test_nothing_set_names_the_missing_name() -> None:
    with seller_env({}), pytest.raises(SellerNotConfigured, match="TOLLWAY_SELLER_NAME is not set"):
        load_seller()


def test_every_bad_setting_is_named_at_once_in_one_line() -> None:
    env = {
        "TOLLWAY_SELLER_COUNTRY": "Deutschland",
        "TOLLWAY_SELLER_EMAIL": "billing",
        "TOLLWAY_SELLER_TIMEZONE": "Berlin",
        "TOLLWAY_SELLER_PAYMENT_TERMS_DAYS": "400",
        "TOLLWAY_SELLER_NUMBER_PREFIX": "",
        "TOLLWAY_SELLER_ADDRESS": '["a", 1]',
    }
    with seller_env(env), pytest.raises(SellerNotConfigured) as raised:
        load_seller()
    message = str(raised.value)
    assert "\n" not in message
    for name in (
        "NAME is not set",
        "COUNTRY:",
        "EMAIL:",
        "TIMEZONE:",
        "PAYMENT_TERMS_DAYS:",
        "NUMBER_PREFIX:",
        "ADDRESS:",
    ):
        assert f"TOLLWAY_SELLER_{name}" in message, name


SETTINGS = ["NAME", "ADDRESS", "COUNTRY", "TAX_ID", "EMAIL", "TIMEZONE", "PAYMENT_TERMS_DAYS", "NUMBER_PREFIX"]
text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)


@given(st.dictionaries(st.sampled_from(SETTINGS), st.one_of(text, st.sampled_from(["DE", "[]", '["x"]', "30", "UTC"]))))
def test_any_values_are_accepted_valid_or_refused_with_one_line(values: dict[str, str]) -> None:
    with seller_env({f"TOLLWAY_SELLER_{k}": v for k, v in values.items()}):
        try:
            seller = load_seller()
        except SellerNotConfigured as exc:
            refusal = str(exc)
        else:
            refusal = None
    if refusal is not None:
        assert "\n" not in refusal
        return
    party = seller.party
    assert party.name.strip()
    check_address(party.address)
    if party.country is not None:
        check_country(party.country)
    if party.email is not None:
        check_email(party.email)
    assert 0 <= seller.payment_terms_days <= 365
