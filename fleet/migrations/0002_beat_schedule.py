"""Beat entries of the fleet (django-celery-beat DatabaseScheduler; tunable in the admin).

Intervals come from ELEPHANT_SWEEP_SECONDS / ELEPHANT_REAPER_SECONDS at migrate time; staff
tune them in the admin afterwards. ``expire_seconds`` equals the interval, so a slow worker
never piles up runs of a sweep.
"""

from django.db import migrations

from elephant.beat import beat_entries_operation

ENTRIES = (
    # name, task, interval setting, default seconds
    ("Fleet: launch due meetings", "fleet.tasks.fleet_launch_sweep_task", "ELEPHANT_SWEEP_SECONDS", 15),
    ("Fleet: watchdog (DescribeInstances)", "fleet.tasks.fleet_watchdog_task", "ELEPHANT_SWEEP_SECONDS", 15),
    ("Fleet: health check", "fleet.tasks.fleet_health_sweep_task", "ELEPHANT_SWEEP_SECONDS", 15),
    ("Fleet: termination rules", "fleet.tasks.fleet_termination_sweep_task", "ELEPHANT_SWEEP_SECONDS", 15),
    ("Fleet: orphan reaper", "fleet.tasks.fleet_reaper_task", "ELEPHANT_REAPER_SECONDS", 60),
)


class Migration(migrations.Migration):
    dependencies = [
        ("fleet", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [beat_entries_operation(ENTRIES)]
