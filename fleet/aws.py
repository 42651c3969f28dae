"""The fleet's AWS layer: typed functions over EC2 and Route 53.

Clients, the retry policy and the error classes come from ``elephant.aws`` (one policy for
every app): botocore retries throttling and transient faults; what outlasts it is raised as
``AwsTransientError`` so the task retries later. Errors that no retry can fix (missing or
wrong configuration, missing permissions) are ``AwsConfigError``, so callers fail the meeting
instead of looping.
"""

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError
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
    error_code,
    error_message,
)
from meetings.policy import ROLES

logger = logging.getLogger(__name__)

PROJECT_TAG = "Elephant"
DESCRIBE_BATCH = 1000  # DescribeInstances takes up to 1,000 instance ids per call.
STATUS_BATCH = 100  # DescribeInstanceStatus takes up to 100.
TERMINATE_BATCH = 500
LIVE_EC2_STATES = ("pending", "running", "stopping", "stopped")
NOT_FOUND_CODE = "InvalidInstanceID.NotFound"
_INSTANCE_ID = re.compile(r"i-[0-9a-f]+")
_TAG_VALUE = re.compile(r"[\w .:/=+\-@]{1,256}")


class Instance(NamedTuple):
    """An EC2 instance as DescribeInstances shows it (a tuple: the watchdog and the reaper make one per live
    instance every sweep, and a frozen dataclass costs twice as much to make)."""

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
        # Positional and each key looked up once: the watchdog and the reaper make one per live instance
        # every sweep.
        get = data.get
        state, placement, tags = get("State"), get("Placement"), get("Tags")
        return cls(
            data["InstanceId"],
            state.get("Name", "") if state else "",
            get("InstanceType", ""),
            placement.get("AvailabilityZone", "") if placement else "",
            get("PublicIpAddress", ""),
            get("PrivateIpAddress", ""),
            get("LaunchTime"),
            {tag["Key"]: tag["Value"] for tag in tags} if tags else {},
        )


def _capacity_is_final(response=None, operation=None, **_):
    """``needs-retry`` hook: a capacity or quota error (HTTP 500 for capacity) is an answer, not a fault;
    botocore must not retry it (it would spend retries and quota on what only another candidate fixes)."""
    if not response:
        return None
    _, parsed = response
    code = (parsed or {}).get("Error", {}).get("Code", "")
    if code in CAPACITY_CODES or code in QUOTA_CODES:
        raise ClientError(parsed, operation.name)
    return None


def ec2_client():
    client = aws_client("ec2")
    # Registered first, so it decides before the retry handler; unique_id makes it once per client.
    for operation in ("RunInstances", "StartInstances"):
        client.meta.events.register_first(
            f"needs-retry.ec2.{operation}", _capacity_is_final, unique_id=f"elephant-capacity-is-final-{operation}"
        )
    return client


def route53_client():
    return aws_client("route53")


def classify_client_error(exc: ClientError, *, operation: str) -> AwsError:
    return aws_error(exc, operation=operation)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- EC2 --------------------------------------------------------------------------------------------
DEPLOYMENT_TAG = "ElephantDeployment"
# Quotas: no other type or zone helps and no retry will; staff must act (Service Quotas, other instances).
QUOTA_CODES = frozenset(
    {"VcpuLimitExceeded", "InstanceLimitExceeded", "VolumeLimitExceeded", "MaxSpotInstanceCountExceeded"}
)
# GPU families by vendor: one AMI carries one driver, so a fallback list must not mix them.
GPU_VENDORS = {
    "g4ad": "AMD",
    "g4dn": "NVIDIA",
    "g5": "NVIDIA",
    "g5g": "NVIDIA",
    "g6": "NVIDIA",
    "g6e": "NVIDIA",
    "gr6": "NVIDIA",
    "g3": "NVIDIA",
    "g3s": "NVIDIA",
    "p3": "NVIDIA",
    "p4d": "NVIDIA",
    "p5": "NVIDIA",
}


def deployment() -> str:
    return settings.ELEPHANT_DEPLOYMENT


def instance_tags(*, meeting_id: str, role: str, generation: int) -> list[dict[str, str]]:
    return [
        {"Key": "Name", "Value": f"{meeting_id}_{role}"},
        {"Key": "MeetingID", "Value": meeting_id},
        {"Key": "Role", "Value": role},
        {"Key": "Generation", "Value": str(generation)},
        {"Key": "Project", "Value": PROJECT_TAG},
        {"Key": DEPLOYMENT_TAG, "Value": deployment()},
    ]


