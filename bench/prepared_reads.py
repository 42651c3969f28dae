"""The sweeps' reads through the ORM, through ``elephant.prepared`` and on a bare cursor, side by side.

    .venv/bin/python bench/prepared_reads.py [--rows N] [--repeat N] [--database URL]

Makes a scratch database (SQLite in /dev/shm by default, removed after; or ``--database
postgres://...``, dropped and made again), books ``--rows`` lessons with two hosts each, half of them
under way, and times each read the beat's sweeps make every 15 seconds or every minute three ways in
the same run: the queryset built and iterated as the ORM does (what the code did before), the
``PreparedRead`` the code uses now, and the same SQL on a bare cursor (the floor: no building, no
compiling, no row conversion). Prints microseconds per call and each one's ratio to the bare cursor.
"""

import argparse
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
for path in (BASE_DIR, BASE_DIR / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))


def _time(call, repeat: int) -> float:
    call()
    started = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - started) / repeat * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200, help="lessons booked (two hosts each; half under way)")
    parser.add_argument("--repeat", type=int, default=2000, help="calls timed per read and way")
    parser.add_argument("--database", help="postgres://... (dropped and made again) or sqlite:///PATH")
    args = parser.parse_args(argv)
    from fleet_sim import database_recreate, default_database, django_setup, sqlite_remove

    url = args.database or default_database()
    django_setup(url)
    try:
        database_recreate(url)
        return _run(args)
    finally:
        from django.db import connections

        connections.close_all()
        if not args.database:
            sqlite_remove(url)


def _run(args) -> int:
    from django.db import connection
    from django.utils import timezone

    from fleet import selectors as fleet_selectors
    from fleet.models import Host, HostState
    from fleet.services import planning
    from meetings import selectors as meeting_selectors
    from meetings import windows
    from meetings.models import Meeting, MeetingStatus

    now = timezone.now()
    for index in range(args.rows):
        under_way = index % 2 == 0
        meeting = Meeting.objects.create(
            teacher_name="Teacher",
            student_name=f"Student {index}",
            meet_time=now + timedelta(minutes=(-20 if under_way else 30 + index)),
            time_zone="UTC",
            status=MeetingStatus.IN_PROGRESS if under_way else MeetingStatus.SCHEDULED,
        )
        if under_way:
            for role in ("teacher", "student"):
                Host.objects.create(
                    meeting=meeting,
                    role=role,
                    state=HostState.HEALTHY if index % 4 else HostState.DNS_WRITTEN,
                    instance_id=f"i-{index:08d}{role[0]}",
                    launched_at=now - timedelta(minutes=25),
                    dcv_link="https://example.invalid:8443",
                )
    reads = [
        (
            "launch sweep: meetings due",
            fleet_selectors._meeting_ids_to_launch,
            {
                "now": now,
                "quiet": now - fleet_selectors.LAUNCH_STUCK_AFTER,
                "meet_time_until": windows.launch_due_meet_time_until(now),
            },
            fleet_selectors._meetings_to_launch,
        ),
        ("watchdog: hosts watched", fleet_selectors._hosts_watched, {}, None),
        ("health sweep: hosts booting", fleet_selectors._hosts_booting, {"meeting_id": None}, None),
        ("health sweep: healthy, meeting not", fleet_selectors._hosts_healthy_early, {"meeting_id": None}, None),
        (
            "termination sweep: meetings to judge",
            meeting_selectors._meetings_for_termination,
            {"until": windows.termination_meet_time_until(now)},
            meeting_selectors._for_termination,
        ),
        (
            "plan: meetings of the horizon",
            planning._scheduled_rows,
            {"since": now - timedelta(hours=1), "until": now + timedelta(hours=24), "exclude": []},
            None,
        ),
        ("reaper: instances tracked", fleet_selectors._instances_tracked, {}, None),
    ]
    print(f"database {connection.vendor}, {args.rows} lessons ({Host.objects.count()} hosts), {args.repeat} calls each")
    header = ("rows", "ORM us", "prepared us", "cursor us", "ORM/cursor", "prep/cursor")
    print(f"{'read':38} " + " ".join(f"{h:>11}" for h in header))
    for name, prepared, values, build in reads:
        build = build or prepared._build
        queryset = build(**values)
        sql, params = queryset.query.sql_with_params()
        rows = len(prepared(**values))
        assert rows == len(list(build(**values))), name

        def bare(sql=sql, params=params):
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                cursor.fetchall()

        orm = _time(lambda build=build, values=values: list(build(**values)), args.repeat)
        fast = _time(lambda prepared=prepared, values=values: prepared(**values), args.repeat)
        floor = _time(bare, args.repeat)
        print(
            f"{name:38} {rows:>5} {orm:>9.1f} {fast:>12.1f} {floor:>10.1f} {orm / floor:>11.1f} {fast / floor:>12.1f}"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "elephant.settings")
    sys.exit(main())
