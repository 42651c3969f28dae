"""daphne on PostgreSQL keeps a bounded number of database connections, however many requests.

Under ASGI every request runs its sync code on a thread of its own; with persistent
connections (CONN_MAX_AGE > 0) each request left one connection open until PostgreSQL
refused more ("too many clients"). Elephant uses a per-process pool instead.
"""

import os
import subprocess
import sys

import pytest
import requests
from django.db import connection
from django.utils import timezone

from devtools.stack import BASE_DIR, free_port, wait_for_port
from meetings.tokens import participant_token
from tests.factories import make_meeting

pytestmark = pytest.mark.e2e


def test_many_joins_reuse_a_bounded_pool_of_connections(require_postgres, transactional_db, tmp_path):
    meeting = make_meeting(meet_time=timezone.now(), status="LAUNCHING")
    name = connection.settings_dict["NAME"]
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "ELEPHANT_"))} | {
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{name}",
        "ELEPHANT_DB_POOL_SIZE": "4",
    }
    daphne = subprocess.Popen(
        [
            str((BASE_DIR / sys.executable).parent / "daphne"),
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "elephant.asgi:application",
        ],
        cwd=BASE_DIR,
        env=env,
        stdout=open(tmp_path / "daphne.log", "wb"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_port("127.0.0.1", port, 30, "daphne", daphne)
        token = participant_token(meeting_id=meeting.id, role="student")
        url = f"http://127.0.0.1:{port}/join/{meeting.id}/student?t={token}"
        statuses = [
            requests.get(url, headers={"Accept": "application/json"}, timeout=10).status_code for _ in range(150)
        ]
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [name]
            )
            (others,) = cursor.fetchone()
    finally:
        daphne.terminate()
        daphne.wait(timeout=10)
    assert statuses == [202] * 150
    assert others <= 4, f"daphne holds {others} connections after 150 requests"