def _scope_filters() -> list[dict[str, Any]]:
    """What makes an instance this deployment's: both tags, so another deployment's hosts are never touched."""
    return [
        {"Name": "tag:Project", "Values": [PROJECT_TAG]},
        {"Name": f"tag:{DEPLOYMENT_TAG}", "Values": [deployment()]},
    ]


@dataclass(frozen=True)
class LaunchCandidate:
    """One (instance type, placement) a host may be launched with; tried in order."""

    instance_type: str
    subnet_id: str = ""
    availability_zone: str = ""

    @property
    def where(self) -> str:
        return self.subnet_id or self.availability_zone


@dataclass(frozen=True)
class LaunchSpec:
    """What one host is launched with: its desktop profile resolved (``fleet.profiles``), or the settings."""

    image_id: str
    instance_types: tuple[str, ...]
    subnet_ids: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    instance_profile: str = ""
    volume_size_gb: int = 60
    launch_template: str = ""
    launch_template_version: str = ""
    # "optional" lets IMDSv1 (tokenless) calls through: only for images whose agents still need it.
    http_tokens: str = "required"
    user_data: str = ""

    @classmethod
    def from_settings(cls, **overrides: Any) -> "LaunchSpec":
        values = {
            "image_id": settings.ELEPHANT_AMI_ID,
            "instance_types": tuple(settings.ELEPHANT_INSTANCE_TYPES),
            "subnet_ids": tuple(settings.ELEPHANT_SUBNET_IDS),
            "security_group_ids": tuple(settings.ELEPHANT_SECURITY_GROUP_IDS),
            "instance_profile": settings.ELEPHANT_INSTANCE_PROFILE,
            "volume_size_gb": settings.ELEPHANT_VOLUME_SIZE_GB,
        }
        return cls(**{**values, **overrides})


def client_token(*, meeting_id: str, role: str, generation: int, candidate: LaunchCandidate) -> str:
    """The RunInstances ClientToken of one candidate of one host (at most 64 ASCII characters).

    Derived from what the launch is (deployment, meeting, role, generation) and the candidate, so
    a repeated or crashed launch sends the same token for the same request (EC2 answers with the
    instance it already started) and each candidate its own (EC2 binds a token to its parameters:
    reusing it for another type or zone is ``IdempotentParameterMismatch``).
    """
    what = "|".join((deployment(), meeting_id, role, str(generation), candidate.instance_type, candidate.where))
    return f"{meeting_id}-{role[:1]}{generation}-{hashlib.sha256(what.encode()).hexdigest()[:24]}"


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
        *_scope_filters(),
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


def instance_types_problem(instance_types: Iterable[str]) -> str:
    """Why this fallback list cannot work ('' when it can): it mixes GPU vendors (g4ad AMD, g4dn/g5/g6 NVIDIA)."""
    vendors: dict[str, list[str]] = {}
    for instance_type in instance_types:
        vendor = GPU_VENDORS.get(instance_type.split(".", 1)[0])
        if vendor:
            vendors.setdefault(vendor, []).append(instance_type)
    if len(vendors) > 1:
        listed = "; ".join(f"{vendor}: {', '.join(types)}" for vendor, types in sorted(vendors.items()))
        return f"the instance types mix GPU vendors ({listed}); one AMI carries one GPU driver, list one vendor only"
    return ""


def launch_candidates(
    *, role: str, instance_types: Iterable[str] | None = None, subnet_ids: Iterable[str] | None = None
) -> list[LaunchCandidate]:
    """Where to try, in order: each type (in fallback order), and for each type each subnet, else
    each availability zone, else anywhere.

    The placements are rotated by role, so with several subnets (one per AZ) the teacher's and the
    student's hosts start in different zones; a capacity error moves on to the next candidate.
    """
    types = list(instance_types if instance_types is not None else settings.ELEPHANT_INSTANCE_TYPES)
    subnets = list(subnet_ids if subnet_ids is not None else settings.ELEPHANT_SUBNET_IDS)
    if subnets:
        placements = [{"subnet_id": subnet} for subnet in subnets]
    elif settings.ELEPHANT_AVAILABILITY_ZONES:
        placements = [{"availability_zone": zone} for zone in settings.ELEPHANT_AVAILABILITY_ZONES]
    else:
        placements = [{}]
    shift = ROLES.index(role) % len(placements) if role in ROLES else 0
    placements = placements[shift:] + placements[:shift]
    return [LaunchCandidate(instance_type=t, **placement) for t in types for placement in placements]


