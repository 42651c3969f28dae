"""The outbox, flush, pull and repair of the DynamoDB mirror, against a real moto server over HTTP."""

# ruff: noqa: F811  (the fixtures imported from dynamo_support are used as arguments)

import logging
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import time_machine
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from meetings.models import Meeting, MeetingEvent, MeetingStatus
from meetings.services import meeting_record_change, meeting_start_on_join, meeting_transition
from meetings.tokens import participant_token
from mirror import dynamo, services
from mirror.models import MirrorState
from mirror.services import mirror_backlog, mirror_flush, mirror_pull, mirror_resync
from tests.factories import make_host, make_meeting, make_ready_meeting
from tests.mirror.dynamo_support import TABLE, agent_writes, agent_writes_raw, ddb, ddb_calls, mirrored  # noqa: F401

# --- outbox and flush ----------------------------------------------------------------------------


def test_every_change_is_an_outbox_record_and_the_join_transition_adds_no_query(
    ddb, django_assert_num_queries, django_capture_on_commit_callbacks
):
    meeting = make_ready_meeting()
    with django_assert_num_queries(2):  # conditional UPDATE + INSERT event; the mirror adds none
        with django_capture_on_commit_callbacks(execute=True):
            assert meeting_start_on_join(meeting=meeting, role="teacher")
    event = MeetingEvent.objects.get(meeting=meeting)
    assert event.to_status == MeetingStatus.IN_PROGRESS and event.mirrored_at is None
    assert mirror_backlog().changes == 1
    assert mirror_flush().written == 1
    event.refresh_from_db()
    assert event.mirrored_at is not None
    assert mirror_backlog().changes == 0
    assert dynamo.item_get(meeting.id)["status"] == "IN_PROGRESS"


def test_ten_changes_coalesce_into_one_write(ddb, ddb_calls):
    meeting = make_meeting(status=MeetingStatus.SCHEDULED)
    meeting_transition(meeting=meeting, to_status=MeetingStatus.LAUNCHING, allowed_from={MeetingStatus.SCHEDULED})
    for number in range(9):
        meeting_record_change(meeting=meeting, reason="STAFF_EDIT", fields={"teacher_name": f"Tina {number}"})
    assert mirror_backlog().changes == 10

    result = mirror_flush()

    assert ddb_calls["UpdateItem"] == 1
    assert (result.written, result.events) == (1, 10)
    item = dynamo.item_get(meeting.id)
    assert (item["status"], item["teacher_name"], item["version"]) == ("LAUNCHING", "Tina 8", 11)
    state = MirrorState.objects.get(pk=meeting.pk)
    assert (state.mirrored_version, state.mirrored_status) == (11, "LAUNCHING")
    assert mirror_flush().claimed == 0 and ddb_calls["UpdateItem"] == 1


def test_a_newer_item_is_not_overwritten_and_staff_see_why(ddb):
    meeting = mirrored(make_meeting(status=MeetingStatus.SCHEDULED))
    agent_writes_raw(meeting.id, "version", {"N": "99"})  # e.g. a database restored from an old backup
    meeting_record_change(meeting=meeting, reason="STAFF_EDIT", fields={"teacher_name": "Older"})

    result = mirror_flush()

    assert (result.written, result.failed) == (0, 1)
    assert dynamo.item_get(meeting.id)["teacher_name"] == "Tina Teacher"
    backlog = mirror_backlog()
    assert backlog.changes == 1
    assert "newer than the database's 2" in backlog.last_error and backlog.last_error_meeting_id == meeting.id


