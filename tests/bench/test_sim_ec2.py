"""The fleet simulator's EC2 model (bench/sim_ec2.py): warm pools, stopped instances started again."""

import random
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from bench.sim_ec2 import Ec2Model
from bench.sim_scenario import Distribution

T0 = datetime(2027, 3, 1, 16, 0, tzinfo=UTC)
COLD, WARM = 300, 60


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return Clock()


def model(clock: Clock, **overrides) -> Ec2Model:
    params = {
        "clock": clock,
        "rng": random.Random(1),
        "boot": Distribution("fixed", COLD),
        "warm_boot": Distribution("fixed", WARM),
        "subnet_zones": {"subnet-a": "us-west-2a", "subnet-b": "us-west-2b"},
    }
    return Ec2Model(**{**params, **overrides})


def launch(ec2: Ec2Model, **params) -> str:
    answer = ec2.run_instances(
        **{"InstanceType": "g4dn.xlarge", "SubnetId": "subnet-a", "MinCount": 1, "MaxCount": 1, **params}
    )
    return answer["Instances"][0]["InstanceId"]


def described(ec2: Ec2Model, instance_id: str) -> dict:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def state(ec2: Ec2Model, instance_id: str) -> str:
    return described(ec2, instance_id)["State"]["Name"]


def refused(call, **params) -> tuple[str, int]:
    with pytest.raises(ClientError) as caught:
        call(**params)
    return caught.value.response["Error"]["Code"], caught.value.response["ResponseMetadata"]["HTTPStatusCode"]


def stopped_instance(ec2: Ec2Model, clock: Clock, **params) -> str:
    instance_id = launch(ec2, **params)
    clock.advance(COLD)
    ec2.stop_instances(InstanceIds=[instance_id])
    clock.advance(30)
    assert state(ec2, instance_id) == "stopped"
    return instance_id


def test_stop_then_start_is_a_new_boot_with_a_new_address_and_launch_time(clock):
    ec2 = model(clock)
    instance_id = launch(ec2)
    clock.advance(COLD)
    first = described(ec2, instance_id)
    assert ec2.instance_ready(instance_id) and first["State"]["Name"] == "running"

    answer = ec2.stop_instances(InstanceIds=[instance_id])
    assert answer["StoppingInstances"] == [
        {"InstanceId": instance_id, "PreviousState": {"Name": "running"}, "CurrentState": {"Name": "stopping"}}
    ]
    assert "PublicIpAddress" not in described(ec2, instance_id)
    assert not ec2.instance_ready(instance_id)
    clock.advance(29)
    assert state(ec2, instance_id) == "stopping"
    clock.advance(1)
    assert state(ec2, instance_id) == "stopped"
    live = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    assert live["Reservations"] == []
    assert ec2.describe_instance_status(InstanceIds=[instance_id])["InstanceStatuses"] == []
    [status] = ec2.describe_instance_status(InstanceIds=[instance_id], IncludeAllInstances=True)["InstanceStatuses"]
    assert status["InstanceState"]["Name"] == "stopped"
    assert [i.instance_id for i in ec2.live_instances()] == [instance_id]

    clock.advance(3600)
    started_at = clock.now
    answer = ec2.start_instances(InstanceIds=[instance_id])
    assert answer["StartingInstances"] == [
        {"InstanceId": instance_id, "PreviousState": {"Name": "stopped"}, "CurrentState": {"Name": "pending"}}
    ]
    assert described(ec2, instance_id)["LaunchTime"] == started_at != first["LaunchTime"]
    clock.advance(WARM - 1)
    assert not ec2.instance_ready(instance_id)
    [status] = ec2.describe_instance_status(InstanceIds=[instance_id])["InstanceStatuses"]
    assert status["InstanceStatus"]["Status"] == "initializing"
    clock.advance(1)
    assert ec2.instance_ready(instance_id)
    again = described(ec2, instance_id)
    assert again["State"]["Name"] == "running"
    assert again["PublicIpAddress"] and again["PublicIpAddress"] != first["PublicIpAddress"]
    clock.advance(120 - WARM)
    [status] = ec2.describe_instance_status(InstanceIds=[instance_id])["InstanceStatuses"]
    assert status["InstanceStatus"]["Status"] == status["SystemStatus"]["Status"] == "ok"


