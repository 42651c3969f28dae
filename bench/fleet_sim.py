"""The fleet simulator: `python bench/fleet_sim.py --scenario FILE.json [--policies fixed,...]`.

A discrete-event simulation on a virtual clock (time-machine) that drives Elephant's real services:
bookings go through ``meetings.services.meeting_schedule``; the beat entries the migrations create
(django-celery-beat rows: launch sweep, watchdog, health, termination, reaper, at their real
intervals) run as the same task functions beat calls, and every task they queue runs inline at its
virtual time (a Celery retry comes back after its countdown). EC2 is an in-process model
(bench/sim_ec2.py: the strict endpoint's rules plus the scenario's boot times, capacity errors and
limits). Participants join when their desktops are ready; agents report the session data at the
lesson's end; no-shows never come. No second copy of the fleet's policy lives here.

Prints a table and, last, one JSON line per policy:

  {"policy": ..., "sessions": N, "ready_at_start": 0..1, "wait_p50_s": x, "wait_p95_s": x, "wait_max_s": x,
   "overhead_ratio": x, "usd": x, "leaked_instances": N, "throttled_calls": N, "refused_at_booking": N}

``ready_at_start`` is the share of sessions held (not no-shows, not refused) whose two hosts were both
ready at ``meet_time``; a wait is from ``meet_time`` until both were ready, and a session whose desktops
were never both ready counts as waiting its whole lesson (until the meeting ended, if that was later);
``overhead_ratio`` is instance-time billed beyond the ideal (both hosts running exactly from
``meet_time`` to the end) divided by the ideal.

Policies are production settings, not simulator code: ``fixed`` is the launch at
``meet_time - ELEPHANT_LAUNCH_LEAD``. The database (``--database``) is recreated per policy: by
default a private SQLite file in memory-backed storage (``/dev/shm`` where there is one; the run
is single-threaded, so it needs no server), or a PostgreSQL database as production uses
(``--database postgres://postgres@127.0.0.1:5432/elephant_bench_sim``); the same services run
on either, with the same results. With ``--jobs`` above 1 (the default: one per policy) each
policy runs in a process of its own on its own database, the name suffixed with the policy
(``elephant_bench_sim_learned_pool``).
"""

import argparse
import bisect
import dataclasses
import functools
import gc
import heapq
import importlib
import itertools
import json
import os
import random
import sys
import time
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
for path in (BASE_DIR, BASE_DIR / "bench"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from sim_scenario import EPOCH, Scenario, ScenarioError, percentile, sessions  # noqa: E402


def default_database() -> str:
    """A SQLite file of this run's own (the process id in its name) in memory-backed storage
    (``/dev/shm``) where the machine has it, else in the temporary directory; removed after the run."""
    import tempfile

    shm = Path("/dev/shm")
    folder = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return f"sqlite:///{folder / f'elephant_bench_sim_{os.getpid()}.sqlite3'}"


# Settings each policy runs with (every one a production setting, documented in docs/).
POLICIES: dict[str, dict] = {
    "fixed": {"ELEPHANT_LAUNCH_POLICY": "fixed", "ELEPHANT_LAUNCH_LEAD": 5, "ELEPHANT_WARM_POOL": False},
    "learned": {"ELEPHANT_LAUNCH_POLICY": "learned", "ELEPHANT_WARM_POOL": False},
    "learned+pool": {"ELEPHANT_LAUNCH_POLICY": "learned", "ELEPHANT_WARM_POOL": True},
}
# Two subnets in two zones, as a production install spreads teacher and student.
SUBNETS = {"subnet-0sim0000000000a": "us-west-2a", "subnet-0sim0000000000b": "us-west-2b"}
# How often (simulated time) autovacuum's rule (its naptime: one minute) is applied (PostgreSQL only: ``vacuum``).
VACUUM_EVERY = timedelta(minutes=1)


def django_setup(database_url: str) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="elephant.settings",
        DJANGO_DEBUG="false",
        DJANGO_SECRET_KEY="fleet-sim-secret-key-not-for-production-0123456789abcdef",
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DJANGO_SECURE_SSL_REDIRECT="false",
        # The fleet logs every failed meeting (a throttled hour under `fixed` fails hundreds); the
        # summary counts them by reason, and a task that fails for good is counted too.
        DJANGO_LOG_LEVEL="CRITICAL",
        ELEPHANT_DEV_TOOLS="false",
        DATABASE_URL=database_url,
        # Parameters bound on the server and the statements the sweeps repeat prepared (a production
        # setting, off by default: docs/operations.md); on PostgreSQL, 13% off a simulated day, the same results.
        ELEPHANT_DB_PREPARED="true",
        AWS_ACCESS_KEY_ID="sim",
        AWS_SECRET_ACCESS_KEY="sim",
    )
    import django

    django.setup()
    if urlsplit(database_url).scheme == "sqlite":
        sqlite_datetimes_fast()


