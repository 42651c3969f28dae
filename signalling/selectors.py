"""Who may enter a meeting's room or hear its status."""

from dataclasses import dataclass

from meetings.access import participant_access, participant_credentials
from meetings.models import READY_STATUSES, TERMINAL_STATUSES, Meeting, MeetingStatus, Role


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

    @property
    def starts_meeting(self) -> bool:
        """A participant's link into the room of a session that has not started: this join starts it."""
        return self.by_token and self.identity in Role.values and self.status == MeetingStatus.HEALTHY


def meeting_access(*, meeting_id: str, token: str | None, user) -> Access | None:
    """The access ``token`` or the logged-in ``user`` has to the meeting, or None (``meetings.access``)."""
    credentials = participant_credentials(meeting_id=meeting_id, token=token, user=user)
    if credentials is None:
        return None
    meeting = (
        Meeting.objects.filter(pk=meeting_id)
        .only("status", "termination_reason", "teacher_id", "meet_time", "duration_minutes")
        .first()
    )
    if meeting is None:
        return None
    access = participant_access(meeting=meeting, credentials=credentials)
    if access is None:
        return None
    return Access(
        identity=access.identity,
        status=meeting.status,
        reason=meeting.termination_reason,
        by_token=access.by_token,
        in_join_window=access.in_join_window,
    )