def launch_config_problems(spec: LaunchSpec | None = None) -> list[str]:
    """What is missing from the launch configuration (empty when a launch can be tried)."""
    spec = spec or LaunchSpec.from_settings()
    problems = []
    if not spec.image_id:
        problems.append("ELEPHANT_AMI_ID is not set")
    if not spec.instance_types:
        problems.append("ELEPHANT_INSTANCE_TYPES is empty")
    elif vendor_problem := instance_types_problem(spec.instance_types):
        problems.append(f"ELEPHANT_INSTANCE_TYPES: {vendor_problem}")
    if not settings.AWS_REGION:
        problems.append("AWS_REGION is not set")
    if not _TAG_VALUE.fullmatch(settings.ELEPHANT_DEPLOYMENT or ""):
        problems.append(f"ELEPHANT_DEPLOYMENT {settings.ELEPHANT_DEPLOYMENT!r} is not a usable tag value")
    return problems


# An AMI never changes once registered: its root device is read once per process and image (a crowded
# hour launches thousands of hosts from one image; DescribeImages shares the account's Describe* bucket).
_root_devices: dict[tuple[str, str, str], str] = {}


def image_root_device(image_id: str) -> str:
    """The AMI's root device name (DescribeImages): the root volume's mapping must use it, or EC2 adds a second disk."""
    key = (settings.AWS_REGION, settings.AWS_ENDPOINT_URL or "", image_id)
    if key not in _root_devices:
        _root_devices[key] = _image_root_device(image_id)
    return _root_devices[key]


def image_root_device_forget() -> None:
    """Drop the cached root devices (tests, whose local EC2 registers images anew)."""
    _root_devices.clear()


def _image_root_device(image_id: str) -> str:
    try:
        images = aws_call(ec2_client().describe_images, ImageIds=[image_id]).get("Images", [])
    except ClientError as exc:
        raise classify_client_error(exc, operation="DescribeImages") from exc
    if not images:
        raise AwsConfigError(
            f"the AMI {image_id} was not found", code="InvalidAMIID.NotFound", operation="DescribeImages"
        )
    return images[0].get("RootDeviceName") or "/dev/sda1"


class LaunchLeaseLost(AwsError):
    """Another worker claimed the host while this one went through the candidates: stop, launch nothing more."""


def _quota_message(code: str, message: str) -> str:
    return (
        f"EC2 quota reached ({code}: {message}). Nothing was launched. Ask for a higher quota in Service Quotas "
        f"(EC2, region {settings.AWS_REGION}: 'Running On-Demand G and VT instances' counts vCPUs), "
        "or end other instances, then launch the meeting again."
    )


def _run_candidate(client, params: dict[str, Any]) -> dict | None:
    """RunInstances once; None when the candidate has no capacity (the caller moves on at once).

    Capacity is read from the error code before anything else: EC2 sends it as HTTP 500, which
    the shared classification (``aws_error``) would take for a transient fault.
    """
    try:
        return client.run_instances(**params)
    except ClientError as exc:
        code = error_code(exc)
        if code in CAPACITY_CODES:
            return None
        if code in QUOTA_CODES:
            raise AwsConfigError(_quota_message(code, error_message(exc)), code=code, operation="RunInstances") from exc
        raise aws_error(exc, operation="RunInstances") from exc
    except BotoCoreError as exc:
        raise aws_error(exc, operation="RunInstances") from exc


def instance_run(
    *,
    meeting_id: str,
    role: str,
    generation: int,
    on_candidate: Callable[[str], bool] | None = None,
    resume_token: str = "",
    spec: LaunchSpec | None = None,
) -> Instance:
    """RunInstances for one host of a meeting (``instance_launch`` with the host's tags and tokens)."""
    names = {"meeting_id": meeting_id, "role": role, "generation": generation}
    return instance_launch(
        tags=instance_tags(**names),
        token_for=lambda candidate: client_token(**names, candidate=candidate),
        what=f"{meeting_id}/{role}#{generation}",
        rotation=role,
        on_candidate=on_candidate,
        resume_token=resume_token,
        spec=spec,
    )


