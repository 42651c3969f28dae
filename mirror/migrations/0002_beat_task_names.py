"""The mirror's beat entries (meetings 0003) name its tasks in their new module, so beat keeps running them."""

from django.db import migrations
from django.utils import timezone

RENAMED = (
    ("meetings.tasks.mirror_flush_task", "mirror.tasks.mirror_flush_task"),
    ("meetings.tasks.mirror_pull_task", "mirror.tasks.mirror_pull_task"),
)


def _rename(apps, pairs) -> None:
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    PeriodicTasks = apps.get_model("django_celery_beat", "PeriodicTasks")
    changed = sum(PeriodicTask.objects.filter(task=old).update(task=new) for old, new in pairs)
    if changed:  # what PeriodicTask.save() does: tell a running beat to reload its schedule
        PeriodicTasks.objects.update_or_create(ident=1, defaults={"last_update": timezone.now()})


def forwards(apps, schema_editor):
    _rename(apps, RENAMED)


def backwards(apps, schema_editor):
    _rename(apps, [(new, old) for old, new in RENAMED])


class Migration(migrations.Migration):
    dependencies = [
        ("mirror", "0001_initial"),
        ("meetings", "0003_mirror_beat_entries"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
