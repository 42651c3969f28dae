"""Meetings: the record the whole system turns around.

Models hold data, read-only guards and queryset filters; every write goes through
``meetings.services``.
"""

import secrets
import string
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import models
from django.db.models import Q

from meetings import windows

MEETING_ID_ALPHABET = string.ascii_lowercase + string.digits
MEETING_ID_LENGTH = 16
MEETING_ID_REGEX = r"^[a-z0-9]{16}$"


def generate_meeting_id() -> str:
    return "".join(secrets.choice(MEETING_ID_ALPHABET) for _ in range(MEETING_ID_LENGTH))


class Role(models.TextChoices):
    TEACHER = "teacher", "Teacher"
    STUDENT = "student", "Student"


class MeetingStatus(models.TextChoices):
    SCHEDULED = "SCHEDULED", "Scheduled"
    LAUNCHING = "LAUNCHING", "Launching"
    LAUNCHED = "LAUNCHED", "Launched"
    DNS_WRITTEN = "DNS_WRITTEN", "Booting"
    HEALTHY = "HEALTHY", "Ready"
    IN_PROGRESS = "IN_PROGRESS", "In progress"
    TERMINATED = "TERMINATED", "Ended"
    CANCELLED = "CANCELLED", "Cancelled"
    FAILED = "FAILED", "Failed"


TERMINAL_STATUSES = frozenset({MeetingStatus.TERMINATED, MeetingStatus.CANCELLED, MeetingStatus.FAILED})
READY_STATUSES = frozenset({MeetingStatus.HEALTHY, MeetingStatus.IN_PROGRESS})
# Statuses in which hosts may exist and the fleet watches the meeting.
ACTIVE_STATUSES = frozenset(
    {
        MeetingStatus.LAUNCHING,
        MeetingStatus.LAUNCHED,
        MeetingStatus.DNS_WRITTEN,
        MeetingStatus.HEALTHY,
        MeetingStatus.IN_PROGRESS,
    }
)


class TerminationReason(models.TextChoices):
    NO_SHOW_TIMEOUT = "NO_SHOW_TIMEOUT", "Nobody joined (15-minute safety net)"
    PARTIAL_NO_SHOW_TIMEOUT = "PARTIAL_NO_SHOW_TIMEOUT", "Only one side recorded (15-minute safety net)"
    FIFTEEN_MIN_SUCCESS = "15_MIN_SUCCESS", "Both sides recorded by the 15-minute safety net"
    SUCCESS = "SUCCESS", "Both sessions recorded"
    SCHEDULED_END = "SCHEDULED_END", "Scheduled end reached"
    STAFF = "STAFF", "Terminated by staff"
    CANCELLED = "CANCELLED", "Cancelled before launch"
    # The platform's faults, never a participant's: the desktops were not there for them.
    LAUNCH_FAILED = "LAUNCH_FAILED", "Platform fault: the desktops could not be launched"
    HEALTH_TIMEOUT = "HEALTH_TIMEOUT", "Platform fault: the desktops never became ready"
    HOST_LOST = "HOST_LOST", "Platform fault: a desktop was lost"
    PLATFORM_FAULT = "PLATFORM_FAULT", "Platform fault: the desktops were not ready in time (not a no-show)"


class EventReason(models.TextChoices):
    """Why an event row was written, beyond the termination reasons (which are reasons too).

    One list for every app: meetings, the fleet and the mirror write events with these.
    """

    SCHEDULED = "SCHEDULED", "Scheduled"
    LAUNCH = "LAUNCH", "Launch started"
    HOSTS_LAUNCHED = "HOSTS_LAUNCHED", "Both instances launched"
    DNS_WRITTEN = "DNS_WRITTEN", "Both desktop links written"
    HOSTS_HEALTHY = "HOSTS_HEALTHY", "Both desktops healthy"
    FIRST_JOIN = "FIRST_JOIN", "First participant joined"
    HOST_LAUNCHED = "HOST_LAUNCHED", "Instance launched"
    HOST_ADOPTED = "HOST_ADOPTED", "Instance adopted after a crash"
    HOST_LINK = "HOST_LINK", "Desktop link written"
    HOST_REPLACED = "HOST_REPLACED", "Host replaced"
    SAFETY_NET_KEPT_ALIVE = "SAFETY_NET_KEPT_ALIVE", "Safety net: kept alive"
    REAPED = "REAPED", "Orphan instance reaped"
    STAFF_EDIT = "STAFF_EDIT", "Edited by staff"
    DDB_RESYNC = "DDB_RESYNC", "DynamoDB resync requested"
    AGENT_SESSION_DATA = "AGENT_SESSION_DATA", "Session data reported by an agent"
    RESCHEDULED = "RESCHEDULED", "Rescheduled"


