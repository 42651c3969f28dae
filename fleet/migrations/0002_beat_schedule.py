"""Beat entries of the fleet (django-celery-beat DatabaseScheduler; tunable in the admin).

Intervals come from ELEPHANT_SWEEP_SECONDS / ELEPHANT_REAPER_SECONDS at migrate time; staff
tune them in the admin afterwards. ``expire_seconds`` equals the interval, so a slow worker
never piles up runs of a sweep.
"""

from django.conf import settings
from django.db import migrations

ENTRIES = (
    # name, task, interval setting, default seconds
    ("Fleet: launch due meetings", "fleet.tasks.fleet_launch_sweep_task", "ELEPHANT_SWEEP_SECONDS", 15),
    ("Fleet: watchdog (DescribeInstances)", "fleet.tasks.fleet_watchdog_task", "ELEPHANT_SWEEP_SECONDS", 15),
    ("Fleet: health check", "fleet.tasks.fleet_health_sweep_task", "ELEPHANT_SWEEP_SECONDS", 15),
    ("Fleet: termination rules", "fleet.tasks.fleet_termination_sweep_task", "ELEPHANT_SWEEP_SECONDS", 15),
    ("Fleet: orphan reaper", "fleet.tasks.fleet_reaper_task", "ELEPHANT_REAPER_SECONDS", 60),
)


def create_entries(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, setting, default in ENTRIES:
        seconds = max(1, getattr(settings, setting, default))
        interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period="seconds")
        PeriodicTask.objects.update_or_create(
            name=name,
            defaults={"task": task, "interval": interval, "expire_seconds": seconds, "enabled": True},
        )


def remove_entries(apps, schema_editor):
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTask.objects.filter(name__in=[name for name, *_ in ENTRIES]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("fleet", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_entries, remove_entries)]
