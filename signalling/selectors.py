"""Who may enter a meeting's room or hear its status."""

from dataclasses import dataclass

from django.utils import timezone

from meetings.models import READY_STATUSES, TERMINAL_STATUSES, Meeting
from meetings.tokens import participant_token_role


@dataclass(frozen=True)
class Access:
    # One identity is one seat: a participant's newer connection replaces the older one.
    identity: str  # "teacher", "student" or "staff:<user id>"
    status: str
    reason: str
    by_token: bool
    in_join_window: bool

    @property
    def ready(self) -> bool:
        return self.status in READY_STATUSES

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


def meeting_access(*, meeting_id: str, token: str | None, user) -> Access | None:
    """The access ``token`` or the logged-in ``user`` has to the meeting, or None."""
    role = participant_token_role(meeting_id=meeting_id, token=token) if token else None
    authenticated = user is not None and user.is_authenticated
    if role is None and not authenticated:
        return None
    meeting = (
        Meeting.objects.filter(pk=meeting_id)
        .only("status", "termination_reason", "teacher_id", "meet_time", "duration_minutes")
        .first()
    )
    if meeting is None:
        return None
    if role is not None:
        identity = role
    elif meeting.teacher_id is not None and meeting.teacher_id == user.pk:
        identity = "teacher"
    elif user.is_staff:
        identity = f"staff:{user.pk}"
    else:
        return None
    return Access(
        identity=identity,
        status=meeting.status,
        reason=meeting.termination_reason,
        by_token=role is not None,
        in_join_window=meeting.join_window_contains(timezone.now()),
    )
