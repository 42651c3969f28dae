"""DynamoDB mirror benchmark: calls per meeting lifecycle and sync lag, on the local endpoint.

Runs the whole mirror path for real: a moto server over HTTP, a throwaway database (created
and dropped here; PostgreSQL when DATABASE_URL says so, else SQLite in memory), the services
that change meetings, the flush and the pull. For each size (default 100 and 1,000 meetings) it
drives every meeting through a full lifecycle, with the agents writing HEALTHY and their session
data, and counts the app's DynamoDB calls per operation with a botocore hook on the real client.
Then, with all meetings active, it changes every one of them and measures, from the moment the
last of those changes committed, how long until each one's write had landed in DynamoDB (the sync
lag of a burst of N simultaneous changes), and the time of one pull over all of them.

    .venv/bin/python bench/ddb_mirror.py [--sizes 100 1000]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    moto = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("moto_server did not start")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


CONFLICTS = Counter()


def flush_all(mirror_flush) -> None:
    while True:
        result = mirror_flush()
        CONFLICTS["conflicts"] += result.conflicts
        if not result.claimed:
            return


def flush_parallel(mirror_flush, workers: int) -> None:
    """``workers`` flushers at once, as several Celery workers would run (claims keep them apart)."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    def worker():
        try:
            flush_all(mirror_flush)
        finally:
            connection.close()

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(worker) for _ in range(workers)]:
            future.result()