def _sqlite_datetime(raw: bytes):
    """A DATETIME column's text as the aware UTC datetime Django makes of it (``parse_datetime``, then
    ``make_aware`` in the connection's zone, UTC), by the C parser at once; text with an offset of its
    own, or in a form that parser does not read, as Django reads it."""
    text = raw.decode()
    try:
        value = datetime.fromisoformat(text + "+00:00")
        if value.tzinfo is UTC:
            return value
    except ValueError:
        pass
    from django.utils.dateparse import parse_datetime

    value = parse_datetime(text)
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def sqlite_datetimes_fast() -> None:
    """The SQLite driver's work on each value and statement, done once or in C; the same values and statements.

    - DATETIME text is read in C and aware at once (``_sqlite_datetime``). Django parses each value in
      Python, then makes it aware in a second pass (``convert_datetimefield_value``), which now finds it
      aware and only checks that. Together, some 8% of a simulated day's samples (py-spy) went there, most
      of it the plan reading the scheduled meetings each minute. Only where SQLite holds naive UTC text,
      as Django writes it with USE_TZ.
    - That second pass returns an aware datetime at once (the check Django makes, without looking up
      ``settings.USE_TZ`` for each value); anything else goes through Django's.
    - A statement's ``%s`` turned into SQLite's ``?`` once per statement text, not at every execution
      (Django's ``convert_query`` runs a regular expression over the SQL each time; the sweeps run the same
      few statements all day)."""
    import sqlite3

    from django.conf import settings
    from django.db import connection
    from django.db.backends.sqlite3.base import SQLiteCursorWrapper
    from django.db.backends.sqlite3.operations import DatabaseOperations

    if not settings.USE_TZ or connection.timezone != UTC:
        return
    sqlite3.register_converter("datetime", _sqlite_datetime)
    sqlite3.register_converter("timestamp", _sqlite_datetime)

    django_converts = DatabaseOperations.convert_datetimefield_value

    def convert_datetimefield_value(self, value, expression, connection):
        if value is None or (type(value) is datetime and value.utcoffset() is not None):  # aware: Django's test
            return value
        return django_converts(self, value, expression, connection)

    DatabaseOperations.convert_datetimefield_value = convert_datetimefield_value

    django_query = SQLiteCursorWrapper.convert_query
    qmark = functools.lru_cache(maxsize=4096)(lambda query: django_query(None, query))

    def convert_query(self, query, *, param_names=None):
        return qmark(query) if param_names is None else django_query(self, query, param_names=param_names)

    SQLiteCursorWrapper.convert_query = convert_query


def database_recreate(database_url: str) -> None:
    from django.core.management import call_command
    from django.db import connection as django_connection
    from django.db import connections

    connections.close_all()
    parts = urlsplit(database_url)
    if parts.scheme == "sqlite":
        sqlite_remove(database_url)
        call_command("migrate", verbosity=0, interactive=False)
        with django_connection.cursor() as cursor:
            # A scratch database, as the PostgreSQL one below: a commit need not reach the disk.
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = OFF")
        return
    import psycopg

    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
        # A scratch database: a commit need not wait for its WAL to reach the disk. Transactions,
        # locks and isolation are unchanged; only a crash of PostgreSQL itself could lose the run.
        connection.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    call_command("migrate", verbosity=0, interactive=False)
    # The simulation applies autovacuum's rule on its own clock (``Simulation.vacuum``); the real daemon,
    # on the wall clock, would vacuum at moments that depend on the machine's speed, and with them the
    # order rows come back in: two runs of one scenario would differ.
    with django_connection.cursor() as cursor:
        for table in django_connection.introspection.table_names(cursor):
            cursor.execute(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)')