def instance_launch(
    *,
    tags: list[dict[str, str]],
    token_for: Callable[[LaunchCandidate], str],
    what: str,
    rotation: str = "",
    on_candidate: Callable[[str], bool] | None = None,
    resume_token: str = "",
    spec: LaunchSpec | None = None,
) -> Instance:
    """RunInstances for one host, moving on through the (type, placement) candidates on capacity errors.

    A capacity error (``InsufficientInstanceCapacity``, ``InsufficientCapacity``, ``Unsupported``)
    costs no retry: botocore is told not to retry it (``ec2_client``) and the next candidate is
    tried at once. Each candidate has its own ClientToken (``client_token``). ``on_candidate`` is
    called with the token before each one (the caller renews its claim and records the token
    there); when it answers False the chain stops with ``LaunchLeaseLost``. ``resume_token`` (the
    token a crashed launch last sent) puts its candidate first: EC2 answers with the instance that
    launch started, if it started one, and every other candidate was refused or never tried.
    Quota errors fail at once with a message staff can act on. ``spec`` (default: the settings) is
    the host's desktop profile: image, types, subnets, groups, disk, launch template, IMDS and user data.
    """
    spec = spec or LaunchSpec.from_settings()
    problems = launch_config_problems(spec)
    if problems:
        raise AwsConfigError("; ".join(problems), code="Configuration", operation="RunInstances")
    client = ec2_client()
    base: dict[str, Any] = {
        "ImageId": spec.image_id,
        "MinCount": 1,
        "MaxCount": 1,
        "TagSpecifications": [
            {"ResourceType": kind, "Tags": tags} for kind in ("instance", "volume", "network-interface")
        ],
        "BlockDeviceMappings": [
            {
                "DeviceName": image_root_device(spec.image_id),
                "Ebs": {
                    "VolumeSize": spec.volume_size_gb,
                    "VolumeType": "gp3",
                    "DeleteOnTermination": True,
                    "Encrypted": True,
                },
            }
        ],
        "InstanceInitiatedShutdownBehavior": "terminate",
        # Instance metadata tags on: the boot script reads its meeting and role from them.
        "MetadataOptions": {
            "HttpTokens": spec.http_tokens,
            "HttpEndpoint": "enabled",
            "InstanceMetadataTags": "enabled",
        },
    }
    if spec.user_data:
        base["UserData"] = spec.user_data  # boto3 base64-encodes it
    if spec.launch_template:
        key = "LaunchTemplateId" if spec.launch_template.startswith("lt-") else "LaunchTemplateName"
        base["LaunchTemplate"] = {key: spec.launch_template, "Version": spec.launch_template_version or "$Default"}
    if settings.ELEPHANT_KEY_NAME:
        base["KeyName"] = settings.ELEPHANT_KEY_NAME
    if spec.instance_profile:
        profile = spec.instance_profile
        base["IamInstanceProfile"] = {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}
    no_capacity = []
    chain = [
        (candidate, token_for(candidate))
        for candidate in launch_candidates(
            role=rotation, instance_types=spec.instance_types, subnet_ids=spec.subnet_ids
        )
    ]
    chain.sort(key=lambda pair: pair[1] != resume_token)  # stable: the resumed candidate first, the rest in order
    for candidate, token in chain:
        if on_candidate is not None and not on_candidate(token):
            raise LaunchLeaseLost(
                f"the launch of {what} was claimed by another worker",
                code="LaunchLeaseLost",
                operation="RunInstances",
            )
        params = {
            **base,
            **_placement(candidate, security_group_ids=spec.security_group_ids),
            "InstanceType": candidate.instance_type,
            "ClientToken": token,
        }
        response = _run_candidate(client, params)
        if response is None:
            logger.warning("no capacity for %s %s; trying the next candidate", candidate.instance_type, candidate.where)
            no_capacity.append(f"{candidate.instance_type} {candidate.where}".strip())
            continue
        instance = Instance.from_api(response["Instances"][0])
        logger.info(
            "launched %s (%s %s) for %s",
            instance.instance_id,
            candidate.instance_type,
            instance.availability_zone,
            what,
        )
        return instance
    raise AwsCapacityError(
        "InsufficientInstanceCapacity for every configured type and placement: " + ", ".join(no_capacity),
        code="InsufficientInstanceCapacity",
        operation="RunInstances",
    )


