"""The item mapping and the table, against a real moto server over HTTP."""

# ruff: noqa: F811  (the fixtures imported from dynamo_support are used as arguments)

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.core.management import call_command

from fleet.models import HostState
from meetings.links import desktop_room_link
from meetings.models import MeetingStatus
from meetings.services import meeting_record_change
from mirror import dynamo
from mirror.services import mirror_flush, mirror_resync
from tests.factories import make_host, make_meeting
from tests.mirror.dynamo_support import ddb, ddb_calls  # noqa: F401

MEET_TIME = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
CREATED = datetime(2026, 11, 21, 14, 0, 7, 123456, tzinfo=UTC)

# Which hosts exist at each status: (instance id known, DCV link written).
HOSTS_AT = {
    MeetingStatus.SCHEDULED: None,
    MeetingStatus.CANCELLED: None,
    MeetingStatus.LAUNCHING: None,
    MeetingStatus.FAILED: None,
    MeetingStatus.LAUNCHED: (True, False),
    MeetingStatus.DNS_WRITTEN: (True, True),
    MeetingStatus.HEALTHY: (True, True),
    MeetingStatus.IN_PROGRESS: (True, True),
    MeetingStatus.TERMINATED: (True, True),
}
REASON_AT = {MeetingStatus.TERMINATED: "SUCCESS", MeetingStatus.CANCELLED: "CANCELLED", MeetingStatus.FAILED: ""}


def raw_item(meeting_id: str) -> dict:
    return dynamo.ddb_client().get_item(TableName="elephant-meetings", Key={"id": {"S": meeting_id}})["Item"]


@pytest.mark.parametrize("status", MeetingStatus.values)
def test_exact_item_at_each_status(ddb, status):
    with time_machine.travel(CREATED, tick=False):
        meeting = make_meeting(
            id="abcdefgh12345678",
            status=status,
            meet_time=MEET_TIME,
            teacher_email="tina@example.com",
            termination_reason=REASON_AT.get(status, ""),
        )
    hosts = HOSTS_AT[status]
    if hosts:
        for role, instance_id in (("teacher", "i-0123456789abcdef0"), ("student", "i-0fedcba9876543210")):
            link = f"https://{instance_id}.desktops.example.com:8443" if hosts[1] else ""
            make_host(meeting, role, instance_id=instance_id, dcv_link=link, state=HostState.RUNNING)
    mirror_resync(meeting_ids=[meeting.id], actor="test")
    assert mirror_flush().written == 1

    expected = {
        "id": {"S": "abcdefgh12345678"},
        "teacher_name": {"S": "Tina Teacher"},
        "student_name": {"S": "Stu Student"},
        "teacher_email": {"S": "tina@example.com"},
        "meet_time": {"S": "2026-11-21T15:00:00Z"},
        "created_at": {"S": "2026-11-21T14:00:07Z"},
        "status": {"S": status},
        # The room link with its own credential: this meeting only, until its hard stop (meetings.tokens).
        "jitsi_url": {"S": desktop_room_link(meeting)},
        "version": {"N": "1"},
    }
    if REASON_AT.get(status):
        expected["termination_reason"] = {"S": REASON_AT[status]}
    if hosts:
        expected["teacher_ec2_id"] = {"S": "i-0123456789abcdef0"}
        expected["student_ec2_id"] = {"S": "i-0fedcba9876543210"}
    if hosts and hosts[1]:
        expected["teacher_ec2_link"] = {"S": "https://i-0123456789abcdef0.desktops.example.com:8443"}
        expected["student_ec2_link"] = {"S": "https://i-0fedcba9876543210.desktops.example.com:8443"}
    assert raw_item(meeting.id) == expected  # nothing more: no empty strings, no agent attributes


def test_current_host_is_the_newest_generation(ddb):
    meeting = make_meeting(status=MeetingStatus.HEALTHY)
    make_host(meeting, "teacher", instance_id="i-00000000000000001", generation=1, state=HostState.UNHEALTHY)
    make_host(meeting, "teacher", instance_id="i-00000000000000002", generation=2)
    mirror_resync(meeting_ids=[meeting.id], actor="test")
    mirror_flush()
    item = dynamo.item_get(meeting.id)
    assert item["teacher_ec2_id"] == "i-00000000000000002"
    assert "student_ec2_id" not in item