def test_agent_writes_flow_back_through_the_services(ddb, ddb_calls):
    meeting = mirrored(make_ready_meeting())
    teacher, student = meeting.hosts.get(role="teacher"), meeting.hosts.get(role="student")
    agent_writes(meeting.id, status="HEALTHY", instance_id=teacher.instance_id)
    agent_writes(meeting.id, student_session_data="s3://recordings/student.mp4")
    ddb_calls.clear()

    result = mirror_pull()

    assert dict(ddb_calls) == {"BatchGetItem": 1}
    assert (result.healthy_marked, result.session_data) == (1, 1)
    teacher.refresh_from_db(), student.refresh_from_db(), meeting.refresh_from_db()
    assert teacher.agent_healthy_at is not None and student.agent_healthy_at is None
    assert meeting.status == MeetingStatus.HEALTHY  # the fleet's health check decides, not the pull
    assert meeting.student_session_data == "s3://recordings/student.mp4"
    event = meeting.events.latest("id")
    assert (event.reason, event.actor) == ("AGENT_SESSION_DATA", "agent")

    assert mirror_pull().session_data == 0  # idempotent: nothing new, no change recorded
    mirror_flush()  # the change that stored the data is mirrored too, leaving the agent's attributes alone
    item = dynamo.item_get(meeting.id)
    assert item["student_session_data"] == "s3://recordings/student.mp4"
    assert item["instance_id"] == teacher.instance_id
    assert item["version"] == meeting.version


def test_pull_reads_active_meetings_in_batches_of_100(ddb, ddb_calls):
    for _ in range(150):
        make_meeting(status=MeetingStatus.LAUNCHING)
    make_meeting(status=MeetingStatus.SCHEDULED)  # not active: not read
    result = mirror_pull()
    assert result.meetings == 150
    assert dict(ddb_calls) == {"BatchGetItem": 2}


def test_clobber_race_agent_writes_between_two_app_writes(ddb, ddb_calls):
    meeting = make_meeting(status=MeetingStatus.DNS_WRITTEN)
    teacher = make_host(meeting, "teacher", state="DNS_WRITTEN")
    make_host(meeting, "student", state="DNS_WRITTEN")
    meeting = mirrored(meeting)  # app write 1: status DNS_WRITTEN
    # Between the two app writes the agent reports health and uploads the recording.
    agent_writes(
        meeting.id, status="HEALTHY", instance_id=teacher.instance_id, teacher_session_data="s3://rec/teacher.mp4"
    )
    meeting_record_change(meeting=meeting, reason="DCV_LINK", fields={"teacher_name": "Tina T."})
    ddb_calls.clear()

    result = mirror_flush()  # app write 2: its status condition fails, the agent's word is ingested first

    assert result.written == 1 and result.conflicts == 1
    assert ddb_calls["UpdateItem"] == 2
    teacher.refresh_from_db(), meeting.refresh_from_db()
    assert teacher.agent_healthy_at is not None
    assert meeting.teacher_session_data == "s3://rec/teacher.mp4"
    item = dynamo.item_get(meeting.id)
    assert item["teacher_session_data"] == "s3://rec/teacher.mp4"
    assert item["instance_id"] == teacher.instance_id
    assert (item["status"], item["teacher_name"], item["version"]) == ("DNS_WRITTEN", "Tina T.", meeting.version)
    assert mirror_backlog().changes == 0

    # The agent writes again (session data only); the next app write passes and keeps it.
    agent_writes(meeting.id, student_session_data="s3://rec/student.mp4")
    meeting_transition(meeting=meeting, to_status=MeetingStatus.HEALTHY, allowed_from={MeetingStatus.DNS_WRITTEN})
    mirror_flush()
    item = dynamo.item_get(meeting.id)
    assert item["status"] == "HEALTHY"
    assert (item["teacher_session_data"], item["student_session_data"]) == (
        "s3://rec/teacher.mp4",
        "s3://rec/student.mp4",
    )


def test_odd_items_are_logged_and_skipped(ddb, caplog):
    odd_status, odd_data, good = (mirrored(make_ready_meeting()) for _ in range(3))
    agent_writes(odd_status.id, status="BANANA")
    agent_writes_raw(odd_data.id, "teacher_session_data", {"N": "42"})
    agent_writes(good.id, teacher_session_data="s3://rec/good.mp4")

    with caplog.at_level(logging.WARNING, logger="mirror.services"):
        result = mirror_pull()

    assert sorted(result.skipped) == sorted([odd_status.id, odd_data.id])
    assert f"DynamoDB item '{odd_status.id}': status 'BANANA' is not a known status; skipped" in caplog.text
    assert f"DynamoDB item '{odd_data.id}': teacher_session_data Decimal('42') is not a URL string" in caplog.text
    good.refresh_from_db(), odd_data.refresh_from_db()
    assert good.teacher_session_data == "s3://rec/good.mp4"
    assert odd_data.teacher_session_data == ""
    # The app's next write repairs the odd status (its condition fails, the write goes again).
    meeting_record_change(meeting=odd_status, reason="STAFF_EDIT", fields={"student_name": "S."})
    assert mirror_flush().failed == 0
    assert dynamo.item_get(odd_status.id)["status"] == "HEALTHY"


