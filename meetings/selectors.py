"""Reads of meetings."""

from django.db.models import OuterRef, Subquery

from meetings.models import Meeting


def meeting_get_for_join(*, meeting_id: str, role: str) -> Meeting | None:
    """The meeting with the role's current DCV link and instance id, in one query.

    The current host of a role is its newest generation (a replacement supersedes the first).
    """
    from fleet.models import Host

    current_host = Host.objects.filter(meeting_id=OuterRef("pk"), role=role).order_by("-generation")
    return (
        Meeting.objects.annotate(
            role_dcv_link=Subquery(current_host.values("dcv_link")[:1]),
            role_instance_id=Subquery(current_host.values("instance_id")[:1]),
        )
        .filter(pk=meeting_id)
        .first()
    )


def meetings_for_teacher(*, user):
    return Meeting.objects.for_teacher(user).order_by("meet_time")
