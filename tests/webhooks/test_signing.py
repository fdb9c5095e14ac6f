"""Signatures verify with standardwebhooks, with svix and with the specification's own recipe
written out here; a tampered body, a stale timestamp or a wrong secret does not.

svix 2.x's ``Webhook`` wraps standardwebhooks (it maps ``svix-*`` headers to ``webhook-*`` and calls
it), so it is not an independent check: :class:`SpecVerifier` is, written from the specification
(standardwebhooks.com, "Verifying webhooks") with hmac and base64 alone.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import timedelta
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from svix.webhooks import Webhook as SvixWebhook
from svix.webhooks import WebhookVerificationError as SvixVerificationError

from filejobs.models import utcnow
from filejobs.webhooks import signing


class SpecVerificationError(Exception):
    pass


class SpecVerifier:
    """The Standard Webhooks check from the specification's text: HMAC-SHA256 with the base64
    secret after ``whsec_`` over ``{id}.{timestamp}.{body}``, compared with each space-separated
    ``v1,<base64>`` signature; timestamps more than 5 minutes away are refused."""

    TOLERANCE = 5 * 60

    def __init__(self, secret: str) -> None:
        self.key = base64.b64decode(secret.removeprefix("whsec_"))

    def verify(self, body: bytes, headers: dict[str, str]) -> Any:
        msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
        if abs(time.time() - int(timestamp)) > self.TOLERANCE:
            raise SpecVerificationError("timestamp outside the tolerance")
        expected = base64.b64encode(
            hmac.new(self.key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        ).decode()
        for versioned in headers["webhook-signature"].split(" "):
            version, _, signature = versioned.partition(",")
            if version == "v1" and hmac.compare_digest(signature, expected):
                return json.loads(body)
        raise SpecVerificationError("no matching signature")


BODY = b'{"type":"job.succeeded","timestamp":"2026-12-06T00:00:00Z","data":{"id":"x"}}'


def _headers(secrets: list[str], *, age: timedelta = timedelta(0), body: bytes = BODY) -> dict[str, str]:
    return signing.headers(msg_id="msg_1", timestamp=utcnow() - age, body=body, secrets=secrets)


def test_a_new_secret_has_the_standard_form() -> None:
    secret = signing.new_secret()
    assert secret.startswith("whsec_")
    assert len(Webhook(secret)._whsecret) == signing.SECRET_BYTES
    assert signing.new_secret() != secret
    assert signing.mask(secret) == secret[:10] + "…"


VERIFIERS = [Webhook, SvixWebhook, SpecVerifier]
Verifier = type[Webhook] | type[SvixWebhook] | type[SpecVerifier]


@pytest.mark.parametrize("verifier", VERIFIERS)
def test_signatures_verify(verifier: Verifier) -> None:
    secret = signing.new_secret()
    verifier(secret).verify(BODY, _headers([secret]))  # raises if not
    assert Webhook(secret).verify(BODY, _headers([secret])) == json.loads(BODY)


@pytest.mark.parametrize(
    ("verifier", "error"),
    [
        (Webhook, WebhookVerificationError),
        (SvixWebhook, SvixVerificationError),
        (SpecVerifier, SpecVerificationError),
    ],
)
def test_tampering_staleness_and_wrong_secrets_fail(verifier: Verifier, error: type[Exception]) -> None:
    secret = signing.new_secret()
    with pytest.raises(error):
        verifier(secret).verify(BODY.replace(b'"x"', b'"y"'), _headers([secret]))
    with pytest.raises(error):
        verifier(secret).verify(BODY, _headers([secret], age=timedelta(minutes=5, seconds=5)))
    with pytest.raises(error):
        verifier(signing.new_secret()).verify(BODY, _headers([secret]))
    headers = _headers([secret])
    headers["webhook-id"] = "msg_2"  # the id is signed too
    with pytest.raises(error):
        verifier(secret).verify(BODY, headers)


@pytest.mark.parametrize("verifier", VERIFIERS)
def test_during_a_rotation_both_secrets_sign(verifier: Verifier) -> None:
    old, new = signing.new_secret(), signing.new_secret()
    headers = _headers([new, old])
    assert headers["webhook-signature"].count("v1,") == 2
    verifier(old).verify(BODY, headers)
    verifier(new).verify(BODY, headers)


def test_the_previous_secret_signs_only_during_its_grace() -> None:
    now = utcnow()
    assert signing.signing_secrets("a", "b", now + timedelta(seconds=1), now) == ["a", "b"]
    assert signing.signing_secrets("a", "b", now - timedelta(seconds=1), now) == ["a"]
    assert signing.signing_secrets("a", None, None, now) == ["a"]
