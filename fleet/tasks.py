"""Celery entry points of the fleet. Thin: take ids, call a service, return.

The ``fleet_*_sweep_task`` tasks run on Celery beat (entries created by the migration
``fleet/migrations/0002_beat_schedule``, each with ``expire_seconds`` no longer than its
interval). They find the work in a constant number of queries and hand each meeting or
host to a per-item task, so one slow AWS call never holds up the rest.

Per-item tasks are retried with backoff and jitter on a database outage and on AWS
throttling that outlasted ``fleet.aws``'s own retries; acks_late (settings) redelivers a
task whose worker died, and every service is idempotent, so a retry or a redelivery
repeats nothing.
"""

import logging

from celery import shared_task
from django.db import InterfaceError, OperationalError

from fleet import aws, services
from meetings.selectors import meeting_get

logger = logging.getLogger(__name__)

RETRY_POLICY = {
    "autoretry_for": (OperationalError, InterfaceError, aws.AwsTransientError),
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 8,
}


# --- beat sweeps -------------------------------------------------------------------------------
@shared_task(ignore_result=True)
def fleet_launch_sweep_task() -> int:
    meeting_ids = services.fleet_launch_sweep()
    for meeting_id in meeting_ids:
        meeting_launch_task.delay(meeting_id)
    return len(meeting_ids)


@shared_task(ignore_result=True)
def fleet_watchdog_task() -> dict:
    result = services.fleet_watchdog_sweep()
    for host_id, address, zone in result.running:
        host_running_task.delay(host_id, address, zone)
    for host_id, ec2_state in result.lost:
        host_lost_task.delay(host_id, ec2_state)
    for host_id, error in result.refused:
        host_dns_refused_task.delay(host_id, error)
    return {"running": len(result.running), "lost": len(result.lost), "terminated": result.terminated}


@shared_task(ignore_result=True)
def fleet_health_sweep_task() -> int:
    result = services.fleet_health_sweep()
    for meeting_id in sorted(result.meeting_ids):
        meeting_reconcile_task.delay(meeting_id)
    return len(result.healthy)


@shared_task(ignore_result=True)
def fleet_termination_sweep_task() -> int:
    result = services.fleet_termination_sweep()
    for meeting_id in [*result.keep_alive, *(meeting_id for meeting_id, _ in result.terminate)]:
        meeting_termination_rules_task.delay(meeting_id)
    return len(result.terminate)


@shared_task(ignore_result=True)
def fleet_plan_sweep_task() -> dict:
    result = services.fleet_plan_sweep()
    return {"planned": result.planned, "changed": result.changed, "unplaceable": len(result.unplaceable)}


@shared_task(ignore_result=True)
def fleet_pool_sweep_task() -> dict:
    result = services.fleet_pool_sweep()
    return {"built": result.built, "ready": result.ready, "retired": result.retired, "failed": result.failed}


@shared_task(ignore_result=True)
def fleet_reaper_task() -> int:
    return len(services.fleet_reap().terminated)


# --- per meeting / per host ---------------------------------------------------------------------
@shared_task(ignore_result=True, **RETRY_POLICY)
def meeting_launch_task(meeting_id: str) -> bool:
    return services.meeting_launch(meeting_id=meeting_id)


@shared_task(ignore_result=True, **RETRY_POLICY)
def meeting_reconcile_task(meeting_id: str) -> None:
    meeting = meeting_get(meeting_id=meeting_id)
    if meeting is not None:
        services.meeting_reconcile(meeting=meeting)


@shared_task(ignore_result=True, **RETRY_POLICY)
def host_running_task(host_id: int, address: str, availability_zone: str = "") -> bool:
    return services.host_running(host_id=host_id, address=address, availability_zone=availability_zone)


@shared_task(ignore_result=True, **RETRY_POLICY)
def host_dns_refused_task(host_id: int, error: str) -> bool:
    return services.host_dns_refused(host_id=host_id, error=error)


@shared_task(ignore_result=True, **RETRY_POLICY)
def host_lost_task(host_id: int, ec2_state: str) -> bool:
    return services.host_lost(host_id=host_id, ec2_state=ec2_state)


@shared_task(ignore_result=True, **RETRY_POLICY)
def meeting_termination_rules_task(meeting_id: str) -> str | None:
    return services.meeting_termination_rules_apply(meeting_id=meeting_id)
