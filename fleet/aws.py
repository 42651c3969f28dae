"""The fleet's AWS layer: typed functions over EC2 and Route 53.

Clients, the retry policy and the error classes come from ``elephant.aws`` (one policy for
every app): botocore retries throttling and transient faults; what outlasts it is raised as
``AwsTransientError`` so the task retries later. Errors that no retry can fix (missing or
wrong configuration, missing permissions) are ``AwsConfigError``, so callers fail the meeting
instead of looping.
"""

import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError
from django.conf import settings

from elephant.aws import (  # noqa: F401  re-exported: the fleet's callers catch these as aws.*
    CAPACITY_CODES,
    AwsCapacityError,
    AwsConfigError,
    AwsError,
    AwsTransientError,
    aws_call,
    aws_client,
    aws_clients_reset,
    aws_error,
)

logger = logging.getLogger(__name__)

PROJECT_TAG = "Elephant"
DESCRIBE_BATCH = 1000  # DescribeInstances takes up to 1,000 instance ids per call.
STATUS_BATCH = 100  # DescribeInstanceStatus takes up to 100.
TERMINATE_BATCH = 500
LIVE_EC2_STATES = ("pending", "running", "stopping", "stopped")
NOT_FOUND_CODE = "InvalidInstanceID.NotFound"
_INSTANCE_ID = re.compile(r"i-[0-9a-f]+")


@dataclass(frozen=True)
class Instance:
    instance_id: str
    state: str
    instance_type: str = ""
    availability_zone: str = ""
    public_address: str = ""
    private_address: str = ""
    launch_time: datetime | None = None
    tags: dict[str, str] | None = None

    @property
    def address(self) -> str:
        return self.public_address or self.private_address

    @classmethod
    def from_api(cls, data: dict) -> "Instance":
        return cls(
            instance_id=data["InstanceId"],
            state=data.get("State", {}).get("Name", ""),
            instance_type=data.get("InstanceType", ""),
            availability_zone=data.get("Placement", {}).get("AvailabilityZone", ""),
            public_address=data.get("PublicIpAddress", ""),
            private_address=data.get("PrivateIpAddress", ""),
            launch_time=data.get("LaunchTime"),
            tags={tag["Key"]: tag["Value"] for tag in data.get("Tags", [])},
        )


def ec2_client():
    return aws_client("ec2")


def route53_client():
    return aws_client("route53")


def classify_client_error(exc: ClientError, *, operation: str) -> AwsError:
    return aws_error(exc, operation=operation)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- EC2 --------------------------------------------------------------------------------------------
def instance_tags(*, meeting_id: str, role: str, generation: int) -> list[dict[str, str]]:
    return [
        {"Key": "Name", "Value": f"{meeting_id}_{role}"},
        {"Key": "MeetingID", "Value": meeting_id},
        {"Key": "Role", "Value": role},
        {"Key": "Generation", "Value": str(generation)},
        {"Key": "Project", "Value": PROJECT_TAG},
    ]


def client_token(*, meeting_id: str, role: str, generation: int) -> str:
    # The first host keeps the documented token; a replacement needs its own, or EC2 would
    # answer with the instance being replaced.
    return f"{meeting_id}-{role}" if generation == 1 else f"{meeting_id}-{role}-g{generation}"


def _describe(**params: Any) -> list[Instance]:
    client = ec2_client()
    found: list[Instance] = []
    while True:
        page = aws_call(client.describe_instances, **params)
        for reservation in page.get("Reservations", []):
            found.extend(Instance.from_api(item) for item in reservation.get("Instances", []))
        token = page.get("NextToken")
        if not token:
            return found
        params = {**params, "NextToken": token}


def instance_find_live(*, meeting_id: str, role: str, generation: int) -> Instance | None:
    """The live instance already launched for this host, if any (the idempotency guard)."""
    filters = [
        {"Name": "tag:MeetingID", "Values": [meeting_id]},
        {"Name": "tag:Role", "Values": [role]},
        {"Name": "tag:Project", "Values": [PROJECT_TAG]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]},
    ]
    try:
        candidates = _describe(Filters=filters)
    except ClientError as exc:
        raise classify_client_error(exc, operation="DescribeInstances") from exc
    # Instances from before generations were tagged count as generation 1.
    matching = [i for i in candidates if (i.tags or {}).get("Generation", "1") == str(generation)]
    matching.sort(key=lambda i: (i.launch_time is None, i.launch_time))
    return matching[0] if matching else None


