"""The local DCV stand-in (ARCHITECTURE.md section 5): a development and test tool, never deployed.

One HTTP server answers for every instance of the local EC2 endpoint at
``http://127.0.0.1:<port>/<instance_id>/`` (what ``ELEPHANT_DCV_URL_TEMPLATE`` points at in
``make run``). For an instance that is not running, or launched less than
``ELEPHANT_SIM_BOOT_SECONDS`` ago (LaunchTime read from the local EC2 with boto3), it answers
503 like a DCV server still booting. Then it serves a page naming the meeting, the role and
the host. With ``?authToken=`` it POSTs to the app's DCV authenticator exactly as a DCV
server configured with ``auth-token-verifier=<app>/dcv/auth/<instance_id>`` does, and the
page shows the verdict.

It behaves as each instance's user data configures it (read from the local EC2 with
DescribeInstanceAttribute ``userData``; ``parse_user_data`` reads the scripts ``fleet.userdata``
renders): with no ``auth-token-verifier`` set, DCV keeps system authentication and every
``?authToken=`` fails; the token goes to the verifier URL the script sets, and the user name the
authenticator answers must be one the script's permissions file grants. A script that attests
makes the stand-in attest for that host once it has booted: the instance identity document,
signed with the test key of ``devtools.identity`` (``--identity-key``), POSTed where the script
posts it.

It also models each instance's metadata service (IMDS) at ``/imds/<instance_id>/latest/...``:
``PUT api/token`` gives a session token; a GET without one is answered only when the instance
was launched with ``HttpTokens=optional`` (IMDSv1), as EC2 does; ``meta-data/instance-id``,
``meta-data/tags/instance/<key>`` (instance metadata tags) and
``dynamic/instance-identity/document``/``signature``.

    python -m devtools.standin --port 8443 --app-url http://127.0.0.1:8000 --aws-endpoint http://127.0.0.1:5000

Every option falls back to the environment: ``ELEPHANT_STANDIN_PORT``, ``ELEPHANT_PUBLIC_URL``,
``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``ELEPHANT_SIM_BOOT_SECONDS``, ``ELEPHANT_STANDIN_IDENTITY_KEY``.
"""

import argparse
import base64
import binascii
import html
import logging
import os
import re
import secrets
import shlex
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import boto3
import requests
from botocore.exceptions import BotoCoreError, ClientError

from devtools.identity import identity_document, identity_sign

logger = logging.getLogger("devtools.standin")

INSTANCE_PATH = re.compile(r"^/(i-[0-9a-zA-Z]+)/?$")
IMDS_PATH = re.compile(r"^/imds/(i-[0-9a-zA-Z]+)/latest/(.+)$")
DCV_SESSION_ID = "console"
ATTEST_SECONDS = 1.0
ATTEST_GIVE_UP_SECONDS = 300


@dataclass(frozen=True)
class HostConfig:
    """What an instance's boot script configures DCV with (None/empty: left as the image had it)."""

    verifier_base: str | None = None  # the verifier URL before the instance id
    session_id: str = DCV_SESSION_ID
    users: frozenset[str] = frozenset()  # user names the session's permissions file grants
    attest_url: str | None = None


_PS_ASSIGN = re.compile(r"^\$(\w+) = '((?:[^']|'')*)'$", re.M)
_PS_QUOTE_PAIR = re.compile("(['\u2018\u2019\u201a\u201b])['\u2018\u2019\u201a\u201b]")
_SH_ASSIGN = re.compile(r"^([A-Z_]+)=('(?:[^']|'\\'')*')$", re.M)


