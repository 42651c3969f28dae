"""Beat entries (django-celery-beat DatabaseScheduler), created by the apps' data migrations.

Each entry's interval comes from a setting at migrate time (staff tune it in the admin
afterwards) and its ``expire_seconds`` equals the interval, so a slow worker never piles up
runs. Only historical models (``apps.get_model``) are used, so migrations may import this.
"""

from django.conf import settings
from django.db import migrations

# (name, task, interval setting, default seconds)
BeatEntry = tuple[str, str, str, int]


def beat_entries_operation(entries: tuple[BeatEntry, ...]) -> migrations.RunPython:
    def create(apps, schema_editor):
        IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
        PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
        for name, task, setting, default in entries:
            seconds = max(1, getattr(settings, setting, default))
            interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
            PeriodicTask.objects.update_or_create(
                name=name,
                defaults={"task": task, "interval": interval, "expire_seconds": seconds, "enabled": True},
            )

    def remove(apps, schema_editor):
        PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
        PeriodicTask.objects.filter(name__in=[name for name, *_ in entries]).delete()

    return migrations.RunPython(create, remove)