def _launch_specifications() -> list[dict[str, Any]]:
    """Where to try, in order: each subnet, else each availability zone, else anywhere."""
    groups = settings.ELEPHANT_SECURITY_GROUP_IDS
    if settings.ELEPHANT_SUBNET_IDS:
        specs = []
        for subnet in settings.ELEPHANT_SUBNET_IDS:
            spec: dict[str, Any] = {"SubnetId": subnet}
            if groups:
                spec["SecurityGroupIds"] = list(groups)
            specs.append(spec)
        return specs
    base: dict[str, Any] = {"SecurityGroupIds": list(groups)} if groups else {}
    if settings.ELEPHANT_AVAILABILITY_ZONES:
        return [{**base, "Placement": {"AvailabilityZone": zone}} for zone in settings.ELEPHANT_AVAILABILITY_ZONES]
    return [base]


def launch_config_problems() -> list[str]:
    """What is missing from the launch configuration (empty when a launch can be tried)."""
    problems = []
    if not settings.ELEPHANT_AMI_ID:
        problems.append("ELEPHANT_AMI_ID is not set")
    if not settings.ELEPHANT_INSTANCE_TYPES:
        problems.append("ELEPHANT_INSTANCE_TYPES is empty")
    if not settings.AWS_REGION:
        problems.append("AWS_REGION is not set")
    return problems


def instance_run(*, meeting_id: str, role: str, generation: int) -> Instance:
    """RunInstances for one host, falling back through instance types and placements on capacity errors."""
    problems = launch_config_problems()
    if problems:
        raise AwsConfigError("; ".join(problems), code="Configuration", operation="RunInstances")
    client = ec2_client()
    base: dict[str, Any] = {
        "ImageId": settings.ELEPHANT_AMI_ID,
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": client_token(meeting_id=meeting_id, role=role, generation=generation),
        "TagSpecifications": [
            {
                "ResourceType": "instance",
                "Tags": instance_tags(meeting_id=meeting_id, role=role, generation=generation),
            },
            {"ResourceType": "volume", "Tags": instance_tags(meeting_id=meeting_id, role=role, generation=generation)},
        ],
        "BlockDeviceMappings": [
            {
                "DeviceName": "/dev/sda1",
                "Ebs": {
                    "VolumeSize": settings.ELEPHANT_VOLUME_SIZE_GB,
                    "VolumeType": "gp3",
                    "DeleteOnTermination": True,
                },
            }
        ],
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {"HttpTokens": "required"},
    }
    if settings.ELEPHANT_KEY_NAME:
        base["KeyName"] = settings.ELEPHANT_KEY_NAME
    if settings.ELEPHANT_INSTANCE_PROFILE:
        profile = settings.ELEPHANT_INSTANCE_PROFILE
        base["IamInstanceProfile"] = {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}
    capacity_errors = []
    for instance_type in settings.ELEPHANT_INSTANCE_TYPES:
        for placement in _launch_specifications():
            params = {**base, **placement, "InstanceType": instance_type}
            try:
                response = aws_call(client.run_instances, **params)
            except ClientError as exc:
                error = classify_client_error(exc, operation="RunInstances")
                if isinstance(error, AwsCapacityError):
                    where = placement.get("SubnetId") or placement.get("Placement", {}).get("AvailabilityZone", "")
                    logger.warning("no capacity for %s %s: %s; trying the next", instance_type, where, error.code)
                    capacity_errors.append(f"{instance_type} {where}".strip())
                    continue
                raise error from exc
            instance = Instance.from_api(response["Instances"][0])
            logger.info(
                "launched %s (%s) for %s/%s#%d", instance.instance_id, instance_type, meeting_id, role, generation
            )
            return instance
    raise AwsCapacityError(
        "InsufficientInstanceCapacity for every configured type: " + ", ".join(capacity_errors),
        code="InsufficientInstanceCapacity",
        operation="RunInstances",
    )


