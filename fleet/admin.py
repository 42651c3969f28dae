"""The staff console for hosts, and the fleet's part of the meeting admin.

``HostInline``, ``MeetingHostEventInline`` (every host's state changes, beside the meeting's
events) and the actions ``launch_now``, ``terminate_now`` and ``rerun_health_check``
are added to ``meetings.admin.MeetingAdmin``; each calls the same service the tasks call,
synchronously, so the outcome (or AWS's error) is shown to the staff member at once. So are the
planned launch (``launch_at``, ``launch_warm``: issue 11) as a list column and a read-only fieldset.

Readiness (issue 11) is shown read-only: the boot times the planning sweep fitted (``BootEstimate``),
each profile's percentiles and launch lead, and the warm pool with what it has cost so far.
"""

from datetime import datetime, timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_value
from django.db.models import Count, F, Min, Q, Sum, Value
from django.db.models.functions import Coalesce, Greatest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.timesince import timesince

from fleet import aws, selectors, services
from fleet.models import BootEstimate, DesktopProfile, Host, HostEvent, PoolInstance, PoolState
from fleet.readiness import LogNormal
from meetings.admin import OPERATIONS_ROLE, SUPPORT_ROLE, DisplayOnlyInline, meeting_admin_extend, staff_role_extend
from meetings.models import ACTIVE_STATUSES, Meeting, MeetingStatus, TerminationReason
from meetings.policy import launch_due_at

HOST_FIELDS = (
    "role",
    "generation",
    "state",
    "instance_id",
    "dcv_link",
    "instance_type",
    "availability_zone",
    "ami_id",
    "warm_start",
    "public_address",
    "launched_at",
    "ec2_launch_time",
    "running_at",
    "dcv_answered_at",
    "healthy_at",
    "boot_seconds",
    "boot_censored",
    "terminated_at",
    "checked_at",
    "ec2_checks_ok",
    "dcv_answered",
    "agent_healthy_at",
    "attested_at",
    "probe_failures",
    "last_error",
)


def _actor(request) -> str:
    return f"staff:{request.user.get_username()}"


class HostInline(DisplayOnlyInline, admin.TabularInline):
    model = Host
    fields = HOST_FIELDS
    readonly_fields = HOST_FIELDS
    ordering = ("role", "-generation")


class MeetingHostEventInline(DisplayOnlyInline, admin.TabularInline):
    """The meeting page's host events: every state change of every host of the meeting."""

    model = HostEvent
    fk_name = "meeting"
    fields = ("at", "host_label", "from_state", "to_state", "reason", "detail", "actor")
    readonly_fields = fields
    ordering = ("at", "id")
    verbose_name_plural = "host events"

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("host")

    @admin.display(description="Host")
    def host_label(self, obj: HostEvent) -> str:
        return f"{obj.host.role} #{obj.host.generation} {obj.host.instance_id or '-'}"


class HostEventInline(DisplayOnlyInline, admin.TabularInline):
    """The host page's events."""

    model = HostEvent
    fk_name = "host"
    fields = ("at", "from_state", "to_state", "reason", "detail", "actor")
    readonly_fields = fields
    ordering = ("at", "id")


def _report(modeladmin, request, done: list[str], problems: list[str], verb: str) -> None:
    if done:
        modeladmin.message_user(request, f"{verb}: " + "; ".join(done), messages.SUCCESS)
    if problems:
        modeladmin.message_user(request, " ".join(problems), messages.ERROR)


@admin.action(description="Launch now (hosts for the selected scheduled meetings)", permissions=["change"])
def launch_now(modeladmin, request, queryset):
    done, problems = [], []
    for meeting in queryset:
        if meeting.status not in (MeetingStatus.SCHEDULED, MeetingStatus.LAUNCHING):
            problems.append(f"{meeting.pk} is {meeting.status}: nothing to launch.")
            continue
        try:
            services.meeting_launch(meeting_id=meeting.pk, actor=_actor(request))
        except aws.AwsError as exc:
            problems.append(f"{meeting.pk}: AWS did not answer ({exc}); the launch sweep will retry.")
            continue
        meeting.refresh_from_db()
        if meeting.status == MeetingStatus.FAILED:
            problems.append(f"{meeting.pk} FAILED: {meeting.last_error}")
        else:
            done.append(f"{meeting.pk} {meeting.status}")
    _report(modeladmin, request, done, problems, "Launched")


