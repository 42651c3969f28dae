"""The one AWS retry policy (elephant.aws): botocore's retries as configured, one classification.

Faults are answered ``before-send``, inside botocore's retry loop, so these tests see the real
policy decide (attempts, retry mode, what is retried); the backoff sleeps are frozen (tests/conftest.py).
"""

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

from elephant import aws


class _Body:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body


def ec2_answer(status: int, code: str = "", body: str | None = None) -> AWSResponse:
    if body is None:
        body = (
            f'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code>'
            f"<Message>{code} said no</Message></Error></Errors><RequestID>r</RequestID></Response>"
        )
    return AWSResponse("https://ec2.test/", status, {}, _Body(body.encode()))


EMPTY_DESCRIBE = (
    '<?xml version="1.0" encoding="UTF-8"?><DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
    "<requestId>r</requestId><reservationSet/></DescribeInstancesResponse>"
)


@pytest.fixture
def ec2(settings, monkeypatch):
    """The factory's EC2 client on an endpoint nothing listens on: every answer comes from the test."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings.AWS_ENDPOINT_URL = "http://127.0.0.1:9"
    settings.AWS_REGION = "us-west-2"
    aws.aws_clients_reset()
    answers: list = []
    sent: list = []
    client = aws.aws_client("ec2")

    def answer(request, **_):
        sent.append(request)
        return answers.pop(0) if answers else ec2_answer(200, body=EMPTY_DESCRIBE)

    client.meta.events.register("before-send.ec2.DescribeInstances", answer)
    yield client, answers, sent
    aws.aws_clients_reset()


def test_throttling_is_retried_by_the_policy_then_succeeds(ec2, settings):
    client, answers, sent = ec2
    answers += [ec2_answer(503, "RequestLimitExceeded"), ec2_answer(500, "InternalError")]
    assert aws.aws_call(client.describe_instances)["Reservations"] == []
    assert len(sent) == 3


def test_what_outlasts_the_policy_is_transient_after_exactly_max_attempts(ec2, settings):
    client, answers, sent = ec2
    answers += [ec2_answer(503, "RequestLimitExceeded")] * 10
    with pytest.raises(aws.AwsTransientError) as raised:
        aws.aws_call(client.describe_instances)
    assert raised.value.code == "RequestLimitExceeded"
    assert len(sent) == settings.ELEPHANT_AWS_MAX_ATTEMPTS


def test_max_attempts_is_one_setting_for_every_client(settings, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings.ELEPHANT_AWS_MAX_ATTEMPTS = 2
    settings.ELEPHANT_AWS_RETRY_MODE = "adaptive"
    aws.aws_clients_reset()
    try:
        for service in ("ec2", "route53", "dynamodb"):
            retries = aws.aws_client(service).meta.config.retries
            assert retries == {"mode": "adaptive", "total_max_attempts": 2}
    finally:
        aws.aws_clients_reset()


def test_a_client_error_is_not_retried_and_keeps_its_code(ec2):
    client, answers, sent = ec2
    answers.append(ec2_answer(400, "InvalidInstanceID.NotFound"))
    with pytest.raises(ClientError) as raised:
        aws.aws_call(client.describe_instances)
    assert aws.error_code(raised.value) == "InvalidInstanceID.NotFound"
    assert len(sent) == 1


def test_an_unknown_retry_mode_is_a_configuration_error(settings):
    settings.ELEPHANT_AWS_RETRY_MODE = "legacy-ish"
    with pytest.raises(aws.AwsConfigError, match="ELEPHANT_AWS_RETRY_MODE"):
        aws.aws_client("ec2")


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (503, "RequestLimitExceeded", aws.AwsTransientError),
        (400, "ThrottlingException", aws.AwsTransientError),
        (400, "ProvisionedThroughputExceededException", aws.AwsTransientError),
        (500, "InternalError", aws.AwsTransientError),
        (500, "InsufficientInstanceCapacity", aws.AwsCapacityError),  # as EC2 sends it
        (400, "InsufficientInstanceCapacity", aws.AwsCapacityError),
        (403, "UnauthorizedOperation", aws.AwsConfigError),
    ],
)
def test_one_classification_for_every_service(status, code, kind):
    exc = ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")
    error = aws.aws_error(exc, operation="Op")
    assert type(error) is kind and error.code == code and error.operation == "Op"


def test_network_and_credential_faults_are_classified():
    assert isinstance(
        aws.aws_error(EndpointConnectionError(endpoint_url="http://x"), operation="Op"), aws.AwsTransientError
    )
    assert isinstance(aws.aws_error(NoCredentialsError(), operation="Op"), aws.AwsConfigError)
