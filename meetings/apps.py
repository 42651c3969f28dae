from django.apps import AppConfig


class MeetingsConfig(AppConfig):
    name = "meetings"
    verbose_name = "Meetings"

    def ready(self):
        from meetings import mirror  # noqa: F401  connects the DynamoDB mirror to meeting_changed