class MeetingQuerySet(models.QuerySet):
    def active(self):
        return self.filter(status__in=ACTIVE_STATUSES)

    def due_for_launch(self, now: datetime, *, meet_time_until: datetime | None = None):
        """SCHEDULED meetings whose ``launch_at`` has come (without one: ``meet_time - ELEPHANT_LAUNCH_LEAD``;
        ``meet_time_until``: that bound, ``windows.launch_due_meet_time_until(now)``, when the caller has it)."""
        until = windows.launch_due_meet_time_until(now) if meet_time_until is None else meet_time_until
        # Each side of the OR whole (status and bound): the database searches an index for each, (status,
        # launch_at) and (status, meet_time), instead of reading every SCHEDULED meeting.
        return self.filter(
            Q(status=MeetingStatus.SCHEDULED, launch_at__lte=now)
            | Q(status=MeetingStatus.SCHEDULED, launch_at__isnull=True, meet_time__lte=until)
        )

    def for_teacher(self, user):
        return self.filter(teacher=user)

    def upcoming(self, now: datetime):
        return self.exclude(status__in=TERMINAL_STATUSES).filter(meet_time__gte=now - timedelta(hours=12))

    def past(self, now: datetime):
        return self.filter(Q(status__in=TERMINAL_STATUSES) | Q(meet_time__lt=now - timedelta(hours=12)))


