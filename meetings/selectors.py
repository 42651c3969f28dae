"""Reads of meetings."""

from datetime import datetime

from django.db.models import Exists, OuterRef

from elephant.prepared import PreparedRead
from meetings.models import ACTIVE_STATUSES, Meeting, MeetingEvent
from meetings.policy import SAFETY_NET_KEPT_ALIVE, termination_meet_time_until


def meetings_for_teacher(*, user):
    return Meeting.objects.for_teacher(user).order_by("meet_time")


def meeting_kept_alive(*, meeting_id: str) -> bool:
    """Whether the safety net already kept the meeting alive."""
    return bool(_kept_alive(meeting_id=meeting_id))


def meeting_get(*, meeting_id: str, active: bool = False) -> Meeting | None:
    """The meeting (``active``: only while in an active status), or None."""
    return next(iter((_active_meeting if active else _meeting)(meeting_id=meeting_id)), None)


def meeting_status_refresh(meeting: Meeting) -> None:
    """``meeting.refresh_from_db(fields=["status", "version"])``, through a read compiled once (the
    per-meeting tasks re-read these before each decision)."""
    rows = _status_version(meeting_id=meeting.pk)
    if not rows:
        raise Meeting.DoesNotExist("Meeting matching query does not exist.")
    meeting.status, meeting.version = rows[0]


# Reads every per-meeting task makes: compiled once (elephant.prepared).
_kept_alive = PreparedRead(
    lambda *, meeting_id: (
        MeetingEvent.objects.filter(meeting_id=meeting_id, reason=SAFETY_NET_KEPT_ALIVE)
        .order_by()
        .values_list("pk", flat=True)[:1]
    )
)
_meeting = PreparedRead(lambda *, meeting_id: Meeting.objects.filter(pk=meeting_id)[:1])
_active_meeting = PreparedRead(
    lambda *, meeting_id: Meeting.objects.filter(pk=meeting_id, status__in=sorted(ACTIVE_STATUSES))[:1]
)
_status_version = PreparedRead(
    lambda *, meeting_id: Meeting.objects.filter(pk=meeting_id).values_list("status", "version")
)


def meetings_for_termination(*, now: datetime) -> list[dict]:
    """Active meetings old enough for a termination rule, with what the rules need (one query)."""
    return _meetings_for_termination(until=termination_meet_time_until(now))


def _for_termination(*, until: datetime):
    kept_alive = MeetingEvent.objects.filter(meeting=OuterRef("pk"), reason=SAFETY_NET_KEPT_ALIVE)
    return (
        Meeting.objects.filter(status__in=sorted(ACTIVE_STATUSES), meet_time__lte=until)
        .annotate(kept_alive=Exists(kept_alive))
        .values(
            "pk",
            "status",
            "meet_time",
            "duration_minutes",
            "teacher_session_data",
            "student_session_data",
            "kept_alive",
        )
    )


# Read by the termination sweep every few seconds: compiled once (elephant.prepared).
_meetings_for_termination = PreparedRead(_for_termination)
