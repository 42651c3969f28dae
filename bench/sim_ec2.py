"""An in-process model of EC2 for the fleet simulator (bench/fleet_sim.py), on the simulator's virtual clock.

It stands where boto3's EC2 client stands (``fleet.aws`` asks ``aws_client("ec2")`` for it), so the
fleet's real AWS layer runs unchanged: its capacity fallback, ClientTokens, error classification.
It holds EC2 to what the strict local endpoint (devtools/strict_aws.py) enforces, in memory and
without HTTP so a simulated week runs in minutes:

- ClientToken idempotency: the same token and parameters answer the same instance (even
  terminated); the same token with other parameters is ``IdempotentParameterMismatch``;
- capacity errors as EC2 sends them (``InsufficientInstanceCapacity``, HTTP 500): each pool
  (instance type, zone) is out of capacity for a share ``ice_probability`` of 15-minute windows;
- RunInstances / StartInstances throttled by a token bucket per account (the scenario's burst
  and refill; ``RequestLimitExceeded``, HTTP 503), every refusal counted;
- the vCPU quota of running instances (``VcpuLimitExceeded``);
- boot: ``pending`` for up to 30 s, then ``running`` with a public address; DCV answers (and
  the host attests) ``boot_seconds`` after the launch, drawn from the scenario;
- status checks ``initializing`` for the first two minutes, then ``ok``.

Billing: an instance bills from its launch to its termination (EBS of a stopped instance at the
stopped price).
"""

import itertools
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

PENDING_SECONDS = 30
STATUS_INITIALIZING_SECONDS = 120
ICE_WINDOW = timedelta(minutes=15)


