"""Reads of meetings."""

from datetime import datetime

from django.db.models import Exists, OuterRef

from meetings.models import ACTIVE_STATUSES, Meeting, MeetingEvent
from meetings.policy import SAFETY_NET_KEPT_ALIVE, termination_meet_time_until


def meetings_for_teacher(*, user):
    return Meeting.objects.for_teacher(user).order_by("meet_time")


def meeting_kept_alive(*, meeting_id: str) -> bool:
    """Whether the safety net already kept the meeting alive."""
    return MeetingEvent.objects.filter(meeting_id=meeting_id, reason=SAFETY_NET_KEPT_ALIVE).exists()


def meetings_for_termination(*, now: datetime) -> list[dict]:
    """Active meetings old enough for a termination rule, with what the rules need (one query)."""
    kept_alive = MeetingEvent.objects.filter(meeting=OuterRef("pk"), reason=SAFETY_NET_KEPT_ALIVE)
    return list(
        Meeting.objects.filter(status__in=ACTIVE_STATUSES, meet_time__lte=termination_meet_time_until(now))
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
