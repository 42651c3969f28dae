"""An iCalendar (RFC 5545) event for one participant of a meeting, carrying their join link."""

from datetime import UTC, datetime

from django.utils import timezone

from meetings.models import Meeting, MeetingStatus, Role
from meetings.progress import join_opens_phrase


def _escape(text: str) -> str:
    """TEXT escaping (RFC 5545 3.3.11): a lone CR is a line break too, never a raw one in the file."""
    text = text.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return text.replace("\r\n", "\\n").replace("\r", "\\n").replace("\n", "\\n")


def _fold(line: str) -> str:
    """Lines longer than 75 octets continue on the next line after a space (RFC 5545 3.1)."""
    data = line.encode()
    parts, start = [], 0
    while len(data) - start > 75:
        end = start + (75 if not parts else 74)
        while (data[end] & 0xC0) == 0x80:  # never split a UTF-8 character
            end -= 1
        parts.append(data[start:end].decode())
        start = end
    parts.append(data[start:].decode())
    return "\r\n ".join(parts)


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def meeting_ics(*, meeting: Meeting, role: str, join_link: str, room_link: str) -> str:
    other = meeting.student_name if role == Role.TEACHER else meeting.teacher_name
    description = (
        f"Open your desktop: {join_link}\n"
        f"The link opens {join_opens_phrase()} before the session and shows the desktop's progress until it is ready.\n"
        f"Video room: {room_link}"
    )
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//Elephant//Tutoring sessions//EN",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        f"UID:{meeting.id}-{role}@elephant",
        f"DTSTAMP:{_utc(timezone.now())}",
        f"DTSTART:{_utc(meeting.meet_time)}",
        f"DTEND:{_utc(meeting.end_time)}",
        f"SUMMARY:{_escape(f'Tutoring session with {other}')}",
        f"DESCRIPTION:{_escape(description)}",
        f"URL:{join_link}",
        f"LOCATION:{_escape(join_link)}",
        "STATUS:CANCELLED" if meeting.status == MeetingStatus.CANCELLED else "STATUS:CONFIRMED",
        "BEGIN:VALARM",
        "ACTION:DISPLAY",
        "DESCRIPTION:Tutoring session in 10 minutes",
        "TRIGGER:-PT10M",
        "END:VALARM",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "\r\n".join(_fold(line) for line in lines) + "\r\n"
