"""The DynamoDB table ``elephant-meetings``: item mapping and the boto3 calls (ARCHITECTURE.md section 4).

Attribute names and formats are a contract with the agents baked into the host images. The app
owns every attribute but ``teacher_session_data``, ``student_session_data`` and ``instance_id``,
which only the agents write; ``status`` is shared (agents may write ``HEALTHY``). App writes are
UpdateItem ``SET``/``REMOVE`` of app-owned attributes, guarded by ``version`` and by the status
the app itself last wrote (see ``mirror.services`` for the outbox around them).

Errors: botocore retries throttling and faults as ``elephant.aws`` configures it for every
client; what outlasts that, and a table that is missing or not ready, is ``DynamoUnavailable``
(the flush pauses, the outbox keeps everything and retries on its own schedule). Nothing here
sleeps.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from elephant.aws import AwsTransientError, aws_client, aws_error, error_code, is_transient
from meetings.links import desktop_room_link
from meetings.models import Meeting, MeetingStatus, Role

logger = logging.getLogger(__name__)

APP_ATTRIBUTES = (
    "teacher_name",
    "student_name",
    "teacher_email",
    "meet_time",
    "created_at",
    "status",
    "jitsi_url",
    "teacher_ec2_id",
    "student_ec2_id",
    "teacher_ec2_link",
    "student_ec2_link",
    "termination_reason",
    "version",
)
AGENT_ATTRIBUTES = ("teacher_session_data", "student_session_data", "instance_id")
# What the pull reads back: the agents' attributes plus the shared status and the guard.
PULL_ATTRIBUTES = ("id", "status", "version", *AGENT_ATTRIBUTES)
BATCH_GET_LIMIT = 100

# Besides what elephant.aws counts as transient, the mirror's own "retry later": a table that is
# missing (bootstrap it, then the outbox catches up) or still being created or changed.
TABLE_NOT_READY_CODES = frozenset({"ResourceNotFoundException", "ResourceInUseException"})
# BatchGetItem may answer part of a request (UnprocessedKeys) when throttled: ask again at once
# this many times (botocore has already backed off on throttling errors), then give up.
BATCH_GET_ROUNDS = 3

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


class DynamoUnavailable(AwsTransientError):
    """DynamoDB is unreachable, throttling or the table is missing; retry later, drop nothing."""


class WriteConflict(Exception):
    """The write's condition failed; ``item`` is the item as it stood (raw attribute values)."""

    def __init__(self, item: dict | None):
        super().__init__("condition failed")
        self.item = item or {}


class OddItem(ValueError):
    """An item with attributes of the wrong type or an unknown status."""


@dataclass(frozen=True)
class AgentReport:
    """The agent-owned attributes of an item, validated."""

    meeting_id: str
    status: str | None
    instance_id: str | None
    session_data: dict[str, str]
    version: int | None


# --- client ------------------------------------------------------------------------------------


def ddb_client():
    """The DynamoDB client, from the project's one client factory (same AWS settings and retry policy)."""
    return aws_client("dynamodb", timeout=settings.ELEPHANT_DDB_TIMEOUT_SECONDS)


def _unavailable(exc: Exception) -> bool:
    """Retry later: transient for elephant.aws, the table not ready, or any botocore failure
    (unreachable endpoint, missing credentials): the outbox waits either way, dropping nothing."""
    if isinstance(exc, ClientError):
        return is_transient(exc) or error_code(exc) in TABLE_NOT_READY_CODES
    return isinstance(exc, BotoCoreError)