class Simulation:
    def __init__(self, scenario: Scenario, policy: str, *, breakdown: bool = False):
        self.scenario = scenario
        self.policy = policy
        # --breakdown: label -> [calls, queries, seconds] of each task and simulator step.
        self.breakdown: dict[str, list] | None = {} if breakdown else None
        self._label = "simulator (its own reads)"  # busy or idle, the summary: not timed, queries counted
        self.now = EPOCH - timedelta(hours=2)
        self.queue: list = []
        self.order = itertools.count()
        self.task_failures: Counter = Counter()
        self.sessions = sessions(scenario)
        self.meeting_of: dict[int, str] = {}
        self.refused = 0
        self.ec2 = None
        self._busy_until = None
        # Busy means: a lesson starts within this (``_run``: as far ahead as the fleet may act on one), or
        # one is not finished, or a host is live. Idle time is skipped.
        self.horizon = timedelta(0)
        self.booked_times: list = []  # meet_time of every booked session, sorted
        self.waiting: dict = {}  # meeting id -> its session, for participants in the waiting room

    # --- the event queue -----------------------------------------------------------------------
    def at(self, moment, kind: str, payload=None) -> None:
        heapq.heappush(self.queue, (moment, next(self.order), kind, payload))

    def clock(self):
        return self.now

    # --- wiring the real application to the model --------------------------------------------------
    def install(self, stack) -> None:
        import celery.app.task
        from django.conf import settings
        from sim_ec2 import Ec2Model

        import fleet.aws
        import fleet.probes
        from fleet import planner
        from fleet.models import DesktopProfile
        from meetings.signals import meeting_changed

        s = self.scenario
        self.ec2 = Ec2Model(
            clock=self.clock,
            rng=random.Random(s.seed + 1),
            boot=s.cold_boot,
            warm_boot=s.warm_boot,
            ice_probability=s.ice_probability,
            bucket_size=s.run_instances_burst,
            refill_per_second=s.run_instances_per_second,
            start_bucket_size=s.start_instances_burst,
            start_refill_per_second=s.start_instances_per_second,
            vcpu_quota=s.vcpu_quota,
            vcpus_per_instance=s.vcpus,
            seed=s.seed,
            subnet_zones=dict(SUBNETS),
        )
        overrides = {
            "ELEPHANT_AMI_ID": "ami-0f1ee75a1c0de5a11",
            "ELEPHANT_INSTANCE_TYPES": [s.instance_type, *s.raw.get("instance", {}).get("fallback_types", [])],
            "ELEPHANT_SUBNET_IDS": list(SUBNETS),
            "ELEPHANT_AVAILABILITY_ZONES": [],
            "ELEPHANT_DNS_ZONE_ID": "",
            "ELEPHANT_DEPLOYMENT": "sim",
            # The account's limits, as production reads them from settings (Service Quotas is not modelled).
            "ELEPHANT_RUN_INSTANCES_PER_SECOND": s.run_instances_per_second,
            "ELEPHANT_START_INSTANCES_PER_SECOND": s.start_instances_per_second,
            "ELEPHANT_VCPU_QUOTA": {planner.quota_family(s.instance_type): s.vcpu_quota},
            "ELEPHANT_SERVICE_QUOTAS": False,
            "ELEPHANT_USD_PER_HOUR": s.usd_per_hour,
            "ELEPHANT_STOPPED_USD_PER_HOUR": s.stopped_usd_per_hour,
            **POLICIES[self.policy],
        }
        for name, value in overrides.items():
            stack.enter_context(_setting(settings, name, value))
        DesktopProfile.objects.filter(is_default=True).update(os=s.os)
        # Meeting ids from the scenario's seed, not the system's randomness: the plan breaks ties by id,
        # so a run is repeatable.
        from meetings.models import MEETING_ID_ALPHABET, MEETING_ID_LENGTH, Meeting

        ids = random.Random(s.seed + 2)

        def meeting_id() -> str:
            return "".join(ids.choice(MEETING_ID_ALPHABET) for _ in range(MEETING_ID_LENGTH))

        stack.enter_context(_patch(Meeting._meta.get_field("id"), "_get_default", meeting_id))
        model = self.ec2

        def aws_client(service, **_):
            if service != "ec2":
                raise RuntimeError(f"the simulator models EC2 only (asked for {service})")
            return model

        stack.enter_context(_patch(fleet.aws, "aws_client", aws_client))
        stack.enter_context(
            _patch(
                fleet.probes,
                "dcv_answers_many",
                lambda urls: {url: model.instance_ready(_instance_in(url)) for url in urls},
            )
        )
        # Mail, status pushes and the DynamoDB mirror are not what is measured; the one receiver left is
        # the participants' waiting room, which hears the meeting turn HEALTHY (the real page gets a push).
        stack.enter_context(_patch(meeting_changed, "receivers", []))
        meeting_changed.connect(self._on_meeting_changed, weak=False, dispatch_uid="fleet-sim-waiting-room")
        simulation = self

        def apply_async(task, args=None, kwargs=None, countdown=None, eta=None, retries=0, **_):
            moment = simulation.now + timedelta(seconds=countdown or 0)
            if eta is not None:
                moment = max(moment, eta)
            simulation.at(moment, "task", (task, tuple(args or ()), dict(kwargs or {}), retries))

        stack.enter_context(_patch(celery.app.task.Task, "apply_async", apply_async))

    # --- where the time goes (--breakdown) -------------------------------------------------------------
    def _measured(self, label: str, step, *args) -> None:
        """Run ``step`` and, with --breakdown, count its call, its queries and its seconds under ``label``."""
        if self.breakdown is None:
            step(*args)
            return
        outer, self._label = self._label, label
        started = time.perf_counter()
        try:
            step(*args)
        finally:
            row = self.breakdown.setdefault(label, [0, 0, 0.0])
            row[0] += 1
            row[2] += time.perf_counter() - started
            self._label = outer

    def _count_query(self, execute, sql, params, many, context):
        self.breakdown.setdefault(self._label, [0, 0, 0.0])[1] += 1
        return execute(sql, params, many, context)

    # --- events ------------------------------------------------------------------------------------------
    def run_task(self, task, args, kwargs, retries) -> None:
        self._measured(task.name.rsplit(".", 1)[-1], self._run_task, task, args, kwargs, retries)

    def _run_task(self, task, args, kwargs, retries) -> None:
        from celery.exceptions import Retry

        task.push_request(id=f"sim-{next(self.order)}", args=args, kwargs=kwargs, retries=retries, is_eager=False)
        try:
            task.run(*args, **kwargs)
        except Retry:
            pass  # queued again through apply_async with its countdown
        except Exception as exc:  # a task that fails for good: counted, as a worker would log it
            self.task_failures[f"{task.name}: {type(exc).__name__}"] += 1
        finally:
            task.pop_request()

    def book(self, session) -> None:
        from django.core.exceptions import ValidationError

        from meetings.services import meeting_schedule

        try:
            meeting = meeting_schedule(
                teacher_name="Teacher",
                student_name=f"Student {session.key}",
                meet_time=session.meet_time,
                duration_minutes=session.duration_minutes,
                time_zone="UTC",
                actor="sim",
            )
        except ValidationError as exc:
            # Admission refuses on meet_time (no desktops at that time); anything else is a lesson the
            # application never accepts (a duration over ELEPHANT_MAX_DURATION_MINUTES): the scenario's fault.
            errors = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
            wrong = {field: messages for field, messages in errors.items() if field != "meet_time"}
            if wrong:
                raise ScenarioError(f"Elephant refuses the scenario's lessons, whatever the capacity: {wrong}") from exc
            self.refused += 1
            return
        self.meeting_of[session.key] = meeting.pk
        bisect.insort(self.booked_times, session.meet_time)
        if not session.no_show:
            self.at(session.meet_time, "arrive", session)
            self.at(session.meet_time + timedelta(minutes=session.duration_minutes), "recorded", session)

    def arrive(self, session) -> None:
        """The participants open the waiting room at the start and sign in to their desktops once the
        meeting is HEALTHY: at once if it is, else when it turns HEALTHY (``_on_meeting_changed``)."""
        from meetings.models import Meeting, MeetingStatus
        from meetings.services import meeting_start_on_join

        meeting_id = self.meeting_of[session.key]
        meeting = Meeting.objects.filter(pk=meeting_id).first()
        if meeting is None:
            return
        if meeting.status == MeetingStatus.HEALTHY:
            self.waiting.pop(meeting_id, None)
            meeting_start_on_join(meeting=meeting, role="teacher")
        elif meeting.status not in (MeetingStatus.IN_PROGRESS, MeetingStatus.TERMINATED, MeetingStatus.FAILED):
            self.waiting[meeting_id] = session

    def _on_meeting_changed(self, sender, meeting_id, to_status, **_) -> None:
        from meetings.models import MeetingStatus

        if to_status == MeetingStatus.HEALTHY and meeting_id in self.waiting:
            self.at(self.now, "arrive", self.waiting.pop(meeting_id))

    def recorded(self, session) -> None:
        """At the lesson's end both agents report their session data (as the mirror's pull applies it)."""
        from meetings.models import ACTIVE_STATUSES, EventReason, Meeting
        from meetings.services import meeting_record_change

        meeting = Meeting.objects.filter(pk=self.meeting_of[session.key], status__in=ACTIVE_STATUSES).first()
        if meeting is None:
            return
        meeting_record_change(
            meeting=meeting,
            reason=EventReason.AGENT_SESSION_DATA,
            detail="sim",
            actor="agent",
            fields={
                "teacher_session_data": f"s3://sim/{meeting.pk}/teacher",
                "student_session_data": f"s3://sim/{meeting.pk}/student",
            },
        )

    def attest_ready_hosts(self) -> None:
        """Hosts (and warm-pool builds) whose boot finished report that they are configured, through
        the same service the attestation view calls (the simulator plays the host; the signature
        check itself is not what is measured). Each boot reports once, as an agent does: the model
        hands over the boots that finished, so a tick with none asks the database nothing."""
        from fleet.attest import instance_attested

        for instance in self.ec2.boots_finished():
            instance_attested(instance_id=instance.instance_id, now=self.now)

    def busy(self) -> bool:
        """A booked meeting starts within ``horizon``, or one is under way, or a host instance is still live
        (a warm pool's stopped instances alone do not keep the clock ticking)."""
        from meetings.models import ACTIVE_STATUSES, Meeting

        if self._busy_until is not None and self.now < self._busy_until:
            return True
        # The simulator's own book says when the next lesson starts (sessions are never moved); the
        # database, whether one is under way (the status index: not a scan past every lesson that ended).
        if (
            self._next_meeting() <= self.now + self.horizon
            or Meeting.objects.filter(status__in=ACTIVE_STATUSES).exists()
        ):
            # Nothing changes that answer for the next minute but a booking, which only makes it busier.
            self._busy_until = self.now + timedelta(minutes=1)
            return True
        return any("MeetingID" in i.tags for i in self.ec2.live_instances())

    def beat(self) -> list:
        from django_celery_beat.models import PeriodicTask

        entries = []
        for entry in PeriodicTask.objects.filter(enabled=True, task__startswith="fleet.").select_related("interval"):
            if entry.interval is None:
                continue
            period = timedelta(
                seconds=entry.interval.every * {"seconds": 1, "minutes": 60}.get(entry.interval.period, 1)
            )
            module, name = entry.task.rsplit(".", 1)
            entries.append((getattr(importlib.import_module(module), name), period))
        return entries

    def run(self) -> dict:
        from contextlib import nullcontext

        from django.db import connection

        counting = nullcontext() if self.breakdown is None else connection.execute_wrapper(self._count_query)
        with counting:
            return self._run()

    def _run(self) -> dict:
        import time_machine
        from django.db import connection

        from fleet.services.planning import earliest_action_lead

        for session in self.sessions:
            self.at(session.booked_at, "book", session)
        beat = self.beat()
        # The clock may skip only time in which no beat task could act: it wakes this long before a lesson,
        # the application's own answer under the policy's settings plus the longest beat period, so every
        # sweep (the plan's included) has run once before the first launch or pool build it may make.
        self.horizon = earliest_action_lead() + max(period for _, period in beat)
        next_beat = {task.name: self.now for task, _ in beat}
        last_meeting = max(s.meet_time + timedelta(minutes=s.duration_minutes) for s in self.sessions)
        with time_machine.travel(self.now, tick=False) as traveller:
            give_up = last_meeting + timedelta(hours=6)
            next_vacuum = self.now
            vacuums = connection.vendor == "postgresql"
            while True:
                due_beat = min(next_beat.values())
                if self.queue and self.queue[0][0] <= due_beat:
                    moment, _, kind, payload = heapq.heappop(self.queue)
                    self._move(traveller, moment)
                    self._event(kind, payload)
                    continue
                if due_beat > give_up or (due_beat > last_meeting and not self.queue and not self.busy()):
                    break
                self._move(traveller, due_beat)
                if vacuums and self.now >= next_vacuum:
                    self._measured("autovacuum (simulator)", self.vacuum)
                    next_vacuum = self.now + VACUUM_EVERY
                if self.busy():
                    self._measured("attestations (hosts)", self.attest_ready_hosts)
                    for task, period in beat:
                        if next_beat[task.name] <= self.now:
                            self.run_task(task, (), {}, 0)
                            next_beat[task.name] = self.now + period
                else:
                    upcoming = self.queue[0][0] if self.queue else last_meeting
                    wake = max(self.now + min(p for _, p in beat), min(upcoming, self._next_meeting()) - self.horizon)
                    for name in next_beat:
                        next_beat[name] = wake
            self.end = self.now
        return self.summary()

    def vacuum(self) -> None:
        """What autovacuum does in real time: a simulated day runs in minutes, so without this the
        tables the sweeps read would carry hours of dead rows and stale statistics (bitmap scans over
        thousands of dead index entries, nested loops planned for five rows), which production never sees.
        Autovacuum's own rule decides which tables (its default thresholds: dead rows above 50 + 20% of
        the live ones; changes since the last analyse above 50 + 10%).

        Not on SQLite, which keeps no dead rows, and whose statistics would mislead it: without
        histograms (Python's SQLite is built without STAT4) ``ANALYZE`` records only the average rows
        per value, and a state or status column has a handful of values, so every sweep's "the few
        live hosts" looked like a large share of the table. SQLite then scanned the whole host or meeting
        table in the order of the model's default ordering rather than search the state index and sort
        the few rows, a cost growing with every lesson simulated. With no statistics its planner takes
        an indexed equality as selective, which these are, and searches the index (the plans PostgreSQL
        picks from its most-common-values statistics)."""
        from django.db import connection

        with connection.cursor() as cursor:
            # A backend reports its table counts at most once a second of wall time: flush them now, so
            # the rule sees the same counts whatever the machine's speed (the next statement sees them).
            if connection.pg_version >= 150000:  # older servers report at each transaction's end
                cursor.execute("SELECT pg_stat_force_next_flush()")
            cursor.execute(
                "SELECT relname, n_dead_tup > 50 + 0.2 * n_live_tup, n_mod_since_analyze > 50 + 0.1 * n_live_tup "
                "FROM pg_stat_user_tables WHERE schemaname = 'public'"
            )
            due = [(table, dead, changed) for table, dead, changed in cursor.fetchall() if dead or changed]
            for table, dead, _ in due:
                cursor.execute(f'{"VACUUM (ANALYZE)" if dead else "ANALYZE"} "{table}"')

    def _next_meeting(self):
        """The next booked meeting's start (the simulator's own book: sessions are never moved)."""
        index = bisect.bisect_left(self.booked_times, self.now)
        return self.booked_times[index] if index < len(self.booked_times) else self.now + timedelta(days=365)

    def _move(self, traveller, moment) -> None:
        if moment > self.now:
            self.now = moment
            traveller.move_to(moment)

    def _event(self, kind: str, payload) -> None:
        if kind == "task":
            self.run_task(*payload)
        elif kind == "book":
            self._measured("booking (admission)", self.book, payload)
        elif kind == "arrive":
            self._measured("participants join", self.arrive, payload)
        elif kind == "recorded":
            self._measured("session data (agents)", self.recorded, payload)

    # --- figures ---------------------------------------------------------------------------------------
    def summary(self) -> dict:
        from fleet.models import Host, PoolInstance
        from meetings.models import ACTIVE_STATUSES, Meeting

        meetings = {m.pk: m for m in Meeting.objects.filter(pk__in=self.meeting_of.values())}
        current: dict[str, dict[str, Host]] = {}
        for host in Host.objects.filter(meeting_id__in=meetings).order_by("generation"):
            current.setdefault(host.meeting_id, {})[host.role] = host
        held = [s for s in self.sessions if s.key in self.meeting_of and not s.no_show]
        ready, waits = 0, []
        for session in held:
            hosts = current.get(self.meeting_of[session.key], {})
            times = [h.healthy_at for h in hosts.values()]
            served = len(times) == 2 and all(times)
            if served:
                ready_at = max(times)
            else:
                # Never both ready: the participants waited the whole lesson (or longer, for a meeting
                # that was still trying past its end), whether the launch failed before the start or the
                # hosts timed out after it.
                meeting = meetings[self.meeting_of[session.key]]
                lesson_end = session.meet_time + timedelta(minutes=session.duration_minutes)
                ready_at = max(meeting.updated_at, lesson_end)
            ready += served and ready_at <= session.meet_time
            waits.append(max(0.0, (ready_at - session.meet_time).total_seconds()))
        running = sum(i.running_seconds(self.end) for i in self.ec2.instances.values())
        stopped = sum(i.stopped_seconds(self.end) for i in self.ec2.instances.values())
        usd = (running * self.scenario.usd_per_hour + stopped * self.scenario.stopped_usd_per_hour) / 3600
        # Stopped-volume time counts as instance time at its price's share of a running hour.
        billed = running + stopped * self.scenario.stopped_usd_per_hour / self.scenario.usd_per_hour
        ideal = sum(2 * s.duration_minutes * 60 for s in held)
        pooled = set(PoolInstance.objects.held().exclude(instance_id="").values_list("instance_id", flat=True))
        active = set(
            Host.objects.filter(meeting__status__in=ACTIVE_STATUSES)
            .exclude(instance_id="")
            .values_list("instance_id", flat=True)
        )
        leaked = [i for i in self.ec2.live_instances() if i.instance_id not in pooled and i.instance_id not in active]
        reasons = Counter(m.termination_reason or m.status for m in meetings.values())
        return {
            "policy": self.policy,
            "sessions": len(held),
            "ready_at_start": round(ready / len(held), 4) if held else 0.0,
            "wait_p50_s": round(percentile(waits, 0.50), 1),
            "wait_p95_s": round(percentile(waits, 0.95), 1),
            "wait_max_s": round(max(waits, default=0.0), 1),
            "overhead_ratio": round((billed - ideal) / ideal, 4) if ideal else 0.0,
            "usd": round(usd, 2),
            "leaked_instances": len(leaked),
            "throttled_calls": self.ec2.throttled_calls,
            "refused_at_booking": self.refused,
            "_reasons": dict(reasons),
            "_aws_calls": dict(self.ec2.calls),
            "_capacity_errors": self.ec2.capacity_errors,
            "_task_failures": dict(self.task_failures),
            "_pool_held_at_end": len(pooled),
            "_warm_hosts": Host.objects.filter(meeting_id__in=meetings, warm_start=True).count(),
            **({"_breakdown": self.breakdown} if self.breakdown is not None else {}),
        }


