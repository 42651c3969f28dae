"""An iCalendar (RFC 5545) event for one participant of a meeting, carrying their join link.

The same event serves the download (``METHOD:PUBLISH``) and the mailed invitations (RFC 5546 iTIP:
``REQUEST`` for the invitation and every update, ``CANCEL`` for the cancellation). Its UID is stable
per meeting and participant, so a calendar replaces the event it has; ``SEQUENCE`` is the meeting's
``sequence``, up by one with every reschedule and the cancel, so the newest message wins.
"""

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


def _param(text: str) -> str:
    """A parameter value (RFC 5545 3.2): quoted, with the characters a quoted value cannot hold left out."""
    return '"' + "".join(ch for ch in text if ch not in '"\r\n' and ch.isprintable()) + '"'


def _parties(*, method: str, organizer_email: str, name: str, email: str) -> list[str]:
    if method == "PUBLISH" or not organizer_email:
        return []
    lines = [f"ORGANIZER;CN={_param('Elephant')}:mailto:{organizer_email}"]
    if email:
        lines.append(f"ATTENDEE;CN={_param(name)};ROLE=REQ-PARTICIPANT;RSVP=FALSE:mailto:{email}")
    return lines


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


METHODS = ("PUBLISH", "REQUEST", "CANCEL")


def meeting_uid(*, meeting: Meeting, role: str) -> str:
    return f"{meeting.id}-{role}@elephant"


def meeting_ics(
    *,
    meeting: Meeting,
    role: str,
    join_link: str,
    room_link: str,
    method: str = "PUBLISH",
    organizer_email: str = "",
) -> str:
    """The participant's event; for ``REQUEST`` and ``CANCEL`` pass the sender's address as ``organizer_email``
    (iTIP requires an ORGANIZER, and the participant as ATTENDEE)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}")
    other = meeting.student_name if role == Role.TEACHER else meeting.teacher_name
    name = meeting.teacher_name if role == Role.TEACHER else meeting.student_name
    email = meeting.teacher_email if role == Role.TEACHER else meeting.student_email
    cancelled = method == "CANCEL" or meeting.status == MeetingStatus.CANCELLED
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
        f"METHOD:{method}",
        "BEGIN:VEVENT",
        f"UID:{meeting_uid(meeting=meeting, role=role)}",
        f"SEQUENCE:{meeting.sequence}",
        f"DTSTAMP:{_utc(timezone.now())}",
        f"DTSTART:{_utc(meeting.meet_time)}",
        f"DTEND:{_utc(meeting.end_time)}",
        f"SUMMARY:{_escape(f'Tutoring session with {other}')}",
        f"DESCRIPTION:{_escape(description)}",
        f"URL:{join_link}",
        f"LOCATION:{_escape(join_link)}",
        *_parties(method=method, organizer_email=organizer_email, name=name, email=email),
        "STATUS:CANCELLED" if cancelled else "STATUS:CONFIRMED",
        "BEGIN:VALARM",
        "ACTION:DISPLAY",
        "DESCRIPTION:Tutoring session in 10 minutes",
        "TRIGGER:-PT10M",
        "END:VALARM",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    return "\r\n".join(_fold(line) for line in lines) + "\r\n"
