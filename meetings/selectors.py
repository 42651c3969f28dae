"""Reads of meetings."""

from datetime import datetime

from django.db.models import Exists, OuterRef, Q

from meetings.models import ACTIVE_STATUSES, Meeting, MeetingEvent
from meetings.policy import SAFETY_NET_KEPT_ALIVE, termination_meet_time_until
from meetings.windows import hard_stop_expression


def meetings_for_teacher(*, user):
    return Meeting.objects.for_teacher(user).order_by("meet_time")


def meeting_kept_alive(*, meeting_id: str) -> bool:
    """Whether the safety net already kept the meeting alive."""
    return MeetingEvent.objects.filter(meeting_id=meeting_id, reason=SAFETY_NET_KEPT_ALIVE).exists()


def meetings_for_termination(*, now: datetime) -> list[dict]:
    """Active meetings old enough for a termination rule, with what the rules need (one query).

    Left out: the lessons the safety net already kept alive that have not both recorded and are
    before their hard stop: no rule is due for them (``termination_verdict`` says None), and at
    the busiest hour they are most of the meetings in progress.
    """
    kept_alive = MeetingEvent.objects.filter(meeting=OuterRef("pk"), reason=SAFETY_NET_KEPT_ALIVE)
    undecided = Q(kept_alive=True) & (Q(teacher_session_data="") | Q(student_session_data="")) & Q(hard_stop__gt=now)
    return list(
        Meeting.objects.filter(status__in=ACTIVE_STATUSES, meet_time__lte=termination_meet_time_until(now))
        .annotate(kept_alive=Exists(kept_alive), hard_stop=hard_stop_expression())
        .exclude(undecided)
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
