"""Celery entry points of the DynamoDB mirror: thin, they call a service and return."""

import logging

from celery import shared_task
from django.core.cache import cache

from mirror.services import FLUSH_QUEUED_KEY, FLUSH_TASK, mirror_flush, mirror_flush_soon, mirror_pull

logger = logging.getLogger(__name__)


@shared_task(name=FLUSH_TASK, ignore_result=True)
def mirror_flush_task() -> dict:
    """Write pending meeting changes to DynamoDB (queued on commit of a change; swept by beat)."""
    try:
        cache.delete(FLUSH_QUEUED_KEY)  # changes committed from now on queue the next run
    except Exception:  # Redis down: the beat sweep still covers every change
        logger.warning("could not clear the DynamoDB flush marker", exc_info=True)
    result = mirror_flush()
    if result.full:
        mirror_flush_soon()
    return {"written": result.written, "events": result.events, "failed": result.failed}


@shared_task(ignore_result=True)
def mirror_pull_task() -> dict:
    """Read the agents' attributes of active meetings from DynamoDB into the database (beat)."""
    result = mirror_pull()
    return {"meetings": result.meetings, "skipped": len(result.skipped), "session_data": result.session_data}
