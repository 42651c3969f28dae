"""MirrorState: the mirror's record and retry state per meeting, moved off Meeting.

Copies the values the six ``Meeting.mirror*`` fields hold (meetings 0004 removes them after
this), and moves the backlog's proxy model, with its content type and so its permissions, from
``meetings`` to ``mirror``. Reversible: the values go back to Meeting before the table goes.
"""

import django.db.models.deletion
from django.db import migrations, models

BATCH = 1000
MOVED = (
    # (Meeting field, MirrorState field)
    ("mirrored_version", "mirrored_version"),
    ("mirrored_status", "mirrored_status"),
    ("mirror_attempts", "attempts"),
    ("mirror_next_attempt_at", "next_attempt_at"),
    ("mirror_last_error", "last_error"),
    ("mirror_error_at", "error_at"),
)


def copy_to_state(apps, schema_editor):
    Meeting = apps.get_model("meetings", "Meeting")
    MirrorState = apps.get_model("mirror", "MirrorState")
    rows = Meeting.objects.order_by("pk").values_list("pk", *(old for old, _ in MOVED))
    batch = []
    for pk, *values in rows.iterator(chunk_size=BATCH):
        batch.append(MirrorState(meeting_id=pk, **{new: value for (_, new), value in zip(MOVED, values)}))
        if len(batch) >= BATCH:
            MirrorState.objects.bulk_create(batch)
            batch = []
    MirrorState.objects.bulk_create(batch)


def copy_to_meeting(apps, schema_editor):
    Meeting = apps.get_model("meetings", "Meeting")
    MirrorState = apps.get_model("mirror", "MirrorState")
    rows = MirrorState.objects.order_by("pk").values_list("pk", *(new for _, new in MOVED))
    batch = []
    for pk, *values in rows.iterator(chunk_size=BATCH):
        batch.append(Meeting(pk=pk, **{old: value for (old, _), value in zip(MOVED, values)}))
        if len(batch) >= BATCH:
            Meeting.objects.bulk_update(batch, [old for old, _ in MOVED])
            batch = []
    Meeting.objects.bulk_update(batch, [old for old, _ in MOVED])


def _move_content_type(apps, *, source: str, target: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label=target, model="mirrorbacklog").exists():
        ContentType.objects.filter(app_label=source, model="mirrorbacklog").update(app_label=target)


def backlog_to_mirror(apps, schema_editor):
    _move_content_type(apps, source="meetings", target="mirror")


def backlog_to_meetings(apps, schema_editor):
    _move_content_type(apps, source="mirror", target="meetings")


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("contenttypes", "0002_remove_content_type_name"),
        ("meetings", "0003_mirror_beat_entries"),
    ]

    operations = [
        migrations.CreateModel(
            name="MirrorState",
            fields=[
                (
                    "meeting",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="mirror_state",
                        serialize=False,
                        to="meetings.meeting",
                    ),
                ),
                ("mirrored_version", models.PositiveBigIntegerField(default=0)),
                ("mirrored_status", models.CharField(blank=True, max_length=16)),
                ("attempts", models.PositiveIntegerField(default=0)),
                ("next_attempt_at", models.DateTimeField(blank=True, null=True)),
                ("last_error", models.TextField(blank=True)),
                ("error_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "verbose_name": "DynamoDB mirror state",
                "verbose_name_plural": "DynamoDB mirror state",
            },
        ),
        migrations.CreateModel(
            name="MirrorBacklog",
            fields=[],
            options={
                "verbose_name": "DynamoDB backlog entry",
                "verbose_name_plural": "DynamoDB backlog",
                "proxy": True,
                "indexes": [],
                "constraints": [],
            },
            bases=("meetings.meetingevent",),
        ),
        migrations.RunPython(copy_to_state, copy_to_meeting),
        migrations.RunPython(backlog_to_mirror, backlog_to_meetings),
    ]
