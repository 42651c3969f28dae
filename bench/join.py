"""Join endpoint benchmark: `.venv/bin/python bench/join.py [--duration 5] [--concurrency 20]`.

Starts one daphne (elephant.asgi:application, production settings) on a private database
(PostgreSQL on 127.0.0.1 when it answers, else SQLite) and drives it, in one run on this
machine, with closed-loop keep-alive HTTP/1.1 clients against:

  trivial   GET /healthz — a view that touches nothing (the baseline)
  waiting   GET /join/{id}/student, meeting still LAUNCHING: 202 (one SELECT)
  ready     GET /join/{id}/student, meeting IN_PROGRESS: 200 with a fresh DCV token

Prints requests/s and p50/p99 latency for each with ratios to the baseline. Then, in
process, counts SQL queries per join (waiting, first join, ready) with 10 and with
``--meetings`` meetings in the database, to show the count does not grow.
"""

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
if str(BASE_DIR) not in sys.path:
    sys.path.insert(0, str(BASE_DIR))

from devtools.stack import free_port, wait_for_port  # noqa: E402

PG_URL = "postgres://postgres@127.0.0.1:5432/elephant_bench_join"


def database_url(workdir: Path) -> str:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return PG_URL
    except OSError:
        return f"sqlite:///{workdir / 'bench.sqlite3'}"


def make_env(workdir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ELEPHANT_", "DJANGO_", "DATABASE_URL"))}
    env.update(
        DJANGO_SETTINGS_MODULE="elephant.settings",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="bench-join-secret-key-not-for-production-0123456789abcdef",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,testserver",
        DJANGO_SECURE_SSL_REDIRECT="false",
        DJANGO_LOG_LEVEL="WARNING",
        DATABASE_URL=database_url(workdir),
        REDIS_URL=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/11"),
        PYTHONUNBUFFERED="1",
    )
    return env


def setup_database(env: dict) -> None:
    if env["DATABASE_URL"] == PG_URL:
        subprocess.run(
            ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", "elephant_bench_join"], check=True
        )
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", "elephant_bench_join"], check=True)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v", "0"], cwd=BASE_DIR, env=env, check=True)
    os.environ.update(env)
    import django

    django.setup()


def make_meeting(status: str, with_hosts: bool) -> tuple[str, str]:
    from django.utils import timezone

    from fleet.models import Host, HostState
    from meetings.models import Meeting
    from meetings.tokens import participant_token

    meeting = Meeting.objects.create(
        teacher_name="Bench Teacher", student_name="Bench Student", meet_time=timezone.now(), status=status
    )
    if with_hosts:
        for n, role in enumerate(("teacher", "student")):
            Host.objects.create(
                meeting=meeting,
                role=role,
                state=HostState.HEALTHY,
                instance_id=f"i-bench{meeting.id[:8]}{n}",
                dcv_link=f"https://i-bench{meeting.id[:8]}{n}.desktops.example.com:8443",
            )
    return meeting.id, participant_token(meeting_id=meeting.id, role="student")


async def _client(port: int, path: str, deadline: float, latencies: list[float], statuses: set[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nConnection: keep-alive\r\n\r\n"
    ).encode()
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        statuses.add(int(head.split(b" ", 2)[1]))
    writer.close()


async def drive(port: int, path: str, duration: float, concurrency: int) -> dict:
    await asyncio.gather(*(_client(port, path, time.perf_counter() + 0.5, [], set()) for _ in range(concurrency)))
    latencies: list[float] = []
    statuses: set[int] = set()
    deadline = time.perf_counter() + duration
    await asyncio.gather(*(_client(port, path, deadline, latencies, statuses) for _ in range(concurrency)))
    latencies.sort()
    return {
        "rps": len(latencies) / duration,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99)] * 1000,
        "statuses": sorted(statuses),
    }


def queries_per_join(meetings: int) -> dict[str, int]:
    """SQL queries of one join, measured in process with the test client."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from meetings.models import Meeting, MeetingStatus

    existing = Meeting.objects.count()
    Meeting.objects.bulk_create(
        Meeting(teacher_name="Filler", student_name="Filler", meet_time=timezone.now())
        for _ in range(meetings - existing)
    )
    client = Client(HTTP_ACCEPT="application/json")
    waiting_id, waiting_token = make_meeting(MeetingStatus.LAUNCHING, with_hosts=False)
    ready_id, ready_token = make_meeting(MeetingStatus.HEALTHY, with_hosts=True)
    counts = {}
    for name, meeting_id, token in (
        ("waiting", waiting_id, waiting_token),
        ("first join", ready_id, ready_token),
        ("ready", ready_id, ready_token),
    ):
        with CaptureQueriesContext(connection) as queries:
            client.get(f"/join/{meeting_id}/student?t={token}")
        # BEGIN/COMMIT of the transition's transaction are transaction control, not queries.
        counts[name] = sum(1 for q in queries if q["sql"] not in ("BEGIN", "COMMIT"))
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--meetings", type=int, default=10_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        env = make_env(workdir)
        setup_database(env)
        from meetings.models import MeetingStatus

        waiting_id, waiting_token = make_meeting(MeetingStatus.LAUNCHING, with_hosts=False)
        ready_id, ready_token = make_meeting(MeetingStatus.IN_PROGRESS, with_hosts=True)

        port = free_port()
        log = open(workdir / "daphne.log", "wb")  # noqa: SIM115
        daphne = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "daphne"),
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "elephant.asgi:application",
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port("127.0.0.1", port, 30, "daphne", daphne)
            targets = {
                "trivial": "/healthz",
                "waiting": f"/join/{waiting_id}/student?t={waiting_token}",
                "ready": f"/join/{ready_id}/student?t={ready_token}",
            }
            results = {
                name: asyncio.run(drive(port, path, args.duration, args.concurrency)) for name, path in targets.items()
            }
        finally:
            errors = (workdir / "daphne.log").read_text(errors="replace")
            if "Traceback" in errors:
                print(errors[-3000:])
            daphne.terminate()
            daphne.wait(10)

        small = queries_per_join(10)
        large = queries_per_join(args.meetings)
        engine = "PostgreSQL" if env["DATABASE_URL"] == PG_URL else "SQLite"

    base = results["trivial"]
    print(f"\njoin endpoint, one daphne, {engine}, {args.concurrency} keep-alive clients, {args.duration:g} s each")
    print(f"{'target':<10}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'req/s vs trivial':>18}{'p99 vs trivial':>16}  status")
    for name, r in results.items():
        print(
            f"{name:<10}{r['rps']:>8.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}"
            f"{r['rps'] / base['rps']:>17.2f}x{r['p99'] / base['p99']:>15.2f}x  {r['statuses']}"
        )
    print("\nSQL queries per join request")
    print(f"{'meetings':<10}" + "".join(f"{name:>12}" for name in small))
    print(f"{10:<10}" + "".join(f"{n:>12}" for n in small.values()))
    print(f"{args.meetings:<10}" + "".join(f"{n:>12}" for n in large.values()))


if __name__ == "__main__":
    main()
