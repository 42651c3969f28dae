"""`make run`: the whole system on one machine with embedded defaults.

Starts, as child processes: Redis (only when none answers and REDIS_URL is unset), the local
AWS endpoint (a moto server behind the strict EC2 proxy, ``devtools/strict_aws.py``) and the DCV
stand-in (only when no AWS credentials are configured), then applies migrations, creates demo
accounts, bootstraps the DynamoDB table, and runs daphne (web + WebSockets), a Celery worker
and Celery beat. Ctrl-C stops them all.

The end-to-end tests start the same stack through ``Stack`` so they run what a newcomer runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from devtools.identity import identity_pair

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
RECORDINGS_BUCKET = "elephant-recordings"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before listening on {host}:{port}")
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {host}:{port} within {timeout:.0f}s")


def redis_server_argv(port: int) -> list[str]:
    """A private, memory-only redis-server on 127.0.0.1:<port>."""
    return ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"]


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5).ping())
    except Exception:
        return False


def aws_credentials_configured(env: dict) -> bool:
    if env.get("AWS_ENDPOINT_URL"):
        return True
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_PROFILE") or env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return True
    return Path(env.get("AWS_SHARED_CREDENTIALS_FILE", Path.home() / ".aws" / "credentials")).exists()


@dataclass
class Stack:
    """The processes of one Elephant installation."""

    web_port: int = 8000
    env: dict = field(default_factory=lambda: dict(os.environ))
    workdir: Path = BASE_DIR / "var"
    quiet: bool = False
    processes: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    local_aws: bool = False
    standin_port: int | None = None
    # The strict local EC2's rules (devtools/strict_aws.py): a fresh instance unknown for a few
    # seconds, status checks "initializing" for a minute, DNS changes PENDING for a few seconds.
    strict_rules: dict = field(
        default_factory=lambda: {"invisible_seconds": 3, "initializing_seconds": 60, "dns_sync_seconds": 3}
    )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    # --- process plumbing -------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str], *, to_file: bool = False) -> subprocess.Popen:
        """Start a child; its output goes to the terminal, or to var/<name>.log when quiet or to_file."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        out = open(self.workdir / f"{name}.log", "ab") if self.quiet or to_file else None  # noqa: SIM115
        proc = subprocess.Popen(
            args,
            cwd=BASE_DIR,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
        self.processes.append((name, proc))
        return proc

    def manage(self, *args: str) -> None:
        subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL if self.quiet else None,
        )

    # --- the pieces ---------------------------------------------------------------------------
    def start_redis(self) -> None:
        if self.env.get("REDIS_URL"):
            return
        default = "redis://127.0.0.1:6379/0"
        if redis_answers(default):
            self.env["REDIS_URL"] = default
            return
        if not shutil.which("redis-server"):
            raise RuntimeError("No Redis answers on 127.0.0.1:6379 and redis-server is not installed.")
        port = free_port()
        self._spawn("redis", redis_server_argv(port))
        wait_for_port("127.0.0.1", port, 10, "redis-server")
        self.env["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"

    def start_local_aws(self) -> None:
        """The local AWS endpoint and the DCV stand-in, when no AWS account is configured."""
        if aws_credentials_configured(self.env):
            return
        self.local_aws = True
        moto_port, aws_port = free_port(), free_port()
        # The local AWS endpoint logs every request: keep that out of the terminal.
        proc = self._spawn("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)], to_file=True)
        wait_for_port("127.0.0.1", moto_port, 30, "moto_server", proc)
        # Every AWS call goes through the strict proxy, which enforces what EC2 does and moto does not.
        upstream = f"http://127.0.0.1:{moto_port}"
        rules = [f"--{name.replace('_', '-')}={value}" for name, value in self.strict_rules.items()]
        proc = self._spawn(
            "strict_aws",
            [PYTHON, "-m", "devtools.strict_aws", "--port", str(aws_port), "--upstream", upstream, *rules],
            to_file=True,
        )
        wait_for_port("127.0.0.1", aws_port, 30, "the strict EC2 proxy", proc)
        self.env.update(
            AWS_ENDPOINT_URL=f"http://127.0.0.1:{aws_port}",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_REGION=self.env.get("AWS_REGION", "us-west-2"),
            AWS_DEFAULT_REGION=self.env.get("AWS_REGION", "us-west-2"),
        )
        # The stand-in signs its hosts' identity documents with a test key; the app verifies them with its cert.
        identity_key, identity_cert = identity_pair(self.workdir / "identity")
        self.env.setdefault("ELEPHANT_AWS_IDENTITY_CERT", str(identity_cert))
        self.env.setdefault("ELEPHANT_STANDIN_IDENTITY_KEY", str(identity_key))
        self.standin_port = self.standin_port or free_port()
        self.env.setdefault("ELEPHANT_DCV_URL_TEMPLATE", f"http://127.0.0.1:{self.standin_port}/{{instance_id}}/")
        self.env.setdefault("ELEPHANT_SIM_BOOT_SECONDS", "10")
        # The learned lead starts from what the stand-in's hosts take, not from a Windows first boot
        # (which would launch a lesson booked an hour ahead half an hour early).
        boot = int(self.env["ELEPHANT_SIM_BOOT_SECONDS"])
        prior = {"cold": [boot + 5, 2 * boot + 15], "warm": [boot + 5, 2 * boot + 15]}
        self.env.setdefault("ELEPHANT_BOOT_PRIOR", json.dumps({"windows": prior, "linux": prior}))
        self.env.setdefault("ELEPHANT_SWEEP_SECONDS", "5")
        proc = self._spawn(
            "standin", [PYTHON, "-m", "devtools.standin", "--port", str(self.standin_port), "--app-url", self.url]
        )
        wait_for_port("127.0.0.1", self.standin_port, 30, "DCV stand-in", proc)

    def prepare(self) -> None:
        self.manage("migrate", "--noinput", "--verbosity", "0")
        self.manage("ensure_demo_users")
        if self.local_aws:
            # It registers a stand-in AMI (and DNS zone) in moto and prints NAME=value lines.
            made = subprocess.run(
                [PYTHON, "manage.py", "fleet_local_setup"],
                cwd=BASE_DIR,
                env=self.env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            for line in made.splitlines():
                name, _, value = line.partition("=")
                if name.startswith("ELEPHANT_") and value:
                    self.env.setdefault(name, value)
        self.manage("ddb_bootstrap")
        if self.local_aws:
            self.recordings_bucket_create()

    def recordings_bucket_create(self) -> None:
        """The local endpoint serves S3 too: the bucket recordings are uploaded to (docs/pages.md "Recordings")."""
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=self.env["AWS_ENDPOINT_URL"],
            region_name=self.env["AWS_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )
        region = self.env["AWS_REGION"]
        location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
        try:
            s3.create_bucket(Bucket=RECORDINGS_BUCKET, **location)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass

    def start_services(self) -> None:
        web = self._spawn(
            "web", [str(BIN / "daphne"), "-b", "127.0.0.1", "-p", str(self.web_port), "elephant.asgi:application"]
        )
        self._spawn(
            "worker", [str(BIN / "celery"), "--quiet", "-A", "elephant", "worker", "-l", "info", "--concurrency", "2"]
        )
        self._spawn(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "elephant",
                "beat",
                "-l",
                "info",
                "--schedule",
                str(self.workdir / "celerybeat"),
            ],
        )
        wait_for_port("127.0.0.1", self.web_port, 60, "daphne", web)

    def start(self) -> Stack:
        self.env.setdefault("ELEPHANT_PUBLIC_URL", self.url)
        # Mail is printed in the worker's output (this terminal) unless DJANGO_EMAIL_URL says otherwise.
        self.env.setdefault("DJANGO_EMAIL_URL", "console:")
        # The set-up commands below live in the "devtools" app: install it whatever DJANGO_DEBUG says.
        self.env.setdefault("ELEPHANT_DEV_TOOLS", "true")
        self.start_redis()
        self.start_local_aws()
        self.prepare()
        self.start_services()
        # What this stack set, for commands run against it from another terminal (--manage).
        own = {k: v for k, v in self.env.items() if os.environ.get(k) != v}
        (self.workdir / "stack.env").write_text(json.dumps(own, indent=1), encoding="utf-8")
        return self

    def stop(self) -> None:
        for _name, proc in reversed(self.processes):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _name, proc in reversed(self.processes):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()

    def failed(self) -> str | None:
        for name, proc in self.processes:
            if proc.poll() is not None:
                return f"{name} exited with code {proc.returncode}"
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the whole Elephant system locally.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("ELEPHANT_PORT", "8000")))
    parser.add_argument(
        "--manage",
        nargs=argparse.REMAINDER,
        help="run a manage.py command against the running `make run` (e.g. --manage demo_recording <meeting id>)",
    )
    args = parser.parse_args()
    if args.manage:
        saved = BASE_DIR / "var" / "stack.env"
        if not saved.exists():
            parser.error("no running stack: start `make run` first")
        env = {**os.environ, **json.loads(saved.read_text(encoding="utf-8"))}
        raise SystemExit(subprocess.call([PYTHON, "manage.py", *args.manage], cwd=BASE_DIR, env=env))
    stack = Stack(web_port=args.port)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        stack.start()
        aws = f"local endpoint {stack.env['AWS_ENDPOINT_URL']}" if stack.local_aws else "your AWS account"
        print(
            f"\n  Elephant is running: {stack.url}/\n"
            f"  Staff console:      {stack.url}/admin/\n"
            f"  AWS:                {aws}\n"
            f"  Demo accounts above (username / password). Ctrl-C stops everything.\n",
            flush=True,
        )
        while (problem := stack.failed()) is None:
            time.sleep(1)
        print(f"\n  Stopping: {problem}", file=sys.stderr)
        raise SystemExit(1)
    except KeyboardInterrupt:
        print("\n  Stopping Elephant…", flush=True)
    finally:
        # A second Ctrl-C (or a wrapper such as `timeout` passing the signal on) must not cut the
        # shutdown short and leave children running; stop() ends in SIGKILL within seconds.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()


if __name__ == "__main__":
    main()
