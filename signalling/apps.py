from django.apps import AppConfig


class SignallingConfig(AppConfig):
    name = "signalling"
    verbose_name = "Signalling"

    def ready(self):
        from meetings.signals import meeting_changed
        from signalling.receivers import push_meeting_status

        meeting_changed.connect(push_meeting_status, dispatch_uid="signalling.push_meeting_status")