def _call(operation: str, **kwargs):
    try:
        return getattr(ddb_client(), operation)(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        if _unavailable(exc):
            error = aws_error(exc, operation=operation)
            raise DynamoUnavailable(str(error), code=error.code, operation=operation) from exc
        raise


# --- mapping -----------------------------------------------------------------------------------


def iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def meeting_item(*, meeting: Meeting, hosts: Mapping[str, object]) -> dict[str, str | int]:
    """The app-owned attributes of ``meeting``'s item; absent values are left out.

    ``hosts`` maps a role to its current Host (the newest generation), if any.
    """
    item: dict[str, str | int] = {
        "id": meeting.id,
        "teacher_name": meeting.teacher_name,
        "student_name": meeting.student_name,
        "teacher_email": meeting.teacher_email,
        "meet_time": iso_utc(meeting.meet_time),
        "created_at": iso_utc(meeting.created_at),
        "status": meeting.status,
        "jitsi_url": desktop_room_link(meeting),
        "termination_reason": meeting.termination_reason,
        "version": meeting.version,
    }
    for role in Role.values:
        host = hosts.get(role)
        item[f"{role}_ec2_id"] = getattr(host, "instance_id", "")
        item[f"{role}_ec2_link"] = getattr(host, "dcv_link", "")
    return {name: value for name, value in item.items() if value not in ("", None)}


def item_write(*, item: Mapping[str, str | int], expected_status: dict | None) -> None:
    """UpdateItem: SET the app-owned attributes in ``item``, REMOVE the app-owned ones it lacks.

    Lands only where the item is missing, or where its version is not newer than ours and its
    status is ``expected_status`` (a raw attribute value: what the app last wrote; None for
    "no status yet"). Raises WriteConflict with the item as it stood when the condition fails.
    Agent-owned attributes are never named, so they survive every write.
    """
    names = {"#id": "id", "#version": "version", "#status": "status"}
    values: dict[str, dict] = {}
    sets, removes = [], []
    for index, attribute in enumerate(APP_ATTRIBUTES):
        placeholder = f"#a{index}"
        names[placeholder] = attribute
        if attribute in item:
            values[f":a{index}"] = _serializer.serialize(item[attribute])
            sets.append(f"{placeholder} = :a{index}")
        else:
            removes.append(placeholder)
    update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
    values[":version"] = _serializer.serialize(item["version"])
    values[":number"] = {"S": "N"}
    # A version the app did not write (wrong type, hand-edited) does not block the repair.
    version_ok = "(attribute_not_exists(#version) OR NOT attribute_type(#version, :number) OR #version <= :version)"
    if expected_status is None:
        status_ok = "attribute_not_exists(#status)"
    else:
        values[":expected"] = expected_status
        status_ok = "#status = :expected"
    try:
        _call(
            "update_item",
            TableName=settings.ELEPHANT_DDB_TABLE,
            Key={"id": {"S": item["id"]}},
            UpdateExpression=update,
            ConditionExpression=f"attribute_not_exists(#id) OR ({version_ok} AND {status_ok})",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            raise WriteConflict(exc.response.get("Item")) from exc
        raise


def status_value(status: str) -> dict | None:
    """The raw attribute value of a status the app wrote ("" = never wrote one)."""
    return {"S": status} if status else None


def items_get(meeting_ids: Iterable[str], *, attributes: Iterable[str] = PULL_ATTRIBUTES) -> dict[str, dict]:
    """Strongly consistent BatchGetItem (100 keys per call); raw items by id, missing ones absent.

    Keys DynamoDB leaves unprocessed are asked for again at once, up to BATCH_GET_ROUNDS calls
    per batch; keys still left raise DynamoUnavailable, and the pull runs again on its next beat.
    No sleep in a worker task: botocore has already backed off on the throttling behind them.
    """
    ids = list(dict.fromkeys(meeting_ids))
    names = {f"#p{index}": name for index, name in enumerate(attributes)}
    found: dict[str, dict] = {}
    for start in range(0, len(ids), BATCH_GET_LIMIT):
        request = {
            settings.ELEPHANT_DDB_TABLE: {
                "Keys": [{"id": {"S": meeting_id}} for meeting_id in ids[start : start + BATCH_GET_LIMIT]],
                "ProjectionExpression": ", ".join(names),
                "ExpressionAttributeNames": names,
                # An eventually consistent read just after a flush may return the previous version,
                # which the pull would take for a lost write and resync.
                "ConsistentRead": True,
            }
        }
        for _ in range(BATCH_GET_ROUNDS):
            response = _call("batch_get_item", RequestItems=request)
            for item in response.get("Responses", {}).get(settings.ELEPHANT_DDB_TABLE, []):
                found[item["id"]["S"]] = item
            request = response.get("UnprocessedKeys") or {}
            if not request:
                break
        else:
            left = len(request[settings.ELEPHANT_DDB_TABLE]["Keys"])
            raise DynamoUnavailable(
                f"batch_get_item: {left} key(s) unprocessed after {BATCH_GET_ROUNDS} calls",
                code="UnprocessedKeys",
                operation="batch_get_item",
            )
    return found


def item_get(meeting_id: str) -> dict | None:
    """The whole item, deserialized (for commands, tests and the benchmark)."""
    response = _call(
        "get_item", TableName=settings.ELEPHANT_DDB_TABLE, Key={"id": {"S": meeting_id}}, ConsistentRead=True
    )
    item = response.get("Item")
    return item_decode(item) if item else None


def item_decode(item: Mapping[str, dict]) -> dict:
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def agent_report(item: Mapping[str, dict]) -> AgentReport:
    """Validate the agent-owned attributes (plus status and version) of a raw item; OddItem if odd."""
    decoded = item_decode(item)
    meeting_id = decoded.get("id")
    problems = []
    status = decoded.get("status")
    if status is not None and (not isinstance(status, str) or status not in MeetingStatus.values):
        problems.append(f"status {status!r} is not a known status")
    instance_id = decoded.get("instance_id")
    if instance_id is not None and not (isinstance(instance_id, str) and 0 < len(instance_id) <= 32):
        problems.append(f"instance_id {instance_id!r} is not an instance id")
    session_data = {}
    for role in Role.values:
        value = decoded.get(f"{role}_session_data")
        if value is None:
            continue
        if not isinstance(value, str) or not value or len(value) > 1024:
            problems.append(f"{role}_session_data {value!r} is not a URL string")
        else:
            session_data[role] = value
    version = decoded.get("version")
    if version is not None and not (isinstance(version, Decimal) and version == version.to_integral_value()):
        problems.append(f"version {version!r} is not a number")
    if problems:
        raise OddItem(f"DynamoDB item {meeting_id!r}: " + "; ".join(problems))
    return AgentReport(
        meeting_id=meeting_id,
        status=status,
        instance_id=instance_id,
        session_data=session_data,
        version=int(version) if version is not None else None,
    )


# --- table -------------------------------------------------------------------------------------


def table_bootstrap() -> str:
    """Create the table (on-demand, streams with new and old images) where missing. Idempotent."""
    client = ddb_client()
    table = settings.ELEPHANT_DDB_TABLE
    try:
        description = client.describe_table(TableName=table)["Table"]
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise
    else:
        stream = description.get("StreamSpecification") or {}
        if stream.get("StreamEnabled") and stream.get("StreamViewType") == "NEW_AND_OLD_IMAGES":
            return f"table {table} exists"
        if stream.get("StreamEnabled"):
            return f"table {table} exists (stream view type {stream.get('StreamViewType')}; left as it is)"
        client.update_table(
            TableName=table, StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
        )
        return f"table {table} exists; streams enabled"
    client.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
    return f"table {table} created"