class _patch:
    def __init__(self, target, name, value):
        self.target, self.name, self.value = target, name, value

    def __enter__(self):
        self.saved = getattr(self.target, self.name)
        setattr(self.target, self.name, self.value)

    def __exit__(self, *exc):
        setattr(self.target, self.name, self.saved)


@contextmanager
def _few_collections():
    """The run makes millions of short-lived objects (querysets, rows, model instances) and few reference
    cycles, so the cyclic collector's default (a pass every 700 allocations, over every object Django's
    set-up left behind) spends time finding nothing: what exists now is frozen out of its passes, and a
    pass comes every 50,000 allocations. Reference counting still frees each row as soon as it goes; only
    cycles wait a little longer. The results are the same."""
    threshold = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, threshold[1], threshold[2])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


def _setting(settings, name, value):
    return _patch(settings, name, value)


@functools.lru_cache(maxsize=65536)
def _instance_in(url: str) -> str:
    """The instance a DCV link names (the probe's stand-in asks the model about it): parsed once per link,
    as the health sweep probes each waiting host's link every 15 seconds."""
    host = urlsplit(url).hostname or ""
    return host.split(".", 1)[0]


COLUMNS = [
    ("policy", "{:<14}"),
    ("sessions", "{:>9}"),
    ("ready_at_start", "{:>9.4f}"),
    ("wait_p50_s", "{:>9.1f}"),
    ("wait_p95_s", "{:>9.1f}"),
    ("wait_max_s", "{:>9.1f}"),
    ("overhead_ratio", "{:>9.4f}"),
    ("usd", "{:>9.2f}"),
    ("leaked_instances", "{:>9}"),
    ("throttled_calls", "{:>9}"),
    ("refused_at_booking", "{:>9}"),
]


