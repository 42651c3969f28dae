"""A real moto server over HTTP for the DynamoDB mirror's tests (and the benchmark).

One process per test session, on a free port chosen at run time; ``stop()``/``start()`` on the
same port simulate an outage. ``reset()`` wipes its state (POST /moto-api/reset).
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

MOTO_SERVER = Path(sys.executable).parent / "moto_server"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        os.environ.update(FAKE_CREDENTIALS)  # never real credentials, whatever the environment holds

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self.process and self.process.poll() is None:
            return
        self.process = subprocess.Popen(
            [str(MOTO_SERVER), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"moto_server exited with {self.process.returncode}") from None
                time.sleep(0.05)
        raise RuntimeError("moto_server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")
        urllib.request.urlopen(request, timeout=5).read()


_server: MotoServer | None = None


def moto_server() -> MotoServer:
    """The session's server, started on first use and stopped at exit."""
    global _server
    if _server is None:
        _server = MotoServer()
        _server.start()
        atexit.register(_server.stop)
    return _server


# --- pytest fixtures (import them into a test module) -------------------------------------------
import pytest  # noqa: E402


@pytest.fixture
def ddb(settings, db):
    """An empty local DynamoDB with the table bootstrapped; settings point every client at it."""
    from mirror.dynamo import table_bootstrap

    server = moto_server()
    server.start()
    settings.AWS_ENDPOINT_URL = server.url
    settings.AWS_REGION = "us-west-2"
    settings.ELEPHANT_AWS_MAX_ATTEMPTS = 2
    settings.ELEPHANT_DDB_TIMEOUT_SECONDS = 2.0
    settings.ELEPHANT_PUBLIC_URL = "https://elephant.example.com"
    server.reset()
    table_bootstrap()
    return server


@pytest.fixture
def ddb_calls(ddb):
    """Counts of DynamoDB API calls by operation name, from a botocore hook on the real client."""
    from collections import Counter

    from mirror.dynamo import ddb_client

    calls: Counter = Counter()

    def count(model, **kwargs):
        calls[model.name] += 1

    events = ddb_client().meta.events
    events.register("before-call.dynamodb", count, unique_id="test-ddb-calls")
    yield calls
    events.unregister("before-call.dynamodb", unique_id="test-ddb-calls")


# --- what the agents and the tests do ---------------------------------------------------------
TABLE = "elephant-meetings"


def mirrored(meeting):
    """``meeting`` written to DynamoDB once (resync + flush), refreshed."""
    from mirror.services import mirror_flush, mirror_resync

    mirror_resync(meeting_ids=[meeting.id], actor="test")
    assert mirror_flush().written == 1
    meeting.refresh_from_db()
    return meeting


def agent_writes(meeting_id: str, **attributes) -> None:
    """What an agent on a host does: SET its attributes (and maybe status) on the item."""
    from mirror.dynamo import ddb_client

    names = {f"#n{i}": name for i, name in enumerate(attributes)}
    values = {f":v{i}": {"S": value} for i, value in enumerate(attributes.values())}
    ddb_client().update_item(
        TableName=TABLE,
        Key={"id": {"S": meeting_id}},
        UpdateExpression="SET " + ", ".join(f"#n{i} = :v{i}" for i in range(len(attributes))),
        ExpressionAttributeNames=names,
        ExpressionAttributeValues=values,
    )


def agent_writes_raw(meeting_id: str, name: str, value: dict) -> None:
    from mirror.dynamo import ddb_client

    ddb_client().update_item(
        TableName=TABLE,
        Key={"id": {"S": meeting_id}},
        UpdateExpression="SET #n = :v",
        ExpressionAttributeNames={"#n": name},
        ExpressionAttributeValues={":v": value},
    )