def test_start_and_stop_answer_each_state_as_ec2_does(clock):
    ec2 = model(clock)
    running = launch(ec2)
    clock.advance(COLD)
    # Already where the call asks: a success that changes nothing.
    answer = ec2.start_instances(InstanceIds=[running])
    assert answer["StartingInstances"][0]["PreviousState"] == answer["StartingInstances"][0]["CurrentState"]
    assert answer["StartingInstances"][0]["CurrentState"] == {"Name": "running"}
    assert described(ec2, running)["LaunchTime"] == T0

    ec2.stop_instances(InstanceIds=[running])
    assert refused(ec2.start_instances, InstanceIds=[running]) == ("IncorrectInstanceState", 400)
    assert ec2.stop_instances(InstanceIds=[running])["StoppingInstances"][0]["CurrentState"] == {"Name": "stopping"}
    clock.advance(30)
    answer = ec2.stop_instances(InstanceIds=[running])
    assert answer["StoppingInstances"][0]["PreviousState"] == {"Name": "stopped"}
    assert answer["StoppingInstances"][0]["CurrentState"] == {"Name": "stopped"}

    ec2.terminate_instances(InstanceIds=[running])
    assert refused(ec2.start_instances, InstanceIds=[running]) == ("IncorrectInstanceState", 400)
    assert refused(ec2.stop_instances, InstanceIds=[running]) == ("IncorrectInstanceState", 400)
    assert refused(ec2.start_instances, InstanceIds=["i-0000000000000dead"]) == ("InvalidInstanceID.NotFound", 400)
    assert refused(ec2.stop_instances, InstanceIds=["i-0000000000000dead"]) == ("InvalidInstanceID.NotFound", 400)


def test_start_instances_is_throttled_on_its_own_bucket(clock):
    ec2 = model(clock, start_bucket_size=1, start_refill_per_second=0.01)
    first, second = stopped_instance(ec2, clock), stopped_instance(ec2, clock)

    ec2.start_instances(InstanceIds=[first])
    assert refused(ec2.start_instances, InstanceIds=[second]) == ("RequestLimitExceeded", 503)
    assert ec2.throttled_calls == 1
    assert state(ec2, second) == "stopped"
    launch(ec2)  # RunInstances draws on its own bucket
    clock.advance(100)
    ec2.start_instances(InstanceIds=[second])
    assert state(ec2, second) == "pending"


def test_no_capacity_on_start_leaves_the_instance_stopped_in_its_zone(clock):
    ec2 = model(clock)
    instance_id = stopped_instance(ec2, clock, SubnetId="subnet-b")
    ec2.ice_probability = 1.0

    assert refused(ec2.start_instances, InstanceIds=[instance_id]) == ("InsufficientInstanceCapacity", 500)
    assert ec2.capacity_errors == 1
    assert state(ec2, instance_id) == "stopped"
    assert not ec2.instance_ready(instance_id)

    ec2.ice_probability = 0.0
    ec2.start_instances(InstanceIds=[instance_id])
    assert described(ec2, instance_id)["Placement"]["AvailabilityZone"] == "us-west-2b"


def test_a_stopped_instance_holds_no_vcpus(clock):
    ec2 = model(clock, vcpu_quota=4, vcpus_per_instance=4)
    first = launch(ec2)
    assert refused(ec2.run_instances, InstanceType="g4dn.xlarge", MinCount=1, MaxCount=1) == ("VcpuLimitExceeded", 400)

    ec2.stop_instances(InstanceIds=[first])
    assert ec2.running_vcpus() == 0
    second = launch(ec2)
    clock.advance(30)
    assert refused(ec2.start_instances, InstanceIds=[first]) == ("VcpuLimitExceeded", 400)
    assert state(ec2, first) == "stopped"

    ec2.terminate_instances(InstanceIds=[second])
    ec2.start_instances(InstanceIds=[first])
    assert ec2.running_vcpus() == 4


def test_billing_splits_running_and_stopped_time(clock):
    ec2 = model(clock)
    instance_id = launch(ec2)
    clock.advance(100)
    ec2.stop_instances(InstanceIds=[instance_id])
    clock.advance(500)
    ec2.start_instances(InstanceIds=[instance_id])
    clock.advance(200)
    ec2.stop_instances(InstanceIds=[instance_id])
    clock.advance(1000)
    answer = ec2.terminate_instances(InstanceIds=[instance_id])
    # A stopped instance has nothing left to shut down.
    assert answer["TerminatingInstances"][0]["PreviousState"] == {"Name": "stopped"}
    assert answer["TerminatingInstances"][0]["CurrentState"] == {"Name": "terminated"}
    assert ec2.live_instances() == []

    instance = ec2.instances[instance_id]
    later = clock.now + timedelta(days=1)
    assert instance.running_seconds(later) == instance.billed_seconds(later) == 300
    assert instance.stopped_seconds(later) == 1500
    midway = T0 + timedelta(seconds=350)
    assert (instance.running_seconds(midway), instance.stopped_seconds(midway)) == (100, 250)