def test_pull_rewrites_items_the_table_lost(ddb):
    meeting = mirrored(make_ready_meeting())
    dynamo.ddb_client().delete_item(TableName=TABLE, Key={"id": {"S": meeting.id}})
    assert mirror_pull().resync == 1
    mirror_flush()
    assert dynamo.item_get(meeting.id)["status"] == "HEALTHY"


def test_outage_joins_keep_working_and_the_mirror_catches_up(ddb, client):
    meeting = mirrored(make_ready_meeting(meet_time=timezone.now() + timedelta(minutes=10)))
    other = make_meeting(status=MeetingStatus.SCHEDULED)
    ddb.stop()
    try:
        token = participant_token(meeting_id=meeting.id, role="teacher")
        response = client.get(f"/join/{meeting.id}/teacher?t={token}", HTTP_ACCEPT="application/json")
        assert response.status_code == 200 and "dcv_url" in response.json()
        # The teacher reaches the desktop: DCV's authentication starts the session, DynamoDB or not.
        desktop = urlsplit(response.json()["dcv_url"])  # the desktop link redirects with a fresh token
        dcv_url = client.get(f"{desktop.path}?{desktop.query}")["Location"]
        auth_token = parse_qs(urlsplit(dcv_url).query)["authToken"][0]
        instance_id = meeting.hosts.get(role="teacher").instance_id
        signed_in = client.post(f"/dcv/auth/{instance_id}", {"authenticationToken": auth_token})
        assert signed_in.content.startswith(b'<auth result="yes">')
        meeting.refresh_from_db()
        assert meeting.status == MeetingStatus.IN_PROGRESS
        meeting_record_change(meeting=other, reason="STAFF_EDIT", fields={"student_name": "Sue"})

        result = mirror_flush()

        assert result.unavailable and result.written == 0
        backlog = mirror_backlog()
        assert (backlog.changes, backlog.meetings) == (2, 2)
        assert backlog.oldest_age() >= timedelta(0)
        assert "Could not connect" in backlog.last_error
        assert mirror_flush().claimed <= 1  # the failed meeting backs off; the other is tried next pass
    finally:
        ddb.start()  # a fresh moto server on the same port: the table is gone
    call_command("ddb_bootstrap")
    with time_machine.travel(timezone.now() + timedelta(seconds=settings.ELEPHANT_DDB_RETRY_MAX_SECONDS + 1)):
        mirror_flush()
    assert mirror_backlog().changes == 0 and mirror_backlog().last_error == ""
    assert dynamo.item_get(meeting.id)["status"] == "IN_PROGRESS"
    assert dynamo.item_get(other.id)["student_name"] == "Sue"


# --- races around one flush ----------------------------------------------------------------------


