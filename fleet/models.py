"""Hosts: the EC2 DCV desktops of a meeting, one per role (plus replacements)."""

from django.db import models
from django.utils import timezone

from meetings.models import Meeting, Role
from meetings.policy import HostReadiness


class HostState(models.TextChoices):
    PENDING = "PENDING", "Not launched yet"
    LAUNCHING = "LAUNCHING", "RunInstances sent"
    BOOTING = "BOOTING", "Instance pending"
    RUNNING = "RUNNING", "Running, address known (DNS record not written yet)"
    DNS_WRITTEN = "DNS_WRITTEN", "DCV link written"
    HEALTHY = "HEALTHY", "Healthy"
    UNHEALTHY = "UNHEALTHY", "Unhealthy (replaced)"
    TERMINATING = "TERMINATING", "Terminating"
    TERMINATED = "TERMINATED", "Terminated"
    FAILED = "FAILED", "Failed"


LIVE_HOST_STATES = frozenset(
    {
        HostState.PENDING,
        HostState.LAUNCHING,
        HostState.BOOTING,
        HostState.RUNNING,
        HostState.DNS_WRITTEN,
        HostState.HEALTHY,
    }
)


# Live but not yet healthy: what the health check looks at.
BOOTING_HOST_STATES = LIVE_HOST_STATES - {HostState.HEALTHY}
# States in which an instance may be running and the watchdog follows it.
WATCHED_HOST_STATES = (LIVE_HOST_STATES - {HostState.PENDING, HostState.LAUNCHING}) | {HostState.TERMINATING}


class HostQuerySet(models.QuerySet):
    def live(self):
        return self.filter(state__in=LIVE_HOST_STATES)

    def watched(self):
        return self.filter(state__in=WATCHED_HOST_STATES).exclude(instance_id="")


class Host(models.Model):
    meeting = models.ForeignKey(Meeting, on_delete=models.CASCADE, related_name="hosts")
    role = models.CharField(max_length=8, choices=Role.choices)
    # A replacement host gets the next generation; the newest generation of a role is current.
    generation = models.PositiveSmallIntegerField(default=1)
    instance_id = models.CharField(max_length=32, blank=True, db_index=True)
    state = models.CharField(max_length=16, choices=HostState.choices, default=HostState.PENDING, db_index=True)
    public_address = models.CharField(max_length=64, blank=True)
    dcv_link = models.CharField(max_length=512, blank=True)
    instance_type = models.CharField(max_length=32, blank=True)
    availability_zone = models.CharField(max_length=32, blank=True)
    launched_at = models.DateTimeField(null=True, blank=True)
    running_at = models.DateTimeField(null=True, blank=True)
    healthy_at = models.DateTimeField(null=True, blank=True)
    terminated_at = models.DateTimeField(null=True, blank=True)
    agent_healthy_at = models.DateTimeField(null=True, blank=True)
    # The last health check: EC2 status checks and the DCV endpoint, each None until checked.
    checked_at = models.DateTimeField(null=True, blank=True)
    ec2_checks_ok = models.BooleanField(null=True, blank=True)
    dcv_answered = models.BooleanField(null=True, blank=True)
    probe_failures = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = HostQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["meeting", "role", "generation"], name="host_unique_generation"),
        ]
        ordering = ["meeting_id", "role", "-generation"]

    def __str__(self) -> str:
        return f"{self.meeting_id}/{self.role}#{self.generation} {self.instance_id or '-'} {self.state}"

    @property
    def is_live(self) -> bool:
        return self.state in LIVE_HOST_STATES

    def readiness(self) -> HostReadiness:
        """What the meeting's rules need to know of this host (``meetings.policy.status_implied``)."""
        return HostReadiness(
            launched=bool(self.instance_id) and self.is_live,
            link_written=self.state in (HostState.DNS_WRITTEN, HostState.HEALTHY),
            healthy=self.state == HostState.HEALTHY,
        )

    @property
    def started_at(self):
        """When this host's clock for the health timeout started: its launch once it has an
        instance; until then its creation, as every retried launch claims it anew."""
        return (self.instance_id and self.launched_at) or self.created_at


class HostEventReason(models.TextChoices):
    """Why a host changed state: every ``host_transition`` names one."""

    LAUNCH_CLAIMED = "LAUNCH_CLAIMED", "Launch claimed (RunInstances about to be sent)"
    LAUNCH_RETRY = "LAUNCH_RETRY", "AWS throttled or unreachable: launch to be retried"
    LAUNCH_REFUSED = "LAUNCH_REFUSED", "AWS refused the launch"
    INSTANCE_STARTED = "INSTANCE_STARTED", "Instance started"
    INSTANCE_ADOPTED = "INSTANCE_ADOPTED", "Instance adopted after a crash"
    INSTANCE_RUNNING = "INSTANCE_RUNNING", "Instance running with an address"
    LINK_WRITTEN = "LINK_WRITTEN", "DNS record and desktop link written"
    HEALTH_PASSED = "HEALTH_PASSED", "Health check passed"
    HEALTH_TIMEOUT = "HEALTH_TIMEOUT", "Not healthy in time (replaced)"
    INSTANCE_LOST = "INSTANCE_LOST", "Instance went away outside Elephant"
    NEVER_LAUNCHED = "NEVER_LAUNCHED", "Meeting ended before the host was launched"
    TERMINATE_REQUESTED = "TERMINATE_REQUESTED", "Termination requested"
    TERMINATED = "TERMINATED", "Instance terminated"


class HostEvent(models.Model):
    """The audit log of a host: one row for every state change (``fleet.services.host_transition``).

    ``meeting`` repeats ``host.meeting`` so the meeting's admin page lists its hosts' events.
    """

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="events")
    meeting = models.ForeignKey(Meeting, on_delete=models.CASCADE, related_name="host_events")
    at = models.DateTimeField(default=timezone.now, db_index=True)
    from_state = models.CharField(max_length=16, choices=HostState.choices)
    to_state = models.CharField(max_length=16, choices=HostState.choices)
    reason = models.CharField(max_length=32, choices=HostEventReason.choices)
    detail = models.TextField(blank=True)
    actor = models.CharField(max_length=150, blank=True, help_text="system, staff:<user>")

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"{self.host_id}: {self.from_state} -> {self.to_state} ({self.reason})"
