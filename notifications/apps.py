from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Mail to participants"

    def ready(self):
        from meetings.signals import meeting_changed
        from notifications.services import mail_sync_on_change

        # Every committed change of a meeting may owe its participants mail; meetings knows nothing of it.
        meeting_changed.connect(mail_sync_on_change, dispatch_uid="notifications.mail_sync")