def test_a_change_committed_while_a_conflict_is_handled_is_not_marked_written(ddb, monkeypatch):
    """After a failed condition the flush re-reads the meeting; an event read after that state
    would be marked mirrored although its change is not in the write."""
    meeting = make_meeting(status=MeetingStatus.DNS_WRITTEN)
    teacher = make_host(meeting, "teacher", state="DNS_WRITTEN")
    meeting = mirrored(meeting)
    agent_writes(meeting.id, status="HEALTHY", instance_id=teacher.instance_id)  # the next write conflicts
    meeting_record_change(meeting=meeting, reason="STAFF_EDIT", fields={"student_name": "First"})
    current_hosts = services._current_hosts
    reads = []

    def current_hosts_while_another_change_commits(meeting_ids):
        reads.append(meeting_ids)
        if len(reads) == 2:  # the conflict path's re-read: another process commits a change now
            late = Meeting.objects.get(pk=meeting.id)
            meeting_record_change(meeting=late, reason="LATE_EDIT", fields={"student_name": "Second"})
        return current_hosts(meeting_ids)

    monkeypatch.setattr(services, "_current_hosts", current_hosts_while_another_change_commits)
    assert mirror_flush().conflicts == 1
    monkeypatch.undo()

    late_event = MeetingEvent.objects.get(meeting=meeting, reason="LATE_EDIT")
    if late_event.mirrored_at is not None:
        assert dynamo.item_get(meeting.id)["student_name"] == "Second", "change marked mirrored but never written"
    mirror_flush()
    assert dynamo.item_get(meeting.id)["student_name"] == "Second"
    assert mirror_backlog().changes == 0


def test_a_claimed_meeting_another_flush_finished_is_released(ddb, monkeypatch):
    """Between picking candidates and claiming them, a concurrent flush may write a meeting and
    mark its events; the claim must not then hold the meeting's next change for the lease."""
    meeting = make_meeting(status=MeetingStatus.SCHEDULED)
    mirror_resync(meeting_ids=[meeting.id], actor="test")
    claim = services._claim

    def claim_then_another_flush_finishes(**kwargs):
        claimed = claim(**kwargs)
        MeetingEvent.objects.filter(meeting_id__in=claimed).update(mirrored_at=timezone.now())
        return claimed

    monkeypatch.setattr(services, "_claim", claim_then_another_flush_finishes)
    assert mirror_flush().written == 0
    monkeypatch.undo()

    meeting_record_change(meeting=meeting, reason="STAFF_EDIT", fields={"student_name": "Sue"})
    assert mirror_flush().written == 1
    assert dynamo.item_get(meeting.id)["student_name"] == "Sue"


def _second_flush_meanwhile(meeting: Meeting, name: str) -> None:
    """What a second worker does while a first one is between reading a meeting and recording its
    write: a resync (admin action, pull) clears the first claim, a change commits, the second
    worker flushes the newer state."""
    mirror_resync(meeting_ids=[meeting.id], actor="test")
    meeting_record_change(
        meeting=Meeting.objects.get(pk=meeting.id), reason="STAFF_EDIT", fields={"student_name": name}
    )
    assert mirror_flush().written == 1


def test_a_flush_overtaken_by_a_newer_flush_is_not_an_error(ddb, monkeypatch):

    meeting = mirrored(make_meeting(status=MeetingStatus.SCHEDULED))
    meeting_record_change(meeting=meeting, reason="STAFF_EDIT", fields={"student_name": "First"})
    item_write = dynamo.item_write
    overtaken = []

    def item_write_after_a_newer_flush(**kwargs):
        if not overtaken:
            overtaken.append(True)
            _second_flush_meanwhile(meeting, "Second")
        return item_write(**kwargs)

    monkeypatch.setattr(dynamo, "item_write", item_write_after_a_newer_flush)
    result = mirror_flush()
    monkeypatch.undo()

    assert result.failed == 0
    meeting.refresh_from_db()
    state = MirrorState.objects.get(pk=meeting.pk)
    assert (state.last_error, state.attempts, state.next_attempt_at) == ("", 0, None)
    assert (state.mirrored_version, dynamo.item_get(meeting.id)["version"]) == (meeting.version, meeting.version)
    assert dynamo.item_get(meeting.id)["student_name"] == "Second"
    assert mirror_backlog().changes == 0