def run_policy(
    scenario: Scenario, policy: str, database_url: str, *, breakdown: bool = False, scratch: bool = False
) -> dict:
    """One policy on its own fresh database (this process's Django is set up for it); ``scratch``: the
    run's own default SQLite database, removed when the policy is done."""
    from contextlib import ExitStack

    from django.db import connections

    try:
        database_recreate(database_url)
        # Retries back off with jitter (Celery's and elephant.backoff's, from the random module): drawn from
        # the scenario's seed, so a run repeats.
        random.seed(scenario.seed + 3)
        started = time.perf_counter()
        simulation = Simulation(scenario, policy, breakdown=breakdown)
        with ExitStack() as stack:
            stack.enter_context(_few_collections())
            simulation.install(stack)
            result = simulation.run()
        result["_seconds"] = round(time.perf_counter() - started, 1)
        return result
    finally:  # also when the run fails or is interrupted: the scratch file is memory
        if scratch:
            connections.close_all()
            sqlite_remove(database_url)


def policy_database(database_url: str, policy: str) -> str:
    """The policy's own database beside ``database_url`` (policies run in parallel processes)."""
    parts = urlsplit(database_url)
    suffix = "".join(c if c.isalnum() else "_" for c in policy)
    if parts.scheme == "sqlite":  # the file's name: elephant_bench_sim_learned_pool.sqlite3
        path = sqlite_path(database_url)
        return f"sqlite:///{path.with_name(f'{path.stem}_{suffix}{path.suffix}')}"
    return parts._replace(path=f"{parts.path.rstrip('/')}_{suffix}").geturl()