@admin.action(description="Terminate now (end the selected meetings and their hosts)", permissions=["change"])
def terminate_now(modeladmin, request, queryset):
    done, problems = [], []
    for meeting in queryset:
        if meeting.status not in ACTIVE_STATUSES and meeting.status != MeetingStatus.TERMINATED:
            hint = " Use “Cancel” for a scheduled meeting." if meeting.status == MeetingStatus.SCHEDULED else ""
            problems.append(f"{meeting.pk} is {meeting.status}: not running.{hint}")
            continue
        try:
            services.meeting_terminate(meeting=meeting, reason=TerminationReason.STAFF, actor=_actor(request))
        except aws.AwsError as exc:
            problems.append(
                f"{meeting.pk} ended, but terminating its hosts failed ({exc}); the reaper will terminate them."
            )
            continue
        done.append(f"{meeting.pk} ({meeting.termination_reason or meeting.status})")
    _report(modeladmin, request, done, problems, "Terminated")


@admin.action(description="Re-run health check (of the selected launching or running meetings)", permissions=["change"])
def rerun_health_check(modeladmin, request, queryset):
    done, problems = [], []
    for meeting in queryset:
        if meeting.status not in ACTIVE_STATUSES:
            problems.append(f"{meeting.pk} is {meeting.status}: no hosts to check.")
            continue
        try:
            services.meeting_health_check(meeting=meeting)
        except aws.AwsError as exc:
            problems.append(f"{meeting.pk}: the health check could not ask AWS ({exc}).")
            continue
        meeting.refresh_from_db()
        hosts = ", ".join(
            f"{h.role} {h.state}" + (f" ({h.last_error})" if h.last_error else "")
            for h in selectors.hosts_current(meeting_id=meeting.pk).values()
        )
        done.append(f"{meeting.pk} {meeting.status}: {hosts or 'no hosts'}")
    _report(modeladmin, request, done, problems, "Checked")


@admin.display(description="Launch at")
def planned_launch(meeting: Meeting) -> str:
    """The planned launch; a meeting the plan has not placed launches at the fixed lead."""
    if meeting.launch_at is not None:
        return display_for_value(meeting.launch_at, "")
    return f"(fixed lead) {display_for_value(launch_due_at(meeting.meet_time), '')}"


@admin.display(description="Warm", boolean=True)
def planned_warm(meeting: Meeting) -> bool:
    return meeting.launch_warm


FLEET_MEETING_ACTIONS = [launch_now, terminate_now, rerun_health_check]
meeting_admin_extend(
    inlines=[HostInline, MeetingHostEventInline],
    actions=FLEET_MEETING_ACTIONS,
    list_display=[planned_launch, planned_warm],
    fieldsets=[("Launch plan (blank: meet time - ELEPHANT_LAUNCH_LEAD)", {"fields": ("launch_at", "launch_warm")})],
)
# Hosts, boot times and the pool are read-only for everyone (their sweeps own the rows); the actions
# above need the meeting's change permission.
for _role in (SUPPORT_ROLE, OPERATIONS_ROLE):
    staff_role_extend(
        _role, ["fleet.view_host", "fleet.view_hostevent", "fleet.view_bootestimate", "fleet.view_poolinstance"]
    )


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    list_display = (
        "instance_id",
        "meeting_link",
        "role",
        "generation",
        "state",
        "instance_type",
        "availability_zone",
        "public_address",
        "launched_at",
        "healthy_at",
        "warm_start",
        "boot_seconds",
        "probe_failures",
        "short_error",
    )
    list_filter = ("state", "role", "instance_type", "availability_zone", "warm_start", "boot_censored")
    search_fields = ("instance_id", "meeting__id", "public_address")
    list_select_related = ("meeting",)
    ordering = ("-created_at",)
    readonly_fields = ("meeting", *HOST_FIELDS, "created_at", "updated_at")
    fields = readonly_fields
    inlines = [HostEventInline]

    def has_add_permission(self, request):
        return False  # hosts are launched by the fleet only

    def has_delete_permission(self, request, obj=None):
        return False  # a deleted row would orphan its instance until the reaper finds it

    @admin.display(description="Meeting", ordering="meeting_id")
    def meeting_link(self, obj: Host):
        url = reverse("admin:meetings_meeting_change", args=[obj.meeting_id])
        return format_html('<a href="{}">{}</a> ({})', url, obj.meeting_id, obj.meeting.status)

    @admin.display(description="Last error")
    def short_error(self, obj: Host) -> str:
        return obj.last_error[:120]


