"""The fleet simulator's command, as a user runs it: three policies side by side (parallel processes,
each on its own database: a SQLite file of the run's own by default, or PostgreSQL), a table, then one
JSON line per policy with the issue's fields."""

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from fleet.models import WATCHED_HOST_STATES

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {
    "policy",
    "sessions",
    "ready_at_start",
    "wait_p50_s",
    "wait_p95_s",
    "wait_max_s",
    "overhead_ratio",
    "usd",
    "leaked_instances",
    "throttled_calls",
    "refused_at_booking",
}
SCENARIO = {
    "seed": 3,
    "days": 1,
    "sessions_per_day": 8,
    "start_minutes": [0, 30],
    "hour_weights": {"10": 1},
    "duration_minutes": 30,
    "booking_lead_hours": {"lognormal": {"median": 6, "p95": 20}},
    "no_show_rate": 0.0,
    "boot_seconds": {
        "cold": {"lognormal": {"median": 35, "p95": 80}},
        "warm": {"lognormal": {"median": 20, "p95": 45}},
    },
    "capacity": {"ice_probability": 0.0},
    "limits": {"run_instances_burst": 100, "run_instances_per_second": 2, "vcpu_quota": 400},
    "instance": {"os": "linux", "type": "g4dn.xlarge", "vcpus": 4, "usd_per_hour": 0.526, "stopped_usd_per_hour": 0.01},
}


@pytest.fixture
def database_url():
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("the simulator needs PostgreSQL (DATABASE_URL) and CI=true forbids skipping it")
        pytest.skip("the simulator needs PostgreSQL: set DATABASE_URL")
    name = f"elephant_test_sim_{os.getpid()}"
    yield urlsplit(url)._replace(path=f"/{name}").geturl()
    import psycopg

    with psycopg.connect(urlsplit(url)._replace(path="/postgres").geturl(), autocommit=True) as connection:
        for suffix in ("", "_fixed", "_learned", "_learned_pool"):
            connection.execute(f'DROP DATABASE IF EXISTS "{name}{suffix}" WITH (FORCE)')


def simulate(tmp_path, database_url, *args, scenario=SCENARIO):
    """Run the simulator; ``database_url`` None: on its default database."""
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(scenario) if isinstance(scenario, dict) else scenario)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ELEPHANT_", "SIM_"))}
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "fleet_sim.py"),
            "--scenario",
            str(path),
            *(["--database", database_url] if database_url else []),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        env=env,
    )


def test_three_policies_side_by_side_print_a_table_then_a_json_line_each(tmp_path, database_url):
    run = simulate(tmp_path, database_url, "--jobs", "2", "--breakdown")
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    results = [json.loads(line) for line in lines[-3:]]
    assert [r["policy"] for r in results] == ["fixed", "learned", "learned+pool"]
    assert lines[0].startswith("scenario scenario: 1 days, 8 sessions a day")
    for result in results:
        assert set(result) == FIELDS
        assert result["sessions"] == 8 and result["refused_at_booking"] == 0
        assert result["leaked_instances"] == 0
        assert 0.0 <= result["ready_at_start"] <= 1.0
        assert result["wait_p50_s"] <= result["wait_p95_s"] <= result["wait_max_s"]
    # Linux boots in well under the fixed five minutes: every policy has the desktops there in time,
    # and every one bills for time before the lesson.
    assert [r["ready_at_start"] for r in results] == [1.0, 1.0, 1.0]
    assert all(r["overhead_ratio"] > 0 and r["usd"] > 0 for r in results)
    assert "# learned+pool:" in run.stderr  # each policy's ends and AWS calls, on stderr
    # --breakdown: where each policy's time went, per task and simulator step, with its queries.
    launches = [line.split() for line in run.stderr.splitlines() if "learned breakdown: meeting_launch_task" in line]
    assert len(launches) == 1
    calls, queries = int(launches[0][4]), int(launches[0][5])
    assert calls >= 8 and queries >= calls  # every meeting launched, each with its queries counted


