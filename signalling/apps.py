from django.apps import AppConfig


class SignallingConfig(AppConfig):
    name = "signalling"
    verbose_name = "Signalling"
