"""The staff console for meetings. Actions call the same services the pages and tasks use.

Every action names the permission it needs (``allowed_permissions``), so Django offers it only to
staff who hold it and refuses it to anyone else who posts it; the staff roles that hand those
permissions out are ``STAFF_ROLES`` below (``manage.py staff_roles``, docs/operations.md).
"""

from collections.abc import Iterable

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from meetings.apikeys import api_key_issue, api_key_set_active
from meetings.models import ApiKey, EventReason, Meeting, MeetingEvent, UsagePlan
from meetings.recordings import meeting_recordings
from meetings.schedule import SCHEDULE_FIELDS, schedule_clean
from meetings.services import meeting_cancel


class DisplayOnlyInline:
    """Mixed into an inline on the meeting page that only shows rows (hosts, mirror state), as
    ``class HostInline(DisplayOnlyInline, admin.TabularInline)``, by the apps that build on
    meetings for what they add with ``meeting_admin_extend``."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def has_view_permission(self, request, obj=None):
        # Nothing of it is saved, so it takes no part in the POSTed meeting form (which then
        # needs no management form for it).
        return request.method != "POST" and super().has_view_permission(request, obj)


class MeetingEventInline(admin.TabularInline):
    model = MeetingEvent
    extra = 0
    can_delete = False
    fields = ("at", "from_status", "to_status", "reason", "detail", "actor")
    readonly_fields = fields
    ordering = ("at", "id")

    def has_add_permission(self, request, obj=None):
        return False


def staff_actor(request) -> str:
    return f"staff:{request.user.get_username()}"


@admin.action(description="Cancel selected meetings (only while scheduled)", permissions=["change"])
def cancel_meetings(modeladmin, request, queryset):
    cancelled, skipped = 0, []
    for meeting in queryset:
        if meeting_cancel(meeting=meeting, actor=staff_actor(request)):
            cancelled += 1
        else:
            skipped.append(f"{meeting.id} ({meeting.status})")
    if cancelled:
        modeladmin.message_user(request, f"Cancelled {cancelled} meeting(s).", messages.SUCCESS)
    if skipped:
        modeladmin.message_user(request, "Not cancelled, no longer scheduled: " + ", ".join(skipped), messages.WARNING)


EDITABLE_FIELDS = frozenset({"teacher", *SCHEDULE_FIELDS})


class MeetingAdminForm(forms.ModelForm):
    """Staff edits are judged by the one definition of a valid schedule (meetings.schedule).

    Only what staff changed is judged: a time that was valid when it was set does not become an
    error on every later edit just because it has passed.
    """

    class Meta:
        model = Meeting
        fields = ("teacher", *SCHEDULE_FIELDS)  # the admin passes its own editable fields anyway

    def clean(self):
        cleaned = super().clean()
        changed = {name: cleaned[name] for name in self.changed_data if name in SCHEDULE_FIELDS and name in cleaned}
        for name, problems in schedule_clean(changed)[1].items():
            self.add_error(name, problems)
        return cleaned


@admin.register(Meeting)
class MeetingAdmin(admin.ModelAdmin):
    form = MeetingAdminForm
    list_display = (
        "id",
        "status",
        "teacher_name",
        "student_name",
        "local_meet_time_display",
        "meet_time",
        "duration_minutes",
        "termination_reason",
    )
    list_filter = ("status", "termination_reason", ("meet_time", admin.DateFieldListFilter))
    search_fields = ("id", "teacher_name", "student_name", "teacher_email", "student_email")
    date_hierarchy = "meet_time"
    list_select_related = ("teacher",)
    ordering = ("-meet_time",)
    # Apps that build on meetings add their parts with meeting_admin_extend (fleet: hosts and
    # their actions; mirror: its state and resync), so this module imports none of them.
    inlines = [MeetingEventInline]
    actions = [cancel_meetings]
    fieldsets = (
        (None, {"fields": ("id", "status", "termination_reason", "last_error")}),
        (
            "Participants",
            {"fields": ("teacher", "teacher_name", "teacher_email", "student_name", "student_email", "api_key")},
        ),
        ("Schedule", {"fields": ("meet_time", "time_zone", "duration_minutes")}),
        (
            "Timeline",
            {"fields": ("created_at", "launched_at", "healthy_at", "started_at", "ended_at", "updated_at")},
        ),
        # What the mirror last wrote and its retries: the "DynamoDB mirror" part (mirror.admin).
        ("Agents", {"fields": ("teacher_session_data", "student_session_data", "recordings", "version")}),
    )
    # Everything shown is read-only except the participants and the schedule (see get_readonly_fields).
    readonly_fields = tuple(
        name for _, options in fieldsets for name in options["fields"] if name not in EDITABLE_FIELDS
    )

    @admin.display(description="Recordings")
    def recordings(self, obj: Meeting):
        """Short-lived presigned links to what the agents uploaded, minted as the page opens."""
        found = meeting_recordings(obj)
        if not found:
            return "No recording"
        return format_html_join(
            mark_safe("<br>"),
            "{}: {}",
            ((r.label, format_html('<a href="{}">download</a>', r.url) if r.url else r.problem) for r in found),
        )

    @admin.display(description="Local meet time", ordering="meet_time")
    def local_meet_time_display(self, obj: Meeting) -> str:
        return f"{obj.local_meet_time:%Y-%m-%d %H:%M} {obj.time_zone}"

    def has_add_permission(self, request):
        # Meetings are scheduled by teachers and integrators through the services, never raw.
        return False

    def get_readonly_fields(self, request, obj=None):
        # Once launching, the schedule is what the fleet acts on: staff must not move it.
        if obj is not None and not obj.can_cancel():
            return self.readonly_fields + ("teacher", "meet_time", "time_zone", "duration_minutes")
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        # Edits of a scheduled meeting bump the version so the mirror rewrites it.
        from meetings.services import meeting_record_change

        fields = {name: getattr(obj, name) for name in form.changed_data}
        if {"meet_time", "duration_minutes"} & set(fields):
            # The planned launch was for the old time: back to the fixed lead until the fleet's plan
            # sweep plans the new one (a stale launch_at could launch days early, or too late).
            fields.update(launch_at=None, launch_warm=False)
        if fields:
            meeting_record_change(
                meeting=obj,
                reason=EventReason.STAFF_EDIT,
                detail=", ".join(sorted(fields)),
                actor=staff_actor(request),
                fields=fields,
            )


def meeting_admin_extend(*, inlines=(), actions=(), list_display=(), fieldsets=()) -> None:
    """Add inlines (shown before the meeting's events), actions, list columns (after the meeting's own)
    and fieldsets (read-only, after the meeting's own) to the meeting's staff pages.

    Called at import by the admin modules of the apps that depend on meetings; Django reads these
    attributes per request, so what they add is there from the first page.
    """
    MeetingAdmin.inlines = [*MeetingAdmin.inlines[:-1], *inlines, MeetingAdmin.inlines[-1]]
    MeetingAdmin.actions = [*MeetingAdmin.actions, *actions]
    MeetingAdmin.list_display = (*MeetingAdmin.list_display, *list_display)
    MeetingAdmin.fieldsets = (*MeetingAdmin.fieldsets, *fieldsets)
    MeetingAdmin.readonly_fields += tuple(name for _, options in fieldsets for name in options["fields"])


# --- staff roles ------------------------------------------------------------------------------
SUPPORT_ROLE = "Support (view only)"
OPERATIONS_ROLE = "Operations"
# Group name -> the permissions ("app_label.codename") it holds. Support sees everything and changes
# nothing; Operations also runs every action and edits meetings and API keys. Deleting rows and
# usage plans stay with superusers. The apps that build on meetings add their models' permissions
# with staff_role_extend, as they add their admin parts with meeting_admin_extend.
STAFF_ROLES: dict[str, set[str]] = {
    SUPPORT_ROLE: {
        "meetings.view_meeting",
        "meetings.view_meetingevent",
        "meetings.view_apikey",
        "meetings.view_usageplan",
    },
    OPERATIONS_ROLE: {
        "meetings.view_meeting",
        "meetings.change_meeting",
        "meetings.view_meetingevent",
        "meetings.view_apikey",
        "meetings.add_apikey",
        "meetings.change_apikey",
        "meetings.view_usageplan",
    },
}


def staff_role_extend(role: str, permissions: Iterable[str]) -> None:
    """Add ``permissions`` ("app_label.codename") to a staff role; called at import by admin modules."""
    STAFF_ROLES[role] |= set(permissions)


# --- API keys and usage plans (the integrators' JSON API, README) ---------------------------
@admin.register(UsagePlan)
class UsagePlanAdmin(admin.ModelAdmin):
    list_display = ("name", "rate_per_second", "burst", "daily_quota", "key_count")
    search_fields = ("name",)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(key_total=Count("keys"))

    @admin.display(description="Keys", ordering="key_total")
    def key_count(self, obj: UsagePlan) -> int:
        return obj.key_total


@admin.action(description="Deactivate selected API keys", permissions=["change"])
def deactivate_api_keys(modeladmin, request, queryset):
    count = api_key_set_active(keys=queryset, active=False)
    modeladmin.message_user(request, f"Deactivated {count} API key(s).", messages.SUCCESS)


@admin.action(description="Reactivate selected API keys", permissions=["change"])
def activate_api_keys(modeladmin, request, queryset):
    count = api_key_set_active(keys=queryset, active=True)
    modeladmin.message_user(request, f"Reactivated {count} API key(s).", messages.SUCCESS)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "plan", "is_active", "created_at", "last_used_at")
    list_filter = ("is_active", "plan")
    search_fields = ("name", "prefix")
    list_select_related = ("plan",)
    fields = ("name", "plan", "is_active", "prefix", "created_at", "last_used_at")
    readonly_fields = ("prefix", "created_at", "last_used_at")
    actions = [deactivate_api_keys, activate_api_keys]

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        plaintext = api_key_issue(key=obj)
        super().save_model(request, obj, form, change)
        # The only time anyone sees the key: only its hash is stored.
        self.message_user(
            request,
            f"New API key for {obj.name!r}: {plaintext} (copy it now: it will not be shown again).",
            messages.SUCCESS,
        )
