"""The staff console for hosts, and the fleet's part of the meeting admin.

``HostInline``, ``MeetingHostEventInline`` (every host's state changes, beside the meeting's
events) and the actions ``launch_now``, ``terminate_now`` and ``rerun_health_check``
are added to ``meetings.admin.MeetingAdmin``; each calls the same service the tasks call,
synchronously, so the outcome (or AWS's error) is shown to the staff member at once.
"""

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from fleet import aws, selectors, services
from fleet.models import DesktopProfile, Host, HostEvent
from meetings.admin import OPERATIONS_ROLE, SUPPORT_ROLE, DisplayOnlyInline, meeting_admin_extend, staff_role_extend
from meetings.models import ACTIVE_STATUSES, MeetingStatus, TerminationReason

HOST_FIELDS = (
    "role",
    "generation",
    "state",
    "instance_id",
    "dcv_link",
    "instance_type",
    "availability_zone",
    "public_address",
    "launched_at",
    "running_at",
    "healthy_at",
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


FLEET_MEETING_ACTIONS = [launch_now, terminate_now, rerun_health_check]
meeting_admin_extend(inlines=[HostInline, MeetingHostEventInline], actions=FLEET_MEETING_ACTIONS)
# Hosts are read-only for everyone; the actions above need the meeting's change permission.
for _role in (SUPPORT_ROLE, OPERATIONS_ROLE):
    staff_role_extend(_role, ["fleet.view_host", "fleet.view_hostevent"])


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
        "probe_failures",
        "short_error",
    )
    list_filter = ("state", "role", "instance_type", "availability_zone")
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

    list_display = ("name", "label", "os", "ami_id", "instance_types", "is_default", "is_active", "imds_flag")
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
    )

    @admin.display(description="IMDS", ordering="allows_imdsv1")
    def imds_flag(self, obj: DesktopProfile):
        if obj.allows_imdsv1:
            return format_html('<strong class="imdsv1-allowed" style="color:#b00">{}</strong>', "IMDSv1 allowed")
        return "IMDSv2 only"

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
