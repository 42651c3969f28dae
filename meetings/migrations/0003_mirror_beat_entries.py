"""Beat entries of the DynamoDB mirror (django-celery-beat DatabaseScheduler; tunable in the admin).

``expires`` is no longer than the interval, so a slow worker never piles up runs.
"""

from django.conf import settings
from django.db import migrations

ENTRIES = (
    # name, task, interval setting, default seconds
    ("DynamoDB mirror: flush the outbox", "meetings.tasks.mirror_flush_task", "ELEPHANT_DDB_FLUSH_SECONDS", 30),
    ("DynamoDB mirror: pull agent attributes", "meetings.tasks.mirror_pull_task", "ELEPHANT_DDB_PULL_SECONDS", 15),
)


def create_entries(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, setting, default in ENTRIES:
        seconds = getattr(settings, setting, default)
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
        ("meetings", "0002_mirror_outbox"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_entries, remove_entries)]
