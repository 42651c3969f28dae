"""A strict local EC2 (and Route 53): a proxy in front of the moto server, enforcing what AWS does and moto does not.

Development and test tool only. Every request is forwarded to moto unchanged, except that EC2 calls
are held to these rules first (each one documented EC2 behaviour moto leaves out):

- **ClientToken idempotency** (RunInstances): the same token with the same parameters answers the
  first call's response again, the same instance, even after it was terminated; the same token with
  other parameters is ``IdempotentParameterMismatch`` (HTTP 400).
- **Capacity** switched off per instance type and Availability Zone: RunInstances answers
  ``InsufficientInstanceCapacity`` as EC2 does, an HTTP 500 (a server error botocore would retry).
- **RunInstances throttling**: a token bucket (1,000 burst, 2 per second refill by default); an empty
  bucket answers ``RequestLimitExceeded`` (HTTP 503).
- **Eventual consistency**: an instance id younger than ``invisible_seconds`` is unknown to
  DescribeInstances / DescribeInstanceStatus asked by id (``InvalidInstanceID.NotFound``, naming
  every such id) and left out of filtered DescribeInstances answers.
- **Status checks start "initializing"**: DescribeInstanceStatus reports both checks as
  ``initializing`` for ``initializing_seconds`` after the launch (moto answers ``ok`` at once).
- **Route 53 changes start PENDING**: ChangeResourceRecordSets answers ``PENDING`` (moto says
  ``INSYNC``), and GetChange says ``INSYNC`` only ``dns_sync_seconds`` after the submission.

Control endpoints (JSON, on the proxy's own port):

- ``POST /strict-api/capacity`` ``{"instance_type": "g4dn.xlarge", "availability_zone": "us-west-2a",
  "available": false}``; either key may be left out (or ``"*"``) for every type / zone.
- ``POST /strict-api/config`` any of ``run_instances_burst``, ``run_instances_refill_per_second``,
  ``invisible_seconds``, ``initializing_seconds``, ``dns_sync_seconds`` (the bucket is refilled).
- ``POST /strict-api/clock`` ``{"advance_seconds": 5}``: move the proxy's clock on (tests never sleep).
- ``GET /strict-api/state``: the rules in force and the tokens seen.
- ``POST /moto-api/reset`` resets moto and the proxy (configuration back to its start values).

    python -m devtools.strict_aws --port 5000 --upstream http://127.0.0.1:5001

``make run`` (``devtools/stack.py``) and the fleet tests (``tests/fleet/conftest.py``) put it in front
of their moto server, so the fleet's real boto3 calls meet these rules.
"""

import argparse
import http.client
import json
import logging
import re
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

logger = logging.getLogger("devtools.strict_aws")

EC2_NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
_CREDENTIAL_SCOPE = re.compile(r"Credential=[^/]+/\d+/([a-z0-9-]+)/([a-z0-9-]+)/")
_INSTANCE_ID_TAG = re.compile(r"<instanceId>(i-[0-9a-zA-Z]+)</instanceId>")
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}
# Not part of what a token binds: the token itself and the protocol envelope.
_NOT_BOUND = {"Action", "Version", "ClientToken"}


@dataclass
class Rules:
    run_instances_burst: float = 1000
    run_instances_refill_per_second: float = 2
    invisible_seconds: float = 0
    initializing_seconds: float = 0
    dns_sync_seconds: float = 0


@dataclass
class StrictState:
    start_rules: Rules
    rules: Rules = field(init=False)
    tokens: dict[str, tuple[tuple, bytes]] = field(default_factory=dict)  # token -> (parameters, response)
    no_capacity: set[tuple[str, str]] = field(default_factory=set)  # (type or "*", zone or "*")
    born: dict[str, float] = field(default_factory=dict)  # instance id -> launch time on the proxy's clock
    subnet_zones: dict[str, str] = field(default_factory=dict)
    dns_changes: dict[str, float] = field(default_factory=dict)  # Route 53 change id -> submitted at
    bucket: float = 0
    bucket_at: float = 0
    clock_offset: float = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self):
        self.reset()

    def reset(self) -> None:
        self.rules = Rules(**asdict(self.start_rules))
        self.tokens.clear()
        self.no_capacity.clear()
        self.born.clear()
        self.subnet_zones.clear()
        self.dns_changes.clear()
        self.clock_offset = 0
        self.refill()

    def now(self) -> float:
        return time.monotonic() + self.clock_offset

    def refill(self) -> None:
        self.bucket, self.bucket_at = self.rules.run_instances_burst, self.now()

    def take_run_token(self) -> bool:
        now = self.now()
        rate = self.rules.run_instances_refill_per_second
        self.bucket = min(self.rules.run_instances_burst, self.bucket + (now - self.bucket_at) * rate)
        self.bucket_at = now
        if self.bucket < 1:
            return False
        self.bucket -= 1
        return True

    def has_capacity(self, instance_type: str, zone: str) -> bool:
        return not {(instance_type, zone), (instance_type, "*"), ("*", zone), ("*", "*")} & self.no_capacity

    def age(self, instance_id: str) -> float | None:
        born = self.born.get(instance_id)
        return None if born is None else self.now() - born

    def invisible(self, instance_id: str) -> bool:
        age = self.age(instance_id)
        return age is not None and age < self.rules.invisible_seconds

    def initializing(self, instance_id: str) -> bool:
        age = self.age(instance_id)
        return age is not None and age < self.rules.initializing_seconds


