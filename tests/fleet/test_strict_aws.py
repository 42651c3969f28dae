"""The strict local EC2 (devtools/strict_aws.py): what it enforces in front of moto, over HTTP."""

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.fleet.conftest import REGION, TEST_AMI


@pytest.fixture
def raw_ec2(local_aws):
    """A client that shows every answer as it is: no retries."""
    config = Config(retries={"mode": "standard", "total_max_attempts": 1})
    return boto3.client("ec2", region_name=REGION, endpoint_url=local_aws, config=config)


def run(ec2, **params) -> dict:
    return ec2.run_instances(ImageId=TEST_AMI, MinCount=1, MaxCount=1, **params)["Instances"][0]


def error_of(call) -> tuple[str, int]:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response["Error"]["Code"], caught.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_the_same_token_and_parameters_answer_the_same_instance_even_terminated(raw_ec2):
    first = run(raw_ec2, ClientToken="tok-1", InstanceType="g4dn.xlarge")
    assert run(raw_ec2, ClientToken="tok-1", InstanceType="g4dn.xlarge")["InstanceId"] == first["InstanceId"]
    raw_ec2.terminate_instances(InstanceIds=[first["InstanceId"]])
    assert run(raw_ec2, ClientToken="tok-1", InstanceType="g4dn.xlarge")["InstanceId"] == first["InstanceId"]
    found = raw_ec2.describe_instances(Filters=[{"Name": "image-id", "Values": [TEST_AMI]}])
    assert len([i for r in found["Reservations"] for i in r["Instances"]]) == 1


def test_the_same_token_with_other_parameters_is_a_mismatch(raw_ec2):
    run(raw_ec2, ClientToken="tok-2", InstanceType="g4dn.xlarge")
    mismatch = error_of(lambda: run(raw_ec2, ClientToken="tok-2", InstanceType="g5.xlarge"))
    assert mismatch == ("IdempotentParameterMismatch", 400)


def test_capacity_is_switched_off_per_type_and_zone_as_an_http_500(raw_ec2, strict):
    strict.capacity(instance_type="g4dn.xlarge", availability_zone="us-west-2a")
    no_capacity = error_of(
        lambda: run(raw_ec2, InstanceType="g4dn.xlarge", Placement={"AvailabilityZone": "us-west-2a"})
    )
    assert no_capacity == ("InsufficientInstanceCapacity", 500)
    assert run(raw_ec2, InstanceType="g4dn.xlarge", Placement={"AvailabilityZone": "us-west-2b"})
    assert run(raw_ec2, InstanceType="g5.xlarge", Placement={"AvailabilityZone": "us-west-2a"})
    strict.capacity(instance_type="g4dn.xlarge", availability_zone="us-west-2a", available=True)
    assert run(raw_ec2, InstanceType="g4dn.xlarge", Placement={"AvailabilityZone": "us-west-2a"})
    # A failed request binds no token: the same token works once capacity is back.
    strict.capacity(instance_type="g6.xlarge")
    assert (
        error_of(lambda: run(raw_ec2, InstanceType="g6.xlarge", ClientToken="t3"))[0] == "InsufficientInstanceCapacity"
    )
    strict.capacity(instance_type="g6.xlarge", available=True)
    assert run(raw_ec2, InstanceType="g6.xlarge", ClientToken="t3")


def test_run_instances_is_throttled_by_a_token_bucket(raw_ec2, strict):
    assert strict.state()["rules"]["run_instances_burst"] == 1000  # EC2's documented bucket by default
    # A slow refill: the endpoint's clock is real time plus the test's advances, and a loaded machine
    # must not refill a token between two calls.
    strict.rules(run_instances_burst=2, run_instances_refill_per_second=0.02)
    run(raw_ec2)
    run(raw_ec2)
    assert error_of(lambda: run(raw_ec2)) == ("RequestLimitExceeded", 503)
    strict.advance(50)  # one token back
    run(raw_ec2)
    assert error_of(lambda: run(raw_ec2)) == ("RequestLimitExceeded", 503)


def test_a_fresh_instance_is_unknown_for_a_while_and_its_checks_start_initializing(raw_ec2, strict):
    strict.rules(invisible_seconds=5, initializing_seconds=60)
    instance_id = run(raw_ec2)["InstanceId"]
    assert error_of(lambda: raw_ec2.describe_instances(InstanceIds=[instance_id]))[0] == "InvalidInstanceID.NotFound"
    listed = raw_ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    assert instance_id not in {i["InstanceId"] for r in listed["Reservations"] for i in r["Instances"]}
    strict.advance(6)
    assert raw_ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    status = raw_ec2.describe_instance_status(InstanceIds=[instance_id], IncludeAllInstances=True)
    checks = status["InstanceStatuses"][0]
    assert checks["InstanceStatus"]["Status"] == checks["SystemStatus"]["Status"] == "initializing"
    strict.advance(60)
    checks = raw_ec2.describe_instance_status(InstanceIds=[instance_id])["InstanceStatuses"][0]
    assert checks["InstanceStatus"]["Status"] == "ok"


def test_route53_changes_are_pending_until_synced(local_aws, strict):
    strict.rules(dns_sync_seconds=30)
    route53 = boto3.client("route53", region_name=REGION, endpoint_url=local_aws)
    zone = route53.create_hosted_zone(Name="d.example.com", CallerReference="z")["HostedZone"]["Id"]
    record = {"Name": "h.d.example.com", "Type": "A", "TTL": 60, "ResourceRecords": [{"Value": "192.0.2.1"}]}
    change = route53.change_resource_record_sets(
        HostedZoneId=zone, ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": record}]}
    )["ChangeInfo"]
    assert change["Status"] == "PENDING"
    assert route53.get_change(Id=change["Id"])["ChangeInfo"]["Status"] == "PENDING"
    strict.advance(31)
    assert route53.get_change(Id=change["Id"])["ChangeInfo"]["Status"] == "INSYNC"
