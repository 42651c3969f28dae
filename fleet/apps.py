from django.apps import AppConfig


class FleetConfig(AppConfig):
    name = "fleet"
    verbose_name = "Fleet (EC2 DCV hosts)"

    def ready(self):
        import fleet.checks  # noqa: F401  (registers the readiness settings check)
        from fleet.profiles import desktop_profile_choices
        from fleet.services.planning import schedule_admit
        from meetings.schedule import desktop_profile_choices_register, schedule_admission_register

        desktop_profile_choices_register(desktop_profile_choices)
        schedule_admission_register(schedule_admit)
