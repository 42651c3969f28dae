"""ICE servers for a participant of the video room.

STUN servers come from ``ELEPHANT_ICE_SERVERS`` as they are. When ``ELEPHANT_TURN_SECRET`` and
``ELEPHANT_TURN_URLS`` are set, each participant also gets a TURN credential of its own in the
form coturn's REST API (``use-auth-secret``) checks: the user name is ``<expiry>:<user>`` and
the credential is base64(HMAC-SHA1(secret, user name)), so it needs no shared state and stops
working at the expiry.
"""

import base64
import hashlib
import hmac
import time

from django.conf import settings


def turn_credential(*, user: str, now: float | None = None) -> tuple[str, str, int]:
    """(username, credential, expires_at) for ``user``, valid for ELEPHANT_TURN_TTL_SECONDS."""
    expires_at = int(now if now is not None else time.time()) + settings.ELEPHANT_TURN_TTL_SECONDS
    username = f"{expires_at}:{user}"
    digest = hmac.new(settings.ELEPHANT_TURN_SECRET.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode(), expires_at


def ice_servers_for(*, meeting_id: str, role: str, now: float | None = None) -> tuple[list[dict], int | None]:
    """The RTCPeerConnection ``iceServers`` for one participant, and when its credential expires."""
    servers = [dict(server) for server in settings.ELEPHANT_ICE_SERVERS]
    if not (settings.ELEPHANT_TURN_SECRET and settings.ELEPHANT_TURN_URLS):
        return servers, None
    username, credential, expires_at = turn_credential(user=f"{meeting_id}-{role}", now=now)
    servers.append({"urls": list(settings.ELEPHANT_TURN_URLS), "username": username, "credential": credential})
    return servers, expires_at
