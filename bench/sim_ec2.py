"""An in-process model of EC2 for the fleet simulator (bench/fleet_sim.py), on the simulator's virtual clock.

It stands where boto3's EC2 client stands (``fleet.aws`` asks ``aws_client("ec2")`` for it), so the
fleet's real AWS layer runs unchanged: its capacity fallback, ClientTokens, error classification.
It holds EC2 to what the strict local endpoint (devtools/strict_aws.py) enforces, in memory and
without HTTP so a simulated week runs in minutes:

- ClientToken idempotency: the same token and parameters answer the same instance (even
  terminated); the same token with other parameters is ``IdempotentParameterMismatch``;
- capacity errors as EC2 sends them (``InsufficientInstanceCapacity``, HTTP 500): each pool
  (instance type, zone) is out of capacity for a share ``ice_probability`` of 15-minute windows,
  for RunInstances and StartInstances alike (a stopped instance starts in its own zone or not at all);
- RunInstances and StartInstances throttled by a resource token bucket each, per account, one
  token per instance (``RequestLimitExceeded``, HTTP 503), every refusal counted;
- the vCPU quota of running instances (``VcpuLimitExceeded``); a stopping or stopped instance
  holds none;
- boot: ``pending`` for up to 30 s, then ``running`` with a public address; DCV answers (and
  the host attests) ``boot_seconds`` after the launch, drawn from the scenario;
- warm pools: StopInstances takes a running instance through ``stopping`` (30 s) to ``stopped``
  and releases its public address; StartInstances boots it again: a new public address, a new
  LaunchTime, DCV after a warm boot (``warm_boot``). Either call on an instance already where it
  asks is a no-op success, as on EC2; any other state is ``IncorrectInstanceState``.
  ModifyInstanceAttribute changes the type of a stopped instance only (``IncorrectInstanceState``
  otherwise), so a start refused for capacity can be retried as another type in the same zone;
- status checks ``initializing`` for the first two minutes after each launch or start, then ``ok``.

Billing: an instance runs (and bills at the running price) from each launch or start to the next
stop or its termination; it is stopped (its volume billing) from each stop to the next start or
its termination.
"""

import heapq
import itertools
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

PENDING_SECONDS = 30
STOPPING_SECONDS = 30
SHUTTING_DOWN_SECONDS = 5
STATUS_INITIALIZING_SECONDS = 120
ICE_WINDOW = timedelta(minutes=15)
# EC2 forgets a terminated instance about an hour after its termination.
FORGET_TERMINATED = timedelta(hours=1)


def client_error(operation: str, code: str, message: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, operation
    )


def _seconds(start: datetime, end: datetime | None, until: datetime) -> float:
    """The seconds of [start, end) before ``until`` (an open interval runs on)."""
    stop = until if end is None else min(end, until)
    return max(0.0, (stop - start).total_seconds())


@dataclass
class TokenBucket:
    """One of EC2's resource token buckets: ``size`` tokens, ``refill_per_second`` back, one per instance."""

    size: float
    refill_per_second: float
    level: float | None = None
    at: datetime | None = None

    def take(self, now: datetime, count: int = 1) -> bool:
        if self.level is None:
            self.level, self.at = self.size, now
        self.level = min(self.size, self.level + (now - self.at).total_seconds() * self.refill_per_second)
        self.at = now
        if self.level < count:
            return False
        self.level -= count
        return True


