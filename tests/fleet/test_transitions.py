"""Host transitions: one conditional UPDATE with an event row, idempotent; the bulk form for sweeps."""

import pytest
from django.db import connection
from django.db.models import Q
from django.test.utils import CaptureQueriesContext

from fleet.models import Host, HostEvent, HostEventReason, HostState
from fleet.services import host_transition, hosts_transition
from meetings.models import MeetingStatus
from tests.factories import make_host, make_meeting

pytestmark = pytest.mark.django_db


def test_a_transition_moves_the_host_and_records_one_event_and_repeating_it_does_nothing():
    host = make_host(make_meeting(status=MeetingStatus.LAUNCHING), "teacher", state=HostState.BOOTING)
    assert host_transition(
        host=host,
        to_state=HostState.RUNNING,
        allowed_from={HostState.BOOTING},
        reason=HostEventReason.INSTANCE_RUNNING,
        detail="10.0.0.1",
        fields={"public_address": "10.0.0.1"},
    )
    stored = Host.objects.get(pk=host.pk)
    assert (stored.state, stored.public_address) == (HostState.RUNNING, "10.0.0.1")
    assert (host.state, host.public_address) == (HostState.RUNNING, "10.0.0.1")  # updated in place
    event = HostEvent.objects.get(host=host)
    assert (event.meeting_id, event.from_state, event.to_state) == (host.meeting_id, "BOOTING", "RUNNING")
    assert (event.reason, event.detail, event.actor) == ("INSTANCE_RUNNING", "10.0.0.1", "system")

    assert not host_transition(
        host=host, to_state=HostState.RUNNING, allowed_from={HostState.BOOTING}, reason=HostEventReason.INSTANCE_RUNNING
    )
    assert HostEvent.objects.filter(host=host).count() == 1


def test_a_stale_copy_loses_without_an_event():
    host = make_host(make_meeting(status=MeetingStatus.LAUNCHING), "teacher", state=HostState.BOOTING)
    stale = Host.objects.get(pk=host.pk)
    assert host_transition(
        host=host, to_state=HostState.FAILED, allowed_from={HostState.BOOTING}, reason=HostEventReason.INSTANCE_LOST
    )
    assert not host_transition(
        host=stale,
        to_state=HostState.RUNNING,
        allowed_from={HostState.BOOTING},
        reason=HostEventReason.INSTANCE_RUNNING,
    )
    assert Host.objects.get(pk=host.pk).state == HostState.FAILED
    assert list(HostEvent.objects.values_list("to_state", flat=True)) == ["FAILED"]


def test_with_several_origins_the_event_names_the_state_really_left():
    host = make_host(make_meeting(status=MeetingStatus.LAUNCHING), "teacher", state=HostState.PENDING, instance_id="")
    stale = Host.objects.get(pk=host.pk)
    Host.objects.filter(pk=host.pk).update(state=HostState.BOOTING)
    assert host_transition(
        host=stale,
        to_state=HostState.TERMINATING,
        allowed_from={HostState.PENDING, HostState.BOOTING},
        reason=HostEventReason.TERMINATE_REQUESTED,
    )
    assert HostEvent.objects.get(host=host).from_state == HostState.BOOTING


def test_the_condition_is_part_of_the_claim():
    host = make_host(make_meeting(status=MeetingStatus.LAUNCHING), "teacher", state=HostState.PENDING)
    assert not host_transition(
        host=host,
        to_state=HostState.LAUNCHING,
        allowed_from={HostState.PENDING},
        reason=HostEventReason.LAUNCH_CLAIMED,
        condition=Q(instance_id=""),
    )
    assert Host.objects.get(pk=host.pk).state == HostState.PENDING and not HostEvent.objects.exists()


def test_the_bulk_transition_moves_only_the_hosts_allowed_with_one_event_each_in_constant_queries():
    meeting = make_meeting(status=MeetingStatus.IN_PROGRESS)
    terminating = [make_host(meeting, role, state=HostState.TERMINATING) for role in ("teacher", "student")]
    healthy = make_host(meeting, "teacher", generation=2, instance_id="i-0other", state=HostState.HEALTHY)
    ids = [host.pk for host in [*terminating, healthy]]
    with CaptureQueriesContext(connection) as queries:
        moved = hosts_transition(
            pks=ids,
            allowed_from={HostState.TERMINATING},
            to_state=HostState.TERMINATED,
            reason=HostEventReason.TERMINATED,
        )
    assert sorted(moved) == sorted(host.pk for host in terminating)
    assert len([q for q in queries if not q["sql"].startswith(("SAVEPOINT", "RELEASE"))]) == 3
    assert Host.objects.get(pk=healthy.pk).state == HostState.HEALTHY
    events = HostEvent.objects.order_by("host_id")
    assert [(e.host_id, e.from_state, e.to_state) for e in events] == [
        (host.pk, "TERMINATING", "TERMINATED") for host in terminating
    ]
    assert (
        hosts_transition(
            pks=ids,
            allowed_from={HostState.TERMINATING},
            to_state=HostState.TERMINATED,
            reason=HostEventReason.TERMINATED,
        )
        == []
    )
    assert HostEvent.objects.count() == 2


def test_the_bulk_transition_locks_by_ids_in_id_order_each_once_and_needs_its_ids():
    meeting = make_meeting(status=MeetingStatus.IN_PROGRESS)
    terminating = [make_host(meeting, role, state=HostState.TERMINATING) for role in ("teacher", "student")]
    healthy = make_host(meeting, "teacher", generation=2, instance_id="i-0other", state=HostState.HEALTHY)
    ids = [healthy.pk, *(host.pk for host in reversed(terminating)), terminating[0].pk]  # any order, repeats
    with CaptureQueriesContext(connection) as queries:
        moved = hosts_transition(
            pks=ids, allowed_from={HostState.TERMINATING}, to_state=HostState.TERMINATED, reason="TERMINATED"
        )
    assert moved == sorted(host.pk for host in terminating)  # locked in id order, each once
    locking = [q["sql"] for q in queries if "FOR UPDATE" in q["sql"] or q["sql"].startswith("SELECT")]
    assert len(locking) == 1 and (connection.vendor != "postgresql" or "FOR UPDATE" in locking[0])
    assert Host.objects.get(pk=healthy.pk).state == HostState.HEALTHY
    assert [(e.host_id, e.to_state) for e in HostEvent.objects.order_by("host_id")] == [
        (host.pk, "TERMINATED") for host in terminating
    ]
    assert hosts_transition(pks=[], allowed_from={HostState.HEALTHY}, to_state="TERMINATING", reason="x") == []
    with pytest.raises(TypeError):
        hosts_transition(allowed_from={HostState.HEALTHY}, to_state="TERMINATING", reason="x")
    with pytest.raises(TypeError):
        hosts_transition(where=Q(pk=healthy.pk), pks=[healthy.pk], allowed_from={"HEALTHY"}, to_state="X", reason="x")
