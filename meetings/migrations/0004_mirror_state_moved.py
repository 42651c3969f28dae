"""The mirror's fields and its backlog proxy leave Meeting for the mirror app (mirror 0001 copied them)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("meetings", "0003_mirror_beat_entries"),
        ("mirror", "0001_initial"),
    ]

    operations = [
        migrations.DeleteModel(name="MirrorBacklog"),
        migrations.RemoveField(model_name="meeting", name="mirror_attempts"),
        migrations.RemoveField(model_name="meeting", name="mirror_error_at"),
        migrations.RemoveField(model_name="meeting", name="mirror_last_error"),
        migrations.RemoveField(model_name="meeting", name="mirror_next_attempt_at"),
        migrations.RemoveField(model_name="meeting", name="mirrored_status"),
        migrations.RemoveField(model_name="meeting", name="mirrored_version"),
    ]