@dataclass
class ModelInstance:
    instance_id: str
    instance_type: str
    availability_zone: str
    tags: dict[str, str]
    launched_at: datetime  # EC2's LaunchTime: the last launch or start
    boot_seconds: float  # of the current boot: cold after the launch, warm after a start
    vcpus: int
    public_address: str | None
    stopped_at: datetime | None = None  # when the current stop began (stopping, then stopped)
    terminated_at: datetime | None = None
    shutting_down_seconds: float = SHUTTING_DOWN_SECONDS
    past_runs: list[tuple[datetime, datetime]] = field(default_factory=list)
    past_stops: list[tuple[datetime, datetime]] = field(default_factory=list)
    tag_list: list[dict[str, str]] | None = None  # the Tags of a describe, built once per change of tags
    described: tuple | None = None  # (what it shows, the DescribeInstances item): rebuilt when that changes
    _pending_until: datetime | None = None  # ``pending_until``, once per boot

    def tags_described(self) -> list[dict[str, str]]:
        if self.tag_list is None:
            self.tag_list = [{"Key": k, "Value": v} for k, v in self.tags.items()]
        return self.tag_list

    def state(self, now: datetime) -> str:
        if self.terminated_at is not None:
            gone = now >= self.terminated_at + timedelta(seconds=self.shutting_down_seconds)
            return "terminated" if gone else "shutting-down"
        if self.stopped_at is not None:
            return "stopping" if now < self.stopped_at + timedelta(seconds=STOPPING_SECONDS) else "stopped"
        if now < self.pending_until():
            return "pending"
        return "running"

    def pending_until(self) -> datetime:
        """The end of the current boot's ``pending``: worked out once per launch or start (the watchdog asks
        every live instance's state every 15 s; ``start`` forgets it)."""
        if self._pending_until is None:
            self._pending_until = self.launched_at + timedelta(seconds=min(PENDING_SECONDS, self.boot_seconds))
        return self._pending_until

    @property
    def holds_vcpus(self) -> bool:
        """Pending and running instances count against the running vCPU quota; stopping ones no longer."""
        return self.terminated_at is None and self.stopped_at is None

    def ready(self, now: datetime) -> bool:
        return self.holds_vcpus and now >= self.launched_at + timedelta(seconds=self.boot_seconds)

    def stop(self, now: datetime) -> None:
        self.past_runs.append((self.launched_at, now))
        self.stopped_at, self.public_address = now, None

    def start(self, now: datetime, *, boot_seconds: float, public_address: str) -> None:
        self.past_stops.append((self.stopped_at, now))
        self.stopped_at = None
        self.launched_at, self.boot_seconds, self.public_address = now, boot_seconds, public_address
        self._pending_until = None

    def terminate(self, now: datetime) -> None:
        if self.state(now) == "stopped":
            self.shutting_down_seconds = 0  # nothing left to shut down
        self.terminated_at, self.public_address = now, None

    def running_seconds(self, until: datetime) -> float:
        seconds = sum(_seconds(start, end, until) for start, end in self.past_runs)
        if self.stopped_at is None:
            seconds += _seconds(self.launched_at, self.terminated_at, until)
        return seconds

    def stopped_seconds(self, until: datetime) -> float:
        seconds = sum(_seconds(start, end, until) for start, end in self.past_stops)
        if self.stopped_at is not None:
            seconds += _seconds(self.stopped_at, self.terminated_at, until)
        return seconds

    def billed_seconds(self, until: datetime) -> float:
        """Seconds at the running price (a stopped instance bills only its volume)."""
        return self.running_seconds(until)