def client_error(operation: str, code: str, message: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


@dataclass
class ModelInstance:
    instance_id: str
    instance_type: str
    availability_zone: str
    tags: dict[str, str]
    launched_at: datetime
    boot_seconds: float
    vcpus: int
    public_address: str
    terminated_at: datetime | None = None

    def state(self, now: datetime) -> str:
        if self.terminated_at is not None:
            return "terminated" if now >= self.terminated_at + timedelta(seconds=5) else "shutting-down"
        if now < self.launched_at + timedelta(seconds=min(PENDING_SECONDS, self.boot_seconds)):
            return "pending"
        return "running"

    def ready(self, now: datetime) -> bool:
        return self.terminated_at is None and now >= self.launched_at + timedelta(seconds=self.boot_seconds)

    def billed_seconds(self, until: datetime) -> float:
        end = min(self.terminated_at or until, until)
        return max(0.0, (end - self.launched_at).total_seconds())


@dataclass
class Ec2Model:
    clock: Any  # () -> datetime, the simulator's virtual now
    rng: random.Random
    boot: Any  # distribution with .draw(rng)
    ice_probability: float = 0.0
    bucket_size: float = 1000
    refill_per_second: float = 2
    vcpu_quota: int = 10**9
    vcpus_per_instance: int = 4
    region: str = "us-west-2"
    seed: int = 0
    subnet_zones: dict[str, str] = field(default_factory=dict)
    instances: dict[str, ModelInstance] = field(default_factory=dict)
    tokens: dict[str, tuple[tuple, str]] = field(default_factory=dict)
    throttled_calls: int = 0
    capacity_errors: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    _bucket: float | None = None
    _bucket_at: datetime | None = None
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    # --- the parts a boto3 client has that the fleet touches -------------------------------------
    class _Events:
        def register_first(self, *args, **kwargs):
            pass

        def register(self, *args, **kwargs):
            pass

    class _Meta:
        def __init__(self, region):
            self.events = Ec2Model._Events()
            self.region_name = region

    @property
    def meta(self):
        return Ec2Model._Meta(self.region)

    def _count(self, operation: str) -> None:
        self.calls[operation] = self.calls.get(operation, 0) + 1

    # --- limits --------------------------------------------------------------------------------------
    def _take_token(self) -> bool:
        now = self.clock()
        if self._bucket is None:
            self._bucket, self._bucket_at = self.bucket_size, now
        elapsed = (now - self._bucket_at).total_seconds()
        self._bucket = min(self.bucket_size, self._bucket + elapsed * self.refill_per_second)
        self._bucket_at = now
        if self._bucket < 1:
            return False
        self._bucket -= 1
        return True

    def _zone(self, params: dict) -> str:
        subnet = params.get("SubnetId") or (params.get("NetworkInterfaces") or [{}])[0].get("SubnetId", "")
        if subnet:
            return self.subnet_zones.get(subnet, f"{self.region}a")
        return (params.get("Placement") or {}).get("AvailabilityZone") or f"{self.region}a"

    def out_of_capacity(self, instance_type: str, zone: str, now: datetime) -> bool:
        """Capacity runs out per pool (type, zone) for whole windows of ``ICE_WINDOW``: a share
        ``ice_probability`` of the windows, drawn from the seed (an outage lasts, as on EC2)."""
        window = int((now - datetime(2000, 1, 1, tzinfo=now.tzinfo)) / ICE_WINDOW)
        draw = random.Random(f"{self.seed}|{instance_type}|{zone}|{window}").random()
        return draw < self.ice_probability

    def running_vcpus(self) -> int:
        return sum(i.vcpus for i in self.instances.values() if i.terminated_at is None)

    # --- EC2 API ------------------------------------------------------------------------------------
    def run_instances(self, **params) -> dict:
        self._count("RunInstances")
        now = self.clock()
        token = params.get("ClientToken", "")
        bound = tuple(sorted((k, repr(v)) for k, v in params.items() if k != "ClientToken"))
        if token and token in self.tokens:
            earlier, instance_id = self.tokens[token]
            if earlier != bound:
                raise client_error("RunInstances", "IdempotentParameterMismatch", "token reused with other parameters")
            return {"Instances": [self._describe_one(self.instances[instance_id], now)]}
        if not self._take_token():
            self.throttled_calls += 1
            raise client_error("RunInstances", "RequestLimitExceeded", "Request limit exceeded.", 503)
        if self.out_of_capacity(params.get("InstanceType", ""), self._zone(params), now):
            self.capacity_errors += 1
            raise client_error(
                "RunInstances",
                "InsufficientInstanceCapacity",
                f"We currently do not have sufficient {params.get('InstanceType')} capacity.",
                500,
            )
        if self.running_vcpus() + self.vcpus_per_instance > self.vcpu_quota:
            raise client_error("RunInstances", "VcpuLimitExceeded", "You have requested more vCPU capacity.")
        number = next(self._ids)
        zone = self._zone(params)
        tags = {
            tag["Key"]: tag["Value"]
            for spec in params.get("TagSpecifications", [])
            if spec.get("ResourceType") == "instance"
            for tag in spec.get("Tags", [])
        }
        instance = ModelInstance(
            instance_id=f"i-{number:017x}",
            instance_type=params.get("InstanceType", ""),
            availability_zone=zone,
            tags=tags,
            launched_at=now,
            boot_seconds=self.boot.draw(self.rng),
            vcpus=self.vcpus_per_instance,
            public_address=f"198.51.{(number >> 8) & 255}.{number & 255}",
        )
        self.instances[instance.instance_id] = instance
        if token:
            self.tokens[token] = (bound, instance.instance_id)
        return {"Instances": [self._describe_one(instance, now)]}

    def _describe_one(self, instance: ModelInstance, now: datetime) -> dict:
        state = instance.state(now)
        data = {
            "InstanceId": instance.instance_id,
            "InstanceType": instance.instance_type,
            "State": {"Name": state},
            "Placement": {"AvailabilityZone": instance.availability_zone},
            "LaunchTime": instance.launched_at,
            "PrivateIpAddress": "10.0.0.1",
            "Tags": [{"Key": k, "Value": v} for k, v in instance.tags.items()],
        }
        if state == "running":
            data["PublicIpAddress"] = instance.public_address
        return data

    def _matches(self, instance: ModelInstance, filters: list[dict], now: datetime) -> bool:
        for spec in filters:
            name, values = spec["Name"], spec["Values"]
            if name == "instance-state-name":
                if instance.state(now) not in values:
                    return False
            elif name.startswith("tag:"):
                if instance.tags.get(name[4:]) not in values:
                    return False
            elif name == "instance-id":
                if instance.instance_id not in values:
                    return False
        return True

    def _visible(self, now: datetime):
        # EC2 forgets a terminated instance about an hour after its termination.
        for instance in self.instances.values():
            if instance.terminated_at is None or now - instance.terminated_at < timedelta(hours=1):
                yield instance

    def describe_instances(self, InstanceIds=None, Filters=None, **_) -> dict:  # noqa: N803  boto3's names
        self._count("DescribeInstances")
        now = self.clock()
        if InstanceIds:
            unknown = [i for i in InstanceIds if i not in self.instances]
            if unknown:
                raise client_error("DescribeInstances", "InvalidInstanceID.NotFound", f"'{unknown[0]}' does not exist")
            found = [self.instances[i] for i in InstanceIds]
        else:
            found = list(self._visible(now))
        found = [i for i in found if self._matches(i, Filters or [], now)]
        return {"Reservations": [{"Instances": [self._describe_one(i, now) for i in found]}] if found else []}

    def describe_instance_status(self, InstanceIds=None, IncludeAllInstances=False, **_) -> dict:  # noqa: N803
        self._count("DescribeInstanceStatus")
        now = self.clock()
        statuses = []
        for instance_id in InstanceIds or []:
            instance = self.instances.get(instance_id)
            if instance is None:
                raise client_error(
                    "DescribeInstanceStatus", "InvalidInstanceID.NotFound", f"'{instance_id}' does not exist"
                )
            state = instance.state(now)
            if state != "running" and not IncludeAllInstances:
                continue
            young = now < instance.launched_at + timedelta(seconds=STATUS_INITIALIZING_SECONDS)
            check = {"Status": "initializing" if young else "ok"}
            statuses.append(
                {
                    "InstanceId": instance_id,
                    "InstanceState": {"Name": state},
                    "InstanceStatus": check,
                    "SystemStatus": check,
                }
            )
        return {"InstanceStatuses": statuses}

    def terminate_instances(self, InstanceIds=(), **_) -> dict:  # noqa: N803
        self._count("TerminateInstances")
        now = self.clock()
        changes = []
        for instance_id in InstanceIds:
            instance = self.instances.get(instance_id)
            if instance is None:
                raise client_error(
                    "TerminateInstances", "InvalidInstanceID.NotFound", f"'{instance_id}' does not exist"
                )
            previous = instance.state(now)
            if instance.terminated_at is None:
                instance.terminated_at = now
            changes.append(
                {
                    "InstanceId": instance_id,
                    "PreviousState": {"Name": previous},
                    "CurrentState": {"Name": instance.state(now)},
                }
            )
        return {"TerminatingInstances": changes}

    def describe_images(self, ImageIds=(), **_) -> dict:  # noqa: N803
        self._count("DescribeImages")
        return {"Images": [{"ImageId": image, "RootDeviceName": "/dev/sda1"} for image in ImageIds]}

    def create_tags(self, Resources=(), Tags=(), **_) -> dict:  # noqa: N803
        self._count("CreateTags")
        for instance_id in Resources:
            if instance_id in self.instances:
                self.instances[instance_id].tags.update({t["Key"]: t["Value"] for t in Tags})
        return {}

    # --- what the simulator asks ----------------------------------------------------------------------
    def instance_ready(self, instance_id: str) -> bool:
        instance = self.instances.get(instance_id)
        return instance is not None and instance.ready(self.clock())

    def live_instances(self) -> list[ModelInstance]:
        return [i for i in self.instances.values() if i.terminated_at is None]
