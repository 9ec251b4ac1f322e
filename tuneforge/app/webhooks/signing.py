"""Standard Webhooks signing, as OpenAI signs its webhooks.

The secret is `whsec_` + base64(key). Each delivery carries `webhook-id` (the event id, the same on
every retry), `webhook-timestamp` (unix seconds of this attempt) and `webhook-signature`:
`v1,` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")). The official SDKs verify it with
`client.webhooks.unwrap(body, headers, secret=...)`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": "Tuneforge-Webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(secret, msg_id, timestamp, body),
    }