def _placement(candidate: LaunchCandidate, *, security_group_ids: Iterable[str] = ()) -> dict[str, Any]:
    """The network part of RunInstances: one interface asking explicitly for a public address (or not)."""
    interface: dict[str, Any] = {
        "DeviceIndex": 0,
        "DeleteOnTermination": True,
        "AssociatePublicIpAddress": settings.ELEPHANT_PUBLIC_IP,
    }
    if candidate.subnet_id:
        interface["SubnetId"] = candidate.subnet_id
    if security_group_ids:
        interface["Groups"] = list(security_group_ids)
    placement: dict[str, Any] = {"NetworkInterfaces": [interface]}
    if candidate.availability_zone:
        placement["Placement"] = {"AvailabilityZone": candidate.availability_zone}
    return placement


def instance_of_other_deployment(instance: Instance, *, ours: str | None = None) -> bool:
    """The instance carries another deployment's tag: this installation never acts on it.
    (An instance from before the tag existed carries none and is still this installation's.)
    ``ours``: this deployment's name, when the caller read it once for many instances."""
    tag = (instance.tags or {}).get(DEPLOYMENT_TAG)
    return tag is not None and tag != (deployment() if ours is None else ours)


def instance_address(instance: Instance) -> str:
    """The address participants reach the host at: its public one, unless hosts are private
    (``ELEPHANT_PUBLIC_IP`` false). A private address never goes into a public record."""
    return instance.public_address if settings.ELEPHANT_PUBLIC_IP else instance.private_address


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
    """The ids whose EC2 instance and system status checks both pass (100 ids per call).

    One unknown id fails a whole DescribeInstanceStatus call: the ids EC2 names are set aside and
    the rest asked again; an error naming none of them falls back to asking each id alone. So a
    vanished (or not yet visible) instance never hides the others' checks.
    """
    passing: set[str] = set()
    for batch in _chunks(sorted(set(instance_ids)), STATUS_BATCH):
        pending = list(batch)
        while pending:
            try:
                passing |= _status_ok(pending)
                break
            except _UnknownIds as exc:
                named = exc.ids & set(pending)
                if named:
                    pending = [i for i in pending if i not in named]
                    continue
                for instance_id in pending:
                    try:
                        passing |= _status_ok([instance_id])
                    except _UnknownIds:
                        pass
                break
    return passing


class _UnknownIds(Exception):
    def __init__(self, ids: set[str]):
        self.ids = ids


def _status_ok(instance_ids: list[str]) -> set[str]:
    client = ec2_client()
    passing: set[str] = set()
    params: dict[str, Any] = {"InstanceIds": instance_ids, "IncludeAllInstances": True}
    while True:
        try:
            page = aws_call(client.describe_instance_status, **params)
        except ClientError as exc:
            if error_code(exc) == NOT_FOUND_CODE:
                raise _UnknownIds(set(_INSTANCE_ID.findall(error_message(exc)))) from exc
            raise classify_client_error(exc, operation="DescribeInstanceStatus") from exc
        for status in page.get("InstanceStatuses", []):
            if (
                status.get("InstanceState", {}).get("Name") == "running"
                and status.get("InstanceStatus", {}).get("Status") == "ok"
                and status.get("SystemStatus", {}).get("Status") == "ok"
            ):
                passing.add(status["InstanceId"])
        if not page.get("NextToken"):
            return passing
        params["NextToken"] = page["NextToken"]


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
    """Every not-yet-terminated instance of this deployment (tags Project=Elephant and
    ElephantDeployment=ELEPHANT_DEPLOYMENT; paginated, 1,000 per page)."""
    filters = [*_scope_filters(), {"Name": "instance-state-name", "Values": list(LIVE_EC2_STATES)}]
    try:
        return _describe(Filters=filters, MaxResults=1000)
    except ClientError as exc:
        raise classify_client_error(exc, operation="DescribeInstances") from exc


POOL_TAG = "ElephantPool"


def pool_tags(*, profile: str) -> list[dict[str, str]]:
    """The tags of a warm-pool instance: this deployment's, and the profile it was built for."""
    return [
        {"Key": "Name", "Value": f"pool_{profile}"},
        {"Key": POOL_TAG, "Value": profile},
        {"Key": "Project", "Value": PROJECT_TAG},
        {"Key": DEPLOYMENT_TAG, "Value": deployment()},
    ]


