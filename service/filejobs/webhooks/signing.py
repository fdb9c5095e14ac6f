"""Standard Webhooks signatures (standardwebhooks.com), made with the ``standardwebhooks`` package.

A secret is ``whsec_`` + base64 of 32 random bytes. Each attempt sends ``webhook-id`` (the
delivery's id, the same on every attempt), ``webhook-timestamp`` (the attempt's time, in seconds)
and ``webhook-signature``: ``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, once per secret that
signs (after a rotation the new and the old one, space-separated, as the specification allows).
"""

from __future__ import annotations

import base64
import os
from datetime import datetime

PREFIX = "whsec_"
#: Bytes of a new secret (the specification asks for 24 to 64).
SECRET_BYTES = 32


def new_secret() -> str:
    return PREFIX + base64.b64encode(os.urandom(SECRET_BYTES)).decode()


def mask(secret: str) -> str:
    """What lists show of a secret: enough to tell two apart, not enough to sign."""
    return secret[: len(PREFIX) + 4] + "…"


def signing_secrets(
    secret: str, previous: str | None, previous_until: datetime | None, now: datetime
) -> list[str]:
    """The secrets that sign now: the current one, and the previous one during its grace period."""
    if previous and previous_until is not None and previous_until > now:
        return [secret, previous]
    return [secret]


def headers(*, msg_id: str, timestamp: datetime, body: bytes, secrets: list[str]) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt (and the JSON content type)."""
    from standardwebhooks.webhooks import Webhook  # on the first delivery (see filejobs.webhooks)

    signatures = " ".join(Webhook(secret).sign(msg_id, timestamp, body) for secret in secrets)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signatures,
    }