@dataclass
class Ec2Model:
    clock: Any  # () -> datetime, the simulator's virtual now
    rng: random.Random
    boot: Any  # distribution with .draw(rng)
    warm_boot: Any = None  # distribution of a start's boot; None: the same as ``boot``
    ice_probability: float = 0.0
    bucket_size: float = 1000
    refill_per_second: float = 2
    start_bucket_size: float = 1000
    start_refill_per_second: float = 2
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
    _run_bucket: TokenBucket = field(init=False)
    _start_bucket: TokenBucket = field(init=False)
    _running_vcpus: int = 0
    # Kept as the calls change them, so no call scans every instance ever launched.
    _live: dict[str, ModelInstance] = field(default_factory=dict)
    _visible: dict[str, ModelInstance] = field(default_factory=dict)
    # MeetingID tag -> the instances carrying it (a host's launch looks its instance up by that tag).
    _by_meeting: dict[str, set[str]] = field(default_factory=dict)
    # Boots that will finish, as (ready time, instance id, launch time): ``boots_finished`` pops them.
    _boots: list[tuple[datetime, str, datetime]] = field(default_factory=list)
    _forget: list[tuple[datetime, str]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    # (kind, MeetingID, Role, Generation) -> boots drawn for it (``_boot_draw``).
    _boots_drawn: dict[tuple[str, ...], int] = field(default_factory=dict)
    _addresses: Any = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self._run_bucket = TokenBucket(self.bucket_size, self.refill_per_second)
        self._start_bucket = TokenBucket(self.start_bucket_size, self.start_refill_per_second)

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
        return self._running_vcpus

    def _no_capacity(self, operation: str, instance_type: str, zone: str) -> ClientError:
        self.capacity_errors += 1
        return client_error(
            operation,
            "InsufficientInstanceCapacity",
            f"We currently do not have sufficient {instance_type} capacity in the Availability Zone "
            f"you requested ({zone}).",
            500,
        )

    def _known(self, operation: str, instance_ids) -> list[ModelInstance]:
        """The instances named, each once; the whole call fails if EC2 knows any of them not."""
        unknown = [i for i in instance_ids if i not in self.instances]
        if unknown:
            if len(unknown) == 1:
                message = f"The instance ID '{unknown[0]}' does not exist"
            else:
                message = f"The instance IDs '{', '.join(unknown)}' do not exist"
            raise client_error(operation, "InvalidInstanceID.NotFound", message)
        return [self.instances[i] for i in dict.fromkeys(instance_ids)]

    @staticmethod
    def _changes(instances: list[ModelInstance], previous: dict[str, str], now: datetime) -> list[dict]:
        return [
            {
                "InstanceId": i.instance_id,
                "PreviousState": {"Name": previous[i.instance_id]},
                "CurrentState": {"Name": i.state(now)},
            }
            for i in instances
        ]

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
        if not self._run_bucket.take(now):
            self.throttled_calls += 1
            raise client_error("RunInstances", "RequestLimitExceeded", "Request limit exceeded.", 503)
        instance_type, zone = params.get("InstanceType", ""), self._zone(params)
        if self.out_of_capacity(instance_type, zone, now):
            raise self._no_capacity("RunInstances", instance_type, zone)
        if self._running_vcpus + self.vcpus_per_instance > self.vcpu_quota:
            raise client_error("RunInstances", "VcpuLimitExceeded", "You have requested more vCPU capacity.")
        number = next(self._ids)
        tags = {
            tag["Key"]: tag["Value"]
            for spec in params.get("TagSpecifications", [])
            if spec.get("ResourceType") == "instance"
            for tag in spec.get("Tags", [])
        }
        instance = ModelInstance(
            instance_id=f"i-{number:017x}",
            instance_type=instance_type,
            availability_zone=zone,
            tags=tags,
            launched_at=now,
            boot_seconds=self._boot_draw(self.boot, tags, "run"),
            vcpus=self.vcpus_per_instance,
            public_address=f"198.51.{(number >> 8) & 255}.{number & 255}",
        )
        self.instances[instance.instance_id] = instance
        self._live[instance.instance_id] = instance
        self._visible[instance.instance_id] = instance
        self._index_tags(instance, {})
        self._boot_began(instance)
        self._running_vcpus += instance.vcpus
        if token:
            self.tokens[token] = (bound, instance.instance_id)
        return {"Instances": [self._describe_one(instance, now)]}

    def _boot_draw(self, distribution: Any, tags: dict[str, str], kind: str) -> float:
        """A boot's seconds, drawn for what boots rather than for the order of the calls: a host's
        instance from the seed, its MeetingID, Role and Generation tags and how many boots of that kind
        they had. The fleet launches the meetings of one minute in the order the database returns rows of
        equal ``meet_time`` in, which follows where PostgreSQL placed them; drawn in call order, a meeting's
        boot went to another meeting in another run of the same scenario. An untagged instance (a warm-pool
        build: the builds are alike) draws from the model's own stream."""
        meeting = tags.get("MeetingID")
        if meeting is None:
            return distribution.draw(self.rng)
        key = (kind, meeting, tags.get("Role", ""), tags.get("Generation", ""))
        count = self._boots_drawn[key] = self._boots_drawn.get(key, 0) + 1
        return distribution.draw(random.Random("|".join((str(self.seed), *key, str(count)))))

    def stop_instances(self, InstanceIds=(), **_) -> dict:  # noqa: N803  boto3's names
        self._count("StopInstances")
        now = self.clock()
        instances = self._known("StopInstances", InstanceIds)
        previous = {i.instance_id: i.state(now) for i in instances}
        for instance in instances:
            if instance.terminated_at is not None:
                raise client_error(
                    "StopInstances",
                    "IncorrectInstanceState",
                    f"This instance '{instance.instance_id}' is not in a state from which it can be stopped.",
                )
        for instance in instances:
            if instance.holds_vcpus:
                self._running_vcpus -= instance.vcpus
                instance.stop(now)
        return {"StoppingInstances": self._changes(instances, previous, now)}

    def start_instances(self, InstanceIds=(), **_) -> dict:  # noqa: N803
        self._count("StartInstances")
        now = self.clock()
        instances = self._known("StartInstances", InstanceIds)
        previous = {i.instance_id: i.state(now) for i in instances}
        for instance in instances:
            if previous[instance.instance_id] not in ("stopped", "pending", "running"):
                raise client_error(
                    "StartInstances",
                    "IncorrectInstanceState",
                    f"The instance '{instance.instance_id}' is not in a state from which it can be started.",
                )
        # Pending and running instances are already where the call asks: nothing to do, no token.
        starting = [i for i in instances if previous[i.instance_id] == "stopped"]
        if starting:
            if not self._start_bucket.take(now, len(starting)):
                self.throttled_calls += 1
                raise client_error("StartInstances", "RequestLimitExceeded", "Request limit exceeded.", 503)
            for instance in starting:
                if self.out_of_capacity(instance.instance_type, instance.availability_zone, now):
                    raise self._no_capacity("StartInstances", instance.instance_type, instance.availability_zone)
            if self._running_vcpus + sum(i.vcpus for i in starting) > self.vcpu_quota:
                raise client_error("StartInstances", "VcpuLimitExceeded", "You have requested more vCPU capacity.")
        for instance in starting:
            number = next(self._addresses)
            instance.start(
                now,
                boot_seconds=self._boot_draw(self.warm_boot or self.boot, instance.tags, "start"),
                public_address=f"198.{18 + ((number >> 16) & 1)}.{(number >> 8) & 255}.{number & 255}",
            )
            self._running_vcpus += instance.vcpus
            self._boot_began(instance)
        return {"StartingInstances": self._changes(instances, previous, now)}

    def modify_instance_attribute(self, InstanceId="", InstanceType=None, **_) -> dict:  # noqa: N803
        """Only the instance type, and only of a stopped instance, as on EC2."""
        self._count("ModifyInstanceAttribute")
        now = self.clock()
        (instance,) = self._known("ModifyInstanceAttribute", [InstanceId])
        if InstanceType is not None:
            if instance.state(now) != "stopped":
                raise client_error(
                    "ModifyInstanceAttribute",
                    "IncorrectInstanceState",
                    f"The instance '{InstanceId}' is not in the 'stopped' state.",
                )
            instance.instance_type = InstanceType["Value"]
        return {}

    def _describe_one(self, instance: ModelInstance, now: datetime) -> dict:
        """The instance as DescribeInstances shows it; built again only when something shown changed
        (the watchdog describes every live host every sweep). Callers only read it."""
        state = instance.state(now)
        key = (state, instance.instance_type, instance.launched_at, instance.public_address, instance.tags_described())
        if instance.described is not None and instance.described[0] == key:
            return instance.described[1]
        data = {
            "InstanceId": instance.instance_id,
            "InstanceType": instance.instance_type,
            "State": {"Name": state},
            "Placement": {"AvailabilityZone": instance.availability_zone},
            "LaunchTime": instance.launched_at,
            "PrivateIpAddress": "10.0.0.1",
            "Tags": instance.tags_described(),
        }
        if state == "running":
            data["PublicIpAddress"] = instance.public_address
        instance.described = (key, data)
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

    def _visible_now(self, now: datetime) -> dict[str, ModelInstance]:
        while self._forget and now - self._forget[0][0] >= FORGET_TERMINATED:
            forgotten = self._visible.pop(heapq.heappop(self._forget)[1], None)
            if forgotten is not None:
                self._index_tags(forgotten, dict(forgotten.tags), drop=True)
        return self._visible

    def _candidates(self, filters: list[dict], now: datetime) -> list[ModelInstance]:
        """The instances a filtered DescribeInstances can match, from the narrowest index that holds
        them all (the filters are still applied to each): by MeetingID tag, else the live ones when
        the state filter asks only for live states, else every instance EC2 still shows."""
        visible = self._visible_now(now)
        for spec in filters:
            if spec["Name"] == "tag:MeetingID":
                ids = set().union(*(self._by_meeting.get(value, ()) for value in spec["Values"]))
                return [visible[i] for i in ids if i in visible]
        for spec in filters:
            if spec["Name"] == "instance-state-name" and not {"shutting-down", "terminated"} & set(spec["Values"]):
                return list(self._live.values())
        return list(visible.values())

    def _index_tags(self, instance: ModelInstance, before: dict[str, str], *, drop: bool = False) -> None:
        """Keep ``_by_meeting`` in step with the instance's MeetingID tag (``before``: its tags until now)."""
        instance.tag_list = None
        old, new = before.get("MeetingID"), None if drop else instance.tags.get("MeetingID")
        if old == new:
            return
        if old is not None:
            self._by_meeting.get(old, set()).discard(instance.instance_id)
        if new is not None:
            self._by_meeting.setdefault(new, set()).add(instance.instance_id)

    def _boot_began(self, instance: ModelInstance) -> None:
        ready = instance.launched_at + timedelta(seconds=instance.boot_seconds)
        heapq.heappush(self._boots, (ready, instance.instance_id, instance.launched_at))

    def describe_instances(self, InstanceIds=None, Filters=None, **_) -> dict:  # noqa: N803
        self._count("DescribeInstances")
        now = self.clock()
        filters = Filters or []
        found = self._known("DescribeInstances", InstanceIds) if InstanceIds else self._candidates(filters, now)
        if filters:
            found = [i for i in found if self._matches(i, filters, now)]
        return {"Reservations": [{"Instances": [self._describe_one(i, now) for i in found]}] if found else []}

    def describe_instance_status(self, InstanceIds=None, IncludeAllInstances=False, **_) -> dict:  # noqa: N803
        self._count("DescribeInstanceStatus")
        now = self.clock()
        statuses = []
        for instance in self._known("DescribeInstanceStatus", InstanceIds or []):
            state = instance.state(now)
            if state != "running" and not IncludeAllInstances:
                continue
            if state not in ("pending", "running"):
                check = {"Status": "not-applicable"}
            else:
                young = now < instance.launched_at + timedelta(seconds=STATUS_INITIALIZING_SECONDS)
                check = {"Status": "initializing" if young else "ok"}
            statuses.append(
                {
                    "InstanceId": instance.instance_id,
                    "InstanceState": {"Name": state},
                    "InstanceStatus": check,
                    "SystemStatus": check,
                }
            )
        return {"InstanceStatuses": statuses}

    def terminate_instances(self, InstanceIds=(), **_) -> dict:  # noqa: N803
        self._count("TerminateInstances")
        now = self.clock()
        instances = self._known("TerminateInstances", InstanceIds)
        previous = {i.instance_id: i.state(now) for i in instances}
        for instance in instances:
            if instance.terminated_at is None:
                if instance.holds_vcpus:
                    self._running_vcpus -= instance.vcpus
                instance.terminate(now)
                del self._live[instance.instance_id]
                heapq.heappush(self._forget, (now, instance.instance_id))
        return {"TerminatingInstances": self._changes(instances, previous, now)}

    def describe_images(self, ImageIds=(), **_) -> dict:  # noqa: N803
        self._count("DescribeImages")
        return {"Images": [{"ImageId": image, "RootDeviceName": "/dev/sda1"} for image in ImageIds]}

    def create_tags(self, Resources=(), Tags=(), **_) -> dict:  # noqa: N803
        self._count("CreateTags")
        for instance_id in Resources:
            instance = self.instances.get(instance_id)
            if instance is not None:
                before = dict(instance.tags)
                instance.tags.update({t["Key"]: t["Value"] for t in Tags})
                if instance_id in self._visible:
                    self._index_tags(instance, before)
                instance.tag_list = None
        return {}

    def delete_tags(self, Resources=(), Tags=None, **_) -> dict:  # noqa: N803
        """As EC2: a tag given with a value goes only if it has that value; no ``Tags`` removes them all."""
        self._count("DeleteTags")
        for instance_id in Resources:
            instance = self.instances.get(instance_id)
            if instance is None:
                continue
            before = dict(instance.tags)
            if Tags is None:
                instance.tags.clear()
            else:
                for tag in Tags:
                    if "Value" not in tag or instance.tags.get(tag["Key"]) == tag["Value"]:
                        instance.tags.pop(tag["Key"], None)
            if instance_id in self._visible:
                self._index_tags(instance, before)
            instance.tag_list = None
        return {}

    # --- what the simulator asks ----------------------------------------------------------------------
    def instance_ready(self, instance_id: str) -> bool:
        instance = self.instances.get(instance_id)
        return instance is not None and instance.ready(self.clock())

    def boots_finished(self) -> list[ModelInstance]:
        """The instances whose current boot finished since the last call (each boot once; a boot cut
        short by a stop or a termination never finishes)."""
        now, finished = self.clock(), []
        while self._boots and self._boots[0][0] <= now:
            _, instance_id, launched_at = heapq.heappop(self._boots)
            instance = self.instances[instance_id]
            if instance.launched_at == launched_at and instance.ready(now):
                finished.append(instance)
        return finished

    def live_instances(self) -> list[ModelInstance]:
        """Every instance not terminated, stopped ones included."""
        return list(self._live.values())