def parse_user_data(script: str) -> HostConfig:
    """Read a boot script the way DCV ends up configured by it (the forms ``fleet.userdata`` renders)."""
    if script.lstrip().startswith("<powershell>"):
        # A doubled quote (any of PowerShell's four single quotes) inside a verbatim string is one quote.
        values = {name: _PS_QUOTE_PAIR.sub(r"\1", value) for name, value in _PS_ASSIGN.findall(script)}
        url, session, user = (values.get(name) for name in ("ElephantUrl", "SessionId", "DcvUser"))
        sets_verifier = (
            '$Verifier = "$ElephantUrl/dcv/auth/$InstanceId"' in script
            and "-Name 'auth-token-verifier' -Value $Verifier" in script
        )
        grants = '"$DcvUser allow builtin"' in script and "-Name 'permissions-file' -Value $Permissions" in script
        attests = "instance-identity/signature" in script and '-Uri "$ElephantUrl/fleet/attest"' in script
    elif script.startswith("#!"):
        values = {}
        for name, quoted in _SH_ASSIGN.findall(script):
            try:
                values[name] = shlex.split(quoted)[0] if quoted != "''" else ""
            except (ValueError, IndexError):
                continue
        url, session, user = (values.get(name) for name in ("ELEPHANT_URL", "SESSION_ID", "DCV_USER"))
        sets_verifier = (
            'verifier="$ELEPHANT_URL/dcv/auth/$instance_id"' in script and 'auth-token-verifier="%s"' in script
        )
        grants = "allow builtin" in script and '"$DCV_USER" > "$PERMISSIONS"' in script
        attests = "instance-identity/signature" in script and "\"$ELEPHANT_URL\"'/fleet/attest'" in script
    else:
        return HostConfig()
    return HostConfig(
        verifier_base=f"{url}/dcv/auth/" if url and sets_verifier else None,
        session_id=session or DCV_SESSION_ID,
        users=frozenset({user}) if user and grants else frozenset(),
        attest_url=f"{url}/fleet/attest" if url and attests else None,
    )


class StandIn:
    def __init__(
        self,
        *,
        app_url: str,
        aws_endpoint: str | None,
        region: str,
        boot_seconds: float,
        identity_key: str | None = None,
    ):
        self.app_url = app_url.rstrip("/")
        self.boot_seconds = boot_seconds
        self.region = region
        self.identity_key = identity_key
        self.ec2 = boto3.client("ec2", region_name=region, endpoint_url=aws_endpoint)
        self.configs: dict[str, HostConfig] = {}
        self.attested: dict[str, str] = {}  # instance id -> outcome
        self.imds_tokens: set[str] = set()
        self.stopping = threading.Event()

    def host_config(self, instance_id: str) -> HostConfig:
        """What the instance's user data configured (read once: user data is fixed while it runs)."""
        if instance_id not in self.configs:
            try:
                answer = self.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
            except ClientError:
                return HostConfig()
            encoded = answer.get("UserData", {}).get("Value", "")
            try:
                script = base64.b64decode(encoded).decode() if encoded else ""
            except (binascii.Error, UnicodeDecodeError):
                script = ""
            self.configs[instance_id] = parse_user_data(script)
        return self.configs[instance_id]

    def booted(self, instance: dict) -> bool:
        launched = instance["LaunchTime"]
        if launched.tzinfo is None:
            launched = launched.replace(tzinfo=UTC)
        return (datetime.now(UTC) - launched).total_seconds() >= self.boot_seconds

    def attest_due(self) -> None:
        """Attest every booted running instance whose boot script attests, once (retried while its host is unknown)."""
        if not self.identity_key:
            return
        try:
            pages = self.ec2.get_paginator("describe_instances").paginate(
                Filters=[{"Name": "instance-state-name", "Values": ["running"]}]
            )
            instances = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
        except (ClientError, BotoCoreError):
            return
        for instance in instances:
            instance_id = instance["InstanceId"]
            if instance_id in self.attested or not self.booted(instance):
                continue
            config = self.host_config(instance_id)
            if not config.attest_url or not config.verifier_base:
                self.attested[instance_id] = "the boot script does not attest"
                continue
            document = identity_document(instance=instance, region=self.region)
            report = {
                "document": document,
                "signature": identity_sign(key_path=self.identity_key, document=document),
                "verifier": config.verifier_base + instance_id,
                "session_id": config.session_id,
            }
            try:
                response = requests.post(config.attest_url, json=report, timeout=10)
            except requests.RequestException as exc:
                logger.info("attestation of %s not delivered: %s", instance_id, exc)
                continue
            if response.status_code in (200, 409) or not self.booted_for(instance, ATTEST_GIVE_UP_SECONDS):
                self.attested[instance_id] = f"{response.status_code} {response.text[:200]}"
                logger.info("attested %s: %s", instance_id, self.attested[instance_id])

    def booted_for(self, instance: dict, seconds: float) -> bool:
        """False once the instance has been up longer than ``seconds`` (then the stand-in stops retrying)."""
        launched = instance["LaunchTime"]
        if launched.tzinfo is None:
            launched = launched.replace(tzinfo=UTC)
        return (datetime.now(UTC) - launched).total_seconds() < seconds

    def attest_forever(self) -> None:
        while not self.stopping.wait(ATTEST_SECONDS):
            try:
                self.attest_due()
            except Exception:  # a stand-in thread must not die on one bad answer
                logger.exception("attestation sweep failed")

    def instance(self, instance_id: str) -> dict | None:
        try:
            reservations = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except ClientError:
            return None
        instances = [i for r in reservations for i in r["Instances"]]
        return instances[0] if instances else None

    def authenticate(self, *, instance_id: str, token: str, client_address: str) -> tuple[bool, str]:
        """What DCV configured by the instance's user data does with ``?authToken=``: POST it to the verifier
        the script set (none set: system authentication, the token means nothing), then check the session's
        permissions for the user name the authenticator answers. (accepted, username or message)"""
        config = self.host_config(instance_id)
        if config.verifier_base is None:
            return False, "no auth-token-verifier is configured: DCV uses system authentication and ignores authToken"
        try:
            response = requests.post(
                config.verifier_base + instance_id,
                data={"sessionId": config.session_id, "authenticationToken": token, "clientAddress": client_address},
                timeout=10,
            )
            root = ET.fromstring(response.text)
        except (requests.RequestException, ET.ParseError) as exc:
            return False, f"the authenticator did not answer properly ({exc})"
        if root.tag != "auth" or root.get("result") != "yes":
            return False, root.findtext("message", "") or "refused"
        username = root.findtext("username", "")
        if username not in config.users:
            return False, f"{username!r} has no permission to connect to session {config.session_id!r}"
        return True, username

    def imds(self, *, instance_id: str, path: str, token: str | None, method: str) -> tuple[int, str]:
        """The instance's metadata service: (status, body)."""
        if method == "PUT":
            if path != "api/token":
                return 405, ""
            minted = secrets.token_urlsafe(24)
            self.imds_tokens.add(minted)
            return 200, minted
        instance = self.instance(instance_id)
        if instance is None or instance["State"]["Name"] != "running":
            return 404, ""
        options = instance.get("MetadataOptions", {})
        if token not in self.imds_tokens and options.get("HttpTokens", "optional") != "optional":
            return 401, ""  # IMDSv2 required: a call without a session token is refused
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        if path == "meta-data/instance-id":
            return 200, instance_id
        if path.startswith("meta-data/tags/instance/"):
            if options.get("InstanceMetadataTags") != "enabled":
                return 404, ""
            key = path.removeprefix("meta-data/tags/instance/")
            return (200, tags[key]) if key in tags else (404, "")
        if path == "dynamic/instance-identity/document":
            return 200, identity_document(instance=instance, region=self.region)
        if path == "dynamic/instance-identity/signature" and self.identity_key:
            document = identity_document(instance=instance, region=self.region)
            return 200, identity_sign(key_path=self.identity_key, document=document)
        return 404, ""