class MeetingSeries(models.Model):
    """A weekly lesson: occurrences scheduled together, each its own meeting with its own links."""

    teacher = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="meeting_series"
    )
    api_key = models.ForeignKey(
        "meetings.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="meeting_series"
    )
    weeks = models.PositiveSmallIntegerField(help_text="How many weekly occurrences were scheduled.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "meeting series"

    def __str__(self) -> str:
        return f"weekly series {self.pk} ({self.weeks} weeks)"


class Meeting(models.Model):
    id = models.CharField(primary_key=True, max_length=MEETING_ID_LENGTH, default=generate_meeting_id, editable=False)
    teacher = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="meetings"
    )
    api_key = models.ForeignKey(
        "meetings.ApiKey",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="meetings",
        help_text="The integrator key that created this meeting, if it came through the API.",
    )
    teacher_name = models.CharField(max_length=120)
    teacher_email = models.EmailField(blank=True)
    student_name = models.CharField(max_length=120)
    student_email = models.EmailField(blank=True)
    meet_time = models.DateTimeField(db_index=True, help_text="Stored in UTC.")
    time_zone = models.CharField(max_length=64, default="UTC", help_text="The scheduler's IANA time zone.")
    duration_minutes = models.PositiveIntegerField(default=60)
    # The name of the fleet's desktop profile (blank: the default one). A plain name: meetings knows no
    # fleet model; the choices come in through meetings.schedule.desktop_profile_choices_register.
    desktop_profile = models.CharField(max_length=64, blank=True)

    status = models.CharField(
        max_length=16, choices=MeetingStatus.choices, default=MeetingStatus.SCHEDULED, db_index=True
    )
    termination_reason = models.CharField(max_length=32, blank=True)
    last_error = models.TextField(blank=True)

    series = models.ForeignKey(MeetingSeries, null=True, blank=True, on_delete=models.SET_NULL, related_name="meetings")
    series_index = models.PositiveSmallIntegerField(null=True, blank=True, help_text="1 for a series' first week.")
    # The iCalendar SEQUENCE of the participants' invitations: up by one with every reschedule and the cancel.
    sequence = models.PositiveIntegerField(default=0)

    # Written by the agents on the hosts (DynamoDB), pulled back by the mirror.
    teacher_session_data = models.CharField(max_length=1024, blank=True)
    student_session_data = models.CharField(max_length=1024, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # When the fleet launches the hosts (issue 11): chosen at booking from the learned boot times and the
    # launch planner, revised by the fleet's planning sweep; NULL means meet_time - ELEPHANT_LAUNCH_LEAD.
    launch_at = models.DateTimeField(null=True, blank=True)
    # Planned on warm-pool instances (StartInstances of a stopped, booted instance) rather than cold launches.
    launch_warm = models.BooleanField(default=False)
    launched_at = models.DateTimeField(null=True, blank=True)
    healthy_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    # Increases with every change; the DynamoDB mirror writes are guarded by it (its own
    # record of what it wrote is mirror.models.MirrorState).
    version = models.PositiveBigIntegerField(default=1)

    objects = MeetingQuerySet.as_manager()

    class Meta:
        ordering = ["-meet_time"]
        indexes = [
            models.Index(fields=["status", "meet_time"], name="meeting_status_time"),
            models.Index(fields=["status", "launch_at"], name="meeting_status_launch_at"),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.teacher_name} / {self.student_name})"

    # --- read-only guards -----------------------------------------------------------------
    @property
    def end_time(self) -> datetime:
        return self.meet_time + timedelta(minutes=self.duration_minutes)

    @property
    def hard_stop_at(self) -> datetime:
        return windows.hard_stop_at(self.meet_time, self.duration_minutes)

    @property
    def join_opens_at(self) -> datetime:
        return windows.join_opens_at(self.meet_time)

    @property
    def local_meet_time(self) -> datetime:
        return self.meet_time.astimezone(ZoneInfo(self.time_zone))

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def can_cancel(self) -> bool:
        return self.status == MeetingStatus.SCHEDULED

    def can_reschedule(self) -> bool:
        return self.status == MeetingStatus.SCHEDULED

    def join_window_contains(self, now: datetime) -> bool:
        return self.join_opens_at <= now <= self.hard_stop_at

    def session_data(self, role: str) -> str:
        return getattr(self, f"{role}_session_data")

    @property
    def room_path(self) -> str:
        return f"/room/{self.id}"


class MeetingEvent(models.Model):
    """The audit log of a meeting: every transition and every mirrored change."""

    meeting = models.ForeignKey(Meeting, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16, blank=True)
    reason = models.CharField(max_length=64, blank=True)
    detail = models.TextField(blank=True)
    actor = models.CharField(
        max_length=150, blank=True, help_text="system, staff:<user>, teacher:<user>, api:<key>, agent"
    )
    # The event is also the DynamoDB outbox record: pending while null (mirror.services).
    mirrored_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [
            models.Index(fields=["meeting"], name="event_mirror_pending", condition=Q(mirrored_at__isnull=True)),
        ]

    def __str__(self) -> str:
        if self.to_status:
            return f"{self.meeting_id}: {self.from_status or '-'} -> {self.to_status}"
        return f"{self.meeting_id}: {self.reason}"


class UsagePlan(models.Model):
    """Limits of an integrator's API key: a steady rate with a burst, and a daily quota."""

    name = models.CharField(max_length=80, unique=True)
    rate_per_second = models.FloatField(default=5.0, help_text="Steady request rate refilled per second.")
    burst = models.PositiveIntegerField(default=20, help_text="Requests allowed at once (bucket size).")
    daily_quota = models.PositiveIntegerField(default=10_000, help_text="Requests per UTC day.")

    def __str__(self) -> str:
        return f"{self.name} ({self.rate_per_second:g}/s, burst {self.burst}, {self.daily_quota}/day)"


class ApiKey(models.Model):
    """An integrator's key. Only a hash is stored; the key is shown once, at creation."""

    name = models.CharField(max_length=80)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=128, editable=False)
    plan = models.ForeignKey(UsagePlan, on_delete=models.PROTECT, related_name="keys")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"
