"""The DynamoDB mirror: the outbox flush, the pull of agent attributes, resync and the backlog.

Outbox: every change of a meeting already inserts a MeetingEvent in its transaction
(``meetings.services``); that row *is* the outbox record, pending while ``mirrored_at`` is null
(partial index). A flush claims meetings with pending events, writes each meeting's current state
once (however many events it has: coalescing), then marks exactly the events it read. A failure
leaves them pending with a backoff on the meeting (``mirror_attempts``, ``mirror_next_attempt_at``,
``mirror_last_error``); nothing is dropped. See README "DynamoDB mirror".
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Case, Count, Min, Q, Value, When
from django.db.models.functions import Greatest
from django.dispatch import receiver
from django.utils import timezone

from meetings import dynamo
from meetings.models import Meeting, MeetingEvent, MeetingStatus
from meetings.services import meeting_record_change
from meetings.signals import meeting_changed

logger = logging.getLogger(__name__)

# How long a flush owns the meetings it claimed; a crashed worker's claim lapses after it.
CLAIM_LEASE = timedelta(minutes=2)
# Rounds of "condition failed -> ingest what the agent wrote -> write again" before backing off.
CONFLICT_ROUNDS = 3
FLUSH_QUEUED_KEY = "ddb-mirror:flush-queued"
RESYNC_REASON = "DDB_RESYNC"
AGENT_SESSION_DATA_REASON = "AGENT_SESSION_DATA"


class MirrorError(Exception):
    """This meeting cannot be written now (kept pending, retried with backoff)."""


@dataclass
class FlushResult:
    claimed: int = 0
    written: int = 0
    conflicts: int = 0
    failed: int = 0
    events: int = 0
    unavailable: bool = False

    @property
    def full(self) -> bool:
        """The pass claimed a whole batch: more may be waiting."""
        return self.claimed >= settings.ELEPHANT_DDB_FLUSH_BATCH and not self.unavailable


@dataclass
class PullResult:
    meetings: int = 0
    items: int = 0
    healthy_marked: int = 0
    session_data: int = 0
    skipped: list[str] = field(default_factory=list)
    resync: int = 0


@dataclass(frozen=True)
class Backlog:
    changes: int
    meetings: int
    oldest_at: datetime | None
    last_error: str
    last_error_at: datetime | None
    last_error_meeting_id: str | None

    def oldest_age(self, now: datetime | None = None) -> timedelta | None:
        return (now or timezone.now()) - self.oldest_at if self.oldest_at else None


# --- trigger -----------------------------------------------------------------------------------


@receiver(meeting_changed, dispatch_uid="meetings.mirror.flush_soon")
def _flush_soon(sender, **kwargs) -> None:
    mirror_flush_soon()


def mirror_flush_soon() -> None:
    """Queue one flush shortly; changes arriving meanwhile ride along (one queued task at a time)."""
    delay = settings.ELEPHANT_DDB_FLUSH_DELAY_SECONDS
    try:
        if not cache.add(FLUSH_QUEUED_KEY, 1, timeout=max(10, int(delay * 10))):
            return
        from meetings.tasks import mirror_flush_task

        mirror_flush_task.apply_async(countdown=delay)
    except Exception:  # a committed change must not fail on its side effect; the beat sweep covers it
        logger.warning("could not queue a DynamoDB flush; the beat sweep will pick the change up", exc_info=True)


# --- flush -------------------------------------------------------------------------------------


def _due(now: datetime) -> Q:
    return Q(mirror_next_attempt_at__isnull=True) | Q(mirror_next_attempt_at__lte=now)


def _claim(*, limit: int, now: datetime, meeting_ids: Iterable[str] | None = None) -> list[str]:
    pending = MeetingEvent.objects.filter(mirrored_at__isnull=True)
    if meeting_ids is not None:
        pending = pending.filter(meeting_id__in=list(meeting_ids))
    due = Q(meeting__mirror_next_attempt_at__isnull=True) | Q(meeting__mirror_next_attempt_at__lte=now)
    candidates = list(
        pending.filter(due)
        .values("meeting_id")
        .annotate(first=Min("id"))
        .order_by("first")
        .values_list("meeting_id", flat=True)[:limit]
    )
    if not candidates:
        return []
    with transaction.atomic():
        claimed = set(
            Meeting.objects.filter(pk__in=candidates)
            .filter(_due(now))
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)
        )
        Meeting.objects.filter(pk__in=claimed).update(mirror_next_attempt_at=now + CLAIM_LEASE)
    return [meeting_id for meeting_id in candidates if meeting_id in claimed]


def _current_hosts(meeting_ids: Iterable[str]) -> dict[str, dict]:
    """Role -> current host (newest generation) per meeting, in one query."""
    from fleet.models import Host

    hosts: dict[str, dict] = defaultdict(dict)
    for host in Host.objects.filter(meeting_id__in=list(meeting_ids)).order_by("meeting_id", "role", "-generation"):
        hosts[host.meeting_id].setdefault(host.role, host)
    return hosts


def _pending_event_ids(meeting_ids: Iterable[str]) -> dict[str, list[int]]:
    events: dict[str, list[int]] = defaultdict(list)
    rows = MeetingEvent.objects.filter(mirrored_at__isnull=True, meeting_id__in=list(meeting_ids))
    for event_id, meeting_id in rows.values_list("id", "meeting_id"):
        events[meeting_id].append(event_id)
    return events


def backoff_seconds(attempts: int) -> float:
    """Exponential backoff with jitter, capped (ELEPHANT_DDB_RETRY_BASE/MAX_SECONDS)."""
    ceiling = min(
        settings.ELEPHANT_DDB_RETRY_MAX_SECONDS, settings.ELEPHANT_DDB_RETRY_BASE_SECONDS * 2 ** (attempts - 1)
    )
    return ceiling * random.uniform(0.5, 1.0)


def _record_failure(*, meeting_id: str, error: str) -> None:
    now = timezone.now()
    meeting = Meeting.objects.filter(pk=meeting_id).only("mirror_attempts").first()
    if meeting is None:
        return
    attempts = meeting.mirror_attempts + 1
    Meeting.objects.filter(pk=meeting_id).update(
        mirror_attempts=attempts,
        mirror_next_attempt_at=now + timedelta(seconds=backoff_seconds(attempts)),
        mirror_last_error=error[:2000],
        mirror_error_at=now,
    )


def _record_success(*, meeting: Meeting, event_ids: list[int]) -> None:
    now = timezone.now()
    # A slower flush that wrote an older state may record after a newer one: keep the newer record.
    newer_recorded = Q(mirrored_version__gt=meeting.version)
    with transaction.atomic():
        MeetingEvent.objects.filter(pk__in=event_ids, mirrored_at__isnull=True).update(mirrored_at=now)
        Meeting.objects.filter(pk=meeting.pk).update(
            mirrored_version=Greatest("mirrored_version", Value(meeting.version)),
            mirrored_status=Case(When(newer_recorded, then="mirrored_status"), default=Value(meeting.status)),
            mirror_attempts=0,
            mirror_next_attempt_at=None,
            mirror_last_error="",
            mirror_error_at=None,
        )


def _write_meeting(*, meeting_id: str, meeting: Meeting, hosts: dict, event_ids: list[int], result: FlushResult):
    """Write one meeting; on a failed condition ingest what the agent wrote, then write again."""
    expected = dynamo.status_value(meeting.mirrored_status)
    for _ in range(CONFLICT_ROUNDS):
        item = dynamo.meeting_item(meeting=meeting, hosts=hosts)
        try:
            dynamo.item_write(item=item, expected_status=expected)
        except dynamo.WriteConflict as conflict:
            result.conflicts += 1
            stored_version = conflict.item.get("version", {}).get("N")
            if stored_version is not None and int(float(stored_version)) > meeting.version:
                database_version = Meeting.objects.filter(pk=meeting_id).values_list("version", flat=True).first()
                if database_version is None or database_version < int(float(stored_version)):
                    raise MirrorError(
                        f"DynamoDB holds version {stored_version}, newer than the database's {meeting.version}"
                    ) from None
                # Not a restore: another flush (its claim freed by a resync) wrote a newer state
                # than the one read here. Ingest as usual, then write the current state.
            try:
                mirror_apply_agent_report(meeting=meeting, report=dynamo.agent_report(conflict.item), hosts=hosts)
            except dynamo.OddItem as exc:
                logger.warning("%s; agent attributes not ingested, the app's write goes ahead", exc)
            # Write again over the status as it stands now, with everything the ingest recorded.
            # Events first, then the state: every event read is then covered by the state written.
            expected = conflict.item.get("status")
            event_ids = _pending_event_ids([meeting_id])[meeting_id]
            meeting = Meeting.objects.get(pk=meeting_id)
            hosts = _current_hosts([meeting_id])[meeting_id]
            continue
        _record_success(meeting=meeting, event_ids=event_ids)
        result.written += 1
        result.events += len(event_ids)
        return
    raise MirrorError(f"status kept changing under {CONFLICT_ROUNDS} writes")


def mirror_flush(*, limit: int | None = None, meeting_ids: Iterable[str] | None = None) -> FlushResult:
    """One pass over the outbox: one UpdateItem per claimed meeting with pending events."""
    result = FlushResult()
    claimed = _claim(limit=limit or settings.ELEPHANT_DDB_FLUSH_BATCH, now=timezone.now(), meeting_ids=meeting_ids)
    result.claimed = len(claimed)
    if not claimed:
        return result
    # Events before state: a change committed between the two reads is written but stays pending
    # (written again next pass); read the other way round it would be marked without being written.
    events = _pending_event_ids(claimed)
    meetings = Meeting.objects.in_bulk(claimed)
    hosts = _current_hosts(claimed)
    # Deleted, or another flush wrote them between our pick and our claim: release them at once,
    # so their next change does not wait out the lease.
    idle = [meeting_id for meeting_id in claimed if meeting_id not in meetings or not events.get(meeting_id)]
    if idle:
        Meeting.objects.filter(pk__in=idle).update(mirror_next_attempt_at=None)
    for index, meeting_id in enumerate(claimed):
        meeting = meetings.get(meeting_id)
        if meeting is None or not events.get(meeting_id):
            continue
        try:
            _write_meeting(
                meeting_id=meeting_id,
                meeting=meeting,
                hosts=hosts[meeting_id],
                event_ids=events[meeting_id],
                result=result,
            )
        except dynamo.DynamoUnavailable as exc:
            # DynamoDB is down or throttling: stop this pass, keep everything pending.
            logger.warning("DynamoDB unavailable, flush paused: %s", exc)
            result.failed += 1
            result.unavailable = True
            _record_failure(meeting_id=meeting_id, error=str(exc))
            Meeting.objects.filter(pk__in=claimed[index + 1 :]).update(mirror_next_attempt_at=None)
            break
        except Exception as exc:
            logger.exception("DynamoDB write of meeting %s failed", meeting_id)
            result.failed += 1
            _record_failure(meeting_id=meeting_id, error=f"{type(exc).__name__}: {exc}")
    logger.info(
        "DynamoDB flush: %s meetings written (%s changes), %s conflicts, %s failed",
        result.written,
        result.events,
        result.conflicts,
        result.failed,
    )
    return result


# --- pull --------------------------------------------------------------------------------------


def mirror_apply_agent_report(*, meeting: Meeting, report: dynamo.AgentReport, hosts: dict | None = None) -> dict:
    """Apply what the agents wrote: HEALTHY marks the host it names; session data is stored.

    Returns {"healthy": bool, "session_data": bool}: what changed. The meeting's status is left
    to the fleet's health check, which combines the agent's word with its own probes.
    """
    from fleet.models import Host

    changed = {"healthy": False, "session_data": False}
    if report.status == MeetingStatus.HEALTHY and report.instance_id:
        host = next((h for h in (hosts or {}).values() if h.instance_id == report.instance_id), None)
        if hosts is None or (host is not None and host.agent_healthy_at is None):
            changed["healthy"] = bool(
                Host.objects.filter(
                    meeting_id=meeting.pk, instance_id=report.instance_id, agent_healthy_at__isnull=True
                ).update(agent_healthy_at=timezone.now())
            )
    fields = {
        f"{role}_session_data": value
        for role, value in report.session_data.items()
        if value != meeting.session_data(role)
    }
    if fields:
        meeting_record_change(
            meeting=meeting,
            reason=AGENT_SESSION_DATA_REASON,
            detail=", ".join(f"{name}={value}" for name, value in fields.items()),
            actor="agent",
            fields=fields,
        )
        changed["session_data"] = True
    return changed


def mirror_pull() -> PullResult:
    """Read the agents' attributes of every active meeting (BatchGetItem) and apply them."""
    from fleet.models import Host

    result = PullResult()
    meetings = {meeting.pk: meeting for meeting in Meeting.objects.active()}
    result.meetings = len(meetings)
    if not meetings:
        return result
    items = dynamo.items_get(meetings)
    result.items = len(items)
    hosts: dict[str, dict[int, Host]] = defaultdict(dict)
    for host in Host.objects.filter(meeting_id__in=list(meetings)).exclude(instance_id=""):
        hosts[host.meeting_id][host.pk] = host
    lost = []
    for meeting_id, meeting in meetings.items():
        item = items.get(meeting_id)
        if item is None:
            if meeting.mirrored_version:
                lost.append(meeting_id)  # the table lost it (recreated?): write it again
            continue
        try:
            report = dynamo.agent_report(item)
        except dynamo.OddItem as exc:
            logger.warning("%s; skipped", exc)
            result.skipped.append(meeting_id)
            continue
        if report.version is not None and report.version < meeting.mirrored_version:
            lost.append(meeting_id)
        changed = mirror_apply_agent_report(meeting=meeting, report=report, hosts=hosts[meeting_id])
        result.healthy_marked += changed["healthy"]
        result.session_data += changed["session_data"]
    if lost:
        result.resync = mirror_resync(meeting_ids=lost, actor="system")
    return result


