"""The reaper: no instance outlives its meeting, whatever crashed in between."""

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from fleet import aws, selectors
from meetings.models import TERMINAL_STATUSES, EventReason, MeetingEvent

logger = logging.getLogger(__name__)


@dataclass
class ReapResult:
    terminated: list[str] = field(default_factory=list)
    events: int = 0


def fleet_reap(*, now: datetime | None = None) -> ReapResult:
    """Terminate every live Project=Elephant instance whose meeting is terminal or unknown, and every
    warm-pool instance the pool no longer holds.

    Also instances of active meetings that no host tracks (a duplicate from a lost race),
    once they are older than ELEPHANT_REAPER_GRACE_MINUTES, so a launch still recording its
    instance is never touched. Three queries (none with the list of every instance id) and one
    event insert, whatever the numbers.
    """
    now = now or timezone.now()
    result = ReapResult()
    instances = aws.instances_of_project()
    if not instances:
        return result
    grace = now - timedelta(minutes=settings.ELEPHANT_REAPER_GRACE_MINUTES)
    pooled = selectors.instance_ids_pooled(assigned_since=grace)
    tracked = selectors.instances_tracked()
    statuses = {meeting_id: status for meeting_id, status in tracked.values()}
    # The meetings no live host names (an orphan's, or one already ended): asked for by id, a handful.
    untracked = {(i.tags or {}).get("MeetingID", "") for i in instances if i.instance_id not in pooled} - set(statuses)
    if untracked - {""}:
        statuses.update(selectors.meeting_statuses(meeting_ids=untracked - {""}))
    orphans = []
    for instance in instances:
        if instance.instance_id in pooled:
            continue  # the warm pool holds it (building, stopping or stopped): neither lost nor an orphan
        meeting_id = (instance.tags or {}).get("MeetingID", "")
        status = statuses.get(meeting_id)
        young = instance.launch_time is not None and instance.launch_time > grace
        if not meeting_id and aws.POOL_TAG in (instance.tags or {}):
            if young:
                continue  # a build still recording its instance
            why, status = "a warm-pool instance the pool does not hold", None
        elif status is None:
            why = f"meeting {meeting_id or '(untagged)'} unknown"
        elif status in TERMINAL_STATUSES:
            why = f"meeting {status}"
        elif instance.instance_id not in tracked and instance.launch_time is not None and not young:
            why = "no host tracks it"
        else:
            continue
        orphans.append((instance, meeting_id if status is not None else None, why))
    if not orphans:
        return result
    aws.instances_terminate(instance.instance_id for instance, _, _ in orphans)
    result.terminated = [instance.instance_id for instance, _, _ in orphans]
    events = [
        MeetingEvent(
            meeting_id=meeting_id,
            reason=EventReason.REAPED,
            detail=f"reaper terminated {instance.instance_id} ({instance.state}): {why}",
            actor="reaper",
        )
        for instance, meeting_id, why in orphans
        if meeting_id is not None
    ]
    MeetingEvent.objects.bulk_create(events)
    result.events = len(events)
    for instance, _, why in orphans:
        logger.warning("reaper terminated %s (%s)", instance.instance_id, why)
    return result
