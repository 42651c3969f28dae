"""The absolute links Elephant hands out for a meeting."""

from django.conf import settings

from meetings.models import Meeting, Role
from meetings.tokens import participant_token, room_credential


def participant_link(*, meeting_id: str, role: str) -> str:
    token = participant_token(meeting_id=meeting_id, role=role)
    return f"{settings.ELEPHANT_PUBLIC_URL}/join/{meeting_id}/{role}?t={token}"


def room_link(*, meeting_id: str, role: str) -> str:
    token = participant_token(meeting_id=meeting_id, role=role)
    return f"{settings.ELEPHANT_PUBLIC_URL}/room/{meeting_id}?t={token}"


def desktop_room_link(meeting: Meeting) -> str:
    """The video room link the agents open on the desktops (DynamoDB ``jitsi_url``): its own credential,
    for this meeting only, until its hard stop; no login (``meetings.tokens.room_credential``)."""
    credential = room_credential(meeting_id=meeting.id, expires_at=meeting.hard_stop_at)
    return f"{settings.ELEPHANT_PUBLIC_URL}{meeting.room_path}?k={credential}"


def meeting_links(meeting: Meeting) -> dict[str, str]:
    return {
        "teacher_link": participant_link(meeting_id=meeting.id, role=Role.TEACHER),
        "student_link": participant_link(meeting_id=meeting.id, role=Role.STUDENT),
        "room_url": f"{settings.ELEPHANT_PUBLIC_URL}{meeting.room_path}",
    }