def _page(title: str, body: str) -> bytes:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font:16px system-ui;margin:3em;background:#1d2733;color:#eef}"
        ".authenticated{color:#7f7}.refused{color:#f88}dt{font-weight:bold}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    ).encode()


class Handler(BaseHTTPRequestHandler):
    server_version = "ElephantDcvStandIn/1"
    standin: StandIn  # set on the subclass made in serve()

    def log_message(self, fmt, *args):
        logger.info("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, title: str, body: str, headers: dict | None = None) -> None:
        content = _page(title, body)
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    def do_HEAD(self):
        self.do_GET()

    def _imds(self, match) -> None:
        status, body = self.standin.imds(
            instance_id=match.group(1),
            path=match.group(2),
            token=self.headers.get("X-aws-ec2-metadata-token"),
            method=self.command,
        )
        content = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def do_PUT(self):
        match = IMDS_PATH.match(urlsplit(self.path).path)
        if not match:
            return self._send(405, "Not allowed", "")
        self._imds(match)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/health":
            return self._send(200, "DCV stand-in", "<p>ok</p>")
        if imds := IMDS_PATH.match(url.path):
            return self._imds(imds)
        match = INSTANCE_PATH.match(url.path)
        if not match:
            return self._send(404, "Not a host", "<p>Use /&lt;instance_id&gt;/.</p>")
        instance_id = match.group(1)
        instance = self.standin.instance(instance_id)
        if instance is None:
            return self._send(404, "Unknown host", f"<p>No instance {html.escape(instance_id)} in the local EC2.</p>")
        state = instance["State"]["Name"]
        if state != "running":
            return self._send(503, "DCV not available", f"<p>The host is {html.escape(state)}.</p>")
        launched = instance["LaunchTime"]
        if launched.tzinfo is None:
            launched = launched.replace(tzinfo=UTC)
        remaining = self.standin.boot_seconds - (datetime.now(UTC) - launched).total_seconds()
        if remaining > 0:
            return self._send(
                503,
                "DCV starting",
                f"<p>The desktop is booting; ready in {remaining:.0f} s.</p>",
                {"Retry-After": str(max(1, round(remaining)))},
            )
        tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
        facts = (
            f"<dl><dt>Meeting</dt><dd id=meeting>{html.escape(tags.get('MeetingID', '?'))}</dd>"
            f"<dt>Role</dt><dd id=role>{html.escape(tags.get('Role', '?'))}</dd>"
            f"<dt>Host</dt><dd id=host>{html.escape(instance_id)} ({html.escape(instance.get('InstanceType', ''))},"
            f" {html.escape(instance.get('Placement', {}).get('AvailabilityZone', ''))})</dd></dl>"
        )
        token = parse_qs(url.query).get("authToken", [""])[0]
        if not token:
            return self._send(200, "DCV desktop (stand-in)", facts + "<p id=verdict>No authToken given.</p>")
        accepted, said = self.standin.authenticate(
            instance_id=instance_id, token=token, client_address=self.client_address[0]
        )
        if accepted:
            verdict = f"<p id=verdict class=authenticated>DCV authenticated: signed in as {html.escape(said)}.</p>"
            return self._send(200, "DCV desktop (stand-in)", facts + verdict)
        verdict = f"<p id=verdict class=refused>DCV refused the token: {html.escape(said)}</p>"
        return self._send(403, "DCV desktop (stand-in)", facts + verdict)


def serve(
    *,
    port: int,
    app_url: str,
    aws_endpoint: str | None,
    region: str,
    boot_seconds: float,
    host="127.0.0.1",
    identity_key: str | None = None,
):
    """The stand-in's HTTP server; with ``identity_key`` its attestation thread runs too (stopped by ``shutdown``)."""
    standin = StandIn(
        app_url=app_url, aws_endpoint=aws_endpoint, region=region, boot_seconds=boot_seconds, identity_key=identity_key
    )
    handler = type("BoundHandler", (Handler,), {"standin": standin})
    server = ThreadingHTTPServer((host, port), handler)
    server.standin = standin
    if identity_key:
        threading.Thread(target=standin.attest_forever, name="standin-attest", daemon=True).start()
        original_shutdown = server.shutdown

        def shutdown():
            standin.stopping.set()
            original_shutdown()

        server.shutdown = shutdown
    return server


def main(argv: list[str] | None = None) -> None:
    env = os.environ
    parser = argparse.ArgumentParser(description="Local DCV stand-in for Elephant (development and tests).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(env.get("ELEPHANT_STANDIN_PORT", "8443")))
    parser.add_argument("--app-url", default=env.get("ELEPHANT_PUBLIC_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--aws-endpoint", default=env.get("AWS_ENDPOINT_URL") or None)
    parser.add_argument("--region", default=env.get("AWS_REGION", env.get("AWS_DEFAULT_REGION", "us-west-2")))
    parser.add_argument("--boot-seconds", type=float, default=float(env.get("ELEPHANT_SIM_BOOT_SECONDS", "10")))
    parser.add_argument(
        "--identity-key",
        default=env.get("ELEPHANT_STANDIN_IDENTITY_KEY") or None,
        help="the test key signing instance identity documents (devtools.identity); unset: hosts never attest",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        server = serve(
            port=args.port,
            app_url=args.app_url,
            aws_endpoint=args.aws_endpoint,
            region=args.region,
            boot_seconds=args.boot_seconds,
            host=args.host,
            identity_key=args.identity_key,
        )
    except (OSError, BotoCoreError) as exc:
        raise SystemExit(f"DCV stand-in cannot start: {exc}") from exc
    logger.info("DCV stand-in on http://%s:%d/<instance_id>/ -> %s", args.host, args.port, args.app_url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