def instances_describe(instance_ids: Iterable[str]) -> tuple[dict[str, Instance], set[str]]:
    """Describe instances, one call per up to 1,000 ids: (found by id, ids EC2 says do not exist).

    An unknown id fails the whole call, naming the unknown ids: they are set aside and the
    rest asked again (a few times at most; a just-launched instance may be briefly invisible).
    """
    found: dict[str, Instance] = {}
    missing: set[str] = set()
    for batch in _chunks(sorted(set(instance_ids)), DESCRIBE_BATCH):
        for _ in range(3):
            if not batch:
                break
            try:
                found.update((i.instance_id, i) for i in _describe(InstanceIds=batch))
                break
            except ClientError as exc:
                named = set(_INSTANCE_ID.findall(exc.response.get("Error", {}).get("Message", ""))) & set(batch)
                if exc.response.get("Error", {}).get("Code") != NOT_FOUND_CODE or not named:
                    raise classify_client_error(exc, operation="DescribeInstances") from exc
                missing |= named
                batch = [i for i in batch if i not in named]
    return found, missing


def instances_status_ok(instance_ids: Iterable[str]) -> set[str]:
    """The ids whose EC2 instance and system status checks both pass (100 ids per call)."""
    client = ec2_client()
    passing: set[str] = set()
    for batch in _chunks(sorted(set(instance_ids)), STATUS_BATCH):
        params: dict[str, Any] = {"InstanceIds": batch, "IncludeAllInstances": True}
        while True:
            try:
                page = aws_call(client.describe_instance_status, **params)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == NOT_FOUND_CODE:
                    break  # a vanished instance is handled by the watchdog
                raise classify_client_error(exc, operation="DescribeInstanceStatus") from exc
            for status in page.get("InstanceStatuses", []):
                if (
                    status.get("InstanceState", {}).get("Name") == "running"
                    and status.get("InstanceStatus", {}).get("Status") == "ok"
                    and status.get("SystemStatus", {}).get("Status") == "ok"
                ):
                    passing.add(status["InstanceId"])
            if not page.get("NextToken"):
                break
            params["NextToken"] = page["NextToken"]
    return passing


def instances_terminate(instance_ids: Iterable[str]) -> None:
    """TerminateInstances in batches; ids EC2 no longer knows are skipped."""
    client = ec2_client()
    for batch in _chunks(sorted(set(instance_ids)), TERMINATE_BATCH):
        while batch:
            try:
                aws_call(client.terminate_instances, InstanceIds=batch)
                logger.info("terminate requested for %s", ", ".join(batch))
                break
            except ClientError as exc:
                missing = set(_INSTANCE_ID.findall(exc.response.get("Error", {}).get("Message", "")))
                if exc.response.get("Error", {}).get("Code") != NOT_FOUND_CODE or not missing & set(batch):
                    raise classify_client_error(exc, operation="TerminateInstances") from exc
                batch = [i for i in batch if i not in missing]


def instances_of_project() -> list[Instance]:
    """Every not-yet-terminated instance tagged Project=Elephant (paginated, 1,000 per page)."""
    filters = [
        {"Name": "tag:Project", "Values": [PROJECT_TAG]},
        {"Name": "instance-state-name", "Values": list(LIVE_EC2_STATES)},
    ]
    try:
        return _describe(Filters=filters, MaxResults=1000)
    except ClientError as exc:
        raise classify_client_error(exc, operation="DescribeInstances") from exc


# --- Route 53 ---------------------------------------------------------------------------------------
def dns_name(instance_id: str) -> str:
    return f"{instance_id}.{settings.ELEPHANT_DNS_DOMAIN}".rstrip(".")


def dns_record_change(*, action: str, instance_id: str, address: str) -> bool:
    """UPSERT or DELETE the host's A record. False when no zone is configured (nothing to do)."""
    if not settings.ELEPHANT_DNS_ZONE_ID or not address:
        return False
    change = {
        "Action": action,
        "ResourceRecordSet": {
            "Name": dns_name(instance_id),
            "Type": "A",
            "TTL": 60,
            "ResourceRecords": [{"Value": address}],
        },
    }
    client = route53_client()
    try:
        aws_call(
            client.change_resource_record_sets,
            HostedZoneId=settings.ELEPHANT_DNS_ZONE_ID,
            ChangeBatch={"Comment": "Elephant host", "Changes": [change]},
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if action == "DELETE" and code == "InvalidChangeBatch":
            return False  # already gone
        raise classify_client_error(exc, operation="ChangeResourceRecordSets") from exc
    return True