def ec2_error(code: str, message: str) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{message}</Message>"
        "</Error></Errors><RequestID>strict-aws</RequestID></Response>"
    ).encode()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(node: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in node if _local(child.tag) == name]


def _child_text(node: ET.Element, name: str) -> str:
    found = _children(node, name)
    return (found[0].text or "") if found else ""


def _serialize(root: ET.Element) -> bytes:
    namespace = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    if namespace:
        ET.register_namespace("", namespace)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)


class StrictHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "StrictServer"

    def log_message(self, format, *args):  # noqa: A002  the base class's name
        logger.debug("%s " + format, self.address_string(), *args)

    def do_GET(self):
        self._handle()

    def do_POST(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()

    def do_HEAD(self):
        self._handle()

    # --- plumbing -----------------------------------------------------------------------------------
    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urlsplit(self.path).path
        try:
            if path.startswith("/strict-api/"):
                self._control(path, body)
                return
            if path == "/moto-api/reset":
                with self.server.state.lock:
                    self.server.state.reset()
            service = self._service()
            if service == "ec2":
                status, headers, answer = self._ec2(body)
            elif service == "route53":
                status, headers, answer = self._route53(path, body)
            else:
                status, headers, answer = None, None, None
            if status is None:
                status, headers, answer = self.server.forward(self.command, self.path, self.headers, body)
            self._reply(status, headers, answer)
        except Exception:  # the proxy answers as a faulty endpoint would, and keeps serving
            logger.exception("strict_aws: %s %s failed", self.command, self.path)
            self._reply(500, {"Content-Type": "text/xml"}, ec2_error("InternalError", "strict_aws proxy error"))

    def _service(self) -> str:
        match = _CREDENTIAL_SCOPE.search(self.headers.get("Authorization", ""))
        return match.group(2) if match else ""

    def _region(self) -> str:
        match = _CREDENTIAL_SCOPE.search(self.headers.get("Authorization", ""))
        return match.group(1) if match else "us-east-1"

    def _reply(self, status: int, headers: dict | None, body: bytes) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            if name.lower() not in _HOP_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, data: dict) -> None:
        self._reply(status, {"Content-Type": "application/json"}, json.dumps(data).encode())

    # --- control ------------------------------------------------------------------------------------
    def _control(self, path: str, body: bytes) -> None:
        state = self.server.state
        data = json.loads(body or b"{}")
        with state.lock:
            if path == "/strict-api/capacity" and self.command == "POST":
                key = (data.get("instance_type") or "*", data.get("availability_zone") or "*")
                if data.get("available", False):
                    state.no_capacity.discard(key)
                else:
                    state.no_capacity.add(key)
            elif path == "/strict-api/config" and self.command == "POST":
                unknown = set(data) - set(asdict(state.rules))
                if unknown:
                    self._json(400, {"error": f"unknown rules: {sorted(unknown)}"})
                    return
                for name, value in data.items():
                    setattr(state.rules, name, float(value))
                state.refill()
            elif path == "/strict-api/clock" and self.command == "POST":
                state.clock_offset += float(data.get("advance_seconds", 0))
            elif path != "/strict-api/state":
                self._json(404, {"error": f"no control endpoint {self.command} {path}"})
                return
            snapshot = {
                "rules": asdict(state.rules),
                "no_capacity": sorted(list(pair) for pair in state.no_capacity),
                "tokens": sorted(state.tokens),
                "run_instances_bucket": state.bucket,
            }
        self._json(200, snapshot)

    # --- Route 53 -----------------------------------------------------------------------------------
    def _route53(self, path: str, body: bytes) -> tuple[int, dict, bytes]:
        """A change is PENDING when submitted, as on Route 53, and INSYNC ``dns_sync_seconds`` later (GetChange)."""
        state = self.server.state
        status, headers, answer = self.server.forward(self.command, self.path, self.headers, body)
        if status != 200:
            return status, headers, answer
        if self.command == "POST" and path.rstrip("/").endswith("/rrset"):
            match = re.search(rb"<Id>(?:/change/)?([^<]+)</Id>", answer)
            if match:
                with state.lock:
                    state.dns_changes[match.group(1).decode()] = state.now()
            return status, headers, answer.replace(b"<Status>INSYNC</Status>", b"<Status>PENDING</Status>")
        change = re.fullmatch(r".*/change/([^/]+)/?", path)
        if self.command == "GET" and change:
            with state.lock:
                submitted = state.dns_changes.get(change.group(1))
                pending = submitted is not None and state.now() - submitted < state.rules.dns_sync_seconds
            if pending:
                return status, headers, answer.replace(b"<Status>INSYNC</Status>", b"<Status>PENDING</Status>")
        return status, headers, answer

    # --- EC2 ----------------------------------------------------------------------------------------
    def _ec2(self, body: bytes) -> tuple[int | None, dict | None, bytes | None]:
        params = dict(parse_qsl(body.decode(), keep_blank_values=True))
        action = params.get("Action", "")
        if action == "RunInstances":
            return self._run_instances(params, body)
        if action in ("DescribeInstances", "DescribeInstanceStatus"):
            return self._describe(action, params, body)
        if action == "TerminateInstances":
            return self._terminate(params, body)
        return None, None, None

    def _error(self, status: int, code: str, message: str) -> tuple[int, dict, bytes]:
        return status, {"Content-Type": "text/xml"}, ec2_error(code, message)

    def _run_instances(self, params: dict, body: bytes) -> tuple[int, dict, bytes]:
        state = self.server.state
        token = params.get("ClientToken", "")
        bound = tuple(sorted((k, v) for k, v in params.items() if k not in _NOT_BOUND))
        with state.lock:
            if not state.take_run_token():
                return self._error(503, "RequestLimitExceeded", "Request limit exceeded.")
            if token in state.tokens:
                first_params, first_answer = state.tokens[token]
                if first_params != bound:
                    return self._error(
                        400,
                        "IdempotentParameterMismatch",
                        "The client token you have provided is associated with a resource that is already "
                        "deleted or with a request whose parameters differ. Please use a different client token.",
                    )
                return 200, {"Content-Type": "text/xml"}, first_answer
        instance_type = params.get("InstanceType", "m1.small")
        zone = self._zone_of(params)
        with state.lock:
            available = state.has_capacity(instance_type, zone)
        if not available:
            return self._error(
                500,
                "InsufficientInstanceCapacity",
                f"We currently do not have sufficient {instance_type} capacity in the Availability Zone you "
                f"requested ({zone}). Our system will be working on provisioning additional capacity. You can "
                "currently get capacity by not specifying an Availability Zone in your request or choosing a "
                "different Availability Zone.",
            )
        status, headers, answer = self.server.forward("POST", self.path, self.headers, body)
        if status == 200:
            with state.lock:
                now = state.now()
                for instance_id in _INSTANCE_ID_TAG.findall(answer.decode()):
                    state.born.setdefault(instance_id, now)
                if token:
                    state.tokens[token] = (bound, answer)
        return status, headers, answer

    def _zone_of(self, params: dict) -> str:
        zone = params.get("Placement.AvailabilityZone")
        if zone:
            return zone
        subnet = params.get("SubnetId") or params.get("NetworkInterface.1.SubnetId")
        if not subnet:
            return f"{self._region()}a"  # moto's default subnet
        with self.server.state.lock:
            known = self.server.state.subnet_zones.get(subnet)
        if known:
            return known
        query = urlencode({"Action": "DescribeSubnets", "Version": "2016-11-15", "SubnetId.1": subnet}).encode()
        status, _, answer = self.server.forward("POST", "/", self.headers, query)
        match = re.search(rb"<availabilityZone>([^<]+)</availabilityZone>", answer) if status == 200 else None
        zone = match.group(1).decode() if match else f"{self._region()}a"
        with self.server.state.lock:
            self.server.state.subnet_zones[subnet] = zone
        return zone

    def _terminate(self, params: dict, body: bytes) -> tuple[int, dict, bytes]:
        """Terminating an instance already terminated is a no-op on EC2; moto fails it when the instance's
        interface was deleted with it (``InvalidNetworkInterfaceID.NotFound``). Answer those as EC2 does."""
        status, headers, answer = self.server.forward("POST", self.path, self.headers, body)
        if status != 400 or b"InvalidNetworkInterfaceID.NotFound" not in answer:
            return status, headers, answer
        asked = [v for k, v in sorted(params.items()) if re.fullmatch(r"InstanceId\.\d+", k)]
        query = {"Action": "DescribeInstances", "Version": params.get("Version", "2016-11-15")}
        query.update({f"InstanceId.{n}": instance_id for n, instance_id in enumerate(asked, 1)})
        _, _, described = self.server.forward("POST", self.path, self.headers, urlencode(query).encode())
        states = dict(
            re.findall(rb"<instanceId>(i-[0-9a-zA-Z]+)</instanceId>.*?<name>([a-z-]+)</name>", described, re.S)
        )
        live = [i for i in asked if states.get(i.encode()) != b"terminated"]
        items = b""
        if live:
            query = {"Action": "TerminateInstances", "Version": params.get("Version", "2016-11-15")}
            query.update({f"InstanceId.{n}": instance_id for n, instance_id in enumerate(live, 1)})
            status, headers, answer = self.server.forward("POST", self.path, self.headers, urlencode(query).encode())
            if status != 200:
                return status, headers, answer
            items = b"".join(re.findall(rb"<item>.*?</previousState>\s*</item>", answer, re.S))
        gone = "<code>48</code><name>terminated</name>"
        for instance_id in asked:
            if instance_id not in live:
                items += (
                    f"<item><instanceId>{instance_id}</instanceId><currentState>{gone}</currentState>"
                    f"<previousState>{gone}</previousState></item>"
                ).encode()
        return (
            200,
            {"Content-Type": "text/xml"},
            (
                f'<?xml version="1.0" encoding="UTF-8"?>\n<TerminateInstancesResponse xmlns="{EC2_NS}">'
                "<requestId>strict-aws</requestId><instancesSet>"
            ).encode()
            + items
            + b"</instancesSet></TerminateInstancesResponse>",
        )

    def _describe(self, action: str, params: dict, body: bytes) -> tuple[int, dict, bytes]:
        state = self.server.state
        asked = [v for k, v in sorted(params.items()) if re.fullmatch(r"InstanceId\.\d+", k)]
        with state.lock:
            hidden = [i for i in asked if state.invisible(i)]
        if hidden:
            if len(hidden) == 1:
                message = f"The instance ID '{hidden[0]}' does not exist"
            else:
                message = f"The instance IDs '{', '.join(hidden)}' do not exist"
            return self._error(400, "InvalidInstanceID.NotFound", message)
        status, headers, answer = self.server.forward("POST", self.path, self.headers, body)
        if status != 200:
            return status, headers, answer
        root = ET.fromstring(answer)
        with state.lock:
            if action == "DescribeInstances":
                changed = self._hide_young(root)
            else:
                changed = self._initializing(root)
        return status, headers, _serialize(root) if changed else answer

    def _hide_young(self, root: ET.Element) -> bool:
        changed = False
        for reservations in _children(root, "reservationSet"):
            for reservation in list(reservations):
                for instances in _children(reservation, "instancesSet"):
                    for instance in list(instances):
                        if self.server.state.invisible(_child_text(instance, "instanceId")):
                            instances.remove(instance)
                            changed = True
                    if not len(instances):
                        reservations.remove(reservation)
        return changed

    def _initializing(self, root: ET.Element) -> bool:
        changed = False
        for statuses in _children(root, "instanceStatusSet"):
            for item in statuses:
                if not self.server.state.initializing(_child_text(item, "instanceId")):
                    continue
                for name in ("instanceStatus", "systemStatus"):
                    for check in _children(item, name):
                        for node in check.iter():
                            if _local(node.tag) == "status":
                                node.text = "initializing"
                                changed = True
        return changed


class StrictServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, *, upstream: str, rules: Rules):
        super().__init__(address, StrictHandler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.state = StrictState(start_rules=rules)
        self._connections = threading.local()

    def forward(self, method: str, path: str, headers, body: bytes) -> tuple[int, dict, bytes]:
        """Send the request on to moto, on this thread's kept-alive connection (one retry on a stale one)."""
        sent = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
        sent["Content-Length"] = str(len(body))
        while True:
            connection = getattr(self._connections, "upstream", None)
            reused = connection is not None
            if connection is None:
                connection = self._connections.upstream = http.client.HTTPConnection(*self.upstream, timeout=60)
            try:
                connection.request(method, path, body=body, headers=sent)
                response = connection.getresponse()
                return response.status, dict(response.getheaders()), response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                connection.close()
                self._connections.upstream = None
                if not reused:  # a fresh connection failing is a real failure; a stale one is retried once
                    raise


def serve(*, port: int, upstream: str, host: str = "127.0.0.1", **rules: float) -> StrictServer:
    """The proxy, bound and ready to ``serve_forever()``."""
    return StrictServer((host, port), upstream=upstream, rules=Rules(**rules))


def main() -> None:
    parser = argparse.ArgumentParser(description="A strict local EC2 in front of a moto server.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the moto server, e.g. http://127.0.0.1:5001")
    defaults = Rules()
    for name, value in asdict(defaults).items():
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=value)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s strict_aws %(levelname)s %(message)s")
    rules = {name: getattr(args, name) for name in asdict(defaults)}
    server = serve(port=args.port, upstream=args.upstream, **rules)
    logger.info("strict EC2 on 127.0.0.1:%d in front of %s (%s)", args.port, args.upstream, rules)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