def test_bad_input_is_refused_with_a_clear_message(tmp_path, database_url):
    unknown = simulate(tmp_path, database_url, "--policies", "learned,always-on")
    assert unknown.returncode == 2 and "unknown policy always-on" in unknown.stderr
    broken = simulate(tmp_path, database_url, scenario='{"seed": 1, "days": ')
    assert broken.returncode == 2 and "scenario" in broken.stderr.lower()
    assert not broken.stdout
    impossible = simulate(tmp_path, database_url, scenario={**SCENARIO, "capacity": {"ice_probability": 1.5}})
    assert impossible.returncode == 2 and "capacity.ice_probability: from 0 to 1" in impossible.stderr
    none = simulate(tmp_path, database_url, "--policies", " , ")
    assert none.returncode == 2 and "--policies names none" in none.stderr
    no_days = simulate(tmp_path, database_url, "--days", "0")
    assert no_days.returncode == 2 and "--days must be at least 1" in no_days.stderr
    # A lesson longer than the application allows is the scenario's fault, not a refusal for capacity.
    too_long = simulate(tmp_path, database_url, "--jobs", "3", scenario={**SCENARIO, "duration_minutes": 600})
    assert too_long.returncode == 2 and "Duration must be between 1 and 480 minutes" in too_long.stderr
    assert not too_long.stdout


def test_a_lesson_whose_desktops_never_came_waited_all_of_it(tmp_path, database_url):
    """EC2 has no capacity at all: every launch fails before the lesson starts. Those sessions are not
    ready, and each counts as waiting its whole lesson (not zero because the launch failed early)."""
    scenario = {**SCENARIO, "capacity": {"ice_probability": 1.0}}
    run = simulate(tmp_path, database_url, "--policies", "fixed", scenario=scenario)
    assert run.returncode == 0, run.stderr[-3000:]
    (result,) = [json.loads(run.stdout.strip().splitlines()[-1])]
    assert result["sessions"] == 8 and result["ready_at_start"] == 0.0
    lesson = SCENARIO["duration_minutes"] * 60
    assert result["wait_p50_s"] >= lesson and result["wait_max_s"] >= lesson
    assert result["leaked_instances"] == 0 and result["usd"] == 0.0
    assert "LAUNCH_FAILED" in run.stderr


def test_the_clock_wakes_before_the_earliest_launch_a_crowded_start_is_planned_for(tmp_path):
    """200 lessons at 16:00 and a bucket that serves one meeting a minute: the plan launches them from
    about 12:40, more than three hours ahead. The simulator wakes as early as the fleet may act (here the
    plan's ELEPHANT_MAX_LAUNCH_LEAD, 240 minutes), so every one is launched when planned and ready at the
    start; a clock that slept until three hours before (bbbad11) found the earliest ones due at once, and
    the bucket throttled them late (0.915 ready, 309 throttled calls)."""
    scenario = {
        **SCENARIO,
        "seed": 5,
        "sessions_per_day": 200,
        "start_minutes": [0],
        "hour_weights": {"16": 1},
        "booking_lead_hours": {"lognormal": {"median": 48, "p95": 120}},
        "limits": {"run_instances_burst": 4, "run_instances_per_second": 0.05, "vcpu_quota": 4000},
    }
    run = simulate(tmp_path, None, "--policies", "learned", scenario=scenario)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["sessions"] == 200 and result["refused_at_booking"] == 0
    assert result["ready_at_start"] == 1.0 and result["throttled_calls"] == 0, result


