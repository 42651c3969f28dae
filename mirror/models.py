"""The mirror's own rows: its state per meeting, and the admin's view of the outbox.

The outbox itself is ``meetings.MeetingEvent`` (pending while ``mirrored_at`` is null): every
change of a meeting writes one in its own transaction, so meetings need not know the mirror.
"""

from django.db import models

from meetings.models import Meeting, MeetingEvent


class MirrorState(models.Model):
    """What the mirror last wrote of one meeting, and its retry schedule (also the flush's claim lease).

    Created lazily, by the first flush that claims the meeting (one bulk insert per pass, see
    ``mirror.services._claim``), not with the meeting: scheduling a meeting then costs no extra
    query and ``meetings`` needs no hook for the mirror. A meeting without a row has never been
    written and is due at once; readers take the defaults below for it (``state_of``).
    """

    meeting = models.OneToOneField(Meeting, primary_key=True, on_delete=models.CASCADE, related_name="mirror_state")
    # What the mirror last wrote successfully (see mirror.dynamo): the version guard and the
    # status the next write expects to find.
    mirrored_version = models.PositiveBigIntegerField(default=0)
    mirrored_status = models.CharField(max_length=16, blank=True)
    # Retry state of the meeting's pending changes; next_attempt_at is also the claim lease.
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    error_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "DynamoDB mirror state"
        verbose_name_plural = "DynamoDB mirror state"

    def __str__(self) -> str:
        return f"{self.meeting_id}: mirrored version {self.mirrored_version}"


def state_of(meeting: Meeting) -> MirrorState:
    """The meeting's mirror state (select_related("mirror_state") first), or the defaults if it has none."""
    try:
        return meeting.mirror_state
    except MirrorState.DoesNotExist:
        return MirrorState(meeting=meeting)


class MirrorBacklog(MeetingEvent):
    """Changes not yet written to DynamoDB: the admin's view of the mirror's outbox."""

    class Meta:
        proxy = True
        verbose_name = "DynamoDB backlog entry"
        verbose_name_plural = "DynamoDB backlog"