def tags_create(instance_ids: Iterable[str], tags: list[dict[str, str]]) -> None:
    """CreateTags (overwriting values of keys already there)."""
    ids = sorted(set(instance_ids))
    if not ids:
        return
    try:
        aws_call(ec2_client().create_tags, Resources=ids, Tags=tags)
    except ClientError as exc:
        raise classify_client_error(exc, operation="CreateTags") from exc
    except BotoCoreError as exc:
        raise aws_error(exc, operation="CreateTags") from exc


def tags_delete(instance_ids: Iterable[str], keys: Iterable[str]) -> None:
    ids = sorted(set(instance_ids))
    if not ids:
        return
    try:
        aws_call(ec2_client().delete_tags, Resources=ids, Tags=[{"Key": key} for key in keys])
    except ClientError as exc:
        raise classify_client_error(exc, operation="DeleteTags") from exc
    except BotoCoreError as exc:
        raise aws_error(exc, operation="DeleteTags") from exc


def instance_start(instance_id: str) -> None:
    """StartInstances for one stopped instance.

    Its own resource bucket (separate from RunInstances'); a capacity error (HTTP 500, as on
    RunInstances) raises ``AwsCapacityError`` at once, without botocore's retries, so the caller
    falls back to a cold launch; ``IncorrectInstanceState`` (not stopped) is ``AwsConfigError``.
    """
    client = ec2_client()
    try:
        client.start_instances(InstanceIds=[instance_id])
    except ClientError as exc:
        code = error_code(exc)
        if code in CAPACITY_CODES:
            raise AwsCapacityError(
                f"no capacity to start {instance_id}: {error_message(exc)}", code=code, operation="StartInstances"
            ) from exc
        if code in QUOTA_CODES:
            raise AwsConfigError(
                _quota_message(code, error_message(exc)), code=code, operation="StartInstances"
            ) from exc
        raise classify_client_error(exc, operation="StartInstances") from exc
    except BotoCoreError as exc:
        raise aws_error(exc, operation="StartInstances") from exc


def instance_type_modify(instance_id: str, instance_type: str) -> None:
    """ModifyInstanceAttribute InstanceType of a stopped instance (EC2 refuses it on any other state,
    ``IncorrectInstanceState``: ``AwsConfigError`` here). The warm pool's way past a capacity error on
    start: the instance keeps its zone, volume and configuration, and starts as another type of its profile
    (one GPU vendor per profile, so the image's drivers fit), as AWS's Instance Scheduler does."""
    try:
        aws_call(ec2_client().modify_instance_attribute, InstanceId=instance_id, InstanceType={"Value": instance_type})
    except ClientError as exc:
        raise classify_client_error(exc, operation="ModifyInstanceAttribute") from exc
    except BotoCoreError as exc:
        raise aws_error(exc, operation="ModifyInstanceAttribute") from exc


def instances_stop(instance_ids: Iterable[str]) -> None:
    """StopInstances in batches (the pool's booted instances: a stopped instance bills only its volume)."""
    client = ec2_client()
    for batch in _chunks(sorted(set(instance_ids)), TERMINATE_BATCH):
        try:
            aws_call(client.stop_instances, InstanceIds=batch)
        except ClientError as exc:
            raise classify_client_error(exc, operation="StopInstances") from exc
        except BotoCoreError as exc:
            raise aws_error(exc, operation="StopInstances") from exc


# Service Quotas codes of EC2's running On-Demand vCPU quotas, by fleet.planner.quota_family.
VCPU_QUOTA_CODES = {
    "standard": "L-1216C47A",
    "g": "L-DB2E81BA",
    "p": "L-417A185B",
    "f": "L-74FC7D96",
    "x": "L-7295265B",
    "inf": "L-1945791B",
    "dl": "L-6E869C2A",
    "trn": "L-2C3B7624",
}


def vcpu_quota(family: str) -> int | None:
    """The account's running On-Demand vCPU quota of a family in this region, from Service Quotas;
    None when Service Quotas does not answer (no permission, an endpoint without it)."""
    code = VCPU_QUOTA_CODES.get(family)
    if code is None:
        return None
    try:
        answer = aws_call(aws_client("service-quotas").get_service_quota, ServiceCode="ec2", QuotaCode=code)
    except (ClientError, BotoCoreError) as exc:
        logger.info("Service Quotas gave no %s vCPU quota (%s); the plan takes it as unlimited", family, exc)
        return None
    value = answer.get("Quota", {}).get("Value")
    return int(value) if value is not None else None