def test_sqlite_by_default_with_the_figures_postgresql_gives(tmp_path, database_url):
    """With no --database, each policy runs on a SQLite file of the run's own (no server; removed when
    done), and every figure is the one the same run gives on PostgreSQL, as production runs."""
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())

    def left_behind() -> set[Path]:
        """The default databases whose run (the process id in the name) has ended: a simulator running
        beside this test at the same moment is not counted."""
        ended = set()
        for path in shm.glob("elephant_bench_sim_*.sqlite3*"):
            pid = int(path.name.split("_")[3].split(".")[0])
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                ended.add(path)
        return ended

    before = left_behind()
    on_sqlite = simulate(tmp_path, None, "--jobs", "3")
    assert on_sqlite.returncode == 0, on_sqlite.stderr[-3000:]
    on_postgresql = simulate(tmp_path, database_url, "--jobs", "3")
    assert on_postgresql.returncode == 0, on_postgresql.stderr[-3000:]
    results = [json.loads(line) for line in on_sqlite.stdout.strip().splitlines()[-3:]]
    assert [r["policy"] for r in results] == ["fixed", "learned", "learned+pool"]
    assert results == [json.loads(line) for line in on_postgresql.stdout.strip().splitlines()[-3:]]
    # A run stopped early (a scenario Elephant refuses, the other policies killed) removes its files too.
    refused = simulate(tmp_path, None, "--jobs", "3", scenario={**SCENARIO, "duration_minutes": 600})
    assert refused.returncode == 2 and "Duration must be between 1 and 480 minutes" in refused.stderr
    assert left_behind() <= before  # nothing of the runs' left in memory
    # A database named on the command line is kept for a look afterwards; an unknown kind is refused.
    kept = tmp_path / "sim.sqlite3"
    run = simulate(tmp_path, f"sqlite:///{kept}", "--policies", "learned", "--jobs", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == results[1]
    assert kept.exists()
    # The sweeps' reads search the state index, as PostgreSQL's do, whatever the run simulated: no
    # statistics lead SQLite to scan the whole host table in its default ordering's order instead.
    with sqlite3.connect(kept) as db:
        watched = ", ".join(f"'{state}'" for state in sorted(WATCHED_HOST_STATES))
        plan = [
            row[3]
            for row in db.execute(
                f"EXPLAIN QUERY PLAN SELECT id FROM fleet_host WHERE state IN ({watched}) "
                "ORDER BY meeting_id, role, generation DESC"
            )
        ]
    assert plan[0].startswith("SEARCH fleet_host USING INDEX fleet_host_state"), plan
    wrong = simulate(tmp_path, "mysql://root@localhost/sim")
    assert wrong.returncode == 2 and "--database takes sqlite:///PATH or postgres://" in wrong.stderr


def test_the_simulators_sqlite_datetimes_are_the_ones_django_reads():
    """bench/fleet_sim.py reads SQLite's DATETIME text in C (``_sqlite_datetime``): each value must be the
    aware datetime Django's own converter and ``convert_datetimefield_value`` make of the same text."""
    from datetime import UTC

    from django.db.backends.sqlite3.base import decoder
    from django.utils import timezone
    from django.utils.dateparse import parse_datetime

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from fleet_sim import _sqlite_datetime
    finally:
        sys.path.remove(str(ROOT / "bench"))
    django_reads = decoder(parse_datetime)
    for text in (
        b"2027-03-01 15:00:00",
        b"2027-03-01 15:00:00.000005",
        b"2026-03-29 01:59:59.999999",
        b"2027-03-01T15:00:00",
        b"2027-03-01 15:00:00+01:00",
        b"2027-03-01",
        b"not a time",
    ):
        expected = django_reads(text)
        if expected is not None and timezone.is_naive(expected):
            expected = timezone.make_aware(expected, UTC)
        got = _sqlite_datetime(text)
        assert got == expected and (got is None or got.utcoffset() == expected.utcoffset()), text


def test_the_simulators_sqlite_fast_paths_give_django_s_statements_and_values(tmp_path):
    """``sqlite_datetimes_fast`` (run in a process of its own: it patches the SQLite backend for the run)
    turns statements into SQLite's placeholders as Django does, and its datetime pass leaves values as
    Django's leaves them."""
    script = f"""
import sys
sys.path.insert(0, {str(ROOT / "bench")!r})
import fleet_sim
from datetime import UTC, datetime, timedelta, timezone
from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX, SQLiteCursorWrapper
from django.db.backends.sqlite3.operations import DatabaseOperations
original_convert = DatabaseOperations.convert_datetimefield_value
fleet_sim.django_setup("sqlite:///{tmp_path / "fast.sqlite3"}")
from django.db import connection
statements = ["SELECT %s, '%%' FROM t WHERE a = %s", "SELECT 1", "UPDATE t SET a = %s WHERE b LIKE '%%x'"]
for sql in statements * 2:
    assert SQLiteCursorWrapper.convert_query(None, sql) == FORMAT_QMARK_REGEX.sub("?", sql).replace("%%", "%")
assert SQLiteCursorWrapper.convert_query(None, "SELECT %(a)s", param_names=["a"]) == "SELECT :a"
ops = connection.ops
for value in [None, datetime(2027, 3, 1, 15, tzinfo=UTC), datetime(2027, 3, 1, 15),
              datetime(2027, 3, 1, 15, tzinfo=timezone(timedelta(hours=2))), "2027-03-01 15:00:00.5"]:
    got = ops.convert_datetimefield_value(value, None, connection)
    want = original_convert(ops, value, None, connection)
    assert got == want and (got is None or got.utcoffset() == want.utcoffset()), (value, got, want)
print("same")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "same", done.stderr[-3000:]