def sqlite_path(database_url: str) -> Path:
    """The file of a sqlite:/// URL, read by the settings' own parser (sqlite:///name.sqlite3 is relative,
    sqlite:////dev/shm/name.sqlite3 absolute)."""
    import dj_database_url

    return Path(dj_database_url.parse(database_url)["NAME"])


def sqlite_remove(database_url: str) -> None:
    """Remove a SQLite database's file and its journals (nothing for another kind of database)."""
    if urlsplit(database_url).scheme != "sqlite":
        return
    path = sqlite_path(database_url)
    for name in (path.name, *(path.name + suffix for suffix in ("-wal", "-shm", "-journal"))):
        path.with_name(name).unlink(missing_ok=True)


def run_parallel(args, policies: list[str], jobs: int) -> list[dict]:
    """Each policy in a child process of its own (``--worker``), ``jobs`` at a time."""
    import subprocess

    pending, running, results = list(policies), {}, {}
    try:
        while pending or running:
            while pending and len(running) < jobs:
                policy = pending.pop(0)
                command = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--scenario",
                    args.scenario,
                    "--policies",
                    policy,
                    "--database",
                    policy_database(args.database, policy),
                    "--worker",
                    *(["--scratch"] if args.scratch else []),
                ]
                command += ["--days", str(args.days)] if args.days else []
                command += ["--breakdown"] if args.breakdown else []
                running[policy] = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            for policy, process in list(running.items()):
                if process.poll() is None:
                    continue
                output = process.stdout.read()
                del running[policy]
                if process.returncode == 2:  # the child said why on stderr (a scenario Elephant refuses)
                    raise SystemExit(2)  # the others are stopped below
                if process.returncode != 0:
                    raise SystemExit(f"policy {policy}: the simulation failed (exit {process.returncode})")
                results[policy] = json.loads(output.strip().splitlines()[-1])
                _report(results[policy])
            time.sleep(0.2)
    finally:  # a child stopped early (another's refusal, an interrupt) leaves no database in memory behind
        for process in running.values():
            process.kill()
            process.wait()
        if args.scratch:
            for policy in policies:
                sqlite_remove(policy_database(args.database, policy))
    return [results[policy] for policy in policies]


