"""What a room join writes: the session starts when a participant is in the video room."""

from meetings.models import Meeting
from meetings.services import meeting_start_on_join


def meeting_start_from_room(*, meeting_id: str, role: str) -> bool:
    """HEALTHY -> IN_PROGRESS when the teacher or the student joins the room (once; False otherwise)."""
    meeting = Meeting.objects.filter(pk=meeting_id).first()
    if meeting is None:
        return False
    return meeting_start_on_join(meeting=meeting, role=role)
