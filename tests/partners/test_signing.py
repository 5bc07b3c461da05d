"""The Standard Webhooks specification's test vector: the gateway's signature over the spec's
message is the spec's, so any receiver library verifies what the gateway sends."""

from datetime import UTC, datetime

from app.partners.sender import signature

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MESSAGE_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
AT = datetime.fromtimestamp(1614265330, UTC)
BODY = '{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_signature_of_the_specs_message_is_the_specs():
    assert signature([SECRET], MESSAGE_ID, AT, BODY) == EXPECTED


def test_during_a_rotation_the_header_carries_the_specs_signature_beside_the_new_one():
    new = "whsec_" + "A" * 43 + "="
    header = signature([new, SECRET], MESSAGE_ID, AT, BODY).split(" ")
    assert len(header) == 2
    assert header[1] == EXPECTED
    assert header[0] != EXPECTED


def test_another_body_or_moment_signs_differently():
    assert signature([SECRET], MESSAGE_ID, AT, BODY.replace(" ", "")) != EXPECTED
    later = datetime.fromtimestamp(1614265331, UTC)
    assert signature([SECRET], MESSAGE_ID, later, BODY) != EXPECTED