def run(size: int, endpoint: str, flushers: int) -> dict:
    import boto3
    from django.db.models import F
    from django.utils import timezone

    from fleet.models import Host, HostState
    from meetings.models import Meeting, MeetingEvent, MeetingStatus, TerminationReason
    from meetings.services import meeting_record_change, meeting_schedule, meeting_transition
    from mirror import dynamo
    from mirror.models import MirrorState
    from mirror.services import mirror_flush, mirror_pull

    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST", data=b"")).read()
    dynamo.table_bootstrap()
    Meeting.objects.all().delete()

    calls: Counter = Counter()
    events = dynamo.ddb_client().meta.events
    events.register("before-call.dynamodb", lambda model, **kw: calls.update([model.name]), unique_id="bench")
    # The agents use their own client: their calls are not the app's.
    agent = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-west-2")

    def agent_write(meeting_id: str, **attributes) -> None:
        names = {f"#n{i}": name for i, name in enumerate(attributes)}
        values = {f":v{i}": {"S": value} for i, value in enumerate(attributes.values())}
        agent.update_item(
            TableName="elephant-meetings",
            Key={"id": {"S": meeting_id}},
            UpdateExpression="SET " + ", ".join(f"{n} = :v{i}" for i, n in enumerate(names)),
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    start = timezone.now() + timedelta(minutes=3)
    meetings = [
        meeting_schedule(teacher_name=f"Teacher {n}", student_name=f"Student {n}", meet_time=start, actor="bench")
        for n in range(size)
    ]
    flush_all(mirror_flush)

    def step(to_status, allowed, **fields):
        for meeting in meetings:
            meeting_transition(meeting=meeting, to_status=to_status, allowed_from=allowed, **fields)
        flush_all(mirror_flush)

    step(MeetingStatus.LAUNCHING, {MeetingStatus.SCHEDULED})
    for meeting in meetings:  # the fleet records each host's instance id (one change per host)
        for role in ("teacher", "student"):
            host = Host.objects.create(
                meeting=meeting, role=role, instance_id=f"i-{meeting.id}{role[0]}", state=HostState.BOOTING
            )
            meeting_record_change(meeting=meeting, reason="HOST_INSTANCE", detail=host.instance_id)
    flush_all(mirror_flush)
    step(MeetingStatus.LAUNCHED, {MeetingStatus.LAUNCHING})
    for meeting in meetings:  # DCV links written
        for host in meeting.hosts.all():
            Host.objects.filter(pk=host.pk).update(dcv_link=f"https://{host.instance_id}.example.com:8443")
        meeting_record_change(meeting=meeting, reason="DCV_LINK")
    step(MeetingStatus.DNS_WRITTEN, {MeetingStatus.LAUNCHED})
    for meeting in meetings:  # both agents report HEALTHY (the second overwrites instance_id)
        for role in ("teacher", "student"):
            agent_write(meeting.id, status="HEALTHY", instance_id=f"i-{meeting.id}{role[0]}")
    mirror_pull()
    step(MeetingStatus.HEALTHY, {MeetingStatus.DNS_WRITTEN})
    step(MeetingStatus.IN_PROGRESS, {MeetingStatus.HEALTHY})

    # Sync lag with every meeting active: all of them change at once, one flush pass follows.
    for meeting in meetings:
        meeting_record_change(meeting=meeting, reason="BENCH_TOUCH")
    burst_end = timezone.now()  # lag counts from here: as if all of them had changed at this instant
    began = time.perf_counter()
    if flushers > 1:
        from django.conf import settings

        batch, settings.ELEPHANT_DDB_FLUSH_BATCH = settings.ELEPHANT_DDB_FLUSH_BATCH, 25
        flush_parallel(mirror_flush, flushers)
        settings.ELEPHANT_DDB_FLUSH_BATCH = batch
    else:
        flush_all(mirror_flush)
    flush_seconds = time.perf_counter() - began
    lags = [
        (mirrored - burst_end).total_seconds()
        for mirrored in MeetingEvent.objects.filter(reason="BENCH_TOUCH").values_list("mirrored_at", flat=True)
    ]
    pulls_before = calls["BatchGetItem"]
    for meeting in meetings:  # recordings uploaded
        agent_write(meeting.id, teacher_session_data=f"s3://rec/{meeting.id}/t.mp4")
        agent_write(meeting.id, student_session_data=f"s3://rec/{meeting.id}/s.mp4")
    began = time.perf_counter()
    pulled = mirror_pull()
    pull_seconds = time.perf_counter() - began
    pull_calls = calls["BatchGetItem"] - pulls_before
    flush_all(mirror_flush)
    step(
        MeetingStatus.TERMINATED,
        {MeetingStatus.IN_PROGRESS},
        fields={"termination_reason": TerminationReason.SUCCESS},
    )

    events.unregister("before-call.dynamodb", unique_id="bench")
    assert pulled.session_data == size, pulled
    assert MirrorState.objects.filter(mirrored_version=F("meeting__version")).count() == size
    assert not MeetingEvent.objects.filter(mirrored_at__isnull=True).exists()
    sample = dynamo.item_get(meetings[0].id)
    assert sample["status"] == "TERMINATED" and sample["teacher_session_data"].startswith("s3://"), sample
    changes = MeetingEvent.objects.count()
    conflicts, CONFLICTS["conflicts"] = CONFLICTS["conflicts"], 0
    return {
        "meetings": size,
        "changes_per_meeting": changes / size,
        "calls": dict(calls),
        "calls_per_meeting": sum(calls.values()) / size,
        "update_per_meeting": calls["UpdateItem"] / size,
        "batchget_per_meeting": calls["BatchGetItem"] / size,
        "lag_p50": statistics.median(lags),
        "lag_p95": percentile(lags, 0.95),
        "lag_max": max(lags),
        "flush_seconds": flush_seconds,
        "writes_per_second": size / flush_seconds,
        "pull_seconds": pull_seconds,
        "pull_calls": pull_calls,
        "conflicts_per_meeting": conflicts / size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--flushers", type=int, default=1, help="parallel flushers for the lag burst (PostgreSQL)")
    args = parser.parse_args()

    proc, endpoint = start_moto()
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_SESSION_TOKEN="bench",
        AWS_REGION="us-west-2",
        DJANGO_SETTINGS_MODULE="elephant.settings",
        DJANGO_LOG_LEVEL="WARNING",
    )
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"] = "sqlite://:memory:"
    import django
    from django.conf import settings

    django.setup()
    from meetings.signals import meeting_changed

    # The benchmark drives the flush itself (as the worker would); no Celery messages.
    meeting_changed.disconnect(dispatch_uid="mirror.flush_soon")
    settings.MIGRATION_MODULES = {app.split(".")[-1]: None for app in settings.INSTALLED_APPS}  # tables from models
    from django.db import connection

    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        if args.flushers > 1 and connection.vendor != "postgresql":
            raise SystemExit("--flushers needs PostgreSQL (DATABASE_URL)")
        results = [run(size, endpoint, args.flushers) for size in args.sizes]
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
        proc.terminate()
        proc.wait()

    print(
        f"DynamoDB mirror on the local endpoint (moto server), database {connection.vendor}, "
        f"{args.flushers} flusher(s) for the lag burst"
    )
    header = (
        "| meetings | changes/meeting | app calls/meeting | UpdateItem/meeting | BatchGetItem/meeting "
        "| lag p50 / p95 / max (s) | flush pass (writes/s) | pull of all active (calls, s) |"
    )
    print(header)
    print("|" + "---|" * 8)
    for r in results:
        print(
            f"| {r['meetings']:,} | {r['changes_per_meeting']:.1f} | {r['calls_per_meeting']:.2f} "
            f"| {r['update_per_meeting']:.2f} | {r['batchget_per_meeting']:.2f} "
            f"| {r['lag_p50']:.2f} / {r['lag_p95']:.2f} / {r['lag_max']:.2f} "
            f"| {r['flush_seconds']:.2f} s ({r['writes_per_second']:.0f}/s) "
            f"| {r['pull_calls']}, {r['pull_seconds']:.2f} s |"
        )
    for r in results:
        print(
            f"{r['meetings']:,} meetings: calls by operation {r['calls']}, "
            f"conflicts (agent spoke first) per meeting {r['conflicts_per_meeting']:.2f}"
        )


if __name__ == "__main__":
    main()