def test_a_late_success_record_does_not_roll_back_what_was_mirrored(ddb, monkeypatch):
    meeting = mirrored(make_meeting(status=MeetingStatus.SCHEDULED))
    meeting_transition(meeting=meeting, to_status=MeetingStatus.LAUNCHING, allowed_from={MeetingStatus.SCHEDULED})
    record_success = services._record_success
    late = []

    def record_after_a_newer_flush(**kwargs):
        if not late:
            late.append(True)
            meeting_transition(
                meeting=Meeting.objects.get(pk=meeting.id),
                to_status=MeetingStatus.LAUNCHED,
                allowed_from={MeetingStatus.LAUNCHING},
            )
            _second_flush_meanwhile(meeting, "Second")
        return record_success(**kwargs)

    monkeypatch.setattr(services, "_record_success", record_after_a_newer_flush)
    mirror_flush()
    monkeypatch.undo()

    meeting.refresh_from_db()
    state = MirrorState.objects.get(pk=meeting.pk)
    assert (state.mirrored_version, state.mirrored_status) == (meeting.version, MeetingStatus.LAUNCHED)
    assert dynamo.item_get(meeting.id)["status"] == "LAUNCHED"


# --- the mirror's own state, its cost and its retry schedule -------------------------------------


def _flush_and_pull_queries(count: int) -> tuple[int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    meetings = [make_ready_meeting() for _ in range(count)]
    mirror_resync(meeting_ids=[meeting.id for meeting in meetings], actor="test")
    with CaptureQueriesContext(connection) as flush:
        assert mirror_flush().written == count
    with CaptureQueriesContext(connection) as pull:
        assert mirror_pull().meetings >= count
    return len(flush), len(pull)


def test_sweeps_cost_the_same_queries_whatever_the_number_of_meetings(ddb):
    """The claim and the reads are one query each; only each written meeting's success record
    (one short transaction) grows with the meetings. The pull is two queries, always."""
    flush_one, pull_one = _flush_and_pull_queries(1)
    MeetingEvent.objects.all().delete()
    flush_five, pull_five = _flush_and_pull_queries(5)
    per_meeting = (flush_five - flush_one) / 4
    assert per_meeting <= 4  # savepoint, events UPDATE, state UPDATE, release: as before the move
    # Picking, claim (savepoint, lock, lease, release), events, meetings with state, hosts; plus,
    # for meetings never flushed, their state rows (savepoint, one INSERT, release).
    assert flush_one - per_meeting <= 8 + 3
    assert pull_one == pull_five == 2  # active meetings with their state, current hosts

    mirror_resync(meeting_ids=MirrorState.objects.values_list("pk", flat=True), actor="test")
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as again:
        assert mirror_flush().written == 6
    assert len(again) == 8 + 6 * per_meeting  # state rows exist: as many queries as before the move


def test_state_rows_come_with_the_first_flush_and_go_with_the_meeting(ddb):
    meeting = make_meeting(status=MeetingStatus.SCHEDULED)
    mirror_resync(meeting_ids=[meeting.id], actor="test")
    assert not MirrorState.objects.filter(pk=meeting.pk).exists()  # scheduling writes none

    mirror_flush()

    state = MirrorState.objects.get(pk=meeting.pk)
    assert (state.mirrored_version, state.mirrored_status, state.next_attempt_at) == (1, "SCHEDULED", None)
    meeting.delete()
    assert not MirrorState.objects.exists()


def test_retry_schedule_doubles_with_half_to_full_jitter(settings):
    settings.ELEPHANT_DDB_RETRY_BASE_SECONDS = 5
    settings.ELEPHANT_DDB_RETRY_MAX_SECONDS = 300
    for attempts, ceiling in ((1, 5), (2, 10), (3, 20), (7, 300), (30, 300)):
        delays = [services.backoff_seconds(attempts) for _ in range(200)]
        assert all(ceiling * 0.5 <= delay <= ceiling for delay in delays), attempts


def test_a_missing_table_pauses_the_flush_and_keeps_the_change(ddb):
    meeting = make_meeting(status=MeetingStatus.SCHEDULED)
    mirror_resync(meeting_ids=[meeting.id], actor="test")
    dynamo.ddb_client().delete_table(TableName=TABLE)

    result = mirror_flush()

    assert result.unavailable and (result.written, result.failed) == (0, 1)
    state = MirrorState.objects.get(pk=meeting.pk)
    assert state.attempts == 1 and state.next_attempt_at > timezone.now()
    assert "ResourceNotFoundException" in state.last_error
    assert mirror_backlog().changes == 1
