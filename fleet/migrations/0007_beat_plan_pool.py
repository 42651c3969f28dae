"""Beat entries of the launch plan and the warm pool (issue 11; tunable in the admin).

The plan (refit the boot estimates when due, plan every scheduled meeting of the horizon) runs every
ELEPHANT_PLAN_SECONDS; the pool sweep at the same interval (it does nothing while the pool is off).
"""

from django.db import migrations

from elephant.beat import beat_entries_operation

ENTRIES = (
    ("Fleet: launch plan", "fleet.tasks.fleet_plan_sweep_task", "ELEPHANT_PLAN_SECONDS", 60),
    ("Fleet: warm pool", "fleet.tasks.fleet_pool_sweep_task", "ELEPHANT_PLAN_SECONDS", 60),
)


class Migration(migrations.Migration):
    dependencies = [
        ("fleet", "0006_readiness"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [beat_entries_operation(ENTRIES)]
