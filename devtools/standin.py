"""The local DCV stand-in (ARCHITECTURE.md section 5): a development and test tool, never deployed.

One HTTP server answers for every instance of the local EC2 endpoint at
``http://127.0.0.1:<port>/<instance_id>/`` (what ``ELEPHANT_DCV_URL_TEMPLATE`` points at in
``make run``). For an instance that is not running, or launched less than
``ELEPHANT_SIM_BOOT_SECONDS`` ago (LaunchTime read from the local EC2 with boto3), it answers
503 like a DCV server still booting. Then it serves a page naming the meeting, the role and
the host. With ``?authToken=`` it POSTs to the app's DCV authenticator exactly as a DCV
server configured with ``auth-token-verifier=<app>/dcv/auth/<instance_id>`` does, and the
page shows the verdict.

    python -m devtools.standin --port 8443 --app-url http://127.0.0.1:8000 --aws-endpoint http://127.0.0.1:5000

Every option falls back to the environment: ``ELEPHANT_STANDIN_PORT``, ``ELEPHANT_PUBLIC_URL``,
``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``ELEPHANT_SIM_BOOT_SECONDS``.
"""

import argparse
import html
import logging
import os
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import boto3
import requests
from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger("devtools.standin")

INSTANCE_PATH = re.compile(r"^/(i-[0-9a-zA-Z]+)/?$")
DCV_SESSION_ID = "console"


class StandIn:
    def __init__(self, *, app_url: str, aws_endpoint: str | None, region: str, boot_seconds: float):
        self.app_url = app_url.rstrip("/")
        self.boot_seconds = boot_seconds
        self.ec2 = boto3.client("ec2", region_name=region, endpoint_url=aws_endpoint)

    def instance(self, instance_id: str) -> dict | None:
        try:
            reservations = self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except ClientError:
            return None
        instances = [i for r in reservations for i in r["Instances"]]
        return instances[0] if instances else None

    def authenticate(self, *, instance_id: str, token: str, client_address: str) -> tuple[bool, str]:
        """POST the token to the app like DCV's external authenticator; (accepted, username or message)."""
        try:
            response = requests.post(
                f"{self.app_url}/dcv/auth/{instance_id}",
                data={"sessionId": DCV_SESSION_ID, "authenticationToken": token, "clientAddress": client_address},
                timeout=10,
            )
            root = ET.fromstring(response.text)
        except (requests.RequestException, ET.ParseError) as exc:
            return False, f"the authenticator did not answer properly ({exc})"
        if root.tag == "auth" and root.get("result") == "yes":
            return True, root.findtext("username", "")
        return False, root.findtext("message", "") or "refused"


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

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/health":
            return self._send(200, "DCV stand-in", "<p>ok</p>")
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


def serve(*, port: int, app_url: str, aws_endpoint: str | None, region: str, boot_seconds: float, host="127.0.0.1"):
    standin = StandIn(app_url=app_url, aws_endpoint=aws_endpoint, region=region, boot_seconds=boot_seconds)
    handler = type("BoundHandler", (Handler,), {"standin": standin})
    return ThreadingHTTPServer((host, port), handler)


def main(argv: list[str] | None = None) -> None:
    env = os.environ
    parser = argparse.ArgumentParser(description="Local DCV stand-in for Elephant (development and tests).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(env.get("ELEPHANT_STANDIN_PORT", "8443")))
    parser.add_argument("--app-url", default=env.get("ELEPHANT_PUBLIC_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--aws-endpoint", default=env.get("AWS_ENDPOINT_URL") or None)
    parser.add_argument("--region", default=env.get("AWS_REGION", env.get("AWS_DEFAULT_REGION", "us-west-2")))
    parser.add_argument("--boot-seconds", type=float, default=float(env.get("ELEPHANT_SIM_BOOT_SECONDS", "10")))
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
