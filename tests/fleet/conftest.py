"""The fleet's tests run against a real moto server over HTTP and a real DCV stand-in.

One moto server per session on a free port; its state is wiped before each test
(POST /moto-api/reset). Never real AWS: the credentials are fake and every client has the
local endpoint.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from devtools.standin import serve
from fleet import aws

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
REGION = "us-west-2"
TEST_AMI = "ami-12345678"
LAUNCH_AMI = "ami-760aaa0f"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_listening(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start") from None
            time.sleep(0.05)


@pytest.fixture(scope="session")
def moto_url():
    """The session's local EC2: a moto server behind the strict proxy (devtools/strict_aws.py), over HTTP.

    The proxy enforces what EC2 does and moto does not (ClientToken idempotency, capacity errors as
    HTTP 500, RunInstances throttling, eventual consistency, initializing status checks); its rules
    are reset with moto before each test and default to no delays (``strict`` changes them).
    """
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_SESSION_TOKEN="testing")
    os.environ.pop("AWS_PROFILE", None)
    moto_port, proxy_port = free_port(), free_port()
    moto = subprocess.Popen(
        [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(moto_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    proxy = subprocess.Popen(
        [sys.executable, "-m", "devtools.strict_aws", "--port", str(proxy_port)]
        + ["--upstream", f"http://127.0.0.1:{moto_port}"],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_listening(moto_port, moto, "moto_server")
        _wait_listening(proxy_port, proxy, "the strict EC2 proxy")
        yield f"http://127.0.0.1:{proxy_port}"
    finally:
        for process in (proxy, moto):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # a loaded moto server may not finish its threads in time
                process.kill()
                process.wait(timeout=10)


class Strict:
    """The strict proxy's control endpoints (devtools/strict_aws.py)."""

    def __init__(self, url: str):
        self.url = url

    def _post(self, path: str, data: dict) -> dict:
        request = urllib.request.Request(f"{self.url}/strict-api/{path}", data=json.dumps(data).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def capacity(self, *, instance_type: str = "*", availability_zone: str = "*", available: bool = False) -> None:
        self._post(
            "capacity",
            {"instance_type": instance_type, "availability_zone": availability_zone, "available": available},
        )

    def rules(self, **rules: float) -> None:
        self._post("config", rules)

    def advance(self, seconds: float) -> None:
        self._post("clock", {"advance_seconds": seconds})

    def state(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/strict-api/state", timeout=10) as response:
            return json.loads(response.read())


@pytest.fixture
def strict(local_aws):
    return Strict(local_aws)


@pytest.fixture(scope="session")
def standin_port(moto_url):
    """An in-process DCV stand-in (no boot delay) on the session's moto server."""
    port = free_port()
    server = serve(port=port, app_url="http://127.0.0.1:9", aws_endpoint=moto_url, region=REGION, boot_seconds=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield port, server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def local_aws(moto_url, standin_port, settings):
    """Point the fleet at the session's moto server, wiped clean, with a working launch configuration."""
    urllib.request.urlopen(urllib.request.Request(f"{moto_url}/moto-api/reset", method="POST"), timeout=10).read()
    port, _ = standin_port
    settings.AWS_ENDPOINT_URL = moto_url
    settings.AWS_REGION = REGION
    # One of moto's built-in images, whose root device is /dev/xvda: the launch reads it (DescribeImages).
    settings.ELEPHANT_AMI_ID = LAUNCH_AMI
    settings.ELEPHANT_DEPLOYMENT = "test"
    settings.ELEPHANT_PUBLIC_IP = True
    settings.ELEPHANT_INSTANCE_TYPES = ["g4dn.xlarge", "g5.xlarge"]
    settings.ELEPHANT_SUBNET_IDS = []
    settings.ELEPHANT_AVAILABILITY_ZONES = []
    settings.ELEPHANT_SECURITY_GROUP_IDS = []
    settings.ELEPHANT_KEY_NAME = ""
    settings.ELEPHANT_INSTANCE_PROFILE = ""
    settings.ELEPHANT_DNS_ZONE_ID = ""
    settings.ELEPHANT_DCV_URL_TEMPLATE = f"http://127.0.0.1:{port}/{{instance_id}}/"
    settings.ELEPHANT_PROBE_TIMEOUT_SECONDS = 2.0
    aws.aws_clients_reset()
    yield moto_url
    aws.aws_clients_reset()


@pytest.fixture
def ec2(local_aws):
    """A separate boto3 client for the test's own look at the local EC2."""
    return boto3.client("ec2", region_name=REGION, endpoint_url=local_aws)


def instances_of(ec2, meeting_id: str, states=("pending", "running")) -> list[dict]:
    found = ec2.describe_instances(
        Filters=[
            {"Name": "tag:MeetingID", "Values": [meeting_id]},
            {"Name": "instance-state-name", "Values": list(states)},
        ]
    )
    return [i for r in found["Reservations"] for i in r["Instances"]]


class Hook:
    """A botocore event handler on the fleet's real EC2 client, removed after the test."""

    def __init__(self):
        self.registered = []

    def on(self, event: str, handler):
        client = aws.ec2_client()
        client.meta.events.register(event, handler)
        self.registered.append((client, event, handler))

    def clear(self):
        for client, event, handler in self.registered:
            client.meta.events.unregister(event, handler)
        self.registered.clear()


@pytest.fixture
def ec2_hook():
    hook = Hook()
    yield hook
    hook.clear()


class _Body:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body


def aws_error(code: str, message: str = "", status: int = 400):
    """A ``before-send`` answer: the HTTP error EC2 would send, which botocore parses, retries
    under the one retry policy (throttling, 5xx) and raises as the ClientError AWS would give."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{message or code}</Message>"
        "</Error></Errors><RequestID>test-request</RequestID></Response>"
    ).encode()
    return AWSResponse("https://ec2.test/", status, {}, _Body(body))
