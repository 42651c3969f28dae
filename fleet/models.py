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


class DesktopOs(models.TextChoices):
    WINDOWS = "windows", "Windows (PowerShell user data)"
    LINUX = "linux", "Linux (shell user data)"


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


class DesktopProfileQuerySet(models.QuerySet):
    def default(self):
        return self.filter(is_default=True).first()


class DesktopProfile(models.Model):
    """What a desktop is launched with: staff define these in the admin, a teacher picks one per meeting.

    A blank launch field means "the ELEPHANT_* setting of the same name" (the seeded ``default``
    profile starts that way, so today's settings keep working; ``manage.py desktop_profiles_seed
    --copy-settings`` freezes them into the profile).
    """

    name = models.SlugField(max_length=64, unique=True, help_text="What teachers pick and the API's desktop_profile.")
    label = models.CharField(max_length=120, blank=True, help_text="Shown to teachers; the name when blank.")
    os = models.CharField(max_length=8, choices=DesktopOs.choices, default=DesktopOs.WINDOWS)
    ami_id = models.CharField("AMI", max_length=64, blank=True, help_text="Blank: ELEPHANT_AMI_ID.")
    instance_types = models.CharField(
        max_length=512, blank=True, help_text="Comma-separated, in fallback order, one GPU vendor. Blank: the setting."
    )
    subnet_ids = models.CharField(
        max_length=512, blank=True, help_text="Comma-separated, one per AZ. Blank: the setting."
    )
    security_group_ids = models.CharField(max_length=512, blank=True, help_text="Comma-separated. Blank: the setting.")
    instance_profile = models.CharField(max_length=256, blank=True, help_text="Name or ARN. Blank: the setting.")
    volume_size_gb = models.PositiveIntegerField(null=True, blank=True, help_text="Blank: ELEPHANT_VOLUME_SIZE_GB.")
    launch_template = models.CharField(
        max_length=128,
        blank=True,
        help_text="Optional launch template id (lt-...) or name; the fields above override it.",
    )
    launch_template_version = models.CharField(max_length=16, blank=True, default="$Default")
    allows_imdsv1 = models.BooleanField(
        "allows IMDSv1",
        default=False,
        help_text="HttpTokens optional: needed while the image's agents read instance metadata without a token. "
        "Move images to IMDSv2 and clear this.",
    )
    warm_pool_max = models.PositiveIntegerField(
        "warm pool at most",
        null=True,
        blank=True,
        help_text="Stopped, booted instances kept for this profile when ELEPHANT_WARM_POOL is on. "
        "Blank: ELEPHANT_WARM_POOL_MAX; 0: no pool for this profile.",
    )
    is_default = models.BooleanField(default=False, help_text="Used when a meeting names no profile.")
    is_active = models.BooleanField(default=True, help_text="Offered to teachers and the API.")

    objects = DesktopProfileQuerySet.as_manager()

    class Meta:
        ordering = ["-is_default", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="desktop_profile_one_default"
            ),
        ]

    def __str__(self) -> str:
        return self.label or self.name

    def clean(self):
        from django.core.exceptions import ValidationError

        from fleet.aws import instance_types_problem

        if problem := instance_types_problem(self.instance_type_list):
            raise ValidationError({"instance_types": problem[0].upper() + problem[1:] + "."})

    @property
    def instance_type_list(self) -> list[str]:
        return _split(self.instance_types)

    @property
    def subnet_id_list(self) -> list[str]:
        return _split(self.subnet_ids)

    @property
    def security_group_id_list(self) -> list[str]:
        return _split(self.security_group_ids)


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
    # The Route 53 change that writes the host's record; the host stays RUNNING until it is INSYNC.
    dns_change_id = models.CharField(max_length=64, blank=True)
    # The ClientToken of the launch candidate last sent: a launch claimed again resumes with it, so a
    # crashed worker's instance is answered by EC2 instead of started twice.
    client_token = models.CharField(max_length=64, blank=True)
    instance_type = models.CharField(max_length=32, blank=True)
    availability_zone = models.CharField(max_length=32, blank=True)
    # Boot history (issue 11, fleet.readiness): what the host was started from and how long it took.
    ami_id = models.CharField("AMI", max_length=64, blank=True)
    warm_start = models.BooleanField(default=False, help_text="Started from the warm pool (StartInstances).")
    # RunInstances (or StartInstances) sent; renewed before each fallback candidate.
    launched_at = models.DateTimeField(null=True, blank=True)
    ec2_launch_time = models.DateTimeField("EC2 LaunchTime", null=True, blank=True)
    running_at = models.DateTimeField(null=True, blank=True)
    dcv_answered_at = models.DateTimeField("DCV first answered", null=True, blank=True)
    healthy_at = models.DateTimeField(null=True, blank=True)
    # Launch -> healthy in seconds once known; ``boot_censored``: it never became healthy and was given up
    # after ``boot_seconds`` (a timeout, or its meeting ended first): it took longer than that.
    boot_seconds = models.FloatField(null=True, blank=True)
    boot_censored = models.BooleanField(default=False)
    terminated_at = models.DateTimeField(null=True, blank=True)
    agent_healthy_at = models.DateTimeField(null=True, blank=True)
    # The host's boot script reported DCV configured, signed by its EC2 instance identity document (fleet.attest).
    attested_at = models.DateTimeField(null=True, blank=True)
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
        indexes = [
            models.Index(
                fields=["ami_id", "instance_type", "availability_zone", "warm_start", "launched_at"],
                name="host_boot_history",
                condition=models.Q(boot_seconds__isnull=False),
            )
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


class BootEstimate(models.Model):
    """The fitted boot-to-healthy distribution of one (AMI, type, zone, cold/warm) key (``fleet.readiness``):
    log-normal, ``log(seconds) ~ Normal(mu, sigma)``, refitted from the hosts' history by the planning sweep."""

    ami_id = models.CharField("AMI", max_length=64)
    instance_type = models.CharField(max_length=32)
    availability_zone = models.CharField(max_length=32)
    warm_start = models.BooleanField(default=False)
    mu = models.FloatField()
    sigma = models.FloatField()
    samples = models.PositiveIntegerField(default=0, help_text="Boots read (censored ones included).")
    censored = models.PositiveIntegerField(default=0, help_text="Of which never became healthy.")
    observed_p50_seconds = models.FloatField(null=True, blank=True)
    observed_p95_seconds = models.FloatField(null=True, blank=True)
    fitted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["ami_id", "instance_type", "availability_zone", "warm_start"], name="boot_estimate_key"
            )
        ]
        ordering = ["ami_id", "instance_type", "availability_zone", "warm_start"]

    def __str__(self) -> str:
        start = "warm" if self.warm_start else "cold"
        return f"{self.ami_id} {self.instance_type} {self.availability_zone} {start}"

    @property
    def distribution(self):
        from fleet.readiness import LogNormal

        return LogNormal(mu=self.mu, sigma=self.sigma)


