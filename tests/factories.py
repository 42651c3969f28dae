"""Test data builders. Every builder writes through the real database."""

from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.utils import timezone

from fleet.models import Host, HostState
from meetings.models import Meeting, MeetingStatus


def make_teacher(username: str = "tina", *, password: str = "correct-horse-battery", **extra):
    User = get_user_model()
    extra.setdefault("first_name", username.title())
    extra.setdefault("last_name", "Teacher")
    return User.objects.create_user(username=username, password=password, email=f"{username}@example.com", **extra)


def make_staff(username: str = "sam", *, password: str = "correct-horse-battery"):
    User = get_user_model()
    return User.objects.create_superuser(username=username, password=password, email=f"{username}@example.com")


def make_meeting(*, meet_time: datetime | None = None, status: str = MeetingStatus.SCHEDULED, **fields) -> Meeting:
    fields.setdefault("teacher_name", "Tina Teacher")
    fields.setdefault("student_name", "Stu Student")
    fields.setdefault("time_zone", "Europe/Berlin")
    meeting = Meeting.objects.create(
        meet_time=meet_time or timezone.now() + timedelta(hours=1), status=status, **fields
    )
    return meeting


def make_host(meeting: Meeting, role: str, *, state: str = HostState.HEALTHY, **fields) -> Host:
    fields.setdefault("instance_id", f"i-{meeting.id[:8]}{role[:1]}0000000"[:19])
    fields.setdefault("dcv_link", f"https://{fields['instance_id']}.desktops.example.com:8443")
    return Host.objects.create(meeting=meeting, role=role, state=state, **fields)


def make_ready_meeting(**fields) -> Meeting:
    """A HEALTHY meeting whose two hosts are up with DCV links."""
    meeting = make_meeting(status=MeetingStatus.HEALTHY, **fields)
    make_host(meeting, "teacher")
    make_host(meeting, "student")
    return meeting