def _report(result: dict) -> None:
    print(
        f"# {result['policy']}: {result['_seconds']} s; ends {result['_reasons']}; AWS {result['_aws_calls']}; "
        f"capacity errors {result['_capacity_errors']}; task failures {result['_task_failures']}",
        file=sys.stderr,
        flush=True,
    )
    if "_breakdown" in result:
        print(_breakdown_table(result), file=sys.stderr, flush=True)


def _breakdown_table(result: dict) -> str:
    """Where one policy's run went: per task (by its function name) and simulator step, most seconds first."""
    rows = sorted(result["_breakdown"].items(), key=lambda item: -item[1][2])
    total = sum(row[2] for _, row in rows) or 1.0
    lines = [
        f"# {result['policy']} breakdown: {'step':<32} {'calls':>8} {'queries':>9} {'q/call':>7} {'ms/call':>8} "
        f"{'s':>7} {'share':>6}"
    ]
    for label, (calls, queries, seconds) in rows:
        per_query = f"{queries / calls:>7.1f}" if calls else f"{'-':>7}"
        per_call = f"{1000 * seconds / calls:>8.2f}" if calls else f"{'-':>8}"
        lines.append(
            f"# {result['policy']} breakdown: {label:<32} {calls or '-':>8} {queries:>9} {per_query} {per_call} "
            f"{seconds:>7.1f} {seconds / total:>6.1%}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", required=True, help="scenario JSON file (bench/scenarios/*.json)")
    parser.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated, of: {', '.join(POLICIES)}")
    parser.add_argument("--days", type=int, help="simulate only the first N days of the scenario (a quicker look)")
    parser.add_argument(
        "--database",
        default=os.environ.get("SIM_DATABASE_URL"),
        help="where each policy's database is made (dropped and made again, suffixed with the policy when "
        "policies run in parallel, and left for a look afterwards): postgres://USER@HOST:PORT/NAME, or "
        "sqlite:///PATH; by default (and SIM_DATABASE_URL unset) a SQLite file of the run's own in /dev/shm, "
        "removed when done",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        help="policies simulated at once, each in its own process and database (default: all of them; each "
        "waits on PostgreSQL a quarter of its time, so three share two cores well); 1 runs them one after "
        "another in this process",
    )
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also print, per policy on stderr, each task's and simulator step's calls, queries and seconds "
        "(where the run's time goes; counting adds a little)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", action="store_true", help=argparse.SUPPRESS)  # the database is the run's own
    args = parser.parse_args(argv)
    if not args.database:  # the run's own SQLite file, removed when each policy is done
        args.database, args.scratch = default_database(), True
    if urlsplit(args.database).scheme not in ("sqlite", "postgres", "postgresql"):
        parser.error(f"--database takes sqlite:///PATH or postgres://..., not {args.database!r}")
    # Each policy once, in the order given (a policy named twice would run twice on one database).
    policies = list(dict.fromkeys(p.strip() for p in args.policies.split(",") if p.strip()))
    if not policies:
        parser.error(f"--policies names none: give one or more of {', '.join(POLICIES)}")
    unknown = [p for p in policies if p not in POLICIES]
    if unknown:
        parser.error(f"unknown policy {', '.join(unknown)}: this build has {', '.join(POLICIES)}")
    if args.days is not None and args.days < 1:
        parser.error("--days must be at least 1")
    if args.jobs is None:
        args.jobs = len(policies)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    try:
        scenario = Scenario.load(args.scenario)
    except ScenarioError as exc:
        parser.error(str(exc))
    if args.days:
        scenario = dataclasses.replace(scenario, days=min(args.days, scenario.days))
    try:  # a scenario Elephant refuses (ScenarioError) ends the run with why, as a bad argument does
        if args.worker:  # a child of run_parallel: one policy, the full result as the last line
            django_setup(args.database)
            result = run_policy(scenario, policies[0], args.database, breakdown=args.breakdown, scratch=args.scratch)
            print(json.dumps(result))
            return 0
        if args.jobs > 1 and len(policies) > 1:
            results = run_parallel(args, policies, args.jobs)
        else:
            django_setup(args.database)
            results = []
            for policy in policies:
                results.append(
                    run_policy(scenario, policy, args.database, breakdown=args.breakdown, scratch=args.scratch)
                )
                _report(results[-1])
    except ScenarioError as exc:
        parser.error(str(exc))
    print(f"scenario {scenario.name}: {scenario.days} days, {scenario.sessions_per_day} sessions a day")
    print(" ".join(f"{name[:9]:<14}" if name == "policy" else f"{name[:9]:>9}" for name, _ in COLUMNS))
    for result in results:
        print(" ".join(fmt.format(result[name]) for name, fmt in COLUMNS))
    for result in results:
        print(json.dumps({k: v for k, v in result.items() if not k.startswith("_")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
