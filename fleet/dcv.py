"""Single-use DCV authentication tokens.

The join endpoint's ready answer carries ``?authToken=<token>``; the DCV server (or the
local stand-in) posts it to ``/dcv/auth``. A token is signed (salted for this purpose),
short-lived (``ELEPHANT_DCV_TOKEN_TTL_SECONDS``), bound to one meeting, role and instance,
and spent on first use (an atomic ``cache.add`` of its nonce in Redis), so issuing one
costs no database query.
"""

import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core import signing
from django.core.cache import cache

DCV_TOKEN_SALT = "elephant.dcv-auth.v1"


@dataclass(frozen=True)
class DcvGrant:
    meeting_id: str
    role: str
    instance_id: str


class DcvTokenRejected(Exception):
    """The token is malformed, forged, expired, foreign or already used."""


def dcv_token_issue(*, meeting_id: str, role: str, instance_id: str) -> str:
    payload = {"m": meeting_id, "r": role, "i": instance_id, "n": secrets.token_urlsafe(12)}
    return signing.dumps(payload, salt=DCV_TOKEN_SALT, compress=False)


def dcv_token_redeem(*, token: str, instance_id: str | None = None) -> DcvGrant:
    """Spend ``token``; raise DcvTokenRejected with the reason when it cannot be used."""
    ttl = settings.ELEPHANT_DCV_TOKEN_TTL_SECONDS
    try:
        payload = signing.loads(token, salt=DCV_TOKEN_SALT, max_age=ttl)
    except signing.SignatureExpired:
        raise DcvTokenRejected("token expired") from None
    except signing.BadSignature:
        raise DcvTokenRejected("token invalid") from None
    if not isinstance(payload, dict) or not {"m", "r", "i", "n"} <= payload.keys():
        raise DcvTokenRejected("token invalid")
    if instance_id is not None and payload["i"] != instance_id:
        raise DcvTokenRejected("token issued for another host")
    if not cache.add(f"dcv-token-spent:{payload['n']}", 1, timeout=ttl + 60):
        raise DcvTokenRejected("token already used")
    return DcvGrant(meeting_id=payload["m"], role=payload["r"], instance_id=payload["i"])
