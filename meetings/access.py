"""The one participant-access check: who may use a meeting's links, and whether its window is open.

Two steps, because the first needs no database and refuses most strangers for free:

1. ``participant_credentials(meeting_id=, token=, role=None, user=None)`` -> ``Credentials`` or None.
   The ``?t=`` token is bound to the meeting and a role (``meetings.tokens``). With ``role`` (a
   join link names its role) the token must grant exactly that role and nothing else counts;
   without it (the signalling consumer) the token's role, else a seated room credential (the ``?k=`` of the
   ``jitsi_url`` the agents open on the desktops: the video room only, identity ``desktop:<seat>``,
   ``meetings.tokens.room_credential``), else a logged-in ``user``. None: no
   valid token and nobody logged in, so refuse without reading the meeting.
2. ``participant_access(meeting=, credentials=, now=None)`` -> ``ParticipantAccess`` or None.
   With the meeting read (any object with ``teacher_id``, ``meet_time``, ``duration_minutes``):
   the identity (``"teacher"``, ``"student"`` or ``"staff:<user id>"`` for a logged-in staff
   member who is not its teacher) and the join window at ``now``. None: the logged-in user is
   neither the meeting's teacher nor staff.

The window (``ParticipantAccess.window``) binds token holders: from ELEPHANT_JOIN_EARLY_MINUTES
before ``meet_time`` (``TOO_EARLY`` until then) to the hard stop (``EXPIRED`` after it), see
``meetings.policy``. The caller decides what a closed window means for it: the join endpoint
answers 403 with ``refusal_message(code)``, the consumer refuses to join a room.

Callers: ``fleet.views.join`` (GET /join/<id>/<role>) and ``signalling.selectors.meeting_access``
(the consumer only calls the latter).
"""

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from meetings.policy import EXPIRED, TOO_EARLY, join_window_verdict
from meetings.progress import join_opens_phrase
from meetings.tokens import participant_token_role, participant_token_valid, room_credential_check

BAD_TOKEN = "bad_token"


ROOM_GUEST = "desktop"


@dataclass(frozen=True)
class Credentials:
    role: str | None  # the role the token grants; None when a logged-in user asks instead
    user: object | None = None
    seat: str | None = None  # a room credential's seat (jitsi_url): the video room only, no role


@dataclass(frozen=True)
class ParticipantAccess:
    # One identity is one seat: a participant's newer connection replaces the older one.
    identity: str
    by_token: bool
    window: str | None  # None while the join window is open, else TOO_EARLY or EXPIRED

    @property
    def in_join_window(self) -> bool:
        return self.window is None


def participant_credentials(
    *, meeting_id: str, token: str | None, role: str | None = None, user=None
) -> Credentials | None:
    """What the request holds for the meeting (no query), or None when it holds nothing."""
    if role is not None:
        valid = participant_token_valid(meeting_id=meeting_id, role=role, token=token)
        return Credentials(role=role) if valid else None
    token_role = participant_token_role(meeting_id=meeting_id, token=token) if token else None
    if token_role is not None:
        return Credentials(role=token_role)
    seat = room_credential_check(meeting_id=meeting_id, credential=token) if token else None
    if seat:
        return Credentials(role=None, seat=seat)
    if user is not None and user.is_authenticated:
        return Credentials(role=None, user=user)
    return None


def participant_access(*, meeting, credentials: Credentials, now: datetime | None = None) -> ParticipantAccess | None:
    """The access ``credentials`` give to ``meeting`` at ``now``, or None."""
    user = credentials.user
    if credentials.role is not None:
        identity = credentials.role
    elif credentials.seat:
        identity = f"{ROOM_GUEST}:{credentials.seat}"
    elif meeting.teacher_id is not None and meeting.teacher_id == user.pk:
        identity = "teacher"
    elif user.is_staff:
        identity = f"staff:{user.pk}"
    else:
        return None
    window = join_window_verdict(
        meet_time=meeting.meet_time, duration_minutes=meeting.duration_minutes, now=now or timezone.now()
    )
    by_token = credentials.role is not None or bool(credentials.seat)
    return ParticipantAccess(identity=identity, by_token=by_token, window=window)


def refusal_message(code: str) -> str:
    """What a participant is told when their link is refused with ``code``."""
    return {
        BAD_TOKEN: "This link is not valid for this session and role.",
        TOO_EARLY: f"This link opens {join_opens_phrase()} before the session.",
        EXPIRED: "This session has ended; the link has expired.",
    }[code]
