"""The DynamoDB mirror: the outbox flush, the pull of agent attributes, resync and the backlog.

Outbox: every change of a meeting already inserts a MeetingEvent in its transaction
(``meetings.services``); that row *is* the outbox record, pending while ``mirrored_at`` is null
(partial index). A flush claims meetings with pending events, writes each meeting's current state
once (however many events it has: coalescing), then marks exactly the events it read. A failure
leaves them pending with a backoff in the meeting's ``MirrorState`` (``attempts``,
``next_attempt_at``, ``last_error``); nothing is dropped. See docs/mirror.md.

The mirror builds on meetings and fleet and writes neither's rows but through their services:
session data through ``meeting_record_change``, an agent's HEALTHY through
``fleet.services.host_agent_healthy``; current hosts come from ``fleet.selectors``.

Every sweep is a constant number of queries and DynamoDB calls whatever the number of meetings
(claim, read events, meetings and hosts; BatchGetItem per 100); what grows with the meetings is
the one UpdateItem per written meeting and its short success record.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Case, Count, Min, Q, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from elephant.backoff import backoff_delay
from fleet.selectors import hosts_current_many
from fleet.services import host_agent_healthy
from meetings.models import EventReason, Meeting, MeetingEvent, MeetingStatus
from meetings.services import meeting_record_change
from mirror import dynamo
from mirror.models import MirrorState, state_of

logger = logging.getLogger(__name__)

# How long a flush owns the meetings it claimed; a crashed worker's claim lapses after it.
CLAIM_LEASE = timedelta(minutes=2)
# Rounds of "condition failed -> ingest what the agent wrote -> write again" before backing off.
CONFLICT_ROUNDS = 3
FLUSH_QUEUED_KEY = "ddb-mirror:flush-queued"
# Queued by name: mirror.tasks imports this module, so this module does not import it back.
FLUSH_TASK = "mirror.tasks.mirror_flush_task"


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


def flush_soon_on_change(sender, **kwargs) -> None:
    """Receiver of ``meetings.signals.meeting_changed`` (connected in ``MirrorConfig.ready``)."""
    mirror_flush_soon()


def mirror_flush_soon() -> None:
    """Queue one flush shortly; changes arriving meanwhile ride along (one queued task at a time)."""
    delay = settings.ELEPHANT_DDB_FLUSH_DELAY_SECONDS
    try:
        if not cache.add(FLUSH_QUEUED_KEY, 1, timeout=max(10, int(delay * 10))):
            return
        current_app.send_task(FLUSH_TASK, countdown=delay)
    except Exception:  # a committed change must not fail on its side effect; the beat sweep covers it
        logger.warning("could not queue a DynamoDB flush; the beat sweep will pick the change up", exc_info=True)


# --- flush -------------------------------------------------------------------------------------


def _due(now: datetime, prefix: str = "") -> Q:
    """Not leased by a flush nor backing off (a meeting without MirrorState has neither)."""
    return Q(**{f"{prefix}next_attempt_at__isnull": True}) | Q(**{f"{prefix}next_attempt_at__lte": now})


def _states_create(meeting_ids: list[str]) -> None:
    """Create the MirrorState rows of meetings flushed for the first time: one INSERT ... ON
    CONFLICT DO NOTHING (a concurrent flush may create the same), outside the claim's transaction."""
    rows = [MirrorState(meeting_id=pk) for pk in meeting_ids]
    try:
        with transaction.atomic():
            MirrorState.objects.bulk_create(rows, ignore_conflicts=True)
    except IntegrityError:  # a meeting deleted since it was picked: leave it out
        existing = set(Meeting.objects.filter(pk__in=meeting_ids).values_list("pk", flat=True))
        MirrorState.objects.bulk_create([row for row in rows if row.meeting_id in existing], ignore_conflicts=True)


