"""Citizen details sealed at rest: keys, rotation, and the hashes a citizen is found by."""

from __future__ import annotations

import uuid

import pytest
from pydantic import SecretStr

from app.core.crypto import SealedDataUnreadable, Sealer, new_key, normalise_phone
from app.core.settings import Environment, PrivacySettings, Settings

DETAILS = {"name": "Ada Lovelace", "email": "ada@example.org", "phone": "07700 900123"}


def sealer(*keys: str, lookup: str = "lookup-key-for-tests") -> Sealer:
    return Sealer([SecretStr(k) for k in keys], SecretStr(lookup))


def test_sealed_details_reveal_nothing_and_open_again():
    key = new_key()
    token = sealer(key).seal(DETAILS)
    assert token is not None
    for value in DETAILS.values():
        assert value not in token
    assert sealer(key).open(token) == DETAILS
    assert sealer(key).seal(None) is None
    assert sealer(key).seal({}) is None


def test_a_rotated_key_still_opens_old_details_and_reseal_moves_them_to_the_new_key():
    old, new = new_key(), new_key()
    sealed_under_old = sealer(old).seal(DETAILS)
    assert sealed_under_old is not None
    both = sealer(new, old)
    assert both.open(sealed_under_old) == DETAILS
    resealed = both.reseal(sealed_under_old)
    assert sealer(new).open(resealed) == DETAILS  # the old key can now go
    with pytest.raises(SealedDataUnreadable):
        sealer(old).open(resealed)


def test_details_sealed_under_a_key_no_longer_configured_are_unreadable():
    token = sealer(new_key()).seal(DETAILS)
    with pytest.raises(SealedDataUnreadable):
        sealer(new_key()).open(token)


@pytest.mark.parametrize(
    "typed",
    ["07700 900123", "+44 7700 900123", "+44 (0)7700 900123", "0044 7700 900-123", "07700900123"],
)
def test_a_phone_number_is_found_however_it_was_typed(typed):
    assert normalise_phone(typed) == "07700900123"
    assert sealer(new_key()).phone_hash(typed) == sealer(new_key()).phone_hash("07700900123")


def test_an_email_is_found_whatever_its_case_and_the_hash_depends_on_the_lookup_key():
    key = new_key()
    assert sealer(key).email_hash(" Ada@Example.ORG ") == sealer(key).email_hash("ada@example.org")
    assert sealer(key).email_hash("ada@example.org") != sealer(key, lookup="other").email_hash(
        "ada@example.org"
    )
    assert sealer(key).email_hash("ada@example.org") != sealer(key).phone_hash("ada@example.org")
    assert sealer(key).email_hash(None) is None
    assert sealer(key).phone_hash("") is None


def test_production_refuses_to_run_on_the_public_development_keys():
    with pytest.raises(ValueError, match="IAP_PRIVACY__KEYS"):
        Settings(env=Environment.production).sealer()
    configured = PrivacySettings(keys=[SecretStr(new_key())], lookup_key=SecretStr("x" * 32))
    assert Settings(env=Environment.production, privacy=configured).sealer().seal(DETAILS)
    assert Settings(env=Environment.development).sealer().seal(DETAILS)


def test_a_forms_field_is_one_enquirys_and_one_purposes_and_survives_a_rotation():
    old, new = new_key(), new_key()
    enquiry, other = uuid.uuid4(), uuid.uuid4()
    [made] = sealer(old).form_tokens(enquiry, "withdraw")
    assert made not in sealer(old).form_tokens(other, "withdraw")
    assert made not in sealer(old).form_tokens(enquiry, "information")
    assert made != sealer(old).access_token(enquiry)  # a key of its own
    rotated = sealer(new, old).form_tokens(enquiry, "withdraw")
    assert rotated[1] == made  # a page rendered before the rotation is still accepted
    assert rotated[0] != made  # new pages get the newest key's
