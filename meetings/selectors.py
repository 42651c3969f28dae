"""Reads of meetings."""

from functools import cache

from meetings.models import Meeting


@cache
def _join_sql() -> str:
    from fleet.models import Host

    meeting, host = Meeting._meta.db_table, Host._meta.db_table
    # Hand-written because the join endpoint is the hottest read: compiling the equivalent
    # ORM query (two correlated subqueries) cost more than running it (bench/join.py).
    return (
        f'SELECT m.*, h."dcv_link" AS role_dcv_link, h."instance_id" AS role_instance_id '
        f'FROM "{meeting}" m LEFT JOIN "{host}" h ON h."id" = ('
        f'SELECT c."id" FROM "{host}" c WHERE c."meeting_id" = m."id" AND c."role" = %s '
        f'ORDER BY c."generation" DESC LIMIT 1) '
        f'WHERE m."id" = %s'
    )


def meeting_get_for_join(*, meeting_id: str, role: str) -> Meeting | None:
    """The meeting with the role's current DCV link and instance id, in one query.

    The current host of a role is its newest generation (a replacement supersedes the first).
    """
    return next(iter(Meeting.objects.raw(_join_sql(), [role, meeting_id])), None)


def meetings_for_teacher(*, user):
    return Meeting.objects.for_teacher(user).order_by("meet_time")
