"""Participant tokens: the `?t=` of a join link.

A token is an HMAC (Django signing, salted for this purpose) over the meeting id and the
role, so it is bound to both: a student token never opens the teacher's desktop, and a
token for one meeting says nothing about another. The validity window (from
``ELEPHANT_JOIN_EARLY_MINUTES`` before ``meet_time`` to the end plus grace) is checked
against the meeting itself, so the link stays short and follows the meeting.
"""

import secrets
from datetime import datetime

from django.core import signing
from django.core.signing import Signer
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from meetings.models import Role

PARTICIPANT_SALT = "elephant.participant-link.v1"
ROOM_CREDENTIAL_SALT = "elephant.room-credential.v1"
ROOM_CREDENTIAL_MAX_LENGTH = 256

_signer = Signer(salt=PARTICIPANT_SALT)
# No timestamp in a room credential (it carries its own expiry): the same meeting always gets the same link.
_room_signer = Signer(salt=ROOM_CREDENTIAL_SALT)


def participant_token(*, meeting_id: str, role: str) -> str:
    return _signer.signature(f"{meeting_id}:{role}")


def participant_token_valid(*, meeting_id: str, role: str, token: str | None) -> bool:
    if not token or not isinstance(token, str) or len(token) > 128:
        return False
    return constant_time_compare(token, participant_token(meeting_id=meeting_id, role=role))


def participant_token_role(*, meeting_id: str, token: str | None) -> str | None:
    """The role a token grants for this meeting, or None."""
    for role in Role.values:
        if participant_token_valid(meeting_id=meeting_id, role=role, token=token):
            return role
    return None


# --- room credentials: the `?k=` of the jitsi_url the agents open on the desktops -----------------
#
# One link per meeting (the agents open the same jitsi_url on both desktops), so it names no role: it
# admits the meeting's video room only, until the expiry it carries (the meeting's hard stop when it was
# issued; the room also checks the meeting's own window). Each room page opened with it gets a seat of its
# own (``room_credential_seat``), so the teacher's and the student's desktops are two participants.


def room_credential(*, meeting_id: str, expires_at: datetime, seat: str = "") -> str:
    payload = {"m": meeting_id, "x": int(expires_at.timestamp())}
    if seat:
        payload["s"] = seat
    return _room_signer.sign_object(payload)


def room_credential_check(*, meeting_id: str, credential: str | None, now: datetime | None = None) -> str | None:
    """The seat a room credential holds for this meeting ("" for none yet), or None when it admits nothing here."""
    if not credential or not isinstance(credential, str) or len(credential) > ROOM_CREDENTIAL_MAX_LENGTH:
        return None
    try:
        payload = _room_signer.unsign_object(credential)
    except (signing.BadSignature, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("m") != meeting_id or not isinstance(payload.get("x"), int):
        return None
    if (now or timezone.now()).timestamp() > payload["x"]:
        return None
    seat = payload.get("s", "")
    return seat if isinstance(seat, str) else None


def room_credential_seat(*, meeting_id: str, credential: str) -> str:
    """A seated copy of a valid room credential, with the same expiry: one page's identity in the room."""
    payload = _room_signer.unsign_object(credential)
    return _room_signer.sign_object({"m": meeting_id, "x": payload["x"], "s": secrets.token_urlsafe(8)})