def _claim(*, limit: int, now: datetime, meeting_ids: Iterable[str] | None = None) -> list[str]:
    pending = MeetingEvent.objects.filter(mirrored_at__isnull=True)
    if meeting_ids is not None:
        pending = pending.filter(meeting_id__in=list(meeting_ids))
    due = _due(now, prefix="meeting__mirror_state__")
    picked = list(
        pending.filter(due)
        .values("meeting_id", "meeting__mirror_state")
        .annotate(first=Min("id"))
        .order_by("first")
        .values_list("meeting_id", "meeting__mirror_state")[:limit]
    )
    if not picked:
        return []
    candidates = [meeting_id for meeting_id, _ in picked]
    # The lease lives in MirrorState: give first-timers their row, then lock and lease the rows
    # no other flush holds (skip_locked), in one short transaction.
    new = [meeting_id for meeting_id, state in picked if state is None]
    if new:
        _states_create(new)
    with transaction.atomic():
        claimed = set(
            MirrorState.objects.filter(pk__in=candidates)
            .filter(_due(now))
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)
        )
        MirrorState.objects.filter(pk__in=claimed).update(next_attempt_at=now + CLAIM_LEASE)
    return [meeting_id for meeting_id in candidates if meeting_id in claimed]


def _current_hosts(meeting_ids: Iterable[str]) -> dict[str, dict]:
    """Role -> current host (newest generation) per meeting, in one query; {} for a meeting without."""
    return defaultdict(dict, hosts_current_many(meeting_ids=meeting_ids))


def _pending_event_ids(meeting_ids: Iterable[str]) -> dict[str, list[int]]:
    events: dict[str, list[int]] = defaultdict(list)
    rows = MeetingEvent.objects.filter(mirrored_at__isnull=True, meeting_id__in=list(meeting_ids))
    for event_id, meeting_id in rows.values_list("id", "meeting_id"):
        events[meeting_id].append(event_id)
    return events


def backoff_seconds(attempts: int) -> float:
    """The wait after the ``attempts``-th failure in a row: half to all of
    min(ELEPHANT_DDB_RETRY_MAX_SECONDS, ELEPHANT_DDB_RETRY_BASE_SECONDS * 2**(attempts - 1))."""
    return backoff_delay(
        attempts - 1,
        base=settings.ELEPHANT_DDB_RETRY_BASE_SECONDS,
        cap=settings.ELEPHANT_DDB_RETRY_MAX_SECONDS,
        jitter=0.5,
    )


def _record_failure(*, meeting_id: str, error: str) -> None:
    now = timezone.now()
    attempts = MirrorState.objects.filter(pk=meeting_id).values_list("attempts", flat=True).first()
    if attempts is None:  # the meeting was deleted
        return
    attempts += 1
    MirrorState.objects.filter(pk=meeting_id).update(
        attempts=attempts,
        next_attempt_at=now + timedelta(seconds=backoff_seconds(attempts)),
        last_error=error[:2000],
        error_at=now,
    )


def _record_success(*, meeting: Meeting, event_ids: list[int]) -> None:
    now = timezone.now()
    # A slower flush that wrote an older state may record after a newer one: keep the newer record.
    newer_recorded = Q(mirrored_version__gt=meeting.version)
    with transaction.atomic():
        MeetingEvent.objects.filter(pk__in=event_ids, mirrored_at__isnull=True).update(mirrored_at=now)
        MirrorState.objects.filter(pk=meeting.pk).update(
            mirrored_version=Greatest("mirrored_version", Value(meeting.version)),
            mirrored_status=Case(When(newer_recorded, then="mirrored_status"), default=Value(meeting.status)),
            attempts=0,
            next_attempt_at=None,
            last_error="",
            error_at=None,
        )


