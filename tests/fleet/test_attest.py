"""Host attestation (fleet.attest): an AWS-signed instance identity document, a live host, once."""

import json
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from devtools.identity import identity_document, identity_pair, identity_sign
from fleet.models import HostState
from tests.factories import make_host, make_meeting

INSTANCE = "i-0123456789abcdef0"


@pytest.fixture(scope="module")
def identity(tmp_path_factory):
    return identity_pair(tmp_path_factory.mktemp("identity"))


@pytest.fixture
def attesting(identity, settings):
    key, cert = identity
    settings.ELEPHANT_AWS_IDENTITY_CERT = str(cert)
    settings.AWS_REGION = "us-west-2"
    settings.ELEPHANT_PUBLIC_URL = "https://elephant.example.com"
    return key


def report(key, *, instance_id=INSTANCE, region="us-west-2", **changes) -> dict:
    document = identity_document(
        instance={"InstanceId": instance_id, "InstanceType": "g4dn.xlarge", "ImageId": "ami-1"}, region=region
    )
    body = {
        "document": document,
        "signature": identity_sign(key_path=key, document=document),
        "verifier": f"https://elephant.example.com/dcv/auth/{instance_id}",
        "session_id": "console",
    }
    return {**body, **changes}


def post(client, body):
    return client.post("/fleet/attest", json.dumps(body), content_type="application/json")


@pytest.fixture
def host(db):
    meeting = make_meeting(meet_time=timezone.now() + timedelta(minutes=5))
    return make_host(meeting, "teacher", state=HostState.RUNNING, instance_id=INSTANCE)


@pytest.mark.django_db
class TestAttest:
    def test_a_live_host_attests_once(self, client, attesting, host):
        with time_machine.travel("2026-11-21 14:58:00Z", tick=False):
            first = post(client, report(attesting))
        assert first.status_code == 200 and first.json()["attested"] == INSTANCE
        host.refresh_from_db()
        assert host.attested_at.isoformat() == "2026-11-21T14:58:00+00:00"
        again = post(client, report(attesting))
        assert again.status_code == 409
        host.refresh_from_db()
        assert host.attested_at.isoformat() == "2026-11-21T14:58:00+00:00"

    def test_a_forged_or_altered_document_is_refused(self, client, attesting, host, tmp_path):
        altered = report(attesting)
        altered["document"] = altered["document"].replace("g4dn.xlarge", "g5.xlarge")
        assert post(client, altered).status_code == 403
        other_key, _ = identity_pair(tmp_path)  # a key AWS never used
        assert post(client, report(other_key)).status_code == 403
        assert post(client, report(attesting, signature="not base64!")).status_code == 403
        host.refresh_from_db()
        assert host.attested_at is None

    def test_another_region_or_an_unknown_or_retired_host_is_refused(self, client, attesting, host):
        assert post(client, report(attesting, region="eu-west-1")).status_code == 403
        assert post(client, report(attesting, instance_id="i-0ffffffffffffffff")).status_code == 404
        host.state = HostState.TERMINATED
        host.save()
        assert post(client, report(attesting)).status_code == 404

    def test_dcv_must_use_elephants_verifier_and_session(self, client, attesting, host):
        wrong = report(attesting, verifier="https://evil.example/dcv/auth/" + INSTANCE)
        assert post(client, wrong).status_code == 403
        assert "auth-token-verifier" in post(client, wrong).json()["error"]
        assert post(client, report(attesting, session_id="other")).status_code == 403
        host.refresh_from_db()
        assert host.attested_at is None

    def test_without_a_certificate_nobody_attests(self, client, attesting, host, settings):
        settings.ELEPHANT_AWS_IDENTITY_CERT = ""
        assert post(client, report(attesting)).status_code == 503

    def test_the_certificate_may_be_given_as_pem(self, client, attesting, host, settings, identity):
        settings.ELEPHANT_AWS_IDENTITY_CERT = identity[1].read_text()
        assert post(client, report(attesting)).status_code == 200

    def test_bad_bodies(self, client, attesting, host):
        assert client.post("/fleet/attest", "nope", content_type="application/json").status_code == 400
        assert post(client, {"document": 1}).status_code == 400
        assert client.get("/fleet/attest").status_code == 405


@pytest.mark.django_db(transaction=True)
def test_the_stand_in_attests_as_the_boot_script_says(standin_port, live_server, settings, identity):
    """Launch a meeting's hosts (their user data), let the stand-in attest for them: both hosts attested."""
    from fleet import services
    from fleet.models import Host

    key, cert = identity
    settings.ELEPHANT_PUBLIC_URL = live_server.url
    settings.ELEPHANT_AWS_IDENTITY_CERT = str(cert)
    meeting = make_meeting(meet_time=timezone.now() + timedelta(minutes=2))
    services.meeting_launch(meeting_id=meeting.pk)
    _, server = standin_port
    standin = server.RequestHandlerClass.standin
    standin.identity_key = str(key)
    try:
        standin.attest_due()
    finally:
        standin.identity_key = None
    hosts = Host.objects.filter(meeting=meeting)
    assert hosts.count() == 2 and all(host.attested_at for host in hosts)