class PoolState(models.TextChoices):
    BUILDING = "BUILDING", "Booting once (RunInstances sent)"
    STOPPING = "STOPPING", "Booted and attested; StopInstances sent"
    READY = "READY", "Stopped, ready to start"
    ASSIGNED = "ASSIGNED", "Started for a meeting (now a host's instance)"
    RETIRING = "RETIRING", "Terminate requested"
    RETIRED = "RETIRED", "Terminated"
    FAILED = "FAILED", "Build failed"


POOL_HELD_STATES = frozenset({PoolState.BUILDING, PoolState.STOPPING, PoolState.READY})


class PoolInstanceQuerySet(models.QuerySet):
    def held(self):
        """Instances the pool holds (building, stopping or ready): neither lost nor orphans."""
        return self.filter(state__in=POOL_HELD_STATES)


class PoolInstance(models.Model):
    """An instance of a profile's warm pool (``fleet.pool``): booted fully once, stopped, and started for one
    meeting (then it is that host's instance and ends with it: single use)."""

    # Indexed by ``pool_profile_state`` below, whose first column it is.
    profile = models.ForeignKey(DesktopProfile, on_delete=models.PROTECT, related_name="pool_instances", db_index=False)
    instance_id = models.CharField(max_length=32, blank=True, db_index=True)
    state = models.CharField(max_length=16, choices=PoolState.choices, default=PoolState.BUILDING, db_index=True)
    client_token = models.CharField(max_length=64, unique=True)
    ami_id = models.CharField("AMI", max_length=64, blank=True)
    instance_type = models.CharField(max_length=32, blank=True)
    availability_zone = models.CharField(max_length=32, blank=True)
    subnet_id = models.CharField(max_length=32, blank=True)
    launched_at = models.DateTimeField(default=timezone.now)
    attested_at = models.DateTimeField(null=True, blank=True, help_text="Its boot script reported DCV configured.")
    stopped_at = models.DateTimeField(null=True, blank=True)
    assigned_at = models.DateTimeField(null=True, blank=True)
    refused_at = models.DateTimeField(
        null=True, blank=True, help_text="EC2 last refused to start it for capacity (its zone was out of its types)."
    )
    retired_at = models.DateTimeField(null=True, blank=True)
    host = models.OneToOneField(Host, null=True, blank=True, on_delete=models.SET_NULL, related_name="pool_instance")
    last_error = models.TextField(blank=True)

    objects = PoolInstanceQuerySet.as_manager()

    class Meta:
        ordering = ["profile_id", "state", "launched_at"]
        indexes = [
            # The claim at each warm start: a profile's READY instances, not every one it ever had.
            models.Index(fields=["profile", "state"], name="pool_profile_state"),
            # The (type, zone) pools refused a start just now, read at each warm start: the few rows ever
            # refused, not the whole history.
            models.Index(fields=["refused_at"], name="pool_refused_at", condition=models.Q(refused_at__isnull=False)),
            # The instances handed to a host in the last few minutes, read by every reaper sweep
            # (``selectors.instance_ids_pooled``): those of the last minutes, not every one the pool ever
            # assigned (an ASSIGNED row stays ASSIGNED: a week of lessons is thousands).
            models.Index(fields=["state", "assigned_at"], name="pool_state_assigned"),
        ]

    def __str__(self) -> str:
        return f"pool {self.profile_id} {self.instance_id or '-'} {self.state}"

    def running_seconds(self, now=None) -> float:
        """Seconds it ran (billed at the running price) before it was stopped or handed to a host."""
        end = self.stopped_at or self.assigned_at or self.retired_at or now or timezone.now()
        return max(0.0, (end - self.launched_at).total_seconds())

    def stopped_seconds(self, now=None) -> float:
        if self.stopped_at is None:
            return 0.0
        end = self.assigned_at or self.retired_at or now or timezone.now()
        return max(0.0, (end - self.stopped_at).total_seconds())
