from django.apps import AppConfig


class MirrorConfig(AppConfig):
    name = "mirror"
    verbose_name = "DynamoDB mirror"

    def ready(self):
        from meetings.signals import meeting_changed
        from mirror.services import flush_soon_on_change

        # Every committed change of a meeting queues a flush (coalesced); meetings knows nothing of it.
        meeting_changed.connect(flush_soon_on_change, dispatch_uid="mirror.flush_soon")
