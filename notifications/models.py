"""The log of mail to the participants: one row per meeting, participant, kind and sequence, ever.

The unique constraint is what makes a mail go out at most once: every path that wants a mail
(the on-commit receiver, the beat sweep, a retry) inserts the same row with ``ON CONFLICT DO
NOTHING`` and then sends only a row it claimed (``PENDING -> SENDING``).
"""

from django.db import models

from meetings.models import Meeting, Role


class MailKind(models.TextChoices):
    INVITATION = "INVITATION", "Invitation"
    UPDATE = "UPDATE", "Update (rescheduled)"
    CANCELLATION = "CANCELLATION", "Cancellation"
    REMINDER = "REMINDER", "Reminder"


class MailStatus(models.TextChoices):
    PENDING = "PENDING", "Waiting to be sent"
    SENDING = "SENDING", "Being sent"
    SENT = "SENT", "Sent"
    SUPERSEDED = "SUPERSEDED", "Not sent: a newer change replaced it"


class SentMailQuerySet(models.QuerySet):
    def due(self, now):
        return self.filter(status=MailStatus.PENDING).filter(
            models.Q(next_attempt_at__isnull=True) | models.Q(next_attempt_at__lte=now)
        )


class SentMail(models.Model):
    meeting = models.ForeignKey(Meeting, on_delete=models.CASCADE, related_name="mails")
    participant = models.CharField(max_length=16, choices=Role.choices)
    kind = models.CharField(max_length=16, choices=MailKind.choices)
    sequence = models.PositiveIntegerField(help_text="The meeting's iCalendar SEQUENCE this mail carries.")
    to = models.EmailField()
    status = models.CharField(max_length=16, choices=MailStatus.choices, default=MailStatus.PENDING, db_index=True)
    subject = models.CharField(max_length=255, blank=True)
    message_id = models.CharField(max_length=255, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    objects = SentMailQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "sent mail"
        verbose_name_plural = "sent mail"
        constraints = [
            models.UniqueConstraint(
                fields=["meeting", "participant", "kind", "sequence"], name="sentmail_once_per_change"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.sequence} to the {self.participant} of {self.meeting_id}"