def test_values_that_become_absent_are_removed_but_agent_attributes_stay(ddb):
    meeting = make_meeting(status=MeetingStatus.SCHEDULED, teacher_email="tina@example.com")
    mirror_resync(meeting_ids=[meeting.id], actor="test")
    mirror_flush()
    # The agent's attributes, written by the agent (never by the app).
    dynamo.ddb_client().update_item(
        TableName="elephant-meetings",
        Key={"id": {"S": meeting.id}},
        UpdateExpression="SET teacher_session_data = :s, instance_id = :i",
        ExpressionAttributeValues={":s": {"S": "s3://rec/t.mp4"}, ":i": {"S": "i-0abc"}},
    )
    meeting_record_change(meeting=meeting, reason="STAFF_EDIT", fields={"teacher_email": ""})
    mirror_flush()
    item = dynamo.item_get(meeting.id)
    assert "teacher_email" not in item
    assert item["teacher_session_data"] == "s3://rec/t.mp4"
    assert item["instance_id"] == "i-0abc"
    assert item["version"] == Decimal(2)


def test_agent_scan_finds_its_meeting(ddb):
    """The host image's read: a Scan filtered on teacher_ec2_id / student_ec2_id."""
    mine = make_meeting(status=MeetingStatus.HEALTHY)
    make_host(mine, "teacher", instance_id="i-0aaaaaaaaaaaaaaaa")
    make_host(mine, "student", instance_id="i-0bbbbbbbbbbbbbbbb")
    other = make_meeting(status=MeetingStatus.HEALTHY)
    make_host(other, "teacher", instance_id="i-0cccccccccccccccc")
    make_host(other, "student", instance_id="i-0dddddddddddddddd")
    mirror_resync(meeting_ids=[mine.id, other.id], actor="test")
    mirror_flush()

    for instance_id, role in (("i-0aaaaaaaaaaaaaaaa", "teacher"), ("i-0bbbbbbbbbbbbbbbb", "student")):
        found = dynamo.ddb_client().scan(
            TableName="elephant-meetings",
            FilterExpression="teacher_ec2_id = :me OR student_ec2_id = :me",
            ExpressionAttributeValues={":me": {"S": instance_id}},
        )["Items"]
        assert [item["id"]["S"] for item in found] == [mine.id]
        assert found[0][f"{role}_ec2_id"]["S"] == instance_id
        assert found[0]["jitsi_url"]["S"].startswith(f"https://elephant.example.com/room/{mine.id}?k=")
        assert found[0][f"{role}_ec2_link"]["S"].startswith(f"https://{instance_id}.")


def test_an_older_write_never_lands_over_a_newer_one(ddb):
    meeting = make_meeting(status=MeetingStatus.LAUNCHING)
    newer = dynamo.meeting_item(meeting=meeting, hosts={}) | {"version": 7}
    dynamo.item_write(item=newer, expected_status=None)
    older = newer | {"version": 6, "status": "SCHEDULED"}
    with pytest.raises(dynamo.WriteConflict) as conflict:
        dynamo.item_write(item=older, expected_status={"S": "LAUNCHING"})
    assert conflict.value.item["version"] == {"N": "7"}
    assert dynamo.item_get(meeting.id)["status"] == "LAUNCHING"
    # The same version again (a resync) is allowed and changes nothing.
    dynamo.item_write(item=newer, expected_status={"S": "LAUNCHING"})


def test_a_status_the_app_did_not_write_fails_the_condition(ddb):
    meeting = make_meeting(status=MeetingStatus.DNS_WRITTEN)
    item = dynamo.meeting_item(meeting=meeting, hosts={})
    dynamo.item_write(item=item, expected_status=None)
    dynamo.ddb_client().update_item(
        TableName="elephant-meetings",
        Key={"id": {"S": meeting.id}},
        UpdateExpression="SET #s = :h",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":h": {"S": "HEALTHY"}},
    )
    with pytest.raises(dynamo.WriteConflict) as conflict:
        dynamo.item_write(item=item | {"version": 2}, expected_status={"S": "DNS_WRITTEN"})
    assert conflict.value.item["status"] == {"S": "HEALTHY"}