@admin.register(DesktopProfile)
class DesktopProfileAdmin(admin.ModelAdmin):
    """Desktop profiles: what a meeting's hosts are launched with. Every profile that allows IMDSv1 is flagged:
    its images' agents read instance metadata without a token, which staff should move to IMDSv2."""

    list_display = (
        "name",
        "label",
        "os",
        "ami_id",
        "instance_types",
        "is_default",
        "is_active",
        "imds_flag",
        "cold_boot",
        "warm_boot",
        "launch_lead",
    )
    list_filter = ("os", "allows_imdsv1", "is_default", "is_active")
    search_fields = ("name", "label", "ami_id")
    fieldsets = (
        (None, {"fields": ("name", "label", "os", "is_default", "is_active")}),
        (
            "Launch (blank: the ELEPHANT_* setting)",
            {
                "fields": (
                    "ami_id",
                    "instance_types",
                    "subnet_ids",
                    "security_group_ids",
                    "instance_profile",
                    "volume_size_gb",
                    "launch_template",
                    "launch_template_version",
                )
            },
        ),
        ("Instance metadata", {"fields": ("allows_imdsv1",)}),
        ("Warm pool", {"fields": ("warm_pool_max",)}),
    )

    @admin.display(description="IMDS", ordering="allows_imdsv1")
    def imds_flag(self, obj: DesktopProfile):
        if obj.allows_imdsv1:
            return format_html('<strong class="imdsv1-allowed" style="color:#b00">{}</strong>', "IMDSv1 allowed")
        return "IMDSv2 only"

    def get_changelist_instance(self, request):
        """Hands each listed profile the boot model, read once for the page (two queries, whatever the rows)."""
        from fleet.services.planning import BootModel

        changelist = super().get_changelist_instance(request)
        model = BootModel.load()
        for profile in changelist.result_list:
            profile.boot_model = model
        return changelist

    @admin.display(description="Cold boot p50 / p99 (s)")
    def cold_boot(self, obj: DesktopProfile) -> str:
        return _p50_p99(obj.boot_model.meeting_distribution(obj.name, False))

    @admin.display(description="Warm boot p50 / p99 (s)")
    def warm_boot(self, obj: DesktopProfile) -> str:
        return _p50_p99(obj.boot_model.meeting_distribution(obj.name, True))

    @admin.display(description="Launch lead cold / warm (min)")
    def launch_lead(self, obj: DesktopProfile) -> str:
        from fleet.services.planning import learned

        if not learned():
            return f"{settings.ELEPHANT_LAUNCH_LEAD} (fixed lead)"
        return " / ".join(_minutes(obj.boot_model.lead(obj.name, warm)) for warm in (False, True))

    def changelist_view(self, request, extra_context=None):
        allowing = list(DesktopProfile.objects.filter(allows_imdsv1=True).values_list("name", flat=True))
        if allowing:
            self.message_user(
                request,
                f"{len(allowing)} desktop profile(s) allow IMDSv1 ({', '.join(allowing)}): their hosts answer "
                "instance metadata without a session token. Move their images' agents to IMDSv2, then clear "
                "'allows IMDSv1'.",
                messages.WARNING,
            )
        return super().changelist_view(request, extra_context)


staff_role_extend(
    OPERATIONS_ROLE,
    ["fleet.view_desktopprofile", "fleet.add_desktopprofile", "fleet.change_desktopprofile"],
)


# --- readiness (issue 11): boot times and the warm pool, read-only ---------------------------------
def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _p50_p99(distribution: LogNormal) -> str:
    return f"{_seconds(distribution.median)} / {_seconds(distribution.quantile(0.99))}"


def _minutes(lead: timedelta) -> str:
    return f"{lead.total_seconds() / 60:.1f}"


