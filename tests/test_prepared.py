"""elephant.prepared: a read compiled once gives what the ORM gives, for every call's values."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection, transaction
from django.db.models import Count, Exists, F, OuterRef, Q
from django.db.models.functions import Now
from django.db.transaction import TransactionManagementError
from django.test.utils import CaptureQueriesContext

from elephant.prepared import PreparedInsert, PreparedRead, PreparedReadError, PreparedUpdate, settable
from fleet.models import Host, HostState
from meetings.models import Meeting, MeetingEvent, MeetingStatus
from tests.factories import make_meeting

pytestmark = pytest.mark.django_db

T0 = datetime(2027, 3, 1, 15, 0, tzinfo=UTC)


@pytest.fixture
def meetings():
    made = []
    for minutes in (0, 30, 60, 90):
        meeting = make_meeting(meet_time=T0 + timedelta(minutes=minutes))
        made.append(meeting)
    Meeting.objects.filter(pk=made[1].pk).update(status=MeetingStatus.LAUNCHING, launched_at=T0)
    host = Host.objects.create(meeting=made[1], role="teacher", generation=1, state=HostState.BOOTING, launched_at=T0)
    Host.objects.create(meeting=made[1], role="teacher", generation=2, state=HostState.PENDING)
    Host.objects.create(meeting=made[1], role="student", generation=1, state=HostState.RUNNING, instance_id="i-1")
    MeetingEvent.objects.create(meeting=made[2], at=T0, to_status=MeetingStatus.SCHEDULED, reason="kept", actor="x")
    return made, host


def _builds(build):
    calls = []

    def counted(**values):
        calls.append(values)
        return build(**values)

    return PreparedRead(counted), calls


def test_flat_rows_follow_each_calls_values_and_the_query_is_built_once(meetings):
    read, builds = _builds(
        lambda *, until: Meeting.objects.filter(meet_time__lte=until).order_by("meet_time").values_list("pk", flat=True)
    )
    made, _ = meetings
    for minutes in (-1, 0, 45, 120, 30):
        until = T0 + timedelta(minutes=minutes)
        expected = list(Meeting.objects.filter(meet_time__lte=until).order_by("meet_time").values_list("pk", flat=True))
        with CaptureQueriesContext(connection) as queries:
            assert read(until=until) == expected
        assert len(queries) == 1
    assert len(builds) == 1
    assert read(until=T0 + timedelta(minutes=60)) == [m.pk for m in made[:3]]


def test_named_rows_dict_rows_and_annotations_convert_as_the_orm_does(meetings):
    kept = MeetingEvent.objects.filter(meeting=OuterRef("pk"), reason="kept")

    def build(*, since):
        return (
            Meeting.objects.filter(meet_time__gte=since)
            .annotate(kept_alive=Exists(kept))
            .order_by("meet_time")
            .values("pk", "status", "meet_time", "launched_at", "kept_alive")
        )

    read = PreparedRead(build)
    for since in (T0, T0 + timedelta(minutes=30), T0 + timedelta(days=1)):
        assert read(since=since) == list(build(since=since))
    rows = read(since=T0)
    assert rows[1]["launched_at"] == T0 and rows[1]["launched_at"].tzinfo is not None
    assert [r["kept_alive"] for r in rows] == [False, False, True, False]

    named = PreparedRead(
        lambda: Host.objects.values_list("meeting_id", "role", "state").annotate(n=Count("pk")).order_by("role")
    )
    assert named() == list(
        Host.objects.values_list("meeting_id", "role", "state").annotate(n=Count("pk")).order_by("role")
    )
    rows = PreparedRead(lambda: Host.objects.order_by("pk").values_list("pk", "launched_at", named=True))()
    assert rows[0].launched_at == T0 and rows[0]._fields == ("pk", "launched_at")


def test_model_rows_keep_select_related_and_deferred_fields(meetings):
    made, host = meetings

    def build(*, meeting_id):
        return (
            Host.objects.filter(meeting_id=meeting_id)
            .select_related("meeting")
            .only("id", "role", "state", "launched_at", "meeting_id", "meeting__status")
            .order_by("role", "-generation")
        )

    read = PreparedRead(build)
    got = read(meeting_id=made[1].pk)
    assert [(h.pk, h.role, h.state) for h in got] == [(h.pk, h.role, h.state) for h in build(meeting_id=made[1].pk)]
    first = next(h for h in got if h.pk == host.pk)
    assert first.launched_at == T0
    assert "instance_id" in first.get_deferred_fields()
    with CaptureQueriesContext(connection) as queries:
        assert first.meeting.status == MeetingStatus.LAUNCHING  # populated by the join, not a second query
    assert len(queries) == 0
    assert read(meeting_id=made[0].pk) == []
    assert read(meeting_id="no-such-meeting' OR '1'='1") == []  # a value, never SQL


def _as_loaded(obj):
    """What an instance holds: its loaded values, its state, and the related objects it caches."""
    values = {name: value for name, value in vars(obj).items() if name != "_state"}
    cached = {name: _as_loaded(other) if other is not None else None for name, other in obj._state.fields_cache.items()}
    return values, obj._state.adding, obj._state.db, cached


def test_model_rows_are_the_instances_the_orm_makes_and_init_receivers_still_hear_them(meetings):
    from django.db.models.signals import post_init

    made, _ = meetings

    def build(*, meeting_id):
        return Host.objects.filter(meeting_id=meeting_id).select_related("meeting").order_by("pk")

    def build_some(*, meeting_id):
        return build(meeting_id=meeting_id).only("id", "state", "meeting_id", "launched_at", "meeting__status")

    for builder in (build, build_some):
        got = PreparedRead(builder)(meeting_id=made[1].pk)
        expected = list(builder(meeting_id=made[1].pk))
        assert [_as_loaded(h) for h in got] == [_as_loaded(h) for h in expected] and len(got) == 3
        assert [h.get_deferred_fields() for h in got] == [h.get_deferred_fields() for h in expected]
        assert got[0].meeting.hosts.count() == 3 and got[0].meeting.teacher_name == made[1].teacher_name
    got[0].state = HostState.HEALTHY
    got[0].save(update_fields=["state"])  # an instance like the ORM's: saved as an update of its row
    assert Host.objects.get(pk=got[0].pk).state == HostState.HEALTHY

    heard = []

    def receiver(sender, instance, **kwargs):
        heard.append((sender, instance.pk))

    read = PreparedRead(build)
    read(meeting_id=made[1].pk)  # compiled before the receiver is connected
    post_init.connect(receiver, sender=Host)
    try:
        rows = read(meeting_id=made[1].pk)
    finally:
        post_init.disconnect(receiver, sender=Host)
    assert heard == [(Host, h.pk) for h in rows]


def test_lists_none_and_booleans_are_part_of_the_shape(meetings):
    made, _ = meetings

    def build(*, ids, status):
        rows = Meeting.objects.exclude(pk__in=ids)
        if status is not None:
            rows = rows.filter(status=status)
        return rows.order_by("meet_time").values_list("pk", flat=True)

    read, builds = _builds(build)
    everyone = [m.pk for m in made]
    assert read(ids=[], status=None) == everyone
    assert read(ids=[made[0].pk], status=None) == everyone[1:]
    assert read(ids=[made[3].pk], status=None) == everyone[:3]
    assert read(ids=[made[0].pk, made[2].pk, made[3].pk], status=None) == [made[1].pk]
    assert read(ids=[], status=MeetingStatus.LAUNCHING) == [made[1].pk]
    assert read(ids=[made[1].pk], status=MeetingStatus.LAUNCHING) == []
    # One build per shape: lengths 0, 1 and 3, and the status given or not.
    assert len(builds) == 5


def test_a_builder_that_hides_or_derives_a_value_fails_at_once(meetings):
    derived = PreparedRead(
        lambda *, now: Meeting.objects.filter(meet_time__lte=now + timedelta(hours=1)).values_list("pk")
    )
    with pytest.raises(PreparedReadError, match="now"):
        derived(now=T0)
    with pytest.raises(PreparedReadError, match="aware"):
        PreparedRead(lambda *, now: Meeting.objects.filter(meet_time__lte=now).values_list("pk"))(
            now=datetime(2027, 3, 1)
        )
    with pytest.raises(PreparedReadError, match="Decimal"):
        PreparedRead(lambda *, x: Meeting.objects.values_list("pk"))(x=Decimal("1.5"))
    with pytest.raises(PreparedReadError, match="prefetch"):
        PreparedRead(lambda: Meeting.objects.prefetch_related("events"))()


def test_an_update_changes_what_the_orms_would_and_counts_the_rows(meetings):
    made, host = meetings
    update = PreparedUpdate(lambda *, pk, state: Host.objects.filter(pk=pk, state=state))
    later = T0 + timedelta(minutes=7)
    assert (
        update(
            {"state": HostState.RUNNING, "running_at": later, "public_address": "198.51.100.7"},
            pk=host.pk,
            state=HostState.BOOTING,
        )
        == 1
    )
    host.refresh_from_db()
    assert (host.state, host.running_at, host.public_address) == (HostState.RUNNING, later, "198.51.100.7")
    # The same statement again: the row is no longer BOOTING, nothing changes.
    assert (
        update(
            {"state": HostState.RUNNING, "running_at": T0, "public_address": "x"}, pk=host.pk, state=HostState.BOOTING
        )
        == 0
    )
    host.refresh_from_db()
    assert host.running_at == later
    # None and booleans are part of the shape; a condition too, with its values.
    assert (
        update(
            {"state": HostState.HEALTHY, "running_at": None, "warm_start": True}, pk=host.pk, state=HostState.RUNNING
        )
        == 1
    )
    host.refresh_from_db()
    assert (host.state, host.running_at, host.warm_start) == (HostState.HEALTHY, None, True)


def test_an_update_keeps_its_fixed_expressions_and_conditions_with_their_own_values(meetings):
    made, host = meetings
    bump = PreparedUpdate(
        lambda *, pk, condition: Meeting.objects.filter(pk=pk).filter(condition), fixed={"version": F("version") + 1}
    )
    version = Meeting.objects.get(pk=made[0].pk).version
    assert bump({"updated_at": T0}, pk=made[0].pk, condition=Q(status=MeetingStatus.SCHEDULED)) == 1
    assert bump({"updated_at": T0}, pk=made[0].pk, condition=Q(status=MeetingStatus.LAUNCHING)) == 0
    assert bump({"updated_at": T0}, pk=made[0].pk, condition=Q(status=MeetingStatus.SCHEDULED)) == 1
    assert Meeting.objects.get(pk=made[0].pk).version == version + 2
    # An expression among the new values: the ORM's update of the same rows, fixed expressions included.
    sequence = Meeting.objects.get(pk=made[0].pk).sequence
    assert bump({"sequence": F("sequence") + 1}, pk=made[0].pk, condition=Q(status=MeetingStatus.SCHEDULED)) == 1
    assert bump({"sequence": F("sequence") + 1}, pk=made[0].pk, condition=Q(status=MeetingStatus.LAUNCHING)) == 0
    changed = Meeting.objects.get(pk=made[0].pk)
    assert (changed.sequence, changed.version) == (sequence + 1, version + 3)
    assert settable({"a": T0, "b": "x", "c": 3, "d": None, "e": False})
    assert not settable({"a": F("version") + 1})
    assert not settable({"a": datetime(2027, 3, 1)})


def test_the_least_recently_used_shape_goes_first_when_a_statement_holds_its_most(meetings, monkeypatch):
    monkeypatch.setattr("elephant.prepared.MAX_SHAPES", 3)
    read, builds = _builds(lambda *, ids: Meeting.objects.filter(pk__in=ids).values_list("pk", flat=True))
    made, _ = meetings
    ids = [m.pk for m in made]
    for length in (1, 2, 1, 3, 4):  # 2 is the least recently used when 4 comes
        assert sorted(read(ids=ids[:length])) == sorted(ids[:length])
    assert [len(b["ids"]) for b in builds] == [1, 2, 3, 4]
    read(ids=ids[:1])  # kept: used just before 3 and 4
    read(ids=ids[:2])  # dropped: built again
    assert [len(b["ids"]) for b in builds] == [1, 2, 3, 4, 2]


def test_a_filter_nothing_can_match_asks_the_database_nothing_as_the_orm(meetings):
    read = PreparedRead(lambda *, ids: Meeting.objects.filter(pk__in=ids).values_list("pk", flat=True))
    update = PreparedUpdate(lambda *, ids: Meeting.objects.filter(pk__in=ids))
    made, _ = meetings
    with CaptureQueriesContext(connection) as queries:
        assert read(ids=[]) == []
        assert update({"updated_at": T0}, ids=[]) == 0
    assert len(queries) == 0
    assert read(ids=[made[0].pk]) == [made[0].pk]
    assert update({"updated_at": T0}, ids=[made[0].pk]) == 1


@pytest.mark.django_db(transaction=True)
def test_a_locking_read_locks_inside_a_transaction_and_refuses_outside_as_the_orm(meetings):
    made, _ = meetings
    read = PreparedRead(lambda *, pk: Meeting.objects.select_for_update(skip_locked=True).filter(pk=pk))
    locks = connection.features.has_select_for_update
    with transaction.atomic():
        with CaptureQueriesContext(connection) as queries:
            assert [m.pk for m in read(pk=made[0].pk)] == [made[0].pk]
            assert [m.pk for m in read(pk=made[1].pk)] == [made[1].pk]
        assert ("FOR UPDATE SKIP LOCKED" in queries[1]["sql"]) is locks
    # Outside a transaction, the compiled statement refuses where the ORM's refuses (every backend that locks).
    try:
        list(Meeting.objects.select_for_update().filter(pk=made[0].pk))
        orm_refuses = False
    except TransactionManagementError:
        orm_refuses = True
    assert orm_refuses is locks
    if locks:
        with pytest.raises(TransactionManagementError, match="outside of a transaction"):
            read(pk=made[0].pk)
    else:
        assert [m.pk for m in read(pk=made[0].pk)] == [made[0].pk]


def test_an_insert_writes_the_rows_create_would_defaults_and_auto_now_add_included(meetings):
    made, _ = meetings
    insert = PreparedInsert(MeetingEvent)
    before = set(MeetingEvent.objects.values_list("pk", flat=True))
    when = datetime(2027, 3, 1, 15, 0, 0, 123456, tzinfo=UTC)
    with time_machine.travel(when, tick=False):
        with CaptureQueriesContext(connection) as queries:
            insert(meeting_id=made[0].pk, reason="kept alive", detail="\u00e9l\u00e9phant \U0001f418", actor="system")
            insert.many(
                {"meeting": made[1], "to_status": MeetingStatus.LAUNCHING, "reason": f"r{i}", "actor": "a"}
                for i in range(3)
            )
            insert.many([])
        MeetingEvent.objects.create(meeting_id=made[0].pk, reason="kept alive", detail="\u00e9l\u00e9phant \U0001f418")
    assert len(queries) == 2  # one row, then three rows in one executemany; none for no rows
    fields = ("meeting_id", "at", "from_status", "to_status", "reason", "detail", "mirrored_at")
    new = list(MeetingEvent.objects.exclude(pk__in=before).order_by("pk").values_list(*fields))
    assert new[0] == new[-1]  # the same row as create() makes, its default and auto_now_add time included
    assert new[0] == (made[0].pk, when, "", "", "kept alive", "\u00e9l\u00e9phant \U0001f418", None)
    assert [row[3:5] for row in new[1:4]] == [(MeetingStatus.LAUNCHING, f"r{i}") for i in range(3)]
    # A value that is an expression: the ORM's own INSERT (bulk_create), not the compiled statement.
    insert(meeting_id=made[0].pk, reason="expression", at=Now())
    assert MeetingEvent.objects.filter(reason="expression").count() == 1


def test_an_insert_by_field_names_gives_each_column_what_an_instance_would_and_receivers_still_hear_it(meetings):
    from django.db.models.signals import post_init

    from fleet.models import HostEvent

    made, host = meetings
    insert = PreparedInsert(HostEvent)
    when = datetime(2027, 3, 1, 16, 0, 0, 654321, tzinfo=UTC)
    fields = ("host_id", "meeting_id", "at", "from_state", "to_state", "reason", "detail", "actor")
    with time_machine.travel(when, tick=False):
        insert(host_id=host.pk, meeting_id=made[1].pk, from_state="PENDING", to_state="LAUNCHING", reason="x")
        HostEvent.objects.create(host=host, meeting=made[1], from_state="PENDING", to_state="LAUNCHING", reason="x")
        heard = []

        def receiver(sender, instance, **kwargs):
            heard.append(instance.reason)

        post_init.connect(receiver, sender=HostEvent)
        try:
            insert.many({"host_id": host.pk, "meeting_id": made[1].pk, "reason": f"heard {i}"} for i in range(2))
        finally:
            post_init.disconnect(receiver, sender=HostEvent)
    ours, created, *more = HostEvent.objects.order_by("pk").values_list(*fields)
    assert ours == created == (host.pk, made[1].pk, when, "PENDING", "LAUNCHING", "x", "", "")  # defaults: now, ""
    assert heard == ["heard 0", "heard 1"] and [row[5] for row in more] == ["heard 0", "heard 1"]
    with pytest.raises(TypeError):
        insert(host_id=host.pk, meeting_id=made[1].pk, no_such_field=1)  # as the model itself refuses it


def test_many_updates_change_each_row_as_one_update_would(meetings):
    made, _ = meetings
    update = PreparedUpdate(lambda *, pk: Meeting.objects.filter(pk=pk))
    with CaptureQueriesContext(connection) as queries:
        update.many(
            [
                ({"launch_at": T0 - timedelta(minutes=i), "launch_warm": i % 2 == 0}, {"pk": meeting.pk})
                for i, meeting in enumerate(made)
            ]
        )
        update.many([])
    assert len(queries) <= 3  # one executemany per shape (warm or not), in one transaction
    assert [
        (m.launch_at, m.launch_warm) for m in Meeting.objects.filter(pk__in=[m.pk for m in made]).order_by("meet_time")
    ] == [(T0 - timedelta(minutes=i), i % 2 == 0) for i in range(len(made))]
    sequence = Meeting.objects.get(pk=made[0].pk).sequence
    changed = update.many(
        [({"sequence": F("sequence") + 1}, {"pk": made[0].pk}), ({"launch_warm": False}, {"pk": made[0].pk})]
    )
    assert changed == 2  # the rows changed, the batch and the expression together
    changed = Meeting.objects.get(pk=made[0].pk)
    assert (changed.sequence, changed.launch_warm) == (sequence + 1, False)
    assert update.many([({"launch_warm": True}, {"pk": "no-such-meeting"})]) == 0


def test_floats_are_values_and_a_raw_read_skips_the_converters(meetings):
    _, host = meetings
    update = PreparedUpdate(lambda *, pk: Host.objects.filter(pk=pk, boot_seconds__isnull=True))
    assert update.many([({"boot_seconds": 61.25, "boot_censored": False}, {"pk": host.pk})]) == 1
    assert update.many([({"boot_seconds": 99.0, "boot_censored": True}, {"pk": host.pk})]) == 0  # recorded already
    assert update({"boot_seconds": 7.5}, pk=host.pk) == 0
    read = PreparedRead(
        lambda *, above: Host.objects.filter(boot_seconds__gt=above).values_list("boot_seconds", "boot_censored")
    )
    assert read(above=61.0) == [(61.25, False)] and read(above=61.5) == []
    raw = PreparedRead(
        lambda *, above: Host.objects.filter(boot_seconds__gt=above).values_list("boot_seconds", "boot_censored"),
        raw=True,
    )
    ((seconds, censored),) = raw(above=61.0)
    assert seconds == 61.25 and censored == 0 and not censored  # SQLite's 0, PostgreSQL's False: as the driver


def test_get_gives_the_one_row_or_the_models_own_errors_as_queryset_get(meetings):
    made, host = meetings
    read = PreparedRead(lambda *, meeting_id: Host.objects.filter(meeting_id=meeting_id))
    by_pk = PreparedRead(lambda *, pk: Meeting.objects.filter(pk=pk).values_list("status", flat=True))
    assert by_pk.get(pk=made[1].pk) == MeetingStatus.LAUNCHING
    with pytest.raises(Meeting.DoesNotExist, match="Meeting matching query does not exist"):
        by_pk.get(pk="nosuchmeeting")
    with pytest.raises(Host.MultipleObjectsReturned, match="more than one Host -- it returned 3!"):
        read.get(meeting_id=made[1].pk)
    one = PreparedRead(lambda *, pk: Host.objects.filter(pk=pk))
    assert one.get(pk=host.pk).pk == host.pk
