"""Reads of meetings."""

from meetings.models import Meeting


def meetings_for_teacher(*, user):
    return Meeting.objects.for_teacher(user).order_by("meet_time")
