"""The absolute links Elephant hands out for a meeting."""

from django.conf import settings

from meetings.models import Meeting, Role
from meetings.tokens import participant_token


def participant_link(*, meeting_id: str, role: str) -> str:
    token = participant_token(meeting_id=meeting_id, role=role)
    return f"{settings.ELEPHANT_PUBLIC_URL}/join/{meeting_id}/{role}?t={token}"


def room_link(*, meeting_id: str, role: str) -> str:
    token = participant_token(meeting_id=meeting_id, role=role)
    return f"{settings.ELEPHANT_PUBLIC_URL}/room/{meeting_id}?t={token}"


def meeting_links(meeting: Meeting) -> dict[str, str]:
    return {
        "teacher_link": participant_link(meeting_id=meeting.id, role=Role.TEACHER),
        "student_link": participant_link(meeting_id=meeting.id, role=Role.STUDENT),
        "room_url": f"{settings.ELEPHANT_PUBLIC_URL}{meeting.room_path}",
    }
