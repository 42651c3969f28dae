"""The log of sent mail in the staff console, on its own page and on each meeting's page."""

from django.contrib import admin

from meetings.admin import OPERATIONS_ROLE, SUPPORT_ROLE, DisplayOnlyInline, meeting_admin_extend, staff_role_extend
from notifications.models import SentMail

FIELDS = (
    "meeting",
    "participant",
    "kind",
    "sequence",
    "to",
    "status",
    "subject",
    "attempts",
    "last_error",
    "created_at",
    "next_attempt_at",
    "sent_at",
    "message_id",
)


@admin.register(SentMail)
class SentMailAdmin(admin.ModelAdmin):
    """Read-only: a row is written by the sender only."""

    list_display = ("created_at", "meeting", "participant", "kind", "sequence", "to", "status", "attempts", "sent_at")
    list_filter = ("status", "kind", "participant")
    search_fields = ("meeting__id", "to", "subject")
    list_select_related = ("meeting",)
    fields = FIELDS
    readonly_fields = FIELDS
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class SentMailInline(DisplayOnlyInline, admin.TabularInline):
    model = SentMail
    fields = ("kind", "sequence", "participant", "to", "status", "attempts", "sent_at", "last_error")
    readonly_fields = fields
    verbose_name_plural = "Mail to the participants"


meeting_admin_extend(inlines=[SentMailInline])
for _role in (SUPPORT_ROLE, OPERATIONS_ROLE):
    staff_role_extend(_role, {"notifications.view_sentmail"})
