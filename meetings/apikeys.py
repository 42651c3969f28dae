"""Integrators' API keys: creation, verification, bookkeeping.

A key reads ``elk_<prefix>_<secret>``. The prefix (public, unique) finds the row; the
secret is 256 random bits, so a plain SHA-256 of the whole key is a safe thing to store:
nothing to brute-force, no salt needed. The plaintext exists only in the return value of
``api_key_issue``/``api_key_create`` and is shown once to whoever made the key.
"""

import hashlib
import hmac
import secrets
import string
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from meetings.models import ApiKey, UsagePlan

AUTH_SCHEME = "Api-Key"
KEY_TAG = "elk"
PREFIX_ALPHABET = string.ascii_lowercase + string.digits
PREFIX_LENGTH = 12
SECRET_BYTES = 32
MAX_KEY_LENGTH = 128
DEFAULT_PLAN_NAME = "default"
# last_used_at is a hint for staff, not an audit log: write it at most this often per key.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyError(Exception):
    """Why a request's credentials were refused (the message is safe to show the caller)."""


def api_key_hash(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def api_key_issue(*, key: ApiKey) -> str:
    """Give an unsaved ``key`` a fresh prefix and hash; return the plaintext (show it once)."""
    prefix = "".join(secrets.choice(PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    plaintext = f"{KEY_TAG}_{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    key.prefix = prefix
    key.key_hash = api_key_hash(plaintext)
    return plaintext


def usage_plan_default() -> UsagePlan:
    plan, _ = UsagePlan.objects.get_or_create(name=DEFAULT_PLAN_NAME)
    return plan


def api_key_create(*, name: str, plan: UsagePlan | None = None) -> tuple[ApiKey, str]:
    with transaction.atomic():
        key = ApiKey(name=name, plan=plan or usage_plan_default())
        plaintext = api_key_issue(key=key)
        key.save()
    return key, plaintext


def api_key_set_active(*, keys, active: bool) -> int:
    return keys.update(is_active=active)


def api_key_authenticate(*, authorization: str | None, now: datetime | None = None) -> ApiKey:
    """The active key named by an ``Authorization: Api-Key <key>`` header, or ApiKeyError."""
    if not authorization:
        raise ApiKeyError(f"Authentication required: send the header 'Authorization: {AUTH_SCHEME} <key>'.")
    scheme, _, plaintext = authorization.strip().partition(" ")
    plaintext = plaintext.strip()
    if scheme.lower() != AUTH_SCHEME.lower() or not plaintext:
        raise ApiKeyError(f"Malformed Authorization header: expected '{AUTH_SCHEME} <key>'.")
    tag, _, rest = plaintext.partition("_")
    prefix, _, secret = rest.partition("_")
    if tag != KEY_TAG or len(prefix) != PREFIX_LENGTH or not secret or len(plaintext) > MAX_KEY_LENGTH:
        raise ApiKeyError("Malformed API key.")
    key = ApiKey.objects.select_related("plan").filter(prefix=prefix).first()
    # Compare even when the prefix is unknown, so a miss costs the same as a wrong secret.
    expected = key.key_hash if key else api_key_hash("")
    if not hmac.compare_digest(api_key_hash(plaintext), expected) or key is None:
        raise ApiKeyError("Unknown API key.")
    if not key.is_active:
        raise ApiKeyError("This API key has been deactivated.")
    _touch(key=key, now=now or timezone.now())
    return key


def _touch(*, key: ApiKey, now: datetime) -> None:
    stale = now - LAST_USED_RESOLUTION
    if key.last_used_at is not None and key.last_used_at > stale:
        return
    ApiKey.objects.filter(pk=key.pk).filter(Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale)).update(
        last_used_at=now
    )
    key.last_used_at = now
