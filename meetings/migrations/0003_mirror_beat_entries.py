"""Beat entries of the DynamoDB mirror (django-celery-beat DatabaseScheduler; tunable in the admin).

``expires`` is no longer than the interval, so a slow worker never piles up runs.
"""

from django.db import migrations

from elephant.beat import beat_entries_operation

ENTRIES = (
    # name, task, interval setting, default seconds
    ("DynamoDB mirror: flush the outbox", "meetings.tasks.mirror_flush_task", "ELEPHANT_DDB_FLUSH_SECONDS", 30),
    ("DynamoDB mirror: pull agent attributes", "meetings.tasks.mirror_pull_task", "ELEPHANT_DDB_PULL_SECONDS", 15),
)


class Migration(migrations.Migration):
    dependencies = [
        ("meetings", "0002_mirror_outbox"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [beat_entries_operation(ENTRIES)]
