"""Per-key limits of the JSON API: a token bucket (steady rate + burst) and a daily quota.

Both live in Redis and are checked and charged by one Lua script, so concurrent requests
on any number of web processes can neither overdraw the bucket nor overshoot the quota.
The clock is the application's (passed in), not Redis's, so tests can move time with
time-machine; web servers' clocks only need to agree to well under a second.

A request refused by one limit charges neither. A request refused for the daily quota is
told to come back at the next UTC midnight.
"""

import functools
import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from django.conf import settings
from django.utils import timezone

from meetings.models import ApiKey

logger = logging.getLogger(__name__)

RATE = "rate"
DAILY_QUOTA = "daily_quota"

_SCRIPT = """
local now = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local quota = tonumber(ARGV[4])
local day_left = tonumber(ARGV[5])

local used = tonumber(redis.call('GET', KEYS[2]) or '0')
if used >= quota then
  return {0, 'daily_quota', ARGV[5], 0}
end

local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
if tokens < 1 then
  return {0, 'rate', string.format('%.6f', (1 - tokens) / rate), quota - used}
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens - 1), 'ts', string.format('%.6f', math.max(now, ts)))
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 60)
used = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], math.ceil(day_left) + 3600)
return {1, '', '0', quota - used}
"""

# A plan with a zero rate would never refill; treat it as "one request per day-ish".
_MIN_RATE = 1e-5


@dataclass(frozen=True)
class RateDecision:
    allowed: bool
    limit: str = ""  # RATE or DAILY_QUOTA when refused
    retry_after: int = 0  # whole seconds, at least 1 when refused
    quota_remaining: int | None = None


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)


@functools.cache
def _script(url: str):
    return _client(url).register_script(_SCRIPT)


def _redis_keys(key: ApiKey, now: datetime) -> list[str]:
    prefix = settings.CACHES["default"].get("KEY_PREFIX", "elephant")
    # The hash tag keeps both keys of one API key in one slot on a Redis Cluster.
    base = f"{prefix}:ratelimit:{{{key.pk}}}"
    return [f"{base}:bucket", f"{base}:day:{now:%Y-%m-%d}"]


def seconds_to_utc_midnight(now: datetime) -> float:
    now = now.astimezone(UTC)
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    return (midnight - now).total_seconds()


def rate_limit_hit(*, key: ApiKey, now: datetime | None = None) -> RateDecision:
    """Charge one request to ``key``'s limits, or say which limit refuses it and for how long."""
    now = (now or timezone.now()).astimezone(UTC)
    plan = key.plan
    day_left = seconds_to_utc_midnight(now)
    args = [
        repr(now.timestamp()),
        repr(max(float(plan.rate_per_second), _MIN_RATE)),
        max(int(plan.burst), 1),
        int(plan.daily_quota),
        repr(day_left),
    ]
    try:
        allowed, limit, wait, remaining = _script(settings.REDIS_URL)(keys=_redis_keys(key, now), args=args)
    except redis.RedisError:
        # Limits protect the service; an unreachable Redis should not take the API down with it.
        logger.exception("rate limiter unavailable; letting API key %s through", key.prefix)
        return RateDecision(allowed=True)
    if allowed:
        return RateDecision(allowed=True, quota_remaining=int(remaining))
    return RateDecision(
        allowed=False,
        limit=limit.decode(),
        retry_after=max(1, math.ceil(float(wait))),
        quota_remaining=int(remaining),
    )
