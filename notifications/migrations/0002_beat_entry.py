from django.db import migrations

from elephant.beat import beat_entries_operation

ENTRIES = (
    # name, task, interval setting, default seconds
    ("Mail: lost mail and due reminders", "notifications.tasks.mail_sweep_task", "ELEPHANT_MAIL_SWEEP_SECONDS", 60),
)


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [beat_entries_operation(ENTRIES)]
