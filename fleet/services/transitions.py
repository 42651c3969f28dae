"""Host transitions, the way meeting transitions are made (``meetings.services.meeting_transition``).

A transition is one conditional UPDATE (``WHERE state = <from>``, plus the caller's own
condition) and a ``HostEvent`` row, in one short transaction. A transition that finds the row
already moved returns False (or leaves it out) and records nothing: calling it twice is safe.
"""

import logging
from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from elephant.prepared import PreparedInsert, PreparedUpdate
from fleet.locks import hosts_lock
from fleet.models import Host, HostEvent, HostState

logger = logging.getLogger(__name__)


def _one_host(*, pk: int, state: str, condition: Q | None):
    rows = Host.objects.filter(pk=pk, state=state)
    return rows if condition is None else rows.filter(condition)


# Every transition's UPDATE: compiled once per set of fields changed (elephant.prepared).
_host_update = PreparedUpdate(_one_host)
_hosts_update = PreparedUpdate(lambda *, pks: Host.objects.filter(pk__in=pks))
# A host's fields other than its state, by id (``host_fields_update.many``: the sweeps' batches of them).
host_fields_update = PreparedUpdate(lambda *, pk: Host.objects.filter(pk=pk))
# And its event row (one per host moved).
_event_insert = PreparedInsert(HostEvent)


def host_transition(
    *,
    host: Host,
    to_state: str,
    allowed_from: Iterable[str],
    reason: str,
    detail: str = "",
    actor: str = "system",
    fields: dict | None = None,
    now: datetime | None = None,
    condition: Q | None = None,
) -> bool:
    """Move ``host`` to ``to_state`` if it is in one of ``allowed_from`` (and matches ``condition``).

    The UPDATE is conditional on the state of the caller's copy, so the event names the state
    the host really left; with several allowed origins a lost race is re-read once. True when
    this call made the transition; ``host`` is updated in place.
    """
    allowed = frozenset(allowed_from)
    now = now or timezone.now()
    values = {"updated_at": now, **(fields or {})}
    attempts = 2 if len(allowed) > 1 else 1
    for attempt in range(attempts):
        from_state = host.state
        if from_state not in allowed:
            return False
        with transaction.atomic(savepoint=False):
            updated = _host_update({"state": to_state, **values}, pk=host.pk, state=from_state, condition=condition)
            if updated:
                _event_insert(
                    host_id=host.pk,
                    meeting_id=host.meeting_id,
                    at=now,
                    from_state=from_state,
                    to_state=to_state,
                    reason=reason,
                    detail=detail,
                    actor=actor,
                )
        if updated:
            host.state = to_state
            for name, value in values.items():
                if not hasattr(value, "resolve_expression"):
                    setattr(host, name, value)
            logger.info("host %s %s -> %s %s", host.pk, from_state, to_state, reason)
            return True
        if attempt + 1 < attempts:
            host.refresh_from_db(fields=["state"])
    return False


def hosts_transition(
    *,
    pks: Iterable[int],
    to_state: str,
    allowed_from: Iterable[str],
    reason: str,
    detail: str = "",
    actor: str = "system",
    fields: dict | None = None,
    now: datetime | None = None,
) -> list[int]:
    """The bulk ``host_transition`` of the sweeps: every host of the ids ``pks`` in one of ``allowed_from``
    moves to ``to_state``, with one event each. Three queries whatever the number (lock, update, insert);
    returns the ids of the hosts moved."""
    now = now or timezone.now()
    values = {"updated_at": now, **(fields or {})}
    with transaction.atomic():
        locked = hosts_lock(pks=pks, states=allowed_from)
        if not locked:
            return []
        _hosts_update({"state": to_state, **values}, pks=list(locked))
        _event_insert.many(
            {
                "host_id": pk,
                "meeting_id": meeting_id,
                "at": now,
                "from_state": from_state,
                "to_state": to_state,
                "reason": reason,
                "detail": detail,
                "actor": actor,
            }
            for pk, (from_state, meeting_id) in locked.items()
        )
    logger.info("%d hosts -> %s %s", len(locked), to_state, reason)
    return list(locked)


def hosts_terminated(*, pks: Iterable[int], allowed_from: Iterable[str], reason: str, now: datetime) -> list[int]:
    """The hosts ``pks`` (those still in ``allowed_from``) are gone: TERMINATED at ``now``, one event each."""
    return hosts_transition(
        pks=pks,
        allowed_from=allowed_from,
        to_state=HostState.TERMINATED,
        reason=reason,
        fields={"terminated_at": now},
        now=now,
    )