def test_bootstrap_creates_the_table_once(ddb, capsys):
    dynamo.ddb_client().delete_table(TableName="elephant-meetings")
    call_command("ddb_bootstrap")
    call_command("ddb_bootstrap")
    out = capsys.readouterr().out
    assert "table elephant-meetings created" in out
    assert "table elephant-meetings exists" in out
    table = dynamo.ddb_client().describe_table(TableName="elephant-meetings")["Table"]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}


@pytest.mark.parametrize(
    "attributes, problem",
    [
        ({"status": {"N": "3"}}, "status Decimal('3') is not a known status"),
        ({"status": {"S": "BANANA"}}, "status 'BANANA' is not a known status"),
        ({"teacher_session_data": {"N": "1"}}, "teacher_session_data Decimal('1') is not a URL string"),
        ({"instance_id": {"BOOL": True}}, "instance_id True is not an instance id"),
        ({"version": {"S": "x"}}, "version 'x' is not a number"),
    ],
)
def test_odd_items_are_named_clearly(attributes, problem):
    with pytest.raises(dynamo.OddItem, match=problem.replace("(", r"\(").replace(")", r"\)")):
        dynamo.agent_report({"id": {"S": "abcdefgh12345678"}, **attributes})


def test_the_pull_reads_consistently(ddb):
    """An eventually consistent read just after a write can return the previous version (or no
    item), which the pull would take for a lost write and resync."""
    requests = []

    def keep(params, **kwargs):
        requests.append(params)

    events = dynamo.ddb_client().meta.events
    events.register("before-parameter-build.dynamodb.BatchGetItem", keep, unique_id="test-consistent")
    try:
        dynamo.items_get(["abcdefgh12345678"])
    finally:
        events.unregister("before-parameter-build.dynamodb.BatchGetItem", unique_id="test-consistent")
    assert [request["RequestItems"]["elephant-meetings"]["ConsistentRead"] for request in requests] == [True]


def test_unprocessed_keys_are_asked_again_at_once_then_left_to_the_next_pull(ddb, monkeypatch):
    """No sleep in a worker task: a bounded number of immediate calls, then DynamoUnavailable."""
    import time

    calls = []

    def batch_get_item_never_done(operation, **kwargs):
        calls.append(kwargs["RequestItems"])
        return {"Responses": {}, "UnprocessedKeys": kwargs["RequestItems"]}

    monkeypatch.setattr(dynamo, "_call", batch_get_item_never_done)
    monkeypatch.setattr(time, "sleep", lambda seconds: pytest.fail("slept in items_get"))
    with pytest.raises(dynamo.DynamoUnavailable, match="1 key\\(s\\) unprocessed"):
        dynamo.items_get(["abcdefgh12345678"])
    assert len(calls) == dynamo.BATCH_GET_ROUNDS


def test_unprocessed_keys_answered_on_the_second_call(ddb, monkeypatch):
    call = dynamo._call
    answers = []

    def first_call_leaves_the_keys(operation, **kwargs):
        if not answers:
            answers.append(True)
            return {"Responses": {}, "UnprocessedKeys": kwargs["RequestItems"]}
        return call(operation, **kwargs)

    meeting = make_meeting(status=MeetingStatus.SCHEDULED)
    mirror_resync(meeting_ids=[meeting.id], actor="test")
    mirror_flush()
    monkeypatch.setattr(dynamo, "_call", first_call_leaves_the_keys)
    assert list(dynamo.items_get([meeting.id])) == [meeting.id]


@pytest.mark.parametrize(
    "code, unavailable",
    [
        ("ThrottlingException", True),
        ("ProvisionedThroughputExceededException", True),
        ("InternalServerError", True),
        ("ResourceNotFoundException", True),  # the mirror's own: bootstrap, then catch up
        ("ValidationException", False),
    ],
)
def test_errors_classified_by_the_one_policy(code, unavailable):
    from botocore.exceptions import ClientError

    error = ClientError({"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": 400}}, "Op")
    assert dynamo._unavailable(error) is unavailable