def _write_meeting(*, meeting_id: str, meeting: Meeting, hosts: dict, event_ids: list[int], result: FlushResult):
    """Write one meeting; on a failed condition ingest what the agent wrote, then write again."""
    expected = dynamo.status_value(state_of(meeting).mirrored_status)
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
    meetings = Meeting.objects.select_related("mirror_state").in_bulk(claimed)
    hosts = _current_hosts(claimed)
    # Deleted, or another flush wrote them between our pick and our claim: release them at once,
    # so their next change does not wait out the lease.
    idle = [meeting_id for meeting_id in claimed if meeting_id not in meetings or not events.get(meeting_id)]
    if idle:
        MirrorState.objects.filter(pk__in=idle).update(next_attempt_at=None)
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
            MirrorState.objects.filter(pk__in=claimed[index + 1 :]).update(next_attempt_at=None)
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
    """Apply what the agents wrote: HEALTHY is reported to the fleet; session data is stored.

    ``hosts`` (role -> current host), when given, spares the fleet a write for a host already
    known healthy or not current. Returns {"healthy": bool, "session_data": bool}: what changed.
    The meeting's status is left to the fleet's health check, which combines the agent's word
    with its own probes.
    """
    changed = {"healthy": False, "session_data": False}
    if report.status == MeetingStatus.HEALTHY and report.instance_id:
        host = next((h for h in (hosts or {}).values() if h.instance_id == report.instance_id), None)
        if hosts is None or (host is not None and host.agent_healthy_at is None):
            changed["healthy"] = host_agent_healthy(meeting_id=meeting.pk, instance_id=report.instance_id)
    fields = {
        f"{role}_session_data": value
        for role, value in report.session_data.items()
        if value != meeting.session_data(role)
    }
    if fields:
        meeting_record_change(
            meeting=meeting,
            reason=EventReason.AGENT_SESSION_DATA,
            detail=", ".join(f"{name}={value}" for name, value in fields.items()),
            actor="agent",
            fields=fields,
        )
        changed["session_data"] = True
    return changed


def mirror_pull() -> PullResult:
    """Read the agents' attributes of every active meeting (BatchGetItem) and apply them."""
    result = PullResult()
    meetings = {meeting.pk: meeting for meeting in Meeting.objects.active().select_related("mirror_state")}
    result.meetings = len(meetings)
    if not meetings:
        return result
    items = dynamo.items_get(meetings)
    result.items = len(items)
    hosts = _current_hosts(meetings)
    lost = []
    for meeting_id, meeting in meetings.items():
        mirrored_version = state_of(meeting).mirrored_version
        item = items.get(meeting_id)
        if item is None:
            if mirrored_version:
                lost.append(meeting_id)  # the table lost it (recreated?): write it again
            continue
        try:
            report = dynamo.agent_report(item)
        except dynamo.OddItem as exc:
            logger.warning("%s; skipped", exc)
            result.skipped.append(meeting_id)
            continue
        if report.version is not None and report.version < mirrored_version:
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
    states = MirrorState.objects.all() if meeting_ids is None else MirrorState.objects.filter(pk__in=ids)
    with transaction.atomic():
        MeetingEvent.objects.bulk_create(
            [MeetingEvent(meeting_id=meeting_id, reason=EventReason.DDB_RESYNC, actor=actor) for meeting_id in ids],
            batch_size=1000,
        )
        states.update(next_attempt_at=None, attempts=0)
        transaction.on_commit(mirror_flush_soon)
    return len(ids)


def mirror_backlog() -> Backlog:
    """Pending changes, the oldest one's time and the newest error, in two queries."""
    totals = MeetingEvent.objects.filter(mirrored_at__isnull=True).aggregate(
        changes=Count("id"), meetings=Count("meeting_id", distinct=True), oldest=Min("at")
    )
    error = (
        MirrorState.objects.filter(error_at__isnull=False)
        .order_by("-error_at")
        .values("pk", "last_error", "error_at")
        .first()
    ) or {}
    return Backlog(
        changes=totals["changes"],
        meetings=totals["meetings"],
        oldest_at=totals["oldest"],
        last_error=error.get("last_error", ""),
        last_error_at=error.get("error_at"),
        last_error_meeting_id=error.get("pk"),
    )
