"""Participant tokens: the `?t=` of a join link.

A token is an HMAC (Django signing, salted for this purpose) over the meeting id and the
role, so it is bound to both: a student token never opens the teacher's desktop, and a
token for one meeting says nothing about another. The validity window (from
``ELEPHANT_JOIN_EARLY_MINUTES`` before ``meet_time`` to the end plus grace) is checked
against the meeting itself, so the link stays short and follows the meeting.
"""

from django.core.signing import Signer
from django.utils.crypto import constant_time_compare

from meetings.models import Role

PARTICIPANT_SALT = "elephant.participant-link.v1"

_signer = Signer(salt=PARTICIPANT_SALT)


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
