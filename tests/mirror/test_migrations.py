"""The mirror's migrations: its beat entries run under the tasks' new names."""

import importlib

from django.apps import apps
from django_celery_beat.models import PeriodicTask

import mirror.tasks  # noqa: F401  registers the tasks, as the worker's autodiscovery does
from elephant.celery import app as celery_app

MIRROR_TASKS = {"mirror.tasks.mirror_flush_task", "mirror.tasks.mirror_pull_task"}


def test_beat_entries_expire_within_their_interval_under_the_tasks_names(db):
    created = importlib.import_module("meetings.migrations.0003_mirror_beat_entries").Migration.operations[0]
    renamed = importlib.import_module("mirror.migrations.0002_beat_task_names").Migration.operations[0]
    PeriodicTask.objects.filter(task__contains=".tasks.mirror_").delete()
    created.code(apps, None)  # entries as an existing database holds them: meetings.tasks.*
    renamed.code(apps, None)

    tasks = {task.task: task for task in PeriodicTask.objects.filter(task__contains=".tasks.mirror_")}
    assert set(tasks) == MIRROR_TASKS
    assert MIRROR_TASKS <= set(celery_app.tasks)  # beat names tasks the worker knows
    for task in tasks.values():
        assert task.enabled and 0 < task.expire_seconds <= task.interval.every and task.interval.period == "seconds"

    renamed.reverse_code(apps, None)
    assert set(PeriodicTask.objects.filter(task__contains=".tasks.mirror_").values_list("task", flat=True)) == {
        "meetings.tasks.mirror_flush_task",
        "meetings.tasks.mirror_pull_task",
    }