def test_a_terminated_instance_is_described_for_an_hour(clock):
    ec2 = model(clock)
    instance_id = launch(ec2)
    ec2.terminate_instances(InstanceIds=[instance_id])
    gone = [{"Name": "instance-state-name", "Values": ["terminated"]}]
    clock.advance(3599)
    assert ec2.describe_instances(Filters=gone)["Reservations"]
    clock.advance(1)
    assert ec2.describe_instances(Filters=gone)["Reservations"] == []
    assert state(ec2, instance_id) == "terminated"


def test_client_token_answers_the_same_instance_after_a_stop(clock):
    ec2 = model(clock)
    instance_id = launch(ec2, ClientToken="meeting-1-h1")
    clock.advance(COLD)
    ec2.stop_instances(InstanceIds=[instance_id])

    assert launch(ec2, ClientToken="meeting-1-h1") == instance_id
    assert len(ec2.instances) == 1
    with pytest.raises(ClientError) as caught:
        ec2.run_instances(
            InstanceType="g5.xlarge", SubnetId="subnet-a", MinCount=1, MaxCount=1, ClientToken="meeting-1-h1"
        )
    assert caught.value.response["Error"]["Code"] == "IdempotentParameterMismatch"


def test_delete_tags_removes_keys_and_keeps_a_tag_whose_value_differs(clock):
    ec2 = model(clock)
    instance_id = launch(ec2)
    ec2.create_tags(
        Resources=[instance_id], Tags=[{"Key": "ElephantPool", "Value": "g4"}, {"Key": "Role", "Value": "t"}]
    )

    ec2.delete_tags(Resources=[instance_id], Tags=[{"Key": "Role", "Value": "other"}])
    ec2.delete_tags(Resources=[instance_id], Tags=[{"Key": "ElephantPool"}])
    assert described(ec2, instance_id)["Tags"] == [{"Key": "Role", "Value": "t"}]
    pooled = ec2.describe_instances(Filters=[{"Name": "tag:ElephantPool", "Values": ["g4"]}])
    assert pooled["Reservations"] == []


def _boot_seconds_of_hosts(clock: Clock, order: list[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """Launch the hosts in ``order`` (pairs of meeting id and role): host -> its boot seconds."""
    ec2 = model(
        clock,
        seed=7,
        boot=Distribution("uniform", 100, 900),
        warm_boot=Distribution("uniform", 30, 120),
        rng=random.Random(3),
    )
    seconds = {}
    for meeting, role in order:
        tags = [
            {"Key": "MeetingID", "Value": meeting},
            {"Key": "Role", "Value": role},
            {"Key": "Generation", "Value": "1"},
        ]
        instance_id = launch(ec2, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
        seconds[(meeting, role)] = ec2.instances[instance_id].boot_seconds
    return seconds


def test_a_hosts_boot_time_follows_the_host_not_the_order_of_the_launches(clock):
    """The fleet launches the meetings of one minute in the order the database hands their rows over; a
    boot drawn in call order gave two runs of one scenario different boot times for the same meeting."""
    hosts = [(f"meeting{n:02d}", role) for n in range(12) for role in ("teacher", "student")]
    forwards = _boot_seconds_of_hosts(clock, hosts)
    backwards = _boot_seconds_of_hosts(Clock(), list(reversed(hosts)))
    assert forwards == backwards
    assert len(set(forwards.values())) == len(hosts)  # each host draws its own


def test_a_warm_start_draws_for_the_meeting_it_was_tagged_for(clock):
    times = []
    for tagged_first in ("a", "b"):
        ec2 = model(clock, seed=7, warm_boot=Distribution("uniform", 30, 120))
        pool = {name: stopped_instance(ec2, clock) for name in ("a", "b")}
        order = ["a", "b"] if tagged_first == "a" else ["b", "a"]
        for name in order:
            ec2.create_tags(
                Resources=[pool[name]],
                Tags=[{"Key": "MeetingID", "Value": f"meeting-{name}"}, {"Key": "Role", "Value": "teacher"}],
            )
            ec2.start_instances(InstanceIds=[pool[name]])
        times.append({name: ec2.instances[pool[name]].boot_seconds for name in pool})
    assert times[0] == times[1]
    assert times[0]["a"] != times[0]["b"]
