"""The mirror in the staff console: the backlog, the resync action and the state on the meeting page.

The meeting's page gets its parts through ``meetings.admin.meeting_admin_extend``, so meetings'
admin knows nothing of the mirror.
"""

from django.contrib import admin, messages

from meetings.admin import (
    OPERATIONS_ROLE,
    SUPPORT_ROLE,
    DisplayOnlyInline,
    meeting_admin_extend,
    staff_actor,
    staff_role_extend,
)
from mirror.models import MirrorBacklog, MirrorState, state_of
from mirror.services import mirror_backlog, mirror_resync


class MirrorStateInline(DisplayOnlyInline, admin.StackedInline):
    """What the mirror last wrote of this meeting and its retry schedule (read-only)."""

    model = MirrorState
    can_delete = False
    fields = ("mirrored_version", "mirrored_status", "attempts", "next_attempt_at", "last_error", "error_at")
    readonly_fields = fields
    verbose_name = verbose_name_plural = "DynamoDB mirror"


@admin.action(description="Resync selected meetings to DynamoDB", permissions=["change"])
def resync_to_dynamodb(modeladmin, request, queryset):
    queued = mirror_resync(meeting_ids=queryset.values_list("pk", flat=True), actor=staff_actor(request))
    modeladmin.message_user(
        request, f"Queued {queued} meeting(s) for DynamoDB; see the DynamoDB backlog.", messages.SUCCESS
    )


meeting_admin_extend(inlines=[MirrorStateInline], actions=[resync_to_dynamodb])
for _role in (SUPPORT_ROLE, OPERATIONS_ROLE):
    staff_role_extend(_role, ["mirror.view_mirrorstate", "mirror.view_mirrorbacklog"])


@admin.register(MirrorBacklog)
class MirrorBacklogAdmin(admin.ModelAdmin):
    """The mirror's outbox: changes not yet in DynamoDB, with the backlog's count, age and last error."""

    list_display = ("meeting", "at", "reason", "to_status", "attempts", "next_attempt", "error")
    list_select_related = ("meeting", "meeting__mirror_state")
    ordering = ("at", "id")
    actions = ["retry_now"]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(mirrored_at__isnull=True)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # dropping an outbox record would lose a change

    def changelist_view(self, request, extra_context=None):
        backlog = mirror_backlog()
        if backlog.changes:
            age = backlog.oldest_age()
            summary = (
                f"Backlog: {backlog.changes} change(s) of {backlog.meetings} meeting(s), "
                f"oldest {int(age.total_seconds())} s old."
            )
        else:
            summary = "Backlog: empty; DynamoDB is up to date."
        self.message_user(request, summary, messages.WARNING if backlog.changes else messages.INFO)
        if backlog.last_error:
            self.message_user(
                request,
                f"Last error ({backlog.last_error_meeting_id}, {backlog.last_error_at:%Y-%m-%d %H:%M:%S} UTC): "
                f"{backlog.last_error}",
                messages.ERROR,
            )
        return super().changelist_view(request, extra_context)

    @admin.display(description="Attempts")
    def attempts(self, obj: MirrorBacklog) -> int:
        return state_of(obj.meeting).attempts

    @admin.display(description="Next attempt")
    def next_attempt(self, obj: MirrorBacklog):
        return state_of(obj.meeting).next_attempt_at

    @admin.display(description="Last error")
    def error(self, obj: MirrorBacklog) -> str:
        return state_of(obj.meeting).last_error[:200]

    def has_retry_permission(self, request):
        # The backlog's rows are never changed here; a retry rewrites meetings, so it takes their change right.
        return request.user.has_perm("meetings.change_meeting")

    @admin.action(description="Retry the selected meetings now", permissions=["retry"])
    def retry_now(self, request, queryset):
        queued = mirror_resync(meeting_ids=queryset.values_list("meeting_id", flat=True), actor=staff_actor(request))
        self.message_user(request, f"Retrying {queued} meeting(s).", messages.SUCCESS)