# --- Route 53 ---------------------------------------------------------------------------------------
def dns_name(instance_id: str) -> str:
    return f"{instance_id}.{settings.ELEPHANT_DNS_DOMAIN}".rstrip(".")


# ChangeResourceRecordSets takes up to 1,000 ResourceRecord elements per request, an UPSERT's counted
# twice (and 32,000 characters of values, counted twice too: 500 IPv4 records stay far below it).
DNS_BATCH = 500
DNS_DELETE_BATCH = 1000
DNS_TTL = 60


@dataclass(frozen=True)
class DnsChange:
    """A submitted change batch: its id (for GetChange) and whether Route 53 has applied it everywhere."""

    change_id: str
    insync: bool


def _record(name: str, address: str) -> dict[str, Any]:
    return {"Name": name, "Type": "A", "TTL": DNS_TTL, "ResourceRecords": [{"Value": address}]}


def _change_batch(changes: list[dict[str, Any]], *, operation_comment: str, size: int) -> list[DnsChange]:
    client = route53_client()
    submitted = []
    for start in range(0, len(changes), size):
        try:
            info = aws_call(
                client.change_resource_record_sets,
                HostedZoneId=settings.ELEPHANT_DNS_ZONE_ID,
                ChangeBatch={"Comment": operation_comment, "Changes": changes[start : start + size]},
            )["ChangeInfo"]
        except ClientError as exc:
            raise classify_client_error(exc, operation="ChangeResourceRecordSets") from exc
        submitted.append(DnsChange(change_id=info["Id"].split("/")[-1], insync=info.get("Status") == "INSYNC"))
    return submitted


def dns_records_upsert(records: dict[str, str]) -> list[DnsChange]:
    """UPSERT the A records ``instance id -> address`` in one change batch (per 500).

    Empty when no zone is configured (nothing to write). Route 53 throttles per account (a
    token bucket of requests, and one of record changes), so a sweep writes every record it has
    in one call instead of one per host.
    """
    if not settings.ELEPHANT_DNS_ZONE_ID or not records:
        return []
    changes = [
        {"Action": "UPSERT", "ResourceRecordSet": _record(dns_name(instance_id), address)}
        for instance_id, address in sorted(records.items())
    ]
    return _change_batch(changes, operation_comment="Elephant hosts", size=DNS_BATCH)


def dns_changes_insync(change_ids: Iterable[str]) -> set[str]:
    """The change ids Route 53 reports INSYNC (GetChange, one call per distinct id)."""
    client = route53_client()
    done = set()
    for change_id in sorted(set(change_ids)):
        try:
            info = aws_call(client.get_change, Id=change_id)["ChangeInfo"]
        except ClientError as exc:
            if error_code(exc) == "NoSuchChange":
                done.add(change_id)  # Route 53 keeps changes for a while only; an old one has long applied
                continue
            raise classify_client_error(exc, operation="GetChange") from exc
        if info.get("Status") == "INSYNC":
            done.add(change_id)
    return done


def dns_records_current(instance_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The A record sets that exist now, by instance id (ListResourceRecordSets, one call per name)."""
    client = route53_client()
    found = {}
    for instance_id in sorted(set(instance_ids)):
        name = dns_name(instance_id) + "."
        try:
            page = aws_call(
                client.list_resource_record_sets,
                HostedZoneId=settings.ELEPHANT_DNS_ZONE_ID,
                StartRecordName=name,
                StartRecordType="A",
                MaxItems="1",
            )
        except ClientError as exc:
            raise classify_client_error(exc, operation="ListResourceRecordSets") from exc
        for record in page.get("ResourceRecordSets", []):
            if record.get("Name", "").rstrip(".").lower() == name.rstrip(".").lower() and record.get("Type") == "A":
                found[instance_id] = record
    return found


def dns_records_delete(instance_ids: Iterable[str]) -> int:
    """DELETE the hosts' A records with their current values, in one change batch. Returns how many.

    Route 53 deletes a record only when the request names its exact current value; the value
    is read first (``dns_records_current``), so a record rewritten since (a new address) is
    still deleted, and a record already gone is nothing to do.
    """
    if not settings.ELEPHANT_DNS_ZONE_ID:
        return 0
    current = dns_records_current(instance_ids)
    if not current:
        return 0
    _change_batch(
        [{"Action": "DELETE", "ResourceRecordSet": record} for _, record in sorted(current.items())],
        operation_comment="Elephant hosts ended",
        size=DNS_DELETE_BATCH,
    )
    return len(current)