def _usd(running_seconds: float, stopped_seconds: float) -> str:
    cost = (
        running_seconds * settings.ELEPHANT_USD_PER_HOUR + stopped_seconds * settings.ELEPHANT_STOPPED_USD_PER_HOUR
    ) / 3600
    return f"${cost:,.2f}"


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by the fleet's sweeps: shown to whoever may view them, changed by no one."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(BootEstimate)
class BootEstimateAdmin(ReadOnlyAdmin):
    """Boot times: the launch -> healthy distribution the planning sweep fitted per (AMI, type, zone, start),
    which the launch leads and health timeouts are read from."""

    list_display = (
        "ami_id",
        "instance_type",
        "availability_zone",
        "start",
        "samples",
        "censored",
        "fitted_p50",
        "fitted_p90",
        "fitted_p99",
        "observed_p50",
        "observed_p95",
        "fitted_at",
    )
    list_filter = ("warm_start", "ami_id", "instance_type")
    search_fields = ("ami_id", "instance_type", "availability_zone")
    fields = (
        *list_display[:3],
        "warm_start",
        *list_display[4:6],
        "mu",
        "sigma",
        *list_display[6:],
    )
    readonly_fields = fields

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(
            request, {"title": "Boot times (seconds from launch to healthy)", **(extra_context or {})}
        )

    @admin.display(description="Start", ordering="warm_start")
    def start(self, obj: BootEstimate) -> str:
        return "warm" if obj.warm_start else "cold"

    @admin.display(description="Fitted p50 (s)", ordering="mu")
    def fitted_p50(self, obj: BootEstimate) -> str:
        return _seconds(obj.distribution.median)

    @admin.display(description="Fitted p90 (s)")
    def fitted_p90(self, obj: BootEstimate) -> str:
        return _seconds(obj.distribution.quantile(0.90))

    @admin.display(description="Fitted p99 (s)")
    def fitted_p99(self, obj: BootEstimate) -> str:
        return _seconds(obj.distribution.quantile(0.99))

    @admin.display(description="Observed p50 (s)", ordering="observed_p50_seconds")
    def observed_p50(self, obj: BootEstimate) -> str:
        return _seconds(obj.observed_p50_seconds)

    @admin.display(description="Observed p95 (s)", ordering="observed_p95_seconds")
    def observed_p95(self, obj: BootEstimate) -> str:
        return _seconds(obj.observed_p95_seconds)


def pool_summary(*, now: datetime) -> list[dict]:
    """Per profile: instances by state, the oldest READY one's age and what the pool cost so far (one query)."""
    zero = Value(timedelta(0))
    running = Greatest(Coalesce("stopped_at", "assigned_at", "retired_at", Value(now)) - F("launched_at"), zero)
    stopped = Greatest(Coalesce("assigned_at", "retired_at", Value(now)) - F("stopped_at"), zero)
    rows = (
        PoolInstance.objects.order_by()
        .values("profile__name")
        .annotate(
            **{f"n_{state}": Count("pk", filter=Q(state=state)) for state in PoolState.values},
            oldest_ready=Min("launched_at", filter=Q(state=PoolState.READY)),
            running=Sum(running),
            stopped=Sum(stopped, filter=Q(stopped_at__isnull=False)),
        )
        .order_by("profile__name")
    )
    return [
        {
            "profile": row["profile__name"],
            "counts": [row[f"n_{state}"] for state in PoolState.values],
            "oldest_ready": timesince(row["oldest_ready"], now) if row["oldest_ready"] else "-",
            "cost": _usd(
                (row["running"] or timedelta(0)).total_seconds(), (row["stopped"] or timedelta(0)).total_seconds()
            ),
        }
        for row in rows
    ]


@admin.register(PoolInstance)
class PoolInstanceAdmin(ReadOnlyAdmin):
    """The warm pool: its instances, with a per-profile summary above the list (its template)."""

    list_display = (
        "instance_id",
        "profile",
        "state",
        "instance_type",
        "availability_zone",
        "launched_at",
        "attested_at",
        "stopped_at",
        "age",
        "cost",
    )
    list_filter = ("state", "profile")
    search_fields = ("instance_id", "client_token")
    list_select_related = ("profile",)
    fields = (
        "profile",
        "instance_id",
        "state",
        "client_token",
        "ami_id",
        "instance_type",
        "availability_zone",
        "subnet_id",
        "launched_at",
        "attested_at",
        "stopped_at",
        "assigned_at",
        "refused_at",
        "retired_at",
        "host",
        "age",
        "cost",
        "last_error",
    )
    readonly_fields = fields

    def changelist_view(self, request, extra_context=None):
        context = {"pool_states": PoolState.values, "pool_summary": pool_summary(now=timezone.now())}
        return super().changelist_view(request, {"title": "Warm pool", **context, **(extra_context or {})})

    @admin.display(description="Age", ordering="launched_at")
    def age(self, obj: PoolInstance) -> str:
        return timesince(obj.launched_at, obj.retired_at or timezone.now())

    @admin.display(description="Cost so far")
    def cost(self, obj: PoolInstance) -> str:
        now = timezone.now()
        return _usd(obj.running_seconds(now), obj.stopped_seconds(now))