# --- resync and backlog ------------------------------------------------------------------------


def mirror_resync(*, meeting_ids: Iterable[str] | None = None, actor: str) -> int:
    """Queue meetings to be written again (all when ``meeting_ids`` is None); returns how many.

    Goes through the outbox like any change, so it is retried and visible in the backlog.
    Backoff is cleared so the next flush tries at once.
    """
    meetings = Meeting.objects.all() if meeting_ids is None else Meeting.objects.filter(pk__in=list(meeting_ids))
    ids = list(meetings.values_list("pk", flat=True))
    with transaction.atomic():
        MeetingEvent.objects.bulk_create(
            [MeetingEvent(meeting_id=meeting_id, reason=RESYNC_REASON, actor=actor) for meeting_id in ids],
            batch_size=1000,
        )
        meetings.update(mirror_next_attempt_at=None, mirror_attempts=0)
        transaction.on_commit(mirror_flush_soon)
    return len(ids)


def mirror_backlog() -> Backlog:
    """Pending changes, the oldest one's time and the newest error, in two queries."""
    totals = MeetingEvent.objects.filter(mirrored_at__isnull=True).aggregate(
        changes=Count("id"), meetings=Count("meeting_id", distinct=True), oldest=Min("at")
    )
    error = (
        Meeting.objects.filter(mirror_error_at__isnull=False)
        .order_by("-mirror_error_at")
        .values("pk", "mirror_last_error", "mirror_error_at")
        .first()
    ) or {}
    return Backlog(
        changes=totals["changes"],
        meetings=totals["meetings"],
        oldest_at=totals["oldest"],
        last_error=error.get("mirror_last_error", ""),
        last_error_at=error.get("mirror_error_at"),
        last_error_meeting_id=error.get("pk"),
    )
